//! `cargo xtask e2e --report DIR`: a static HTML report of a run. `DIR/index.html` holds the
//! summary (passed, failed and skipped per theme and per router generation, wall time) and every
//! scenario, failures first, with its description and, per step, the request, the expectations,
//! the sequence diagram (inline SVG, also written as `DIR/diagrams/<theme>/<step>.svg`), the trace
//! as in the snapshot and, when it differs from the reviewed snapshot, the diff. `DIR/assets/` holds
//! the stylesheet and a small script that only adds a search box: the page works from `file://`
//! and without JavaScript (the status filter is CSS radio buttons).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sim::diagram::{Diagram, xml_escape as esc};
use sim::scenario::Scenario;

use crate::{Backend, Layout, ScenarioRun, StepRun, snapshot_dir};

/// A finished run, as the CLI has it.
pub struct Run<'a> {
    pub layout: &'a Layout,
    /// Each scenario with its failures (expectations and snapshots).
    pub results: &'a [(&'a ScenarioRun, Vec<String>)],
    /// Snapshots no scenario produces (an unfiltered in-process run checks them).
    pub orphans: &'a [PathBuf],
    pub elapsed: Duration,
    pub backend: Backend,
    pub jobs: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Status {
    Failed,
    Error,
    Passed,
    Skipped,
}

impl Status {
    fn of(run: &ScenarioRun, fails: &[String]) -> Status {
        if run.skipped.is_some() {
            Status::Skipped
        } else if run.errored {
            Status::Error
        } else if fails.is_empty() {
            Status::Passed
        } else {
            Status::Failed
        }
    }
    fn word(self) -> &'static str {
        match self {
            Status::Failed => "failed",
            Status::Error => "error",
            Status::Passed => "passed",
            Status::Skipped => "skipped",
        }
    }
}

/// The theme of a scenario: its folder under `fixtures/scenarios`.
fn theme(id: &str) -> &str {
    id.split_once('/').map_or("(top level)", |(t, _)| t)
}

/// The router generation a scenario ran under: its id's `@<generation>`, else the one its router
/// hops name, else none (no router hop).
fn generation(run: &ScenarioRun) -> String {
    if let Some((_, g)) = run.found.id.rsplit_once('@') {
        return g.to_string();
    }
    fn find(v: &Value) -> Option<String> {
        match v {
            Value::Object(o) => {
                if o.get("hop").and_then(Value::as_str) == Some("router")
                    && let Some(g) = o.get("generation").and_then(Value::as_str)
                {
                    return Some(g.to_string());
                }
                o.values().find_map(find)
            }
            Value::Array(a) => a.iter().find_map(find),
            _ => None,
        }
    }
    run.steps
        .iter()
        .find_map(|s| find(&s.value))
        .unwrap_or_else(|| "no router hop".into())
}

/// The step's snapshot as reviewed against this run's trace: `None` when they are the same, else
/// a unified diff (or the whole trace, when no snapshot was reviewed yet).
pub fn snapshot_diff(layout: &Layout, run: &ScenarioRun, step: &StepRun) -> Option<String> {
    use insta::_macro_support::{SerializationFormat, serialize_value};
    let path = snapshot_dir(layout, &run.found).join(format!("{}.snap", step.snapshot_name));
    let new = serialize_value(&step.value, SerializationFormat::Yaml);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Some(format!(
            "no reviewed snapshot yet ({}): this run's trace is below",
            path.display()
        ));
    };
    // The snapshot's body follows its metadata header (`---` … `---`).
    let old = text
        .strip_prefix("---\n")
        .and_then(|t| t.split_once("\n---\n"))
        .map_or(text.as_str(), |(_, body)| body);
    if old.trim_end() == new.trim_end() {
        return None;
    }
    let old = format!("{}\n", old.trim_end());
    let new = format!("{}\n", new.trim_end());
    Some(
        similar::TextDiff::from_lines(&old, &new)
            .unified_diff()
            .context_radius(4)
            .header(&format!("{} (reviewed)", path.display()), "this run")
            .to_string(),
    )
}

#[derive(Default, Clone, Copy)]
struct Tally {
    passed: usize,
    failed: usize,
    skipped: usize,
    time: Duration,
}

impl Tally {
    fn add(&mut self, st: Status, d: Duration) {
        match st {
            Status::Passed => self.passed += 1,
            Status::Failed | Status::Error => self.failed += 1,
            Status::Skipped => self.skipped += 1,
        }
        self.time += d;
    }
}

