//! A step's trace as a sequence diagram: [`Diagram::from_doc`] reads the trace document (the
//! JSON a step's [`crate::exec::StepDoc`] serializes to, redacted, as in snapshots) and
//! [`Diagram::mermaid`] / [`Diagram::svg`] write it, the SVG drawn here (no external renderer, no
//! fonts, no script).
//!
//! Generic by construction: the participants are the hops present in the trace, in order of first
//! appearance (`hop` of each event, plus the instance it names: a provider, a machine, an app's
//! `machine:port`), so a new hop shows up without any change here. What each hop's arrow and note
//! say comes from its fields: a few hops have a tailored note ([`note_lines`]); any other hop gets
//! its scalar and list fields as `key: value` lines (header lists left out). A hop refused when its
//! `decision` or `outcome` starts with `refused`, it carries an `error`, or it is the last hop and
//! its `status` is 4xx/5xx. Browser navigations (`browser.navigations[]`, each with its own
//! `hops`) are drawn one after another, each redirect answered with its own arrow.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Map, Value};

/// When each hop recorded its event (from [`crate::trace::TraceStore::hop_times`]) and how long
/// the whole step took at the client, where known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timing {
    /// (hop, time since the client sent) in record order.
    pub hops: Vec<(String, Option<Duration>)>,
    pub total: Option<Duration>,
}

impl Timing {
    /// The timing of a step that ran after `store.issued()` was `before` and took `total` at the
    /// client: per hop when the step sent one request (a step that sent several, such as a
    /// browser's navigations, gets its total only).
    pub fn of_step(store: &crate::trace::TraceStore, before: u64, total: Duration) -> Timing {
        let ids = store.ids_since(before);
        let hops = match ids.as_slice() {
            [id] => store
                .hop_times(id)
                .into_iter()
                .map(|(h, t)| (h.to_string(), t))
                .collect(),
            _ => vec![],
        };
        Timing {
            hops,
            total: Some(total),
        }
    }

