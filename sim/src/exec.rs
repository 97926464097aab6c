//! Runs one scenario step in a world and returns its trace document: the request, the faults,
//! every hop's decisions (in chain order), and the response, redacted to stable tokens.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::client::{self, ClientError};
use crate::model::Fault;
use crate::runtime::World;
use crate::scenario::{Step, StepKind, WsMessage, decode_message, encode_message, parse_app_ref};
use crate::trace::{Event, TRACE_HEADER, header_lines};

/// How long a step may take before it is reported as hung.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a reply that should come at once.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Bodies up to this size are shown whole; larger ones as size + sha256.
const SHOWN_BODY: usize = 4096;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RequestDoc {
    pub method: String,
    pub url: String,
    /// `edge`, or `direct <machine>:8080`.
    pub via: String,
    #[serde(serialize_with = "header_lines", skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResponseDoc {
    pub status: u16,
    #[serde(serialize_with = "header_lines")]
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
    pub body_bytes: u64,
    /// The body ended with an error instead of a clean end.
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WebSocketDoc {
    pub received: Vec<String>,
    pub close_code: Option<u16>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SseDoc {
    /// True when the first event arrived while the app still held the stream open.
    pub first_event_before_release: bool,
    pub events: Vec<String>,
}

/// Everything a step saw; serialized (and redacted) for snapshots and display.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepDoc {
    pub request: RequestDoc,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
    pub hops: Vec<Event>,
    pub response: Option<ResponseDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WebSocketDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sse: Option<SseDoc>,
    /// A browser step's navigations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub browser: Option<crate::browser::BrowserDoc>,
    /// A `concurrent` step's copies, sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub concurrent: Vec<CopyDoc>,
    /// A `burst` step's counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<BurstDoc>,
    /// A failure of the step itself (connection error, hang), not of the chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_error: Option<String>,
    /// What the step came to: status, the hop that refused, the error, what answered.
    pub outcome: crate::outcome::Outcome,
    /// The chain's invariants this trace breaks (hops that disagree); present only when one is.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invariant_violations: Vec<String>,
}

/// One copy of a `concurrent` step: its answer and the decisions behind it (without trace ids,
/// so that the sorted list is the same whichever copy won).
#[derive(Debug, Clone, Serialize, PartialEq, PartialOrd)]
pub struct CopyDoc {
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set_cookie: Vec<String>,
    pub body: String,
    /// The control plane's decisions (and the router's outcome) for this copy.
    pub decisions: Vec<String>,
}

impl StepDoc {
    /// A step's document before it runs: its request and faults.
    pub fn new(step: &Step) -> StepDoc {
        StepDoc {
            request: RequestDoc {
                method: step.method.clone(),
                url: step.url.clone(),
                via: step
                    .direct
                    .as_ref()
                    .map(|m| format!("direct {m}:8080"))
                    .unwrap_or_else(|| "edge".into()),
                headers: step.headers.clone(),
                body: step.body.clone(),
            },
            faults: step.faults.clone(),
            hops: vec![],
            response: None,
            websocket: None,
            sse: None,
            browser: None,
            concurrent: vec![],
            burst: None,
            client_error: None,
            outcome: crate::outcome::Outcome::default(),
            invariant_violations: vec![],
        }
    }

    /// Reads the outcome and checks the chain's invariants (once the step has run): the step's
    /// own hops, and each navigation's of a browser step (whose outcome is the last one's).
    pub fn conclude(&mut self) {
        use crate::outcome::{chain_violations, outcome};
        let response = self
            .response
            .as_ref()
            .map(|r| (r.status, r.body.get("error").and_then(|v| v.as_str())));
        let navigations = self.browser.as_ref().map(|b| b.navigations.as_slice());
        let deciding = match navigations.and_then(|n| n.last()) {
            Some(last) if self.hops.is_empty() => &last.hops,
            _ => &self.hops,
        };
        self.outcome = outcome(deciding, response, self.client_error.as_deref());
        let direct = self
            .request
            .via
            .strip_prefix("direct ")
            .and_then(|d| d.strip_suffix(":8080"));
        let mut violations = chain_violations(&self.hops, response.map(|(s, _)| s), direct);
        for (i, n) in navigations.unwrap_or_default().iter().enumerate() {
            for v in chain_violations(&n.hops, Some(n.status), None) {
                violations.push(format!("navigation {}: {v}", i + 1));
            }
        }
        self.invariant_violations = violations;
    }

    /// The trace as a redacted JSON value (ports → stable tokens).
    pub fn redacted(&self, world: &World) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        world.redactor().redact_json(&mut v);
        v
    }
}