fn tally_table(o: &mut String, title: &str, rows: &BTreeMap<String, Tally>) {
    let _ = write!(
        o,
        "<table class=\"tally\"><caption>{}</caption><thead><tr><th></th><th>passed</th><th>failed</th><th>skipped</th><th>scenario time</th></tr></thead><tbody>",
        esc(title)
    );
    for (k, t) in rows {
        let _ = write!(
            o,
            "<tr><th>{}</th><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{:.2} s</td></tr>",
            esc(k),
            t.passed,
            if t.failed > 0 { "bad" } else { "" },
            t.failed,
            t.skipped,
            t.time.as_secs_f64()
        );
    }
    o.push_str("</tbody></table>");
}

/// A file-name-safe form of a scenario id.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes the report; returns the path of `index.html`.
pub fn write(dir: &Path, run: &Run) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("assets"))?;
    let diagrams = dir.join("diagrams");
    let _ = std::fs::remove_dir_all(&diagrams);
    std::fs::create_dir_all(&diagrams)?;
    std::fs::write(dir.join("assets/report.css"), CSS)?;
    std::fs::write(dir.join("assets/report.js"), JS)?;

    let mut order: Vec<(Status, &ScenarioRun, &Vec<String>)> = run
        .results
        .iter()
        .map(|(r, f)| (Status::of(r, f), *r, f))
        .collect();
    order.sort_by(|a, b| (a.0, &a.1.found.id).cmp(&(b.0, &b.1.found.id)));

    let mut total = Tally::default();
    let mut themes: BTreeMap<String, Tally> = BTreeMap::new();
    let mut generations: BTreeMap<String, Tally> = BTreeMap::new();
    for (st, r, _) in &order {
        total.add(*st, r.duration);
        themes
            .entry(theme(&r.found.id).to_string())
            .or_default()
            .add(*st, r.duration);
        generations
            .entry(generation(r))
            .or_default()
            .add(*st, r.duration);
    }
    let failed_total = total.failed + run.orphans.len();

    let mut o = String::new();
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
    o.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(
        o,
        "<title>e2e report: {} passed, {} failed</title>",
        total.passed, failed_total
    );
    o.push_str("<link rel=\"stylesheet\" href=\"assets/report.css\">\n");
    o.push_str("<script src=\"assets/report.js\" defer></script>\n</head><body>\n");
    // The status filter: radio buttons before <main>, read by the stylesheet (no script needed).
    o.push_str("<input type=\"radio\" name=\"show\" id=\"show-all\" checked>");
    o.push_str("<input type=\"radio\" name=\"show\" id=\"show-failed\">");
    o.push_str("<input type=\"radio\" name=\"show\" id=\"show-passed\">");
    o.push_str("<input type=\"radio\" name=\"show\" id=\"show-skipped\">\n");
    let _ = write!(
        o,
        "<header><h1>e2e report</h1><p class=\"totals\"><span class=\"{}\">e2e: {} passed, {} failed{}</span> · wall time {:.2} s · {} scenarios · backend {} · {} jobs</p>",
        if failed_total > 0 { "bad" } else { "good" },
        total.passed,
        failed_total,
        if total.skipped > 0 {
            format!(", {} skipped", total.skipped)
        } else {
            String::new()
        },
        run.elapsed.as_secs_f64(),
        order.len(),
        match run.backend {
            Backend::InProcess => "in-process",
            Backend::Docker => "docker",
        },
        run.jobs
    );
    o.push_str("<div class=\"tallies\">");
    tally_table(&mut o, "per theme", &themes);
    tally_table(&mut o, "per router generation", &generations);
    o.push_str("</div>");
    if !run.orphans.is_empty() {
        o.push_str(
            "<div class=\"orphans\"><h2>Orphan snapshots (no scenario step produces them)</h2><ul>",
        );
        for p in run.orphans {
            let _ = write!(o, "<li><code>{}</code></li>", esc(&p.display().to_string()));
        }
        o.push_str("</ul></div>");
    }
    let _ = write!(
        o,
        "<nav class=\"filter\">show: <label for=\"show-all\">all ({})</label><label for=\"show-failed\">failed ({})</label><label for=\"show-passed\">passed ({})</label><label for=\"show-skipped\">skipped ({})</label><span id=\"search\"></span></nav>",
        order.len(),
        total.failed,
        total.passed,
        total.skipped
    );
    o.push_str(LEGEND);
    o.push_str("</header>\n<main>\n");

    for (st, r, fails) in &order {
        scenario(&mut o, run.layout, &diagrams, *st, r, fails)?;
    }
    o.push_str("</main>\n</body></html>\n");
    let index = dir.join("index.html");
    std::fs::write(&index, o)?;
    Ok(index)
}