    /// The time of the `nth` event (0-based) of hop `hop`, in record order.
    fn of(&self, hop: &str, nth: usize) -> Option<Duration> {
        self.hops
            .iter()
            .filter(|(h, _)| h == hop)
            .nth(nth)
            .and_then(|(_, t)| *t)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Participant {
    /// `[A-Za-z0-9_]`, unique in the diagram.
    pub id: String,
    /// The hop (`edge`, `router`, `control plane`…).
    pub label: String,
    /// The instance or generation (`docker`, `mach_123`, `mach_123:4096`, `v0`), if any.
    pub sub: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrowKind {
    /// A request passed down the chain.
    Request,
    /// An answer back to the client.
    Reply,
    /// An answer that is a refusal (4xx/5xx from the hop that refused).
    Refusal,
    /// A redirect: answered with a `Location`, or followed inside a hop.
    Redirect,
    /// A browser navigation (the start, or one that follows a redirect).
    Navigation,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Arrow {
        from: usize,
        to: usize,
        label: Vec<String>,
        kind: ArrowKind,
    },
    Note {
        over: usize,
        lines: Vec<String>,
        refused: bool,
    },
    /// A heading across the whole diagram (a browser navigation's number and cause).
    Divider(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Diagram {
    pub participants: Vec<Participant>,
    pub items: Vec<Item>,
}

/// Notes wrap at this many characters.
const NOTE_COLUMNS: usize = 46;
/// Arrow labels wrap at this many characters.
const LABEL_COLUMNS: usize = 56;

fn s<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    o.get(k).and_then(Value::as_str)
}

fn n(o: &Map<String, Value>, k: &str) -> Option<u64> {
    o.get(k).and_then(Value::as_u64)
}

/// `/path?query` of a URL (the URL itself when it has no path).
fn path_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or(url, |i| &rest[i..])
}

/// The hop's instance: an app's `machine:port`, else a `provider` or `machine` string field.
fn instance(o: &Map<String, Value>) -> Option<String> {
    match (s(o, "machine"), n(o, "port")) {
        (Some(m), Some(p)) => Some(format!("{m}:{p}")),
        _ => s(o, "provider")
            .or_else(|| s(o, "machine"))
            .map(str::to_string),
    }
}

fn ident(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Did this hop refuse? (`last`: no hop after it in its chain.)
fn refused(o: &Map<String, Value>, last: bool) -> bool {
    let starts = |k: &str| s(o, k).is_some_and(|v| v.starts_with("refused"));
    starts("decision")
        || starts("outcome")
        || o.get("error").is_some_and(|e| !e.is_null())
        || (last && n(o, "status").is_some_and(|st| st >= 400))
}

/// Splits `text` into lines of at most `cols` characters, at spaces or after `/ & , ?` when it can.
pub fn wrap(text: &str, cols: usize) -> Vec<String> {
    let mut out = Vec::new();
    for para in text.split('\n') {
        let mut rest: Vec<char> = para.chars().collect();
        while rest.len() > cols {
            let window = &rest[..=cols];
            let cut = window
                .iter()
                .rposition(|c| *c == ' ')
                .filter(|&i| i > cols / 3)
                .map(|i| (i, i + 1))
                .or_else(|| {
                    window[..cols]
                        .iter()
                        .rposition(|c| matches!(c, '/' | '&' | ',' | '?' | '.'))
                        .filter(|&i| i > cols / 3)
                        .map(|i| (i + 1, i + 1))
                })
                .unwrap_or((cols, cols));
            out.push(rest[..cut.0].iter().collect::<String>());
            rest = rest[cut.1..].to_vec();
        }
        out.push(rest.iter().collect());
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// What a hop received, for the arrow into it (`inherited`: the request line of the hop before).
fn received(hop: &str, o: &Map<String, Value>, inherited: &str) -> String {
    if let Some(r) = s(o, "request") {
        return r.to_string();
    }
    let method = s(o, "method");
    let path = s(o, "path_and_query")
        .or_else(|| s(o, "path"))
        .or_else(|| s(o, "url").map(path_of));
    let line = match (method, path) {
        (Some(m), Some(p)) => format!("{m} {p}"),
        _ => inherited.to_string(),
    };
    match (hop, s(o, "hostname").or_else(|| s(o, "host"))) {
        ("router" | "worker" | "control_plane", Some(h)) => format!("{line}  (host {h})"),
        _ => line,
    }
}

/// The lines of a hop's note: what it decided.
pub fn note_lines(hop: &str, o: &Map<String, Value>) -> Vec<String> {
    let mut l = Vec::new();
    let mut push = |x: String| l.push(x);
    match hop {
        "edge" => {
            push(match s(o, "route") {
                Some(r) => format!("route {r}"),
                None => "no worker route".into(),
            });
            if let Some(d) = s(o, "decision") {
                push(d.into());
            }
        }
        "router" => {
            if let Some(h) = s(o, "hostname") {
                push(format!(
                    "host {h} ({}), matcher {}",
                    s(o, "host_source").unwrap_or("?"),
                    s(o, "matched").unwrap_or("none")
                ));
            }
            if let Some(p) = o.get("parsed").and_then(Value::as_object) {
                push(format!(
                    "target {} {} port {}",
                    s(p, "kind").unwrap_or("?"),
                    s(p, "id").unwrap_or("?"),
                    n(p, "target_port").map_or("?".into(), |x| x.to_string())
                ));
            }
            for k in ["canonical_host", "user", "authorization"] {
                if let Some(v) = s(o, k) {
                    push(format!("{}: {v}", k.replace('_', " ")));
                }
            }
            if let Some(m) = o.get("machine_record").and_then(Value::as_object) {
                push(format!(
                    "machine {} ({}, {})",
                    s(m, "id").unwrap_or("?"),
                    s(m, "state").unwrap_or("?"),
                    s(m, "provider").unwrap_or("?")
                ));
            }
            if let Some(u) = s(o, "provider_url") {
                push(format!("→ {u}"));
            }
            if let Some(t) = s(o, "target_header") {
                push(format!("X-Iterate-Proxy-Target-Host: {t}"));
            }
            for k in ["response_header_notes"] {
                for v in o.get(k).and_then(Value::as_array).into_iter().flatten() {
                    if let Some(v) = v.as_str() {
                        push(format!("response: {v}"));
                    }
                }
            }
            let status = n(o, "status").map(|x| format!("{x} ")).unwrap_or_default();
            let err = s(o, "error").map(|e| format!(" ({e})")).unwrap_or_default();
            push(format!("{status}{}{err}", s(o, "outcome").unwrap_or("")));
        }
        "provider" => {
            if let Some(d) = s(o, "decision") {
                push(d.into());
            }
        }
        "db" => {
            let params: Vec<&str> = o
                .get("params")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            push(format!(
                "{}({}) from {}",
                s(o, "query").unwrap_or("?"),
                params.join(", "),
                s(o, "caller").unwrap_or("?")
            ));
            match s(o, "error") {
                Some(e) => push(format!("error: {e}")),
                None => {
                    let rows = o.get("rows").and_then(Value::as_array);
                    push(format!("{} rows", rows.map_or(0, Vec::len)));
                    for r in rows.into_iter().flatten().filter_map(Value::as_str) {
                        push(r.into());
                    }
                }
            }
            push(format!(
                "slots {}, {} ms",
                s(o, "slots").unwrap_or("?"),
                n(o, "took_ms").unwrap_or(0)
            ));
        }
        "machine" => {
            let port = match (n(o, "target_port"), s(o, "target_form")) {
                (Some(p), Some(f)) => format!("port {p} ({f})"),
                _ => "no port".into(),
            };
            push(format!(
                "target {} → {port}",
                s(o, "target_header").unwrap_or("(none)")
            ));
            if let Some(u) = s(o, "upstream") {
                push(format!("→ {u}"));
            }
            let status = n(o, "status").map_or("?".into(), |x| x.to_string());
            push(match s(o, "error") {
                Some(e) => format!("{status} {e}"),
                None => status,
            });
            if o.get("upgraded").and_then(Value::as_bool) == Some(true) {
                push("tunnel (upgraded)".into());
            }
            if o.get("completed").and_then(Value::as_bool) == Some(false) {
                push("body cut short".into());
            }
        }
        "app" => {
            push(format!(
                "{} app got {} {}",
                s(o, "kind").unwrap_or("?"),
                s(o, "method").unwrap_or("?"),
                s(o, "path_and_query").unwrap_or("?")
            ));
            if let Some(b) = n(o, "body_bytes").filter(|b| *b > 0) {
                push(format!("body {b} bytes"));
            }
        }
        _ => generic_lines(o, &mut l),
    }
    l
}

/// Every field but the tag, the request line and header lists: `key: value`.
fn generic_lines(o: &Map<String, Value>, l: &mut Vec<String>) {
    for (k, v) in o {
        if k == "hop" || k == "method" || k == "path" || k.ends_with("headers") {
            continue;
        }
        let key = k.replace('_', " ");
        match v {
            Value::Null => {}
            Value::String(x) => l.push(format!("{key}: {x}")),
            Value::Array(a) => {
                for x in a {
                    match x {
                        Value::String(x) => l.push(format!("{key}: {x}")),
                        other => l.push(format!("{key}: {other}")),
                    }
                }
            }
            other => l.push(format!("{key}: {other}")),
        }
    }
}

/// The answer's label: status, then the error code, the `Location`, or the body's size.
fn reply_label(resp: &Map<String, Value>) -> String {
    let status = n(resp, "status").unwrap_or(0);
    let header = |name: &str| {
        resp.get("headers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find_map(|h| {
                h.split_once(": ")
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_string())
            })
    };
    if let Some(code) = resp
        .get("body")
        .and_then(|b| b.get("error"))
        .and_then(Value::as_str)
    {
        return format!("{status} {code}");
    }
    if let Some(loc) = header("location").filter(|_| (300..400).contains(&status)) {
        return format!("{status} Location: {loc}");
    }
    let bytes = n(resp, "body_bytes").unwrap_or(0);
    let mut out = format!("{status}");
    if let Some(ct) = header("content-type") {
        let ct = ct.split(';').next().unwrap_or("").trim().to_string();
        let _ = write!(out, " {ct}");
    }
    if bytes > 0 {
        let _ = write!(out, ", {bytes} bytes");
    }
    if resp.get("truncated").and_then(Value::as_bool) == Some(true) {
        out.push_str(", cut short");
    }
    out
}

struct Builder<'a> {
    d: Diagram,
    timing: Option<&'a Timing>,
    /// Per hop name: how many of its events were drawn (to find their times).
    seen: Vec<(String, usize)>,
}

impl Builder<'_> {
    fn lane(&mut self, label: String, sub: Option<String>) -> usize {
        let key = ident(&match &sub {
            Some(x) => format!("{label}_{x}"),
            None => label.clone(),
        });
        if let Some(i) = self.d.participants.iter().position(|p| p.id == key) {
            return i;
        }
        self.d.participants.push(Participant {
            id: key,
            label,
            sub,
        });
        self.d.participants.len() - 1
    }

    fn hop_lane(&mut self, hop: &str, o: &Map<String, Value>) -> usize {
        let sub = instance(o).or_else(|| s(o, "generation").map(str::to_string));
        self.lane(hop.replace('_', " "), sub)
    }

    fn time_of(&mut self, hop: &str) -> Option<Duration> {
        let nth = match self.seen.iter_mut().find(|(h, _)| h == hop) {
            Some((_, c)) => {
                *c += 1;
                *c - 1
            }
            None => {
                self.seen.push((hop.to_string(), 1));
                0
            }
        };
        self.timing.and_then(|t| t.of(hop, nth))
    }

    fn arrow(&mut self, from: usize, to: usize, label: &str, kind: ArrowKind) {
        self.d.items.push(Item::Arrow {
            from,
            to,
            label: wrap(label, LABEL_COLUMNS),
            kind,
        });
    }

    /// Draws one chain of hops entered from `client` with `entry`; returns the lane that
    /// answered and whether it refused.
    fn chain(
        &mut self,
        client: usize,
        entry: &str,
        kind: ArrowKind,
        hops: &[Value],
    ) -> (usize, bool) {
        let mut prev = client;
        let mut feeder = client;
        let mut line = entry.to_string();
        let mut answer = (client, false);
        let count = hops.len();
        for (i, h) in hops.iter().enumerate() {
            let Some(o) = h.as_object() else { continue };
            let hop = s(o, "hop").unwrap_or("hop");
            let lane = self.hop_lane(hop, o);
            if hop == "db" {
                // A query is a call from the hop before, not a step of the chain: its arrow
                // carries the query, and the chain goes on from that hop.
                let label = s(o, "query").unwrap_or("query");
                self.arrow(prev, lane, label, ArrowKind::Request);
                let lines = note_lines(hop, o)
                    .iter()
                    .flat_map(|x| wrap(x, NOTE_COLUMNS))
                    .collect();
                self.d.items.push(Item::Note {
                    over: lane,
                    lines,
                    refused: s(o, "error").is_some(),
                });
                continue;
            }
            let got = received(hop, o, &line);
            if lane != prev {
                let label = if prev == client { entry } else { got.as_str() };
                let k = if prev == client {
                    kind
                } else {
                    ArrowKind::Request
                };
                self.arrow(prev, lane, label, k);
                feeder = prev;
            } else if i > 0 && feeder != lane {
                // The same hop again (a second request, e.g. after a redirect the router
                // followed): its own arrow from the hop that fed it before.
                self.arrow(feeder, lane, &got, ArrowKind::Request);
            }
            if s(o, "method").is_some() {
                line = got.split("  (host").next().unwrap_or(&got).to_string();
            }
            let is_refusal = refused(o, i + 1 == count);
            let mut lines: Vec<String> = note_lines(hop, o)
                .iter()
                .flat_map(|x| wrap(x, NOTE_COLUMNS))
                .collect();
            if is_refusal {
                if let Some(first) = lines.first_mut() {
                    *first = format!("✗ {first}");
                } else {
                    lines.push("✗ refused".into());
                }
            }
            if let Some(t) = self.time_of(hop) {
                lines.push(format!("t+{}", ms(t)));
            }
            self.d.items.push(Item::Note {
                over: lane,
                lines,
                refused: is_refusal,
            });
            for r in o
                .get("redirects_followed")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                self.arrow(
                    lane,
                    lane,
                    &format!("↪ followed redirect {r}"),
                    ArrowKind::Redirect,
                );
            }
            if is_refusal || !answer.1 {
                answer = (lane, is_refusal);
            }
            prev = lane;
        }
        answer
    }
}

impl Diagram {
    /// The diagram of one step's trace document (see the module docs).
    pub fn from_doc(doc: &Value, timing: Option<&Timing>) -> Diagram {
        let mut b = Builder {
            d: Diagram {
                participants: vec![],
                items: vec![],
            },
            timing,
            seen: vec![],
        };
        let empty = Map::new();
        let req = doc
            .get("request")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let navs = doc
            .pointer("/browser/navigations")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty());
        let client_name = if navs.is_some() { "browser" } else { "client" };
        let client = b.lane(client_name.into(), None);
        let faults: Vec<String> = doc
            .get("faults")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|f| format!("fault {f}"))
            .collect();
        if !faults.is_empty() {
            let lines = faults.iter().flat_map(|f| wrap(f, NOTE_COLUMNS)).collect();
            b.d.items.push(Item::Note {
                over: client,
                lines,
                refused: false,
            });
        }
        let request_line = format!(
            "{} {}",
            s(req, "method").unwrap_or("GET"),
            s(req, "url").unwrap_or("?")
        );
        if let Some(navs) = navs {
            for (i, nav) in navs.iter().enumerate() {
                let Some(o) = nav.as_object() else { continue };
                let because = s(o, "because").unwrap_or("");
                b.d.items
                    .push(Item::Divider(format!("navigation {}: {because}", i + 1)));
                let mut entry = format!(
                    "{} {}",
                    s(o, "method").unwrap_or("GET"),
                    s(o, "url").unwrap_or("?")
                );
                if let Some(c) = s(o, "cookies_sent") {
                    let _ = write!(entry, "\ncookie: {c}");
                }
                let hops = o
                    .get("hops")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let (lane, refusal) = b.chain(client, &entry, ArrowKind::Navigation, &hops);
                let status = n(o, "status").unwrap_or(0);
                let mut label = match s(o, "location") {
                    Some(l) => format!("{status} Location: {l}"),
                    None => format!("{status}"),
                };
                for c in o
                    .get("cookies_set")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(c) = c.as_str() {
                        let _ = write!(label, "\nset-cookie: {c}");
                    }
                }
                let kind = if s(o, "location").is_some() {
                    ArrowKind::Redirect
                } else if refusal || status >= 400 {
                    ArrowKind::Refusal
                } else {
                    ArrowKind::Reply
                };
                if lane != client {
                    b.arrow(lane, client, &label, kind);
                }
            }
            if let Some(st) = doc.pointer("/browser/stopped").and_then(Value::as_str) {
                b.d.items.push(Item::Note {
                    over: client,
                    lines: wrap(&format!("stopped: {st}"), NOTE_COLUMNS),
                    refused: true,
                });
            }
        } else {
            let hops = doc
                .get("hops")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut entry = request_line;
            if let Some(via) = s(req, "via").filter(|v| *v != "edge") {
                let _ = write!(entry, "  ({via})");
            }
            let (lane, refusal) = b.chain(client, &entry, ArrowKind::Request, &hops);
            if let Some(resp) = doc.get("response").and_then(Value::as_object) {
                let mut label = reply_label(resp);
                if refusal {
                    label = format!("✗ {label}");
                }
                if let Some(t) = timing.and_then(|t| t.total) {
                    let _ = write!(label, "  ({})", ms(t));
                }
                let status = n(resp, "status").unwrap_or(0);
                let kind = if refusal || status >= 400 {
                    ArrowKind::Refusal
                } else if (300..400).contains(&status) {
                    ArrowKind::Redirect
                } else {
                    ArrowKind::Reply
                };
                // With no hop traced, the answer is a note on the client.
                if lane != client {
                    b.arrow(lane, client, &label, kind);
                } else {
                    b.d.items.push(Item::Note {
                        over: client,
                        lines: wrap(&format!("answer {label}"), NOTE_COLUMNS),
                        refused: kind == ArrowKind::Refusal,
                    });
                }
            }
        }
        let mut tail = Vec::new();
        if let Some(ws) = doc.get("websocket").and_then(Value::as_object) {
            let got: Vec<&str> = ws
                .get("received")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            tail.push(format!(
                "websocket received [{}], close {}",
                got.join(", "),
                ws.get("close_code")
                    .map_or("none".into(), |c| c.to_string())
            ));
        }
        if let Some(sse) = doc.get("sse").and_then(Value::as_object) {
            let count = sse
                .get("events")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            tail.push(format!(
                "sse: {count} events; first before release: {}",
                sse.get("first_event_before_release")
                    .unwrap_or(&Value::Null)
            ));
        }
        let client_error = doc.get("client_error").and_then(Value::as_str);
        if let Some(e) = client_error {
            tail.push(format!("✗ client: {e}"));
        }
        if !tail.is_empty() {
            b.d.items.push(Item::Note {
                over: client,
                lines: tail.iter().flat_map(|t| wrap(t, NOTE_COLUMNS)).collect(),
                refused: client_error.is_some(),
            });
        }
        b.d
    }

    /// The diagram as Mermaid `sequenceDiagram` source (renders as is in GitHub Markdown inside a
    /// ```` ```mermaid ```` block).
    pub fn mermaid(&self) -> String {
        let mut o = String::from("sequenceDiagram\n");
        for p in &self.participants {
            let label = match &p.sub {
                Some(x) => format!("{} {x}", p.label),
                None => p.label.clone(),
            };
            let _ = writeln!(o, "    participant {} as {}", p.id, mermaid_text(&label));
        }
        let id = |i: usize| self.participants[i].id.as_str();
        for it in &self.items {
            match it {
                Item::Arrow {
                    from,
                    to,
                    label,
                    kind,
                } => {
                    let arrow = match kind {
                        ArrowKind::Request | ArrowKind::Navigation => "->>",
                        ArrowKind::Reply | ArrowKind::Redirect => "-->>",
                        ArrowKind::Refusal => "--x",
                    };
                    let text = label.iter().map(|l| mermaid_text(l)).collect::<Vec<_>>();
                    let _ = writeln!(
                        o,
                        "    {}{arrow}{}: {}",
                        id(*from),
                        id(*to),
                        text.join("<br/>")
                    );
                }
                Item::Note { over, lines, .. } => {
                    let text = lines.iter().map(|l| mermaid_text(l)).collect::<Vec<_>>();
                    let _ = writeln!(o, "    Note over {}: {}", id(*over), text.join("<br/>"));
                }
                Item::Divider(t) => {
                    let last = self.participants.len().saturating_sub(1);
                    let span = if last == 0 {
                        id(0).to_string()
                    } else {
                        format!("{},{}", id(0), id(last))
                    };
                    let _ = writeln!(o, "    Note over {span}: {}", mermaid_text(t));
                }
            }
        }
        o
    }
}

