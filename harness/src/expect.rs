//! Explicit expectations of a step, checked against its trace document.

use sim::exec::StepDoc;
use sim::scenario::{Step, parse_app_ref};
use sim::trace::Event;

fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// A value as a message shows it: quoted when present, `nothing` when absent (never Rust's
/// `Some(…)`/`None`).
fn shown<T: std::fmt::Debug>(v: Option<T>) -> String {
    v.map_or_else(|| "nothing".to_string(), |v| format!("{v:?}"))
}

/// Returns one message per unmet expectation (empty when all hold).
pub fn check(step: &Step, doc: &StepDoc) -> Vec<String> {
    let mut out = Vec::new();
    // Hops that disagree fail the step (docs/trace.md, invariants), unless the step names the
    // violation as the bug it reproduces under this generation; a named one must occur.
    let generation = doc.hops.iter().find_map(|h| match h {
        Event::Router(r) => Some(r.generation.clone()),
        _ => None,
    });
    let known: Vec<&String> = step
        .expect
        .violations
        .iter()
        .filter(|(g, _)| *g == "all" || Some(g.as_str()) == generation.as_deref())
        .flat_map(|(_, v)| v)
        .collect();
    for v in &doc.invariant_violations {
        if !known.contains(&v) {
            out.push(format!("chain invariant violated: {v}"));
        }
    }
    for k in known {
        if !doc.invariant_violations.contains(k) {
            out.push(format!(
                "expected the chain invariant violation {k:?}, which did not occur"
            ));
        }
    }
    let e = &step.expect;
    let refused = doc.client_error.as_deref().is_some_and(|c| {
        c.starts_with("TLS handshake failed: received fatal alert: HandshakeFailure")
    });
    match &doc.client_error {
        Some(_) if e.tls_refused && refused => {}
        Some(c) => out.push(format!("client error: {c}")),
        None if e.tls_refused => out.push(format!(
            "tls_refused: expected the TLS handshake to be refused, got {}",
            doc.response
                .as_ref()
                .map(|r| format!("status {}", r.status))
                .unwrap_or_else(|| "no response".into())
        )),
        None => {}
    }
    let resp = doc.response.as_ref();
    let body = resp.map(|r| &r.body);
    if let Some(want) = e.status {
        match resp {
            Some(r) if r.status == want => {}
            Some(r) => out.push(format!(
                "status: expected {want}, got {} (body {})",
                r.status, r.body
            )),
            None => out.push(format!("status: expected {want}, got no response")),
        }
    }
    if let Some(want) = &e.error {
        let got = body.and_then(|b| b.get("error")).and_then(|v| v.as_str());
        if got != Some(want.as_str()) {
            out.push(format!("error: expected {want:?}, got {}", shown(got)));
        }
    }
    if let Some(app) = &e.app
        && let Some((m, p)) = parse_app_ref(app)
    {
        let got_m = body
            .and_then(|b| b.pointer("/app/machine"))
            .and_then(|v| v.as_str());
        let got_p = body
            .and_then(|b| b.pointer("/app/port"))
            .and_then(|v| v.as_u64());
        if got_m != Some(m.as_str()) || got_p != Some(u64::from(p)) {
            let got = match (got_m, got_p) {
                (Some(m), Some(p)) => format!("{m}:{p}"),
                _ => "no echo app".to_string(),
            };
            out.push(format!("app: expected {app}, got {got}"));
        }
    }
    if let Some(sub) = &e.body_contains {
        let text = body
            .map(|b| match b {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default();
        if !text.contains(sub.as_str()) {
            out.push(format!("body_contains: {sub:?} not in {text:?}"));
        }
    }
    for (ptr, want) in &e.json {
        let want = toml_to_json(want);
        let got = body.and_then(|b| b.pointer(ptr));
        if got != Some(&want) {
            out.push(format!(
                "json {ptr}: expected {want}, got {}",
                got.map_or_else(|| "nothing".to_string(), |v| v.to_string())
            ));
        }
    }
    for (name, want) in &e.headers {
        let got: Vec<&str> = resp
            .map(|r| {
                r.headers
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
                    .collect()
            })
            .unwrap_or_default();
        if got != want.iter().map(String::as_str).collect::<Vec<_>>() {
            out.push(format!("header {name}: expected {want:?}, got {got:?}"));
        }
    }
    // The app that answered: the last one reached (the router may have followed a redirect).
    let app_headers: Option<&Vec<(String, String)>> = doc.hops.iter().rev().find_map(|h| match h {
        Event::App(a) => Some(&a.headers),
        _ => None,
    });
    for (name, want) in &e.app_headers {
        let got =
            app_headers.and_then(|h| h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()));
        if got != Some(want.as_str()) {
            out.push(format!(
                "app header {name}: expected {want:?}, got {}",
                shown(got)
            ));
        }
    }
    for name in &e.app_headers_absent {
        match app_headers {
            None => out.push(format!(
                "app_headers_absent {name}: the request never reached an app"
            )),
            Some(h) if h.iter().any(|(k, _)| k == name) => {
                out.push(format!("app header {name} must not reach the app"));
            }
            Some(_) => {}
        }
    }
    if e.truncated && !resp.is_some_and(|r| r.truncated) {
        out.push("truncated: the body ended cleanly".into());
    }
    if !e.truncated && resp.is_some_and(|r| r.truncated) {
        out.push("the response body was cut short".into());
    }
    if let Some(want) = e.body_bytes
        && resp.map(|r| r.body_bytes) != Some(want)
    {
        out.push(format!(
            "body_bytes: expected {want}, got {}",
            shown(resp.map(|r| r.body_bytes))
        ));
    }
    if !e.messages.is_empty() {
        let got = doc
            .websocket
            .as_ref()
            .map(|w| w.received.clone())
            .unwrap_or_default();
        if got != e.messages {
            out.push(format!("messages: expected {:?}, got {got:?}", e.messages));
        }
    }
    if let Some(want) = e.close_code {
        let got = doc.websocket.as_ref().and_then(|w| w.close_code);
        if got != Some(want) {
            out.push(format!("close_code: expected {want}, got {}", shown(got)));
        }
    }
    if let Some(want) = e.events {
        match &doc.sse {
            Some(s) => {
                if s.events.len() != want {
                    out.push(format!("events: expected {want}, got {}", s.events.len()));
                }
                if step.release.is_some() && !s.first_event_before_release {
                    out.push(
                        "sse: the first event did not arrive while the stream was open".into(),
                    );
                }
            }
            None => out.push("events: no SSE stream".into()),
        }
    }
    let browser = doc.browser.as_ref();
    if let Some(want) = &e.final_url {
        let got = browser.map(|b| b.final_url.as_str());
        if got != Some(want.as_str()) {
            out.push(format!("final_url: expected {want:?}, got {got:?}"));
        }
    }
    if let Some(want) = e.navigations {
        let got = browser.map(|b| b.navigations.len());
        if got != Some(want) {
            out.push(format!("navigations: expected {want}, got {got:?}"));
        }
    }
    if let Some(want) = &e.user {
        let got = browser.map(|b| b.final_user.clone().unwrap_or_else(|| "none".into()));
        if got.as_deref() != Some(want.as_str()) {
            out.push(format!("user: expected {want:?}, got {got:?}"));
        }
    }
    if let Some(stopped) = browser.and_then(|b| b.stopped.as_ref())
        && e.final_url.is_some()
    {
        out.push(format!("browser stopped: {stopped}"));
    }
    if !e.statuses.is_empty() {
        let mut got: Vec<u16> = doc.concurrent.iter().map(|c| c.status).collect();
        got.sort();
        if got != e.statuses {
            out.push(format!("statuses: expected {:?}, got {got:?}", e.statuses));
        }
    }
    if !e.status_counts.is_empty() {
        let got: std::collections::BTreeMap<String, u64> = doc
            .burst
            .iter()
            .flat_map(|b| b.statuses.iter().map(|(s, n)| (s.to_string(), *n)))
            .collect();
        if got != e.status_counts {
            out.push(format!(
                "status_counts: expected {:?}, got {got:?}",
                e.status_counts
            ));
        }
    }
    if !e.db_queries.is_empty() {
        let got = doc.burst.as_ref().map(|b| b.db_queries.clone());
        if got.as_ref() != Some(&e.db_queries) {
            out.push(format!(
                "db_queries: expected {:?}, got {got:?}",
                e.db_queries
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::shown;

    /// A step whose hops disagree fails, whatever it expects.
    #[test]
    fn an_invariant_violation_fails_the_step() {
        let text = "description = \"x\"\nworld = \"default\"\n[[steps]]\nurl = \"https://a.iterate.town/\"\n";
        let step = sim::scenario::Scenario::parse(text, std::path::Path::new("x.toml"))
            .unwrap()
            .steps
            .remove(0);
        let mut doc = sim::exec::StepDoc::new(&step);
        assert!(super::check(&step, &doc).is_empty());
        doc.invariant_violations = vec!["the router chose machine a, but b answered".into()];
        assert_eq!(
            super::check(&step, &doc),
            ["chain invariant violated: the router chose machine a, but b answered"]
        );
    }

    #[test]
    fn absent_values_read_as_words() {
        assert_eq!(shown(Some("mach_other9")), "\"mach_other9\"");
        assert_eq!(shown(None::<u16>), "nothing");
        assert_eq!(shown(Some(1000u16)), "1000");
    }
}
