//! An app on a machine, as a world file declares it: its port, what it does, which loopback it binds.

use serde::{Deserialize, Serialize};

/// What an app on a machine does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AppKind {
    /// Returns what it received: method, path, query, headers, body length and sha256.
    Echo,
    /// WebSocket echo: text `t` → `echo:t`, binary as is, close with the same code.
    Websocket,
    /// Server-sent events: `count` events. With `gated`, the first is sent at once and the rest
    /// wait for a release from the harness (proving the first arrived before the end); otherwise
    /// one every `interval_ms`.
    Sse {
        count: u32,
        interval_ms: u64,
        gated: bool,
    },
    /// Answers after `delay_ms`; with `stall`, never answers.
    Slow { delay_ms: u64, stall: bool },
    /// Fixed status and body.
    Status { status: u16, body: String },
    /// `302` (or `status`) with `Location: location` for every path but `location` itself,
    /// which answers `200 landed at <location>`.
    Redirect { location: String, status: u16 },
    /// Two `Set-Cookie` headers.
    Cookies,
    /// A streamed body of `bytes` bytes (or `?bytes=N`).
    Large { bytes: u64 },
    /// Promises `Content-Length: 1000`, sends 10 bytes, resets the connection.
    ResetMidBody,
}

impl AppKind {
    pub fn name(&self) -> &'static str {
        match self {
            AppKind::Echo => "echo",
            AppKind::Websocket => "websocket",
            AppKind::Sse { .. } => "sse",
            AppKind::Slow { .. } => "slow",
            AppKind::Status { .. } => "status",
            AppKind::Redirect { .. } => "redirect",
            AppKind::Cookies => "cookies",
            AppKind::Large { .. } => "large",
            AppKind::ResetMidBody => "reset_mid_body",
        }
    }
}

/// Which loopback an app binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bind {
    /// `127.0.0.1`
    #[default]
    Ipv4,
    /// `::1` only (as Vite and Node do for `localhost`).
    Ipv6,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawApp")]
pub struct AppSpec {
    pub port: u16,
    #[serde(flatten)]
    pub kind: AppKind,
    pub bind: Bind,
}

/// An app as written in the file: one flat table; which fields apply depends on `kind`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    port: u16,
    kind: String,
    #[serde(default)]
    bind: Bind,
    count: Option<u32>,
    interval_ms: Option<u64>,
    gated: Option<bool>,
    delay_ms: Option<u64>,
    stall: Option<bool>,
    status: Option<u16>,
    body: Option<String>,
    location: Option<String>,
    bytes: Option<u64>,
}

impl TryFrom<RawApp> for AppSpec {
    type Error = String;

    fn try_from(r: RawApp) -> Result<AppSpec, String> {
        let given: Vec<&str> = [
            ("count", r.count.is_some()),
            ("interval_ms", r.interval_ms.is_some()),
            ("gated", r.gated.is_some()),
            ("delay_ms", r.delay_ms.is_some()),
            ("stall", r.stall.is_some()),
            ("status", r.status.is_some()),
            ("body", r.body.is_some()),
            ("location", r.location.is_some()),
            ("bytes", r.bytes.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, set)| set.then_some(n))
        .collect();
        let (kind, allowed): (AppKind, &[&str]) = match r.kind.as_str() {
            "echo" => (AppKind::Echo, &[]),
            "websocket" => (AppKind::Websocket, &[]),
            "cookies" => (AppKind::Cookies, &[]),
            "reset_mid_body" => (AppKind::ResetMidBody, &[]),
            "sse" => (
                AppKind::Sse {
                    count: r.count.unwrap_or(3),
                    interval_ms: r.interval_ms.unwrap_or(100),
                    gated: r.gated.unwrap_or(false),
                },
                &["count", "interval_ms", "gated"],
            ),
            "slow" => (
                AppKind::Slow {
                    delay_ms: r.delay_ms.unwrap_or(100),
                    stall: r.stall.unwrap_or(false),
                },
                &["delay_ms", "stall"],
            ),
            "status" => (
                AppKind::Status {
                    status: r.status.ok_or("kind \"status\" needs `status`")?,
                    body: r.body.clone().unwrap_or_default(),
                },
                &["status", "body"],
            ),
            "redirect" => (
                AppKind::Redirect {
                    location: r
                        .location
                        .clone()
                        .ok_or("kind \"redirect\" needs `location`")?,
                    status: r.status.unwrap_or(302),
                },
                &["location", "status"],
            ),
            "large" => (
                AppKind::Large {
                    bytes: r.bytes.unwrap_or(1024 * 1024),
                },
                &["bytes"],
            ),
            other => {
                return Err(format!(
                    "unknown app kind {other:?}: expected one of echo, websocket, sse, slow, status, redirect, cookies, large, reset_mid_body"
                ));
            }
        };
        if let Some(bad) = given.iter().find(|g| !allowed.contains(g)) {
            return Err(format!(
                "field `{bad}` does not apply to app kind {:?}",
                r.kind
            ));
        }
        if let AppKind::Status { status, .. } | AppKind::Redirect { status, .. } = &kind
            && !(100..=999).contains(status)
        {
            return Err(format!("status {status} is not an HTTP status"));
        }
        Ok(AppSpec {
            port: r.port,
            kind,
            bind: r.bind,
        })
    }
}