fn scenario(
    o: &mut String,
    layout: &Layout,
    diagrams: &Path,
    st: Status,
    r: &ScenarioRun,
    fails: &[String],
) -> std::io::Result<()> {
    let id = &r.found.id;
    let class = match st {
        Status::Failed | Status::Error => "failed",
        s => s.word(),
    };
    let _ = write!(
        o,
        "<section class=\"scenario {class}\" id=\"s-{}\" data-id=\"{}\"><h2><span class=\"badge {class}\">{}</span> <a href=\"#s-{}\" class=\"sid\">{}</a> <small>{} step{} · {:.0} ms</small></h2>",
        esc(&slug(id)),
        esc(id),
        st.word(),
        esc(&slug(id)),
        esc(id),
        r.steps.len(),
        if r.steps.len() == 1 { "" } else { "s" },
        r.duration.as_secs_f64() * 1000.0
    );
    if !r.description.is_empty() {
        let _ = write!(o, "<p class=\"desc\">{}</p>", esc(&r.description));
    }
    let root = layout.fixtures.parent().unwrap_or(&layout.fixtures);
    let shown = r.found.path.strip_prefix(root).unwrap_or(&r.found.path);
    let _ = write!(
        o,
        "<p class=\"file\"><code>{}</code></p>",
        esc(&shown.display().to_string())
    );
    if let Some(why) = &r.skipped {
        let _ = write!(o, "<p class=\"skipped\">skipped: {}</p>", esc(why));
    }
    if !fails.is_empty() {
        o.push_str("<ul class=\"failures\">");
        for f in fails {
            let _ = write!(o, "<li><pre>{}</pre></li>", esc(f));
        }
        o.push_str("</ul>");
    }
    let file = Scenario::load(&r.found.path).ok();
    let group = diagrams.join(slug(theme(id)));
    std::fs::create_dir_all(&group)?;
    for (i, step) in r.steps.iter().enumerate() {
        let spec = file.as_ref().and_then(|s| s.steps.get(i));
        let name = spec
            .and_then(|s| s.name.clone())
            .unwrap_or_else(|| format!("step {}", i + 1));
        let diff = (st != Status::Passed)
            .then(|| snapshot_diff(layout, r, step))
            .flatten();
        let _ = write!(
            o,
            "<details class=\"step\"{}><summary><b>{}</b> <code>{}</code>{}</summary>",
            if st == Status::Passed { "" } else { " open" },
            esc(&name),
            esc(&step.snapshot_name),
            if diff.is_some() {
                " <span class=\"badge failed\">snapshot differs</span>"
            } else {
                ""
            }
        );
        let req = step.value.get("request");
        let line = format!(
            "{} {}  (via {})",
            req.and_then(|q| q.get("method"))
                .and_then(Value::as_str)
                .unwrap_or("?"),
            req.and_then(|q| q.get("url"))
                .and_then(Value::as_str)
                .unwrap_or("?"),
            req.and_then(|q| q.get("via"))
                .and_then(Value::as_str)
                .unwrap_or("?"),
        );
        let _ = write!(o, "<p class=\"req\"><code>{}</code></p>", esc(&line));
        let expect = spec
            .map(|s| toml::to_string(&s.expect).unwrap_or_default())
            .unwrap_or_default();
        let _ = write!(
            o,
            "<div class=\"expect\"><b>expect</b> <pre>{}</pre></div>",
            if expect.trim().is_empty() {
                "(nothing explicit: the snapshot is the check)".to_string()
            } else {
                esc(expect.trim_end())
            }
        );
        let title = format!("{id} {}: {line}", step.snapshot_name);
        let svg = Diagram::from_doc(&step.value, step.timing.as_ref()).svg(&title);
        let file_name = format!("{}.svg", slug(&step.snapshot_name));
        std::fs::write(group.join(&file_name), &svg)?;
        let href = format!("diagrams/{}/{file_name}", slug(theme(id)));
        let _ = write!(
            o,
            "<figure class=\"diagram\">{svg}<figcaption><a href=\"{}\">open the diagram as SVG</a></figcaption></figure>",
            esc(&href)
        );
        if let Some(d) = &diff {
            o.push_str("<div class=\"diff\"><b>snapshot diff</b><pre>");
            for l in d.lines() {
                let c = if l.starts_with("+++") || l.starts_with("---") {
                    "h"
                } else if l.starts_with('+') {
                    "add"
                } else if l.starts_with('-') {
                    "del"
                } else if l.starts_with("@@") {
                    "h"
                } else {
                    ""
                };
                let _ = writeln!(o, "<span class=\"{c}\">{}</span>", esc(l));
            }
            o.push_str("</pre></div>");
        }
        let yaml = insta::_macro_support::serialize_value(
            &step.value,
            insta::_macro_support::SerializationFormat::Yaml,
        );
        let _ = write!(
            o,
            "<details class=\"trace\"><summary>the trace, as in the snapshot</summary><pre>{}</pre></details></details>",
            esc(&yaml)
        );
    }
    o.push_str("</section>\n");
    Ok(())
}