/// Text safe inside a Mermaid label: `#`, `;`, `<` and `>` as Mermaid's entity codes.
fn mermaid_text(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '#' => o.push_str("#35;"),
            ';' => o.push_str("#59;"),
            '<' => o.push_str("#60;"),
            '>' => o.push_str("#62;"),
            '\n' | '\r' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// Escapes text for XML/HTML content and attributes.
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

// The SVG's geometry: one monospace font whose advance is taken as 0.6 em, so widths are known
// without measuring text.
const FONT: f64 = 12.0;
const CHAR_W: f64 = FONT * 0.6;
const LINE_H: f64 = 15.0;
const MARGIN: f64 = 16.0;
const HEAD_H: f64 = 40.0;
const MIN_GAP: f64 = 120.0;

fn text_w(lines: &[String]) -> f64 {
    lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) as f64 * CHAR_W
}

impl Diagram {
    /// Column centres, from the widths of the boxes, notes and labels between them.
    fn columns(&self) -> (Vec<f64>, f64) {
        let count = self.participants.len();
        let heads: Vec<f64> = self
            .participants
            .iter()
            .map(|p| {
                let w = p
                    .label
                    .chars()
                    .count()
                    .max(p.sub.as_ref().map_or(0, |x| x.chars().count()));
                w as f64 * CHAR_W + 20.0
            })
            .collect();
        // gaps[i]: distance from column i to column i + 1; edges: half-widths out at both ends.
        let mut gaps: Vec<f64> = (0..count.saturating_sub(1))
            .map(|i| ((heads[i] + heads[i + 1]) / 2.0 + 24.0).max(MIN_GAP))
            .collect();
        let mut left = heads.first().map_or(0.0, |h| h / 2.0);
        let mut right = heads.last().map_or(0.0, |h| h / 2.0);
        for it in &self.items {
            match it {
                Item::Arrow {
                    from, to, label, ..
                } if from != to => {
                    let (lo, hi) = ((*from).min(*to), (*from).max(*to));
                    let need = text_w(label) + 24.0;
                    let have: f64 = gaps[lo..hi].iter().sum();
                    if have < need {
                        let add = (need - have) / (hi - lo) as f64;
                        gaps[lo..hi].iter_mut().for_each(|g| *g += add);
                    }
                }
                Item::Arrow { from, label, .. } => {
                    let need = text_w(label) + 44.0;
                    match gaps.get_mut(*from) {
                        Some(g) => *g = g.max(need),
                        None => right = right.max(need),
                    }
                }
                Item::Note { over, lines, .. } => {
                    let half = (text_w(lines) + 16.0) / 2.0 + 8.0;
                    if *over == 0 {
                        left = left.max(half);
                    } else {
                        gaps[*over - 1] = gaps[*over - 1].max(half + 8.0);
                    }
                    match gaps.get_mut(*over) {
                        Some(g) => *g = g.max(half + 8.0),
                        None => right = right.max(half),
                    }
                }
                Item::Divider(_) => {}
            }
        }
        let mut xs = Vec::with_capacity(count);
        let mut x = MARGIN + left;
        for i in 0..count {
            xs.push(x);
            if let Some(g) = gaps.get(i) {
                x += g;
            }
        }
        let mut width = x + right + MARGIN;
        for it in &self.items {
            if let Item::Divider(t) = it {
                width = width.max(t.chars().count() as f64 * CHAR_W + 2.0 * MARGIN + 16.0);
            }
        }
        (xs, width)
    }

