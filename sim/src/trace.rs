//! The hop trace: what every hop received and decided, keyed per request.
//!
//! Correlation: the edge gives every request an id and sends it down the chain in
//! [`TRACE_HEADER`] (the one header the simulator adds on every hop, like a `traceparent`). Hops
//! record events under that id; the header itself is never shown in a trace. A direct request to a
//! machine may carry its own id.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::model::ParsedTarget;

/// The correlation header.
pub const TRACE_HEADER: &str = "x-sim-trace-id";

/// Serializes header pairs as `name: value` lines (readable in snapshots).
pub fn header_lines<S: serde::Serializer>(h: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(h.len()))?;
    for (k, v) in h {
        seq.serialize_element(&format!("{k}: {v}"))?;
    }
    seq.end()
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Reads back what [`header_lines`] wrote.
pub fn header_lines_de<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<(String, String)>, D::Error> {
    let lines = Vec::<String>::deserialize(d)?;
    Ok(lines
        .into_iter()
        .map(|l| match l.split_once(": ") {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l, String::new()),
        })
        .collect())
}

/// Headers a trace never shows (correlation only).
pub fn is_hidden_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(TRACE_HEADER)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EdgeEvent {
    pub method: String,
    pub url: String,
    /// The worker route that matched, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    pub decision: String,
    /// Over TLS: the SNI, the certificate the edge presented, and the protocol version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    /// Headers the edge added towards the OS router.
    #[serde(serialize_with = "header_lines", skip_serializing_if = "Vec::is_empty")]
    pub added_headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MachineRef {
    pub id: String,
    pub project: String,
    pub state: String,
    pub provider: String,
    pub external_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RouterEvent {
    pub generation: String,
    pub hostname: String,
    pub host_source: String,
    /// The host matcher that matched (first in configuration order), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parsed: Option<ParsedTarget>,
    /// V2+: the target's canonical hostname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canonical_host: Option<String>,
    /// V1+: the session's user as the router saw it (`none` without a session).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// V1+: the membership check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
    /// V4+: the custom domain whose project the host is under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_domain: Option<String>,
    /// V6: the resolution cache's answer (hit, miss, waited for an in-flight lookup, not stored).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache: Vec<String>,
    /// V4+: why a step decided as it did where the outcome alone does not say (B1, B2).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The platform's record of the machine chosen (`machine_record`: in a trace document
    /// `machine` is always a machine id, docs/trace.md).
    #[serde(rename = "machine_record", skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineRef>,
    /// V5+: the project's `defaultPort` and the port the target header means.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_port: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_header: Option<String>,
    /// Names of the request headers forwarded (sorted), without the target header.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forwarded_headers: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub websocket: bool,
    /// Redirects followed inside the router (fetch's default `redirect: "follow"`, O4).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redirects_followed: Vec<String>,
    pub outcome: String,
    pub status: u16,
    /// Response headers dropped or collapsed by the router (e.g. repeated Set-Cookie in V0, B7).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub response_header_notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RouterEvent {
    /// An event with nothing decided yet.
    pub fn new(generation: &str) -> RouterEvent {
        RouterEvent {
            generation: generation.into(),
            hostname: String::new(),
            host_source: String::new(),
            matched: None,
            parsed: None,
            canonical_host: None,
            user: None,
            authorization: None,
            custom_domain: None,
            cache: vec![],
            notes: vec![],
            machine: None,
            effective_port: None,
            provider_url: None,
            target_header: None,
            forwarded_headers: vec![],
            websocket: false,
            redirects_followed: vec![],
            outcome: String::new(),
            status: 0,
            response_header_notes: vec![],
            error: None,
        }
    }
}

/// The OS worker's middleware (V1+): the host it routes on, the session it found, and who
/// handles the request.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerEvent {
    pub host: String,
    pub host_source: String,
    /// `alice (session sess-0001)`, `none`, or why a cookie named no session.
    pub session: String,
    /// Why the ingress router does or does not take the request (`shouldHandle…`).
    pub ingress: String,
    /// `ingress router`, `control plane`, or `ingress router, then control plane` (it fell
    /// through).
    pub handled_by: String,
    /// V6: the isolate that served the request (`1 of 2`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolate: Option<String>,
}

/// One query to the platform database (V4+, `crate::db`): which query, its SQL and parameters,
/// what it returned, how long it held its connection slot, or the error it failed with.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DbEvent {
    /// The query's name (`getProjectByCustomDomain`…) and the function that issues it.
    pub query: String,
    pub caller: String,
    pub sql: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
    /// The rows returned, one line each.
    pub rows: Vec<String>,
    /// The connection slots in use while it ran, of those open to non-superusers.
    pub slots: String,
    /// How long it held its slot (the world's `[db] latency_ms`).
    pub took_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The control plane (the OS worker's own routes and app): what it decided.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ControlPlaneEvent {
    pub method: String,
    pub host: String,
    pub path: String,
    /// The route that answered (`bridge-start (W5)`, `exchange-token`, `login`, `app`…).
    pub route: String,
    /// `alice`, or `none`.
    pub user: String,
    /// What it checked and did, in order (tokens issued and consumed, statements run…).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<String>,
    /// Cookies set: `name (value) domain path flags`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cookies_set: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
    pub outcome: String,
    pub status: u16,
}

impl ControlPlaneEvent {
    pub fn new(method: &str, host: &str, path: &str, route: &str, user: &str) -> Self {
        ControlPlaneEvent {
            method: method.into(),
            host: host.into(),
            path: path.into(),
            route: route.into(),
            user: user.into(),
            decisions: vec![],
            cookies_set: vec![],
            redirect: None,
            outcome: String::new(),
            status: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProviderEvent {
    pub provider: String,
    pub request: String,
    pub decision: String,
    #[serde(serialize_with = "header_lines", skip_serializing_if = "Vec::is_empty")]
    pub added_headers: Vec<(String, String)>,
    pub status: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MachineEvent {
    pub machine: String,
    pub method: String,
    pub path: String,
    pub target_header: Option<String>,
    pub target_port: Option<u16>,
    pub target_form: Option<String>,
    pub upstream: Option<String>,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub upgraded: bool,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub completed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppEvent {
    pub machine: String,
    pub port: u16,
    pub kind: String,
    pub method: String,
    pub path_and_query: String,
    #[serde(serialize_with = "header_lines", deserialize_with = "header_lines_de")]
    pub headers: Vec<(String, String)>,
    pub body_bytes: u64,
}

/// The events a machine run on its own (in a container) prints, one JSON line each:
/// `{"trace_id": …, "event": {"hop": "machine" | "app", …}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct RemoteLine {
    pub trace_id: String,
    pub event: RemoteEvent,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "hop", rename_all = "snake_case")]
pub enum RemoteEvent {
    Machine(MachineEvent),
    App(AppEvent),
}

impl From<RemoteEvent> for Event {
    fn from(e: RemoteEvent) -> Event {
        match e {
            RemoteEvent::Machine(m) => Event::Machine(m),
            RemoteEvent::App(a) => Event::App(a),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "hop", rename_all = "snake_case")]
pub enum Event {
    Edge(EdgeEvent),
    Worker(WorkerEvent),
    Router(Box<RouterEvent>),
    ControlPlane(Box<ControlPlaneEvent>),
    Db(Box<DbEvent>),
    Provider(ProviderEvent),
    Machine(MachineEvent),
    App(AppEvent),
}

impl Event {
    pub fn hop(&self) -> &'static str {
        match self {
            Event::Edge(_) => "edge",
            Event::Worker(_) => "worker",
            Event::Router(_) => "router",
            Event::ControlPlane(_) => "control_plane",
            Event::Db(_) => "db",
            Event::Provider(_) => "provider",
            Event::Machine(_) => "machine",
            Event::App(_) => "app",
        }
    }

    /// One line for logs.
    pub fn summary(&self) -> String {
        match self {
            Event::Edge(e) => format!(
                "{} {} route={} → {}",
                e.method,
                e.url,
                e.route.as_deref().unwrap_or("-"),
                e.decision
            ),
            Event::Router(r) => format!(
                "host={} matched={} target={} machine={} url={} header={} → {} {}",
                r.hostname,
                r.matched.as_deref().unwrap_or("-"),
                r.parsed
                    .as_ref()
                    .map(|p| format!("{:?}:{}:{}", p.kind, p.id, p.target_port))
                    .unwrap_or_else(|| "-".into()),
                r.machine
                    .as_ref()
                    .map(|m| format!("{}({})", m.id, m.state))
                    .unwrap_or_else(|| "-".into()),
                r.provider_url.as_deref().unwrap_or("-"),
                r.target_header.as_deref().unwrap_or("-"),
                r.status,
                r.outcome
            ),
            Event::Worker(w) => format!(
                "host={} ({}) session={} → {}",
                w.host, w.host_source, w.session, w.handled_by
            ),
            Event::ControlPlane(c) => format!(
                "{} {}{} [{}] user={} → {} {}",
                c.method, c.host, c.path, c.route, c.user, c.status, c.outcome
            ),
            Event::Db(d) => format!(
                "{} {:?} → {} rows{}",
                d.query,
                d.params,
                d.rows.len(),
                d.error
                    .as_ref()
                    .map(|e| format!(" error: {e}"))
                    .unwrap_or_default()
            ),
            Event::Provider(p) => format!("{} {} → {}", p.provider, p.request, p.decision),
            Event::Machine(m) => format!(
                "{} {} {} target={} port={} → {}{}",
                m.machine,
                m.method,
                m.path,
                m.target_header.as_deref().unwrap_or("-"),
                m.target_port
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into()),
                m.status,
                m.error
                    .as_ref()
                    .map(|e| format!(" {e}"))
                    .unwrap_or_default()
            ),
            Event::App(a) => format!(
                "{}:{} ({}) {} {}",
                a.machine, a.port, a.kind, a.method, a.path_and_query
            ),
        }
    }
}

#[derive(Default)]
struct Inner {
    events: HashMap<String, Vec<Event>>,
    done: HashMap<String, bool>,
    /// When each id was issued by [`TraceStore::next_id`] (the client is about to send).
    opened: HashMap<String, std::time::Instant>,
    /// Per id, in record order: each event's time since its id was issued, where known.
    times: HashMap<String, Vec<Option<Duration>>>,
    /// With `log_events`: the events of each request not logged yet (a hop records once the
    /// answer came back, so the innermost hop records first; they are logged in chain order once
    /// the request is done) and the requests already logged.
    log_pending: HashMap<String, Vec<Event>>,
    logged: std::collections::HashSet<String>,
    /// Connections announced by a client before its TLS handshake, by the client's address: a
    /// handshake the edge refuses has no request (and no trace header) to carry the id.
    connections: HashMap<std::net::SocketAddr, String>,
}

/// All events of a world, per request id.
#[derive(Default)]
pub struct TraceStore {
    inner: Mutex<Inner>,
    changed: Notify,
    next: std::sync::atomic::AtomicU64,
    /// Log every event as one line (for `ingress-sim up`).
    pub log_events: std::sync::atomic::AtomicBool,
    /// Print every event as one JSON line on stdout, `{"trace_id":…,"event":{…}}` (a machine run on
    /// its own, e.g. in a container, reports its hops this way).
    pub print_json: std::sync::atomic::AtomicBool,
}

impl TraceStore {
    /// A fresh request id: `r1`, `r2`, ...
    pub fn next_id(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let id = format!("r{n}");
        if let Ok(mut g) = self.inner.lock() {
            g.opened.insert(id.clone(), std::time::Instant::now());
        }
        id
    }

    /// A client about to start a TLS handshake from `client` says which request id it is for.
    pub fn announce_connection(&self, client: std::net::SocketAddr, id: &str) {
        if let Ok(mut g) = self.inner.lock() {
            g.connections.insert(client, id.to_string());
        }
    }

    /// The id announced for a connection from `peer` (taken), if any.
    pub fn connection_id(&self, peer: std::net::SocketAddr) -> Option<String> {
        self.inner.lock().ok()?.connections.remove(&peer)
    }

    /// How many ids [`TraceStore::next_id`] has issued (the last one is `r<issued>`).
    pub fn issued(&self) -> u64 {
        self.next.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The ids issued after [`TraceStore::issued`] returned `before`, oldest first.
    pub fn ids_since(&self, before: u64) -> Vec<String> {
        (before + 1..=self.issued())
            .map(|n| format!("r{n}"))
            .collect()
    }

    /// Each event of `id` as (hop, time from the id's issue to the event's record), in record
    /// order; the time is `None` for an event recorded by [`TraceStore::record_untimed`] or
    /// under an id this store did not issue. A hop records once it has decided (a forwarding hop:
    /// once the answer's head came back), so the time is when that hop was done.
    pub fn hop_times(&self, id: &str) -> Vec<(&'static str, Option<Duration>)> {
        let Ok(g) = self.inner.lock() else {
            return Vec::new();
        };
        let events = g.events.get(id).map(Vec::as_slice).unwrap_or_default();
        let times = g.times.get(id).map(Vec::as_slice).unwrap_or_default();
        events
            .iter()
            .enumerate()
            .map(|(i, e)| (e.hop(), times.get(i).copied().flatten()))
            .collect()
    }

    /// As [`TraceStore::record`], for an event whose time here says nothing about the hop (read
    /// back later from a container's log).
    pub fn record_untimed(&self, id: &str, ev: Event) {
        self.record_at(id, ev, false);
    }

    pub fn record(&self, id: &str, ev: Event) {
        self.record_at(id, ev, true);
    }

    fn record_at(&self, id: &str, ev: Event, timed: bool) {
        if self.log_events.load(std::sync::atomic::Ordering::Relaxed) {
            self.log_event(id, &ev);
        }
        if self.print_json.load(std::sync::atomic::Ordering::Relaxed) {
            let line = serde_json::json!({"trace_id": id, "event": &ev});
            println!("{line}");
        }
        if let Ok(mut g) = self.inner.lock() {
            let at = g
                .opened
                .get(id)
                .filter(|_| timed)
                .map(std::time::Instant::elapsed);
            g.times.entry(id.to_string()).or_default().push(at);
            g.events.entry(id.to_string()).or_default().push(ev);
        }
        self.changed.notify_waiters();
    }

    /// Marks the request finished at the edge (response body complete or cut).
    pub fn finish(&self, id: &str) {
        let mut flush = Vec::new();
        if let Ok(mut g) = self.inner.lock() {
            g.done.insert(id.to_string(), true);
            if self.log_events.load(std::sync::atomic::Ordering::Relaxed) {
                flush = Self::take_pending(&mut g, id);
            }
        }
        log_lines(id, &flush);
        self.changed.notify_waiters();
    }

    /// `ingress-sim up`'s log: a request's hops are logged in chain order (edge first) when it is
    /// done: at the edge's [`TraceStore::finish`], or, for a request sent straight to a machine
    /// (an id the edge did not issue), when the machine proxy records it. A hop that records after
    /// that (a tunnel that closes later) is logged at once.
    fn log_event(&self, id: &str, ev: &Event) {
        let flush = {
            let Ok(mut g) = self.inner.lock() else {
                return;
            };
            if g.logged.contains(id) {
                vec![ev.clone()]
            } else {
                g.log_pending
                    .entry(id.to_string())
                    .or_default()
                    .push(ev.clone());
                let direct = matches!(ev, Event::Machine(_)) && !g.opened.contains_key(id);
                if direct {
                    Self::take_pending(&mut g, id)
                } else {
                    Vec::new()
                }
            }
        };
        log_lines(id, &flush);
    }

    fn take_pending(g: &mut Inner, id: &str) -> Vec<Event> {
        g.logged.insert(id.to_string());
        chain_order(g.log_pending.remove(id).unwrap_or_default())
    }

    pub fn events(&self, id: &str) -> Vec<Event> {
        self.inner
            .lock()
            .map(|g| g.events.get(id).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Waits until `pred(finished_at_edge, events)` holds or the deadline passes; returns the
    /// events either way.
    async fn wait_until(
        &self,
        id: &str,
        deadline: Duration,
        pred: impl Fn(bool, &[Event]) -> bool,
    ) -> Vec<Event> {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (done, evs) = match self.inner.lock() {
                Ok(g) => (
                    g.done.get(id).copied().unwrap_or(false),
                    g.events.get(id).cloned().unwrap_or_default(),
                ),
                Err(_) => return Vec::new(),
            };
            if pred(done, &evs) {
                return evs;
            }
            if tokio::time::timeout_at(end, notified).await.is_err() {
                return self.events(id);
            }
        }
    }

    /// Waits until the request is finished at the edge and `extra` holds.
    pub async fn wait_finished(
        &self,
        id: &str,
        deadline: Duration,
        extra: impl Fn(&[Event]) -> bool,
    ) -> Vec<Event> {
        self.wait_until(id, deadline, |done, evs| done && extra(evs))
            .await
    }

    /// Waits until `cond` holds on the events of `id` (direct machine requests have no edge to
    /// finish them).
    pub async fn wait_for(
        &self,
        id: &str,
        deadline: Duration,
        cond: impl Fn(&[Event]) -> bool,
    ) -> Vec<Event> {
        self.wait_until(id, deadline, |_, evs| cond(evs)).await
    }
}

fn log_lines(id: &str, events: &[Event]) {
    for ev in events {
        tracing::info!(target: "ingress_sim::hop", "[{id}] {:<8} {}", ev.hop(), ev.summary());
    }
}

fn hop_rank(e: &Event) -> u8 {
    match e {
        Event::Edge(_) => 0,
        Event::Worker(_) => 1,
        Event::Router(_) => 2,
        Event::Db(_) => 3,
        Event::ControlPlane(_) => 4,
        Event::Provider(_) => 5,
        Event::Machine(_) => 6,
        Event::App(_) => 7,
    }
}

/// Chain order: edge, worker, router, database (the queries of the worker and the router), control
/// plane, provider(s), machine, app; record order within a hop.
pub fn chain_order(mut events: Vec<Event>) -> Vec<Event> {
    events.sort_by_key(hop_rank);
    events
}

/// Response headers as a trace shows them: sorted, without `Date` and the correlation header.
pub fn shown_headers(h: &http::HeaderMap) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = h
        .iter()
        .filter(|(k, _)| *k != http::header::DATE && !is_hidden_header(k.as_str()))
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Replaces ephemeral ports and other unstable values with stable tokens.
#[derive(Debug, Default, Clone)]
pub struct Redactor {
    /// (port, token), e.g. (40123, "mach_1:8080").
    ports: Vec<(u16, String)>,
}

impl Redactor {
    pub fn add_port(&mut self, port: u16, token: impl Into<String>) {
        self.ports.push((port, token.into()));
    }

    /// `127.0.0.1:40123` → `127.0.0.1:{mach_1:8080}`; also bare `HostPort` values in JSON.
    pub fn redact_str(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (port, token) in &self.ports {
            let needle = format!(":{port}");
            if out.contains(&needle) {
                out = replace_port(&out, &needle, &format!(":{{{token}}}"));
            }
            if out == port.to_string() {
                out = format!("{{{token}}}");
            }
        }
        out
    }

    pub fn redact_json(&self, v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) => *s = self.redact_str(s),
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| self.redact_json(x)),
            serde_json::Value::Object(o) => o.values_mut().for_each(|x| self.redact_json(x)),
            serde_json::Value::Number(n) => {
                if let Some(p) = n.as_u64()
                    && let Some((_, token)) =
                        self.ports.iter().find(|(port, _)| u64::from(*port) == p)
                {
                    *v = serde_json::Value::String(format!("{{{token}}}"));
                }
            }
            _ => {}
        }
    }
}

/// Replaces `needle` (`:<port>`) only where it is not followed by another digit.
fn replace_port(s: &str, needle: &str, with: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(needle) {
        let after = &rest[i + needle.len()..];
        out.push_str(&rest[..i]);
        if after.starts_with(|c: char| c.is_ascii_digit()) {
            out.push_str(needle);
        } else {
            out.push_str(with);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_ports_not_prefixes() {
        let mut r = Redactor::default();
        r.add_port(4012, "edge");
        assert_eq!(
            r.redact_str("http://127.0.0.1:4012/x"),
            "http://127.0.0.1:{edge}/x"
        );
        assert_eq!(r.redact_str("127.0.0.1:40123"), "127.0.0.1:40123");
        assert_eq!(r.redact_str("4012"), "{edge}");
        let mut v = serde_json::json!({"HostPort": 4012, "x": ["a:4012"]});
        r.redact_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"HostPort": "{edge}", "x": ["a:{edge}"]})
        );
    }

    fn provider_event() -> Event {
        Event::Provider(ProviderEvent {
            provider: "fly".into(),
            request: "GET /".into(),
            decision: "ok".into(),
            added_headers: vec![],
            status: Some(200),
        })
    }

    #[test]
    fn hop_times_are_known_only_for_events_recorded_live_under_issued_ids() {
        let s = TraceStore::default();
        let before = s.issued();
        let id = s.next_id();
        let ev = provider_event;
        s.record(&id, ev());
        s.record_untimed(&id, ev());
        s.record("not-issued", ev());
        assert_eq!(s.ids_since(before), std::slice::from_ref(&id));
        let t = s.hop_times(&id);
        assert_eq!(t.len(), 2);
        assert!(t[0].1.is_some() && t[1].1.is_none(), "{t:?}");
        assert_eq!(s.hop_times("not-issued")[0].1, None);
    }

    /// Writes what a subscriber prints into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn hops_logged(out: &Captured) -> Vec<String> {
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter_map(|l| l.split_once("] ").map(|(_, rest)| rest))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }

    #[test]
    fn up_logs_hops_in_chain_order() {
        let out = Captured::default();
        let w = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let s = TraceStore::default();
            s.log_events
                .store(true, std::sync::atomic::Ordering::Relaxed);
            // Through the edge: each hop records once the answer came back, innermost first.
            let id = s.next_id();
            s.record(&id, machine_event());
            s.record(&id, provider_event());
            s.record(&id, edge_event());
            assert!(
                hops_logged(&out).is_empty(),
                "logged before the request was done"
            );
            s.finish(&id);
            assert_eq!(hops_logged(&out), ["edge", "provider", "machine"]);
            // A hop recorded after that is logged at once.
            s.record(&id, provider_event());
            assert_eq!(hops_logged(&out).len(), 4);
            // Straight to a machine (an id the edge did not issue): logged when the machine
            // proxy records, after the app did.
            s.record("direct-1", app_event());
            s.record("direct-1", machine_event());
            assert_eq!(hops_logged(&out)[4..], ["machine", "app"]);
        });
    }

    fn edge_event() -> Event {
        Event::Edge(EdgeEvent {
            method: "GET".into(),
            url: "https://x.example/".into(),
            route: None,
            decision: "forwarded to the OS router".into(),
            added_headers: vec![],
            tls: None,
        })
    }

    fn machine_event() -> Event {
        Event::Machine(MachineEvent {
            machine: "mach_1".into(),
            method: "GET".into(),
            path: "/".into(),
            target_header: None,
            target_port: Some(3000),
            target_form: None,
            upstream: None,
            status: 200,
            error: None,
            upgraded: false,
            bytes_in: 0,
            bytes_out: 0,
            completed: true,
        })
    }

    fn app_event() -> Event {
        Event::App(AppEvent {
            machine: "mach_1".into(),
            port: 3000,
            kind: "echo".into(),
            method: "GET".into(),
            path_and_query: "/".into(),
            headers: vec![],
            body_bytes: 0,
        })
    }

    #[tokio::test]
    async fn wait_finished_returns_on_finish() {
        let s = std::sync::Arc::new(TraceStore::default());
        let id = s.next_id();
        let s2 = s.clone();
        let id2 = id.clone();
        tokio::spawn(async move {
            s2.record(&id2, provider_event());
            s2.finish(&id2);
        });
        let evs = s.wait_finished(&id, Duration::from_secs(5), |_| true).await;
        assert_eq!(evs.len(), 1);
    }
}
