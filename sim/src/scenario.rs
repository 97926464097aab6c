//! Scenario files (`fixtures/scenarios/**/*.toml`): a world and steps to drive through it.
//!
//! ```toml
//! description = "project hostname reaches the app on 3000"
//! world = "default"                      # fixtures/worlds/default.toml
//!
//! [[steps]]                              # kind = "http" by default
//! url = "https://misha.iterate.town/hello?x=1"
//! method = "POST"                        # default GET
//! headers = [["content-type", "text/plain"]]
//! body = "hi"
//! faults = [{ fault = "app_down", machine = "mach_123", port = 3000 }]
//! expect = { status = 200, app = "mach_123:3000" }
//! ```
//!
//! Step kinds: `http` (default), `websocket` (`send`, `expect.messages`, `close_code`), `sse`
//! (`release = "mach_123:3002"` releases a gated SSE app after the first event; `expect.events`),
//! `browser`, `burst` (`count` identical requests at once; `expect.status_counts`,
//! `expect.db_queries`).
//! `direct = "mach_123"` sends the request straight to that machine's :8080 instead of the edge.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::Fault;

/// The most requests a burst sends (all at once, on loopback).
pub const MAX_BURST: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    #[default]
    Http,
    Websocket,
    Sse,
    /// A user's browser: navigations with a cookie jar, following redirects (`crate::browser`).
    Browser,
    /// `count` identical http requests at once; the document keeps the counts (statuses, router
    /// outcomes, database queries and failures, the slots' high-water mark), not each copy.
    Burst,
}

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

/// What a step checks besides its snapshot. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The JSON `error` code of the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `machine:port` of the app that must have answered (echo apps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Substring of the response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// JSON pointer → expected value, on the response body.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub json: BTreeMap<String, toml::Value>,
    /// Response header → expected values (all of them, in order).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Headers the app must have received (name → value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub app_headers: BTreeMap<String, String>,
    /// Headers the app must not have received.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_headers_absent: Vec<String>,
    /// The response body must end early (truncated, never a clean end).
    #[serde(default, skip_serializing_if = "is_default")]
    pub truncated: bool,
    /// Response body size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_bytes: Option<u64>,
    /// WebSocket: messages expected back, in order (`text` or `bin:<hex>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<String>,
    /// WebSocket: close code expected back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_code: Option<u16>,
    /// SSE: number of events expected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<usize>,
    /// Browser: the URL of the final page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_url: Option<String>,
    /// Browser: how many requests it made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub navigations: Option<usize>,
    /// Browser: the user the final page was served for (`none` for no session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `concurrent`: the copies' statuses, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<u16>,
    /// `burst`: how many requests got each status (`{ "200" = 20 }`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub status_counts: BTreeMap<String, u64>,
    /// `burst`: how many times each database query ran during the burst.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub db_queries: BTreeMap<String, u64>,
    /// The chain invariants this step is known to break, by router generation (`v4 = ["…"]`, or
    /// `all`): a reproduced bug whose hops disagree (B1 under V4). Exactly these must occur; any
    /// other violation still fails the step.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub violations: BTreeMap<String, Vec<String>>,
    /// The edge refuses the TLS handshake (no certificate covers the name): the client gets a
    /// fatal `handshake_failure` alert and no response.
    #[serde(default, skip_serializing_if = "is_default")]
    pub tls_refused: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(default, skip_serializing_if = "is_default")]
    pub kind: StepKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "get", skip_serializing_if = "is_get")]
    pub method: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Send straight to this machine's :8080 (with the headers given) instead of the edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<String>,
    /// Faults switched on before the step (they stay on for later steps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
    /// WebSocket: messages to send (`text` or `bin:<hex>`), then a close with `close_code`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub send: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_code: Option<u16>,
    /// SSE: `machine:port` of a gated SSE app to release after the first event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// HTTP: send this many identical copies at once (at least 2); the document lists each copy's
    /// answer, sorted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent: Option<usize>,
    /// Burst: how many identical requests to send at once (2..=200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// Browser: start signed in as this user at the control plane.
    #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
    pub as_user: Option<String>,
    /// Browser: fill in the control plane's sign-in form as this user when it shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    /// Browser: at most this many requests (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_navigations: Option<usize>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub expect: Expect,
}