    /// The diagram as a self-contained SVG document (its own styles; no fonts, links or script).
    /// `title` becomes the SVG's `<title>`.
    pub fn svg(&self, title: &str) -> String {
        let (xs, width) = self.columns();
        let mut body = String::new();
        let mut y = MARGIN + HEAD_H + 14.0;
        for it in &self.items {
            match it {
                Item::Arrow {
                    from,
                    to,
                    label,
                    kind,
                } => {
                    let class = match kind {
                        ArrowKind::Request => "req",
                        ArrowKind::Reply => "rep",
                        ArrowKind::Refusal => "ref",
                        ArrowKind::Redirect => "rdr",
                        ArrowKind::Navigation => "nav",
                    };
                    let (x1, x2) = (xs[*from], xs[*to]);
                    let lines_h = label.len() as f64 * LINE_H;
                    let _ = write!(body, "<g class=\"arrow {class}\">");
                    if from == to {
                        // A loop on the lane, its label to the right.
                        for (i, l) in label.iter().enumerate() {
                            let _ = write!(
                                body,
                                "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                                x1 + 34.0,
                                y + 12.0 + i as f64 * LINE_H,
                                xml_escape(l)
                            );
                        }
                        let top = y + 4.0;
                        let bottom = top + lines_h.max(LINE_H) + 6.0;
                        let _ = write!(
                            body,
                            "<path class=\"line\" d=\"M{x1:.1},{top:.1} H{:.1} V{bottom:.1} H{:.1}\"/>",
                            x1 + 28.0,
                            x1 + 6.0
                        );
                        let _ = write!(body, "{}", head(x1, bottom, -1.0, *kind));
                        body.push_str("</g>");
                        y = bottom + 14.0;
                        continue;
                    }
                    let mid = (x1 + x2) / 2.0;
                    for (i, l) in label.iter().enumerate() {
                        let _ = write!(
                            body,
                            "<text class=\"label\" x=\"{mid:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                            y + 11.0 + i as f64 * LINE_H,
                            xml_escape(l)
                        );
                    }
                    let ay = y + lines_h + 6.0;
                    let dir = if x2 > x1 { 1.0 } else { -1.0 };
                    let _ = write!(
                        body,
                        "<line class=\"line\" x1=\"{x1:.1}\" y1=\"{ay:.1}\" x2=\"{:.1}\" y2=\"{ay:.1}\"/>",
                        x2 - dir * 2.0
                    );
                    let _ = write!(body, "{}", head(x2, ay, dir, *kind));
                    body.push_str("</g>");
                    y = ay + 14.0;
                }
                Item::Note {
                    over,
                    lines,
                    refused,
                } => {
                    let w = text_w(lines) + 16.0;
                    let h = lines.len() as f64 * LINE_H + 10.0;
                    let x = xs[*over] - w / 2.0;
                    let _ = write!(
                        body,
                        "<g class=\"note{}\"><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" rx=\"3\"/>",
                        if *refused { " refused" } else { "" }
                    );
                    for (i, l) in lines.iter().enumerate() {
                        let _ = write!(
                            body,
                            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                            x + 8.0,
                            y + 16.0 + i as f64 * LINE_H,
                            xml_escape(l)
                        );
                    }
                    body.push_str("</g>");
                    y += h + 10.0;
                }
                Item::Divider(t) => {
                    let _ = write!(
                        body,
                        "<g class=\"divider\"><line x1=\"{MARGIN}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text></g>",
                        y + 4.0,
                        width - MARGIN,
                        y + 4.0,
                        MARGIN + 4.0,
                        y + 18.0,
                        xml_escape(t)
                    );
                    y += 28.0;
                }
            }
        }
        let height = y + MARGIN;
        let mut o = String::new();
        let _ = write!(
            o,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"seq\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\">\n<title>{}</title>\n",
            xml_escape(title)
        );
        o.push_str(SVG_STYLE);
        let _ = writeln!(
            o,
            "<rect class=\"bg\" x=\"0\" y=\"0\" width=\"{width:.0}\" height=\"{height:.0}\"/>"
        );
        for (p, x) in self.participants.iter().zip(&xs) {
            let w = p
                .label
                .chars()
                .count()
                .max(p.sub.as_ref().map_or(0, |s| s.chars().count())) as f64
                * CHAR_W
                + 20.0;
            let _ = write!(
                o,
                "<g class=\"participant\" data-participant=\"{}\"><line class=\"life\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/><rect x=\"{:.1}\" y=\"{MARGIN}\" width=\"{w:.1}\" height=\"{HEAD_H}\" rx=\"4\"/>",
                xml_escape(&p.id),
                MARGIN + HEAD_H,
                height - MARGIN,
                x - w / 2.0
            );
            let (ly, sy) = if p.sub.is_some() {
                (MARGIN + 17.0, MARGIN + 32.0)
            } else {
                (MARGIN + 24.0, 0.0)
            };
            let _ = write!(
                o,
                "<text class=\"name\" x=\"{x:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\">{}</text>",
                xml_escape(&p.label)
            );
            if let Some(sub) = &p.sub {
                let _ = write!(
                    o,
                    "<text class=\"sub\" x=\"{x:.1}\" y=\"{sy:.1}\" text-anchor=\"middle\">{}</text>",
                    xml_escape(sub)
                );
            }
            o.push_str("</g>\n");
        }
        o.push_str(&body);
        o.push_str("\n</svg>\n");
        o
    }
}

