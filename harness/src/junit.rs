//! JUnit XML report for CI.

use std::fmt::Write as _;

use crate::ScenarioRun;

fn esc(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => format!("&#{};", c as u32),
            c => c.to_string(),
        })
        .collect()
}

/// One `<testsuite>` named `e2e`, one `<testcase>` per scenario.
pub fn render(runs: &[(&ScenarioRun, Vec<String>)], total_secs: f64) -> String {
    let failures = runs.iter().filter(|(_, f)| !f.is_empty()).count();
    let mut x = String::new();
    let _ = writeln!(x, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        x,
        r#"<testsuites tests="{}" failures="{failures}" time="{total_secs:.3}">"#,
        runs.len()
    );
    let _ = writeln!(
        x,
        r#"  <testsuite name="e2e" tests="{}" failures="{failures}" time="{total_secs:.3}">"#,
        runs.len()
    );
    for (run, fails) in runs {
        let (class, name) = match run.found.id.rsplit_once('/') {
            Some((g, n)) => (format!("e2e.{}", g.replace('/', ".")), n.to_string()),
            None => ("e2e".to_string(), run.found.id.clone()),
        };
        let _ = write!(
            x,
            r#"    <testcase classname="{}" name="{}" time="{:.3}""#,
            esc(&class),
            esc(&name),
            run.duration.as_secs_f64()
        );
        if let Some(why) = &run.skipped {
            let _ = writeln!(x, ">");
            let _ = writeln!(x, r#"      <skipped message="{}"/>"#, esc(why));
            let _ = writeln!(x, "    </testcase>");
        } else if fails.is_empty() {
            let _ = writeln!(x, "/>");
        } else {
            let _ = writeln!(x, ">");
            let _ = writeln!(
                x,
                r#"      <failure message="{}">{}</failure>"#,
                esc(fails.first().map(String::as_str).unwrap_or("")),
                esc(&fails.join("\n"))
            );
            let _ = writeln!(x, "    </testcase>");
        }
    }
    let _ = writeln!(x, "  </testsuite>");
    let _ = writeln!(x, "</testsuites>");
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Found;

    #[test]
    fn renders_pass_and_fail() {
        let pass = ScenarioRun {
            found: Found {
                id: "routing/a".into(),
                path: "a".into(),
            },
            description: String::new(),
            steps: vec![],
            failures: vec![],
            duration: std::time::Duration::from_millis(12),
            skipped: None,
        };
        let fail = ScenarioRun {
            found: Found {
                id: "b".into(),
                path: "b".into(),
            },
            ..pass.clone()
        };
        let xml = render(
            &[
                (&pass, vec![]),
                (&fail, vec!["status: expected <200>".into()]),
            ],
            1.5,
        );
        assert!(
            xml.contains(r#"<testcase classname="e2e.routing" name="a" time="0.012"/>"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<failure message="status: expected &lt;200&gt;">"#),
            "{xml}"
        );
        assert!(xml.contains(r#"tests="2" failures="1""#), "{xml}");
    }
}