pub use crate::trace::{chain_order, shown_headers};

/// A body for display: JSON as JSON, short text as text, anything else as size + sha256.
pub fn body_value(bytes: &[u8]) -> serde_json::Value {
    if bytes.is_empty() {
        return serde_json::Value::String(String::new());
    }
    if bytes.len() <= SHOWN_BODY * 4
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes)
        && (v.is_object() || v.is_array())
    {
        return v;
    }
    if bytes.len() <= SHOWN_BODY
        && let Ok(s) = std::str::from_utf8(bytes)
    {
        return serde_json::Value::String(s.to_string());
    }
    let digest = Sha256::digest(bytes);
    serde_json::json!({
        "bytes": bytes.len(),
        "sha256": digest.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    })
}

/// Applies the step's faults, runs it, and collects the trace, with its outcome and the chain
/// invariants it breaks.
pub async fn run_step(world: &World, step: &Step) -> StepDoc {
    let mut doc = run_step_hops(world, step).await;
    doc.conclude();
    doc
}

async fn run_step_hops(world: &World, step: &Step) -> StepDoc {
    let mut doc = StepDoc::new(step);
    for f in &step.faults {
        if let Err(e) = world.apply_fault(f).await {
            doc.client_error = Some(format!("fault not applied: {e}"));
            return doc;
        }
    }
    let addr = match &step.direct {
        None => world.addrs.edge,
        Some(m) => match world.machine(m) {
            Some(machine) => machine.public_addr(),
            None => {
                doc.client_error = Some(format!("direct: unknown machine {m:?}"));
                return doc;
            }
        },
    };
    let dial = |id: &str| dial_for(world, step, addr, id);
    if let Some(n) = step.concurrent {
        doc.request.via = format!("edge, {n} copies at once");
        return run_concurrent(world, &dial, step, n, doc).await;
    }
    if step.kind == StepKind::Burst {
        let n = step.count.unwrap_or(2);
        doc.request.via = format!("edge, a burst of {n} at once");
        return run_burst(world, &dial, step, n, doc).await;
    }
    if step.kind == StepKind::Browser {
        doc.request.via = "browser".into();
        let run = crate::browser::run(world, step);
        match tokio::time::timeout(STEP_TIMEOUT * 3, run).await {
            Err(_) => {
                doc.client_error = Some(format!(
                    "browser step did not finish within {}s",
                    STEP_TIMEOUT.as_secs() * 3
                ));
            }
            Ok(Err(e)) => doc.client_error = Some(e),
            Ok(Ok(run)) => {
                if let Some(p) = run.final_page {
                    doc.response = Some(ResponseDoc {
                        status: p.status,
                        headers: p.headers,
                        body: body_value(&p.body),
                        body_bytes: p.body.len() as u64,
                        truncated: p.truncated,
                    });
                }
                doc.browser = Some(run.doc);
            }
        }
        mask_random_headers(&mut doc);
        return doc;
    }
    let id = world.trace().next_id();
    let mut headers = step.headers.clone();
    headers.push((TRACE_HEADER.to_string(), id.clone()));
    let dial = dial(&id);
    let run = async {
        match step.kind {
            StepKind::Http => run_http(&dial, step, &headers, &mut doc).await,
            StepKind::Sse => run_sse(world, &dial, step, &headers, &mut doc).await,
            StepKind::Websocket => run_ws(&dial, step, &headers, &mut doc).await,
            // Handled above.
            StepKind::Browser | StepKind::Burst => {}
        }
    };
    if tokio::time::timeout(STEP_TIMEOUT, run).await.is_err() {
        doc.client_error = Some(format!(
            "step did not finish within {}s",
            STEP_TIMEOUT.as_secs()
        ));
    }
    let trace = world.trace();
    if step.direct.is_some() {
        trace
            .wait_for(&id, REPLY_TIMEOUT, |evs| {
                evs.iter().any(|e| matches!(e, Event::Machine(_)))
            })
            .await;
    } else {
        trace.wait_finished(&id, REPLY_TIMEOUT, |_| true).await;
    }
    world.settle().await;
    let events = trace.events(&id);
    doc.hops = chain_order(events);
    fold_echo_headers(&mut doc);
    mask_random_headers(&mut doc);
    doc
}