/// An arrowhead at (`x`, `y`) pointing in `dir` (±1 along x): filled, or a cross for a refusal.
fn head(x: f64, y: f64, dir: f64, kind: ArrowKind) -> String {
    if kind == ArrowKind::Refusal {
        let c = x - dir * 6.0;
        return format!(
            "<path class=\"x\" d=\"M{:.1},{:.1} L{:.1},{:.1} M{:.1},{:.1} L{:.1},{:.1}\"/>",
            c - 5.0,
            y - 5.0,
            c + 5.0,
            y + 5.0,
            c - 5.0,
            y + 5.0,
            c + 5.0,
            y - 5.0
        );
    }
    let back = x - dir * 9.0;
    format!(
        "<path class=\"head\" d=\"M{x:.1},{y:.1} L{back:.1},{:.1} L{back:.1},{:.1} Z\"/>",
        y - 4.5,
        y + 4.5
    )
}

/// The SVG's own styles (scoped by the `seq` class, so several diagrams share a page).
const SVG_STYLE: &str = "<style>
.seq text{font-family:ui-monospace,'DejaVu Sans Mono',Menlo,Consolas,monospace;font-size:12px;fill:#1f2328}
.seq .bg{fill:#ffffff}
.seq .participant rect{fill:#eef3fb;stroke:#5b7bb4;stroke-width:1.2}
.seq .participant .name{font-weight:bold}
.seq .participant .sub{fill:#57606a;font-size:11px}
.seq .life{stroke:#9aa6b2;stroke-dasharray:4 4}
.seq .line{stroke:#1f2328;stroke-width:1.3;fill:none}
.seq .head{fill:#1f2328}
.seq .rep .line{stroke-dasharray:6 4}
.seq .ref .line{stroke:#c62828;stroke-dasharray:6 4}
.seq .ref text{fill:#c62828;font-weight:bold}
.seq .x{stroke:#c62828;stroke-width:2}
.seq .rdr .line{stroke:#a15c00;stroke-dasharray:6 4}
.seq .rdr .head{fill:#a15c00}
.seq .rdr text{fill:#a15c00}
.seq .nav .line{stroke:#1d5fbf;stroke-width:2}
.seq .nav .head{fill:#1d5fbf}
.seq .nav text{fill:#1d5fbf;font-weight:bold}
.seq .note rect{fill:#fff8c5;stroke:#d4a72c}
.seq .note.refused rect{fill:#ffebe9;stroke:#c62828}
.seq .divider line{stroke:#5b7bb4;stroke-width:1}
.seq .divider text{font-weight:bold;fill:#1d5fbf}
</style>
";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused_doc() -> Value {
        json!({
            "request": {"method": "GET", "url": "https://nope.machines.iterate.town/x", "via": "edge"},
            "hops": [
                {"hop": "edge", "method": "GET", "url": "https://nope.machines.iterate.town/x",
                 "route": "*.iterate.town/*", "decision": "forwarded to the OS router"},
                {"hop": "router", "generation": "v0", "hostname": "nope.machines.iterate.town",
                 "host_source": "url", "outcome": "refused: machine_not_found", "status": 404}
            ],
            "response": {"status": 404, "headers": ["content-type: application/json"],
                         "body": {"error": "machine_not_found"}, "body_bytes": 29, "truncated": false}
        })
    }

    #[test]
    fn participants_are_the_hops_present_and_the_refusal_is_marked() {
        let d = Diagram::from_doc(&refused_doc(), None);
        let names: Vec<_> = d.participants.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(names, ["client", "edge", "router_v0"]);
        let last = d.items.last().unwrap();
        assert_eq!(
            last,
            &Item::Arrow {
                from: 2,
                to: 0,
                label: vec!["✗ 404 machine_not_found".into()],
                kind: ArrowKind::Refusal
            }
        );
        assert!(d.items.iter().any(|i| matches!(
            i,
            Item::Note {
                over: 2,
                refused: true,
                ..
            }
        )));
        let m = d.mermaid();
        assert!(
            m.starts_with("sequenceDiagram\n    participant client as client\n"),
            "{m}"
        );
        assert!(
            m.contains("    router_v0--xclient: ✗ 404 machine_not_found\n"),
            "{m}"
        );
    }

    #[test]
    fn an_unknown_hop_is_a_participant_with_its_fields() {
        let doc = json!({
            "request": {"method": "GET", "url": "https://os.iterate.com/login", "via": "edge"},
            "hops": [
                {"hop": "edge", "method": "GET", "url": "https://os.iterate.com/login", "decision": "forwarded"},
                {"hop": "gatekeeper", "method": "GET", "path": "/login", "verdict": "let in",
                 "checks": ["cookie", "csrf"], "added_headers": ["x: y"]}
            ],
            "response": {"status": 200, "headers": [], "body": "", "body_bytes": 0, "truncated": false}
        });
        let d = Diagram::from_doc(&doc, None);
        assert_eq!(d.participants[2].label, "gatekeeper");
        let note = d.items.iter().find_map(|i| match i {
            Item::Note { over: 2, lines, .. } => Some(lines.clone()),
            _ => None,
        });
        assert_eq!(
            note.unwrap(),
            ["verdict: let in", "checks: cookie", "checks: csrf"]
        );
        assert!(d.mermaid().contains("edge->>gatekeeper: GET /login\n"));
    }

    #[test]
    fn browser_navigations_and_redirects_are_their_own_arrows() {
        let doc = json!({
            "request": {"method": "GET", "url": "https://misha.iterate.app/", "via": "browser"},
            "hops": [],
            "browser": {"navigations": [
                {"method": "GET", "url": "https://misha.iterate.app/", "status": 301,
                 "location": "https://misha.iterate.town/", "because": "start",
                 "hops": [{"hop": "edge", "method": "GET", "url": "https://misha.iterate.app/", "decision": "forwarded"},
                          {"hop": "router", "generation": "v2", "hostname": "misha.iterate.app",
                           "outcome": "redirect (not the canonical host)", "status": 301}]},
                {"method": "GET", "url": "https://misha.iterate.town/", "status": 200, "because": "redirect 301",
                 "hops": [{"hop": "edge", "method": "GET", "url": "https://misha.iterate.town/", "decision": "forwarded"}]}
            ]}
        });
        let d = Diagram::from_doc(&doc, None);
        assert_eq!(d.participants[0].id, "browser");
        let kinds: Vec<ArrowKind> = d
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Arrow { kind, .. } => Some(*kind),
                _ => None,
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ArrowKind::Navigation,
                ArrowKind::Request,
                ArrowKind::Redirect,
                ArrowKind::Navigation,
                ArrowKind::Reply
            ]
        );
        let dividers = d
            .items
            .iter()
            .filter(|i| matches!(i, Item::Divider(_)))
            .count();
        assert_eq!(dividers, 2);
    }

    #[test]
    fn times_are_shown_where_known() {
        let t = Timing {
            hops: vec![
                ("router".into(), Some(Duration::from_micros(1500))),
                ("edge".into(), None),
            ],
            total: Some(Duration::from_millis(3)),
        };
        let d = Diagram::from_doc(&refused_doc(), Some(&t));
        let m = d.mermaid();
        assert!(m.contains("Note over router_v0: ✗ host"), "{m}");
        assert!(m.contains("<br/>t+1.5 ms\n"), "{m}");
        assert!(m.contains("machine_not_found  (3.0 ms)\n"), "{m}");
        assert_eq!(
            m.matches("t+").count(),
            1,
            "the edge's time is not known: {m}"
        );
    }

    #[test]
    fn svg_is_well_formed_and_escaped() {
        let mut doc = refused_doc();
        doc["request"]["url"] = json!("https://a.iterate.town/?q=<script>&x=1");
        let svg = Diagram::from_doc(&doc, None).svg("t <1>");
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains("<title>t &lt;1&gt;</title>"));
        assert!(svg.contains("&lt;script&gt;&amp;x=1"));
        assert!(!svg.contains("<script"));
        assert_eq!(svg.matches("<g").count(), svg.matches("</g>").count());
        for id in ["client", "edge", "router_v0"] {
            assert!(svg.contains(&format!("data-participant=\"{id}\"")), "{id}");
        }
    }

    #[test]
    fn a_hop_seen_twice_gets_an_arrow_each_time() {
        let doc = json!({
            "request": {"method": "GET", "url": "https://a.iterate.town/start", "via": "edge"},
            "hops": [
                {"hop": "machine", "machine": "m", "method": "GET", "path": "/start", "status": 302},
                {"hop": "machine", "machine": "m", "method": "GET", "path": "/landing", "status": 200},
                {"hop": "app", "machine": "m", "port": 3000, "method": "GET", "path_and_query": "/start"},
                {"hop": "app", "machine": "m", "port": 3000, "method": "GET", "path_and_query": "/landing"}
            ],
            "response": {"status": 200, "headers": [], "body": "", "body_bytes": 0, "truncated": false}
        });
        let m = Diagram::from_doc(&doc, None).mermaid();
        assert!(
            m.contains("client->>machine_m: GET https://a.iterate.town/start\n"),
            "{m}"
        );
        assert!(m.contains("client->>machine_m: GET /landing\n"), "{m}");
        assert!(m.contains("machine_m->>app_m_3000: GET /start\n"), "{m}");
        assert!(m.contains("machine_m->>app_m_3000: GET /landing\n"), "{m}");
    }

    #[test]
    fn mermaid_text_cannot_end_a_statement() {
        assert_eq!(mermaid_text("a;b #c <d>\ne"), "a#59;b #35;c #60;d#62; e");
    }

    #[test]
    fn wrap_prefers_spaces_then_separators() {
        assert_eq!(wrap("aaaa bbbb cccc", 9), ["aaaa bbbb", "cccc"]);
        assert_eq!(wrap("/abc/defgh/ij", 8), ["/abc/", "defgh/ij"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
    }
}