const LEGEND: &str = "<p class=\"legend\">Diagrams: solid arrows carry the request down the chain \
(the label is what that hop received), notes are each hop's decisions, the dashed arrow is the \
answer; <span class=\"bad\">red ✗</span> marks the hop that refused, orange arrows are redirects, \
blue ones browser navigations. <code>t+</code> is when a hop recorded its decision, counted from \
the client sending (a forwarding hop records once the answer came back; in containers it is not \
known); the answer's time is the whole step at the client.</p>";

const CSS: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1f2328;margin:0 auto;max-width:1500px;padding:0 16px 48px}
header{border-bottom:1px solid #d0d7de;margin-bottom:12px}
h1{margin:16px 0 4px}
.totals{font-size:16px}
.good{color:#1a7f37;font-weight:bold}.bad{color:#c62828;font-weight:bold}
.tallies{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
table.tally{border-collapse:collapse;margin:8px 0}
table.tally caption{text-align:left;font-weight:bold;padding-bottom:4px}
table.tally th,table.tally td{border:1px solid #d0d7de;padding:2px 10px;text-align:right}
table.tally th:first-child{text-align:left}
.legend{color:#57606a;font-size:13px}
input[name=show]{position:absolute;opacity:0;pointer-events:none}
nav.filter label{display:inline-block;margin:0 4px;padding:2px 10px;border:1px solid #d0d7de;border-radius:12px;cursor:pointer}
#show-all:checked~header label[for=show-all],#show-failed:checked~header label[for=show-failed],#show-passed:checked~header label[for=show-passed],#show-skipped:checked~header label[for=show-skipped]{background:#1f2328;color:#fff}
#show-failed:checked~main .scenario:not(.failed),#show-passed:checked~main .scenario:not(.passed),#show-skipped:checked~main .scenario:not(.skipped){display:none}
#search input{margin-left:12px;padding:2px 8px;width:260px}
.scenario{border:1px solid #d0d7de;border-radius:6px;margin:12px 0;padding:4px 14px 10px}
.scenario.failed{border-color:#c62828;box-shadow:0 0 0 1px #c62828}
.scenario h2{font-size:16px;margin:8px 0 4px}
.scenario h2 small{color:#57606a;font-weight:normal}
a.sid{color:inherit;text-decoration:none;font-family:ui-monospace,monospace}
.badge{font-size:12px;padding:1px 8px;border-radius:10px;color:#fff;background:#57606a;vertical-align:middle}
.badge.failed{background:#c62828}.badge.passed{background:#1a7f37}.badge.skipped{background:#9a6700}
.desc{margin:4px 0}.file{margin:0;color:#57606a;font-size:12px}
ul.failures{color:#c62828;margin:6px 0}ul.failures pre{white-space:pre-wrap;margin:0}
details.step{margin:8px 0;padding:4px 8px;background:#f6f8fa;border-radius:6px}
details.step>summary{cursor:pointer}
.req{margin:6px 0}.expect pre{display:inline-block;vertical-align:top;margin:0 0 0 8px}
.diff pre{background:#fff;border:1px solid #d0d7de;padding:8px;overflow-x:auto}
.diff .add{color:#1a7f37;background:#dafbe1}.diff .del{color:#c62828;background:#ffebe9}.diff .h{color:#57606a}
figure.diagram{margin:8px 0;overflow-x:auto;background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:4px}
figure.diagram figcaption{font-size:12px}
details.trace pre{background:#fff;border:1px solid #d0d7de;padding:8px;overflow-x:auto;font-size:12px}
";

/// Progressive enhancement only: a search box that hides scenarios whose id and description do
/// not contain the text. It also notes on `<html data-assets>` which assets took effect (`js`,
/// and `css` when the stylesheet's rules apply), for a browser check of the report.
const JS: &str = "document.addEventListener('DOMContentLoaded',function(){
  var styled=getComputedStyle(document.body).maxWidth==='1500px';
  document.documentElement.setAttribute('data-assets',styled?'css js':'js');
  var box=document.createElement('input');box.type='search';box.placeholder='filter by id or description';
  document.getElementById('search').appendChild(box);
  box.addEventListener('input',function(){
    var q=box.value.toLowerCase();
    document.querySelectorAll('.scenario').forEach(function(s){
      var t=(s.dataset.id+' '+(s.querySelector('.desc')||{textContent:''}).textContent).toLowerCase();
      s.style.display=t.indexOf(q)>=0?'':'none';
    });
  });
});
";
