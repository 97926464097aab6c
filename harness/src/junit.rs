//! JUnit XML report for CI, written with quick-junit (which keeps the XML valid: characters XML
//! 1.0 forbids, such as most control characters, are left out rather than escaped).

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use crate::ScenarioRun;

/// One `<testsuite>` named `e2e`, one `<testcase>` per scenario (failed checks are `<failure>`,
/// a scenario that could not run is an `<error>`, one the backend does not run is `<skipped>`),
/// plus one failing `orphan_snapshots` case when `orphans` snapshots no scenario produces.
pub fn render(
    runs: &[(&ScenarioRun, Vec<String>)],
    orphans: usize,
    total: Duration,
) -> Result<String, quick_junit::SerializeError> {
    let mut suite = TestSuite::new("e2e");
    suite.set_time(total);
    for (run, fails) in runs {
        let (class, name) = match run.found.id.rsplit_once('/') {
            Some((g, n)) => (format!("e2e.{}", g.replace('/', ".")), n.to_string()),
            None => ("e2e".to_string(), run.found.id.clone()),
        };
        let status = if let Some(why) = &run.skipped {
            let mut st = TestCaseStatus::skipped();
            st.set_message(why.as_str());
            st
        } else if fails.is_empty() {
            TestCaseStatus::success()
        } else {
            let kind = if run.errored {
                NonSuccessKind::Error
            } else {
                NonSuccessKind::Failure
            };
            let mut st = TestCaseStatus::non_success(kind);
            st.set_message(fails[0].as_str());
            st.set_description(fails.join("\n"));
            st
        };
        let mut case = TestCase::new(name, status);
        case.set_classname(class);
        case.set_time(run.duration);
        suite.add_test_case(case);
    }
    if orphans > 0 {
        let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
        st.set_message(format!(
            "{orphans} snapshot(s) that no scenario step produces"
        ));
        let mut case = TestCase::new("orphan_snapshots", st);
        case.set_classname("e2e");
        suite.add_test_case(case);
    }
    let mut report = Report::new("e2e");
    report.set_time(total);
    report.add_test_suite(suite);
    report.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Found;

    fn run(id: &str) -> ScenarioRun {
        ScenarioRun {
            found: Found {
                id: id.into(),
                path: id.into(),
            },
            description: String::new(),
            steps: vec![],
            failures: vec![],
            duration: Duration::from_millis(12),
            skipped: None,
            errored: false,
        }
    }

    #[test]
    fn renders_pass_fail_error_skip() {
        let pass = run("routing/a");
        let fail = run("b");
        let error = ScenarioRun {
            errored: true,
            ..run("c")
        };
        let skip = ScenarioRun {
            skipped: Some("reaches no Docker machine".into()),
            ..run("d")
        };
        let xml = render(
            &[
                (&pass, vec![]),
                (
                    &fail,
                    vec!["status: expected <200>, got \u{1b}[31m502\u{7}".into()],
                ),
                (&error, vec!["x.toml:1:1: broken".into()]),
                (&skip, vec![]),
            ],
            1,
            Duration::from_millis(1500),
        )
        .unwrap();
        assert!(
            xml.contains(r#"<testcase name="a" classname="e2e.routing" time="0.012"/>"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<failure message="status: expected &lt;200&gt;, got 502""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<error message="x.toml:1:1: broken""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<skipped message="reaches no Docker machine"/>"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"tests="5" skipped="1" failures="2" errors="1""#),
            "{xml}"
        );
        // XML 1.0 allows no control characters other than tab, newline and carriage return,
        // not even as character references.
        assert!(!xml.contains("&#"), "{xml}");
        assert!(
            !xml.chars().any(|c| c.is_control() && !"\t\n\r".contains(c)),
            "{xml}"
        );
    }
}