/// How a step reaches the chain: straight to a machine (plain HTTP), or to the edge, over TLS
/// when the URL is `https://`/`wss://` and the world has TLS on (the connection announced under
/// the request's trace id, so that a refused handshake is traced).
pub fn dial_for(world: &World, step: &Step, addr: std::net::SocketAddr, id: &str) -> client::Dial {
    let secure = step.url.starts_with("https://") || step.url.starts_with("wss://");
    if step.direct.is_some() || !secure || !world.tls_enabled() {
        return client::Dial::plain(addr);
    }
    client::Dial {
        addr: world.addrs.edge_tls,
        tls: Some(world.tls_client()),
        announce: Some((world.trace().clone(), id.to_string())),
    }
}

/// Sends `n` copies of an http step at once; each copy's answer and decisions, sorted.
async fn run_concurrent(
    world: &World,
    dial: &(dyn Fn(&str) -> client::Dial + Sync),
    step: &Step,
    n: usize,
    mut doc: StepDoc,
) -> StepDoc {
    let done = send_copies(world, dial, step, n).await;
    for (id, d) in done {
        let evs = world
            .trace()
            .wait_finished(&id, REPLY_TIMEOUT, |_| true)
            .await;
        let mut decisions = Vec::new();
        for e in chain_order(evs) {
            match e {
                Event::Router(r) if r.status == 0 => {
                    decisions.push(format!("router: {}", r.outcome))
                }
                Event::Router(r) => decisions.push(format!("router: {} {}", r.status, r.outcome)),
                Event::ControlPlane(c) => {
                    decisions.push(format!(
                        "control plane [{}]: {} {}",
                        c.route, c.status, c.outcome
                    ));
                    decisions.extend(c.decisions);
                }
                _ => {}
            }
        }
        let Some(r) = d.response else {
            doc.client_error = d.client_error;
            continue;
        };
        let header = |name: &str| -> Vec<String> {
            r.headers
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .collect()
        };
        doc.concurrent.push(CopyDoc {
            status: r.status,
            location: header("location").into_iter().next(),
            set_cookie: header("set-cookie"),
            body: match &r.body {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            decisions,
        });
    }
    doc.concurrent
        .sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    doc
}

/// Sends `n` copies of an http step at once, each with its own trace id.
async fn send_copies(
    world: &World,
    dial: &(dyn Fn(&str) -> client::Dial + Sync),
    step: &Step,
    n: usize,
) -> Vec<(String, StepDoc)> {
    let copies = (0..n).map(|_| {
        let id = world.trace().next_id();
        let mut headers = step.headers.clone();
        headers.push((TRACE_HEADER.to_string(), id.clone()));
        let dial = dial(&id);
        async move {
            let mut d = StepDoc::new(step);
            let _ =
                tokio::time::timeout(STEP_TIMEOUT, run_http(&dial, step, &headers, &mut d)).await;
            (id, d)
        }
    });
    futures_util::future::join_all(copies).await
}

/// What a burst did, in counts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BurstDoc {
    pub requests: usize,
    /// Status → how many requests got it.
    pub statuses: BTreeMap<u16, u64>,
    /// The router's outcome (with its error) → how many.
    pub router_outcomes: BTreeMap<String, u64>,
    /// The database during the burst: queries run by name, failures by error, the most slots in
    /// use at once, of those open to the application.
    pub db_queries: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub db_failures: BTreeMap<String, u64>,
    /// Only when queries hold their slot a while (`[db] latency_ms` > 0): without latency the
    /// most slots in use at once says how threads were scheduled, not what the model does, and
    /// would make the snapshot flaky.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots_high_water: Option<u32>,
    pub usable_slots: u32,
    /// V6: what the resolution cache answered, by kind (`hit`, `miss … stored`…).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cache: BTreeMap<String, u64>,
}