fn get() -> String {
    "GET".into()
}
fn is_get(m: &String) -> bool {
    m == "GET"
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub description: String,
    /// A world name (`fixtures/worlds/<name>.toml`) or a path relative to the scenario file.
    pub world: String,
    /// Run the scenario once per router generation listed, each with its own snapshots
    /// (`<name>-<generation>-NN.snap`); empty: once, under the world's generation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generations: Vec<crate::model::Generation>,
    pub steps: Vec<Step>,
}

pub type ScenarioError = crate::fixture_file::FixtureError;

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = crate::fixture_file::read(path, "scenario")?;
        Scenario::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        crate::fixture_file::parse_located(text, path, Scenario::validate)
    }

    fn validate(&self) -> Result<(), String> {
        if self.steps.is_empty() {
            return Err("steps: a scenario needs at least one step".into());
        }
        for (i, st) in self.steps.iter().enumerate() {
            crate::client::PublicUrl::parse(&st.url).map_err(|e| format!("steps[{i}].url: {e}"))?;
            if http::Method::from_bytes(st.method.as_bytes()).is_err() {
                return Err(format!("steps[{i}].method: invalid method {:?}", st.method));
            }
            for (k, v) in &st.headers {
                if http::HeaderName::from_bytes(k.as_bytes()).is_err()
                    || http::HeaderValue::from_str(v).is_err()
                {
                    return Err(format!("steps[{i}].headers: invalid header {k:?}: {v:?}"));
                }
            }
            for (label, v) in [("release", &st.release), ("expect.app", &st.expect.app)] {
                if let Some(v) = v {
                    parse_app_ref(v).ok_or_else(|| {
                        format!("steps[{i}].{label}: expected \"machine:port\", got {v:?}")
                    })?;
                }
            }
            for m in st.send.iter().chain(st.expect.messages.iter()) {
                decode_message(m).map_err(|e| format!("steps[{i}]: {e}"))?;
            }
            match st.kind {
                StepKind::Http => {
                    if !st.send.is_empty() || st.close_code.is_some() {
                        return Err(format!(
                            "steps[{i}]: `send`/`close_code` need kind = \"websocket\""
                        ));
                    }
                }
                StepKind::Websocket => {
                    if st.body.is_some() {
                        return Err(format!(
                            "steps[{i}].body: a websocket step sends `send` messages"
                        ));
                    }
                }
                StepKind::Sse => {}
                StepKind::Burst => {
                    if !matches!(st.count, Some(2..=MAX_BURST)) {
                        return Err(format!(
                            "steps[{i}].count: a burst sends 2..={MAX_BURST} requests"
                        ));
                    }
                    if st.direct.is_some() || st.concurrent.is_some() {
                        return Err(format!(
                            "steps[{i}]: a burst goes through the edge (no `direct`, no `concurrent`)"
                        ));
                    }
                }
                StepKind::Browser => {
                    if st.direct.is_some() || !st.send.is_empty() {
                        return Err(format!(
                            "steps[{i}]: a browser step goes through the edge and sends no messages"
                        ));
                    }
                }
            }
            let browser_only = st.as_user.is_some()
                || st.login.is_some()
                || st.max_navigations.is_some()
                || st.expect.final_url.is_some()
                || st.expect.navigations.is_some()
                || st.expect.user.is_some();
            if browser_only && st.kind != StepKind::Browser {
                return Err(format!(
                    "steps[{i}]: `as`, `login`, `max_navigations` and `expect.final_url|navigations|user` need kind = \"browser\""
                ));
            }
            if let Some(n) = st.concurrent
                && (st.kind != StepKind::Http || !(2..=64).contains(&n))
            {
                return Err(format!(
                    "steps[{i}].concurrent: 2..=64 copies of an http step"
                ));
            }
            let burst_only = st.count.is_some()
                || !st.expect.status_counts.is_empty()
                || !st.expect.db_queries.is_empty();
            if burst_only && st.kind != StepKind::Burst {
                return Err(format!(
                    "steps[{i}]: `count` and `expect.status_counts|db_queries` need kind = \"burst\""
                ));
            }
            if st.release.is_some() && st.kind != StepKind::Sse {
                return Err(format!("steps[{i}].release: only for kind = \"sse\""));
            }
        }
        Ok(())
    }

    /// Resolves the world file: a bare name is `<worlds_dir>/<name>.toml`.
    pub fn world_path(&self, scenario_path: &Path, worlds_dir: &Path) -> PathBuf {
        if self.world.ends_with(".toml") {
            scenario_path
                .parent()
                .unwrap_or(Path::new("."))
                .join(&self.world)
        } else {
            worlds_dir.join(format!("{}.toml", self.world))
        }
    }

    /// Checks what only the world can tell: every machine a step names (`direct`, a fault,
    /// `release`, `expect.app`) exists, and an app fault's port has an app. `text` is the
    /// scenario's file, for line numbers; an unknown name gets a did-you-mean suggestion.
    pub fn check_against(
        &self,
        world: &crate::WorldSpec,
        text: &str,
        path: &Path,
    ) -> Result<(), ScenarioError> {
        let ids: Vec<&str> = world.machines.iter().map(|m| m.id.as_str()).collect();
        let unknown = |field: String, m: &str| {
            let hint = match crate::fixture_file::did_you_mean(m, ids.iter().copied()) {
                Some(s) => format!("; did you mean {s:?}?"),
                None => format!("; the world has {}", ids.join(", ")),
            };
            crate::fixture_file::FixtureError::invalid(
                text,
                path,
                &format!("{field}: no machine {m:?} in world {:?}{hint}", world.name),
            )
        };
        for (i, st) in self.steps.iter().enumerate() {
            if let Some(m) = &st.direct
                && world.machine(m).is_none()
            {
                return Err(unknown(format!("steps[{i}].direct"), m));
            }
            for (label, v) in [("release", &st.release), ("expect.app", &st.expect.app)] {
                if let Some((m, _)) = v.as_deref().and_then(parse_app_ref)
                    && world.machine(&m).is_none()
                {
                    return Err(unknown(format!("steps[{i}].{label}"), &m));
                }
            }
            for f in &st.faults {
                let Some((m, port)) = f.names() else {
                    continue;
                };
                let Some(spec) = world.machine(m) else {
                    return Err(unknown(format!("steps[{i}].faults"), m));
                };
                if let Some(p) = port
                    && !spec.apps.iter().any(|a| a.port == p)
                {
                    let ports: Vec<String> = spec.apps.iter().map(|a| a.port.to_string()).collect();
                    return Err(crate::fixture_file::FixtureError::invalid(
                        text,
                        path,
                        &format!(
                            "steps[{i}].faults: machine {m} has no app on port {p} (its apps: {})",
                            ports.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// TOML text of the scenario (used by `ingress-sim scenario new`).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}

/// Whether a `world` value (in a scenario or on the command line) is a name
/// (`fixtures/worlds/<name>.toml`) rather than a path: no `/`, and no `.toml` ending.
pub fn is_world_name(s: &str) -> bool {
    !s.is_empty() && !s.ends_with(".toml") && !s.contains('/') && !s.contains('\\')
}

/// The world file a command line's `--world` means: a path as given, or a name looked up as
/// `<dir>/<name>.toml` in each of `dirs` in turn. An unknown name is an error that lists the
/// worlds there are (or suggests the closest).
pub fn resolve_world_arg(arg: &str, dirs: &[PathBuf]) -> Result<PathBuf, String> {
    if !is_world_name(arg) {
        return Ok(PathBuf::from(arg));
    }
    if let Some(p) = dirs
        .iter()
        .map(|d| d.join(format!("{arg}.toml")))
        .find(|p| p.is_file())
    {
        return Ok(p);
    }
    let mut names: Vec<String> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|rd| rd.flatten())
        .filter_map(|e| {
            let p = e.path();
            if p.extension()? != "toml" {
                return None;
            }
            Some(p.file_stem()?.to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let mut msg = format!("--world {arg}: no {arg}.toml in {}", looked.join(" or "));
    match crate::fixture_file::did_you_mean(arg, names.iter().map(String::as_str)) {
        Some(s) => msg.push_str(&format!("; did you mean {s}?")),
        None if !names.is_empty() => msg.push_str(&format!("; worlds: {}", names.join(", "))),
        None => {}
    }
    Err(msg)
}

/// `mach_123:3000` → (machine, port).
pub fn parse_app_ref(s: &str) -> Option<(String, u16)> {
    let (m, p) = s.rsplit_once(':')?;
    Some((m.to_string(), proxy::target_host::parse_port(p)?))
}

/// A WebSocket message as written: `bin:<hex>` is binary, anything else is text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    Text(String),
    Binary(Vec<u8>),
}

pub fn decode_message(s: &str) -> Result<WsMessage, String> {
    match s.strip_prefix("bin:") {
        Some(hex) => {
            if hex.len() % 2 != 0 {
                return Err(format!("odd-length hex in {s:?}"));
            }
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map(WsMessage::Binary)
                .map_err(|_| format!("invalid hex in {s:?}"))
        }
        None => Ok(WsMessage::Text(s.to_string())),
    }
}

pub fn encode_message(m: &WsMessage) -> String {
    match m {
        WsMessage::Text(t) => t.clone(),
        WsMessage::Binary(b) => format!(
            "bin:{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_roundtrip() {
        let text = r#"
description = "d"
world = "default"
[[steps]]
url = "https://misha.iterate.town/"
expect = { status = 200, app = "mach_123:3000", json = { "/path" = "/" } }
[[steps]]
kind = "websocket"
url = "wss://3001__mach_123.machines.iterate.town/ws"
send = ["ping", "bin:00ff"]
close_code = 4001
expect = { messages = ["echo:ping", "bin:00ff"], close_code = 4001 }
"#;
        let s = Scenario::parse(text, Path::new("s.toml")).unwrap();
        assert_eq!(s.steps[1].kind, StepKind::Websocket);
        let again = Scenario::parse(&s.to_toml().unwrap(), Path::new("s.toml")).unwrap();
        assert_eq!(s, again);
    }

    #[test]
    fn errors_name_file_line_field() {
        let e = Scenario::parse("description = \"d\"\nworld = \"w\"\n[[steps]]\nurl = \"https://x.y/\"\nmethd = \"GET\"\n", Path::new("a/b.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("a/b.toml:5:1: unknown field `methd`"), "{e}");
        let e = Scenario::parse(
            "description = \"d\"\nworld = \"w\"\n[[steps]]\nurl = \"nope\"\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("a.toml:4:1: steps[0].url: "), "{e}");
        assert!(e.ends_with("(step 1, url)"), "{e}");
        let e = Scenario::parse(
            "description = \"d\"\nworld = \"w\"\nsteps = []\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("at least one step"), "{e}");
    }

    #[test]
    fn messages() {
        assert_eq!(
            decode_message("bin:00ff").unwrap(),
            WsMessage::Binary(vec![0, 255])
        );
        assert_eq!(decode_message("hi").unwrap(), WsMessage::Text("hi".into()));
        assert!(decode_message("bin:0").is_err());
        assert_eq!(encode_message(&WsMessage::Binary(vec![1, 2])), "bin:0102");
    }
}
