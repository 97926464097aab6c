//! The hop-by-hop trace for a person: one block per hop, the decision first, and the hop that
//! refused named at the end. Colour only when asked (a terminal).

use std::fmt::Write as _;

use crate::exec::StepDoc;
use crate::trace::Event;

#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn hop(&self, s: &str) -> String {
        self.paint("1;36", &format!("{s:<9}"))
    }
    fn bad(&self, s: &str) -> String {
        self.paint("1;31", s)
    }
    fn good(&self, s: &str) -> String {
        self.paint("1;32", s)
    }
    fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
}

pub use crate::outcome::refusal;

/// `0 bytes`, `1 byte`, `474 bytes`.
fn bytes(n: u64) -> String {
    if n == 1 {
        "1 byte".into()
    } else {
        format!("{n} bytes")
    }
}

fn hdr_line(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Renders a step trace (pass the redacted doc for stable output).
pub fn render(doc: &StepDoc, style: Style) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} {}  {}",
        style.paint("1", &doc.request.method),
        style.paint("1", &doc.request.url),
        style.dim(&format!("(via {})", doc.request.via))
    );
    for f in &doc.faults {
        let _ = writeln!(
            o,
            "  {} {}",
            style.hop("fault"),
            serde_json::to_string(f).unwrap_or_default()
        );
    }
    for h in &doc.hops {
        match h {
            Event::Edge(e) => {
                let route = match (&e.route, e.method.as_str()) {
                    (Some(r), _) => format!("route {r}"),
                    // A refused TLS handshake: no request, so no route was looked for.
                    (None, "TLS") => "TLS handshake".into(),
                    (None, _) => "no worker route".into(),
                };
                let _ = writeln!(o, "  {} {route} → {}", style.hop("edge"), e.decision);
            }
            Event::Router(r) => {
                let _ = writeln!(
                    o,
                    "  {} host {} (from {}), matcher {}",
                    style.hop("router"),
                    r.hostname,
                    r.host_source,
                    r.matched.as_deref().unwrap_or("none")
                );
                if let Some(p) = &r.parsed {
                    let _ = writeln!(
                        o,
                        "  {:9} target {} {} port {} ({}), root {}",
                        "",
                        p.kind.as_str(),
                        p.id,
                        p.target_port,
                        if p.port_explicit {
                            "explicit"
                        } else {
                            "implicit"
                        },
                        p.root_domain
                    );
                }
                if let Some(c) = &r.canonical_host {
                    let _ = writeln!(o, "  {:9} canonical host {c}", "");
                }
                if let Some(u) = &r.user {
                    let _ = writeln!(o, "  {:9} user {u}", "");
                }
                if let Some(a) = &r.authorization {
                    let _ = writeln!(o, "  {:9} {a}", "");
                }
                if let Some(c) = &r.custom_domain {
                    let _ = writeln!(o, "  {:9} custom domain {c}", "");
                }
                for c in &r.cache {
                    let _ = writeln!(o, "  {:9} cache {c}", "");
                }
                for n in &r.notes {
                    let _ = writeln!(o, "  {:9} note: {n}", "");
                }
                if let Some(m) = &r.machine {
                    let _ = writeln!(
                        o,
                        "  {:9} machine {} (project {}, {}, {}, external id {})",
                        "",
                        m.id,
                        m.project,
                        m.state,
                        m.provider,
                        m.external_id.as_deref().unwrap_or("none")
                    );
                }
                if let Some(p) = &r.effective_port {
                    let _ = writeln!(o, "  {:9} effective port {p}", "");
                }
                if let Some(u) = &r.provider_url {
                    let _ = writeln!(
                        o,
                        "  {:9} → {u}  X-Iterate-Proxy-Target-Host: {}",
                        "",
                        r.target_header.as_deref().unwrap_or("-")
                    );
                }
                if !r.forwarded_headers.is_empty() {
                    let _ = writeln!(
                        o,
                        "  {:9} {} headers forwarded: {}",
                        "",
                        if r.websocket { "websocket" } else { "http" },
                        r.forwarded_headers.join(", ")
                    );
                }
                for x in &r.redirects_followed {
                    let _ = writeln!(o, "  {:9} followed redirect {x}", "");
                }
                for n in &r.response_header_notes {
                    let _ = writeln!(o, "  {:9} response: {n}", "");
                }
                let outcome = format!("{} {}", r.status, r.outcome);
                let outcome = if r.outcome.starts_with("refused") {
                    style.bad(&outcome)
                } else {
                    outcome
                };
                let err = r
                    .error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                let _ = writeln!(o, "  {:9} {outcome}{err}", "");
            }
            Event::Worker(w) => {
                let _ = writeln!(
                    o,
                    "  {} host {} (from {}), session {}; {} → {}",
                    style.hop("worker"),
                    w.host,
                    w.host_source,
                    w.session,
                    w.ingress,
                    w.handled_by
                );
                if let Some(i) = &w.isolate {
                    let _ = writeln!(o, "  {:9} isolate {i}", "");
                }
            }
            Event::ControlPlane(c) => {
                let _ = writeln!(
                    o,
                    "  {} {} {}{} [{}] user {}",
                    style.hop("control"),
                    c.method,
                    c.host,
                    c.path,
                    c.route,
                    c.user
                );
                for d in &c.decisions {
                    let _ = writeln!(o, "  {:9} {d}", "");
                }
                for k in &c.cookies_set {
                    let _ = writeln!(o, "  {:9} set-cookie {k}", "");
                }
                let outcome = format!("{} {}", c.status, c.outcome);
                let outcome = if c.status >= 400 {
                    style.bad(&outcome)
                } else {
                    outcome
                };
                let _ = writeln!(o, "  {:9} {outcome}", "");
            }
            Event::Db(d) => {
                let params = if d.params.is_empty() {
                    String::new()
                } else {
                    format!(" {:?}", d.params)
                };
                let _ = writeln!(
                    o,
                    "  {} {}{params} from {} ({} ms, slots {})",
                    style.hop("db"),
                    d.query,
                    d.caller,
                    d.took_ms,
                    d.slots
                );
                let _ = writeln!(o, "  {:9} {}", "", style.dim(&d.sql));
                match &d.error {
                    Some(e) => {
                        let _ = writeln!(o, "  {:9} {}", "", style.bad(&format!("error: {e}")));
                    }
                    None if d.rows.is_empty() => {
                        let _ = writeln!(o, "  {:9} 0 rows", "");
                    }
                    None => {
                        for r in &d.rows {
                            let _ = writeln!(o, "  {:9} row: {r}", "");
                        }
                    }
                }
            }
            Event::Provider(p) => {
                let st = p.status.map(|s| format!(" [{s}]")).unwrap_or_default();
                let _ = writeln!(
                    o,
                    "  {} {}: {} → {}{st}",
                    style.hop("provider"),
                    p.provider,
                    p.request,
                    p.decision
                );
                if !p.added_headers.is_empty() {
                    let _ = writeln!(o, "  {:9} added: {}", "", hdr_line(&p.added_headers));
                }
            }
            Event::Machine(m) => {
                let chose = match (m.target_port, &m.target_form) {
                    (Some(p), Some(f)) => format!("port {p} ({f})"),
                    _ => "no port".into(),
                };
                let result = match &m.error {
                    Some(e) => style.bad(&format!("{} {e}", m.status)),
                    None => format!("{}", m.status),
                };
                let _ = writeln!(
                    o,
                    "  {} {} {} {}: target {} → {chose} → {} → {result}{}{}",
                    style.hop("machine"),
                    m.machine,
                    m.method,
                    m.path,
                    m.target_header.as_deref().unwrap_or("(none)"),
                    m.upstream.as_deref().unwrap_or("-"),
                    if m.upgraded { " (tunnel)" } else { "" },
                    if m.completed { "" } else { " (body cut short)" }
                );
                let _ = writeln!(
                    o,
                    "  {:9} {} in, {} out",
                    "",
                    bytes(m.bytes_in),
                    bytes(m.bytes_out)
                );
            }
            Event::App(a) => {
                let _ = writeln!(
                    o,
                    "  {} {}:{} ({}) got {} {}, body {}",
                    style.hop("app"),
                    a.machine,
                    a.port,
                    a.kind,
                    a.method,
                    a.path_and_query,
                    bytes(a.body_bytes)
                );
                let _ = writeln!(o, "  {:9} {}", "", style.dim(&hdr_line(&a.headers)));
            }
        }
    }
    if let Some(r) = &doc.response {
        let status = format!("{}", r.status);
        let status = if r.status >= 400 {
            style.bad(&status)
        } else {
            style.good(&status)
        };
        let body = match &r.body {
            serde_json::Value::String(s) if s.len() <= 200 => format!("{s:?}"),
            serde_json::Value::String(_) => "text".to_string(),
            other => {
                let t = other.to_string();
                if t.len() <= 200 {
                    t
                } else {
                    "JSON".to_string()
                }
            }
        };
        let _ = writeln!(
            o,
            "  {} {status} {body} ({}){}",
            style.hop("response"),
            bytes(r.body_bytes),
            if r.truncated {
                style.bad(" (truncated: the body was cut short)")
            } else {
                String::new()
            }
        );
    }
    if let Some(ws) = &doc.websocket {
        let _ = writeln!(
            o,
            "  {} received [{}], close {}",
            style.hop("websocket"),
            ws.received
                .iter()
                .map(|m| format!("{m:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            ws.close_code
                .map_or_else(|| "none".to_string(), |c| c.to_string())
        );
    }
    if let Some(s) = &doc.sse {
        let _ = writeln!(
            o,
            "  {} {} events; first before release: {}",
            style.hop("sse"),
            s.events.len(),
            s.first_event_before_release
        );
    }
    if let Some(e) = &doc.client_error {
        let _ = writeln!(o, "  {} {}", style.hop("client"), style.bad(e));
    }
    match refusal(&doc.hops) {
        Some((hop, why)) => {
            let _ = writeln!(o, "{}", style.bad(&format!("refused by {hop}: {why}")));
        }
        None if doc.hops.iter().any(|h| matches!(h, Event::App(_))) => {
            let _ = writeln!(o, "{}", style.good("reached the app"));
        }
        None => {}
    }
    // Last, where it cannot be missed: the hops disagree.
    if !doc.invariant_violations.is_empty() {
        let _ = writeln!(
            o,
            "{}",
            style.bad(&format!(
                "CHAIN INVARIANT VIOLATED ({}): the hops disagree",
                doc.invariant_violations.len()
            ))
        );
        for v in &doc.invariant_violations {
            let _ = writeln!(o, "  {} {}", style.bad("✗"), style.bad(v));
        }
    }
    o
}