/// Sends `n` copies of an http step at once and counts what happened.
async fn run_burst(
    world: &World,
    dial: &(dyn Fn(&str) -> client::Dial + Sync),
    step: &Step,
    n: usize,
    mut doc: StepDoc,
) -> StepDoc {
    let db = world.db();
    let before = db.stats();
    db.reset_high_water();
    let done = send_copies(world, dial, step, n).await;
    let after = db.stats();
    let mut b = BurstDoc {
        requests: n,
        statuses: BTreeMap::new(),
        router_outcomes: BTreeMap::new(),
        db_queries: diff(&after.queries, &before.queries),
        db_failures: diff(&after.failures, &before.failures),
        slots_high_water: (db.latency_ms() > 0).then_some(after.slots_high_water),
        usable_slots: db.usable_slots(),
        cache: BTreeMap::new(),
    };
    for (id, d) in done {
        let evs = world
            .trace()
            .wait_finished(&id, REPLY_TIMEOUT, |_| true)
            .await;
        for e in evs {
            if let Event::Router(r) = e {
                let o = match &r.error {
                    Some(err) => format!("{} {} ({err})", r.status, r.outcome),
                    None => format!("{} {}", r.status, r.outcome),
                };
                *b.router_outcomes.entry(o).or_default() += 1;
                for c in &r.cache {
                    // `hit: key (…)` / `miss: key → …`: the kind and what followed the key.
                    let kind = c.split(':').next().unwrap_or("");
                    let tail = c
                        .split(" → ")
                        .nth(1)
                        .map(|t| t.split(',').next().unwrap_or(t));
                    let label = match tail {
                        Some(t) => format!("{kind} → {t}"),
                        None => kind.to_string(),
                    };
                    *b.cache.entry(label).or_default() += 1;
                }
            }
        }
        match d.response {
            Some(r) => *b.statuses.entry(r.status).or_default() += 1,
            None => doc.client_error = d.client_error,
        }
    }
    doc.burst = Some(b);
    doc
}

fn diff(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

/// Values that change on every run by design (the WebSocket handshake key is random).
const RANDOM_HEADERS: [&str; 1] = ["sec-websocket-key"];

fn mask_random_headers(doc: &mut StepDoc) {
    let navs = doc
        .browser
        .iter_mut()
        .flat_map(|b| b.navigations.iter_mut())
        .flat_map(|n| n.hops.iter_mut());
    for h in doc.hops.iter_mut().chain(navs) {
        if let Event::App(a) = h {
            for (k, v) in a.headers.iter_mut() {
                if RANDOM_HEADERS.contains(&k.as_str()) {
                    *v = "<random per handshake>".into();
                }
            }
        }
    }
}

/// An echo app's body repeats the headers it received, which the app hop already shows: say so
/// instead of repeating them (only when they are identical).
fn fold_echo_headers(doc: &mut StepDoc) {
    let Some(resp) = doc.response.as_mut() else {
        return;
    };
    let Some(app_headers) = doc.hops.iter().rev().find_map(|h| match h {
        Event::App(a) => Some(&a.headers),
        _ => None,
    }) else {
        return;
    };
    let Some(body_headers) = resp.body.get("headers") else {
        return;
    };
    let as_pairs: Option<Vec<(String, String)>> = body_headers.as_array().map(|a| {
        a.iter()
            .filter_map(|p| {
                Some((
                    p.get(0)?.as_str()?.to_string(),
                    p.get(1)?.as_str()?.to_string(),
                ))
            })
            .collect()
    });
    if as_pairs.as_ref() == Some(app_headers)
        && let Some(obj) = resp.body.as_object_mut()
    {
        obj.insert(
            "headers".into(),
            serde_json::Value::String("(as the app hop received them)".into()),
        );
    }
}

/// Reads the rest of a body into `buf`; true when it ended with an error (cut short).
async fn drain(body: &mut hyper::body::Incoming, buf: &mut Vec<u8>) -> bool {
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    buf.extend_from_slice(d);
                }
            }
            Err(_) => return true,
        }
    }
    false
}

async fn read_response(resp: http::Response<hyper::body::Incoming>) -> ResponseDoc {
    let status = resp.status().as_u16();
    let headers = shown_headers(resp.headers());
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let truncated = drain(&mut body, &mut buf).await;
    ResponseDoc {
        status,
        headers,
        body: body_value(&buf),
        body_bytes: buf.len() as u64,
        truncated,
    }
}

async fn run_http(
    dial: &client::Dial,
    step: &Step,
    headers: &[(String, String)],
    doc: &mut StepDoc,
) {
    let body = Bytes::from(step.body.clone().unwrap_or_default());
    match client::send_via(dial, &step.method, &step.url, headers, body).await {
        Ok(resp) => doc.response = Some(read_response(resp).await),
        Err(e) => doc.client_error = Some(e.to_string()),
    }
}

async fn run_sse(
    world: &World,
    dial: &client::Dial,
    step: &Step,
    headers: &[(String, String)],
    doc: &mut StepDoc,
) {
    let resp = match client::send_via(dial, &step.method, &step.url, headers, Bytes::new()).await {
        Ok(r) => r,
        Err(e) => {
            doc.client_error = Some(e.to_string());
            return;
        }
    };
    let status = resp.status().as_u16();
    let hdrs = shown_headers(resp.headers());
    let mut body = resp.into_body();
    let release = step.release.as_deref().and_then(parse_app_ref);
    let read = read_sse(&mut body, REPLY_TIMEOUT, async {
        if let Some((m, p)) = release {
            world.release(&m, p).await;
        }
    })
    .await;
    doc.sse = Some(SseDoc {
        first_event_before_release: read.first_event_before_release,
        events: read.events,
    });
    doc.response = Some(ResponseDoc {
        status,
        headers: hdrs,
        body: serde_json::Value::String(String::new()),
        body_bytes: read.bytes,
        truncated: read.truncated,
    });
}

/// What [`read_sse`] read from an event stream.
#[derive(Debug, PartialEq)]
struct SseRead {
    first_event_before_release: bool,
    /// Every event, as [`crate::client::SseEvent::summary`] gives it.
    events: Vec<String>,
    bytes: u64,
    truncated: bool,
}

/// Reads an event stream as the HTML standard parses it ([`crate::client::SseParser`]: CRLF, LF
/// or CR line ends, multi-line data): until the first whole event (within `first_within`), then
/// runs `release` (a gated app sends the rest only then), then reads to the end.
async fn read_sse<B>(
    body: &mut B,
    first_within: Duration,
    release: impl std::future::Future<Output = ()>,
) -> SseRead
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let mut parser = crate::client::SseParser::default();
    let mut events: Vec<String> = Vec::new();
    let mut bytes = 0u64;
    let mut truncated = false;
    let mut ended = false;
    let mut take = |d: &Bytes, events: &mut Vec<String>| {
        bytes += d.len() as u64;
        events.extend(parser.push(d).iter().map(|e| e.summary()));
    };
    let first = tokio::time::timeout(first_within, async {
        while events.is_empty() {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        take(d, &mut events);
                    }
                }
                Some(Err(_)) => {
                    truncated = true;
                    return false;
                }
                None => {
                    ended = true;
                    return false;
                }
            }
        }
        true
    })
    .await
    .unwrap_or(false);
    release.await;
    if !truncated && !ended {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        take(d, &mut events);
                    }
                }
                Err(_) => {
                    truncated = true;
                    break;
                }
            }
        }
    }
    SseRead {
        first_event_before_release: first,
        events,
        bytes,
        truncated,
    }
}

async fn run_ws(dial: &client::Dial, step: &Step, headers: &[(String, String)], doc: &mut StepDoc) {
    let (mut ws, resp) = match client::websocket_via(dial, &step.url, headers).await {
        Ok(pair) => pair,
        Err(ClientError::UpgradeRefused { status, body }) => {
            doc.response = Some(ResponseDoc {
                status,
                headers: vec![],
                body: body_value(body.as_bytes()),
                body_bytes: body.len() as u64,
                truncated: false,
            });
            return;
        }
        Err(e) => {
            doc.client_error = Some(e.to_string());
            return;
        }
    };
    let mut hm = http::HeaderMap::new();
    for (k, v) in resp.headers() {
        hm.append(k.clone(), v.clone());
    }
    // The accept key changes with every handshake's random key.
    hm.remove("sec-websocket-accept");
    doc.response = Some(ResponseDoc {
        status: resp.status().as_u16(),
        headers: shown_headers(&hm),
        body: serde_json::Value::String(String::new()),
        body_bytes: 0,
        truncated: false,
    });
    let mut received = Vec::new();
    for m in &step.send {
        let msg = match decode_message(m) {
            Ok(WsMessage::Text(t)) => Message::Text(t.into()),
            Ok(WsMessage::Binary(b)) => Message::Binary(b.into()),
            Err(e) => {
                doc.client_error = Some(e);
                return;
            }
        };
        if let Err(e) = ws.send(msg).await {
            doc.client_error = Some(format!("send: {e}"));
            break;
        }
        match tokio::time::timeout(REPLY_TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                received.push(encode_message(&WsMessage::Text(t.to_string())))
            }
            Ok(Some(Ok(Message::Binary(b)))) => {
                received.push(encode_message(&WsMessage::Binary(b.to_vec())))
            }
            Ok(Some(Ok(other))) => received.push(format!("<{other:?}>")),
            Ok(Some(Err(e))) => {
                received.push(format!("<error: {e}>"));
                break;
            }
            Ok(None) => {
                received.push("<closed>".into());
                break;
            }
            Err(_) => {
                received.push("<no reply>".into());
                break;
            }
        }
    }
    let mut close_code = None;
    let code = step.close_code.unwrap_or(1000);
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: "scenario done".into(),
    };
    if ws.close(Some(frame)).await.is_ok() {
        let _ = tokio::time::timeout(REPLY_TIMEOUT, async {
            while let Some(msg) = ws.next().await {
                match msg {
                    Ok(Message::Close(Some(f))) => {
                        close_code = Some(u16::from(f.code));
                        break;
                    }
                    Ok(Message::Close(None)) => break,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        })
        .await;
    }
    doc.websocket = Some(WebSocketDoc {
        received,
        close_code,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    type Frames = std::vec::IntoIter<Result<hyper::body::Frame<Bytes>, std::io::Error>>;

    fn body(
        chunks: &[&'static [u8]],
    ) -> http_body_util::StreamBody<futures_util::stream::Iter<Frames>> {
        let frames: Vec<_> = chunks
            .iter()
            .map(|c| Ok(hyper::body::Frame::data(Bytes::from_static(c))))
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames))
    }

    /// CRLF line ends (one split across reads) and an event with two data lines: splitting on
    /// "\n\n" would see no first event at all and one run-together event at the end.
    #[tokio::test]
    async fn sse_is_read_as_the_standard_parses_it() {
        let released = std::sync::atomic::AtomicBool::new(false);
        let mut b = body(&[
            b"id: 1\r\nevent: tick\r\ndata: line one\r\ndata: line two\r",
            b"\n\r\n",
            b": comment\r\ndata: 2\r\n\r\n",
        ]);
        let read = read_sse(&mut b, Duration::from_secs(5), async {
            released.store(true, std::sync::atomic::Ordering::SeqCst);
        })
        .await;
        assert_eq!(
            read,
            SseRead {
                first_event_before_release: true,
                events: vec![
                    "id: 1 | event: tick | data: line one | data: line two".into(),
                    "data: 2".into(),
                ],
                bytes: 76,
                truncated: false,
            }
        );
        assert!(released.load(std::sync::atomic::Ordering::SeqCst));
    }

    /// A stream that ends before a whole event: no first event, nothing dispatched.
    #[tokio::test]
    async fn a_partial_sse_event_is_not_an_event() {
        let mut b = body(&[b"data: half"]);
        let read = read_sse(&mut b, Duration::from_secs(5), async {}).await;
        assert!(!read.first_event_before_release);
        assert!(read.events.is_empty());
        assert_eq!(read.bytes, 10);
    }
}
