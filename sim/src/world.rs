//! The world file: edge routes, host matchers, projects, machines and their apps (TOML).
//!
//! Errors name the file, the line and column, and the field (see [`WorldError`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Machine states the platform knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineState {
    Starting,
    Active,
    Detached,
    Stopped,
    Archived,
}

impl MachineState {
    pub fn as_str(self) -> &'static str {
        match self {
            MachineState::Starting => "starting",
            MachineState::Active => "active",
            MachineState::Detached => "detached",
            MachineState::Stopped => "stopped",
            MachineState::Archived => "archived",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Docker,
    Fly,
    Daytona,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Docker => "docker",
            ProviderKind::Fly => "fly",
            ProviderKind::Daytona => "daytona",
        }
    }
}

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

/// Provider metadata as the platform stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderMetadata {
    /// Docker: `metadata.docker.containerRef` (else the external id is the container name).
    #[serde(default)]
    pub container_ref: Option<String>,
    /// Docker: publish 8080 on a host port (false reproduces `No host port mapped for 8080`).
    #[serde(default = "yes")]
    pub publish_8080: bool,
    /// Daytona: `metadata.daytona.sandboxId` (else the external id).
    #[serde(default)]
    pub sandbox_id: Option<String>,
    /// Daytona: a public sandbox needs no preview token.
    #[serde(default = "yes")]
    pub public: bool,
    /// Daytona: the preview token of a private sandbox.
    #[serde(default)]
    pub preview_token: Option<String>,
    /// Fly: region reported by the edge.
    #[serde(default)]
    pub region: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for ProviderMetadata {
    /// The same values as an empty `metadata = {}` table.
    fn default() -> Self {
        ProviderMetadata {
            container_ref: None,
            publish_8080: true,
            sandbox_id: None,
            public: true,
            preview_token: None,
            region: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineSpec {
    pub id: String,
    pub project: String,
    pub state: MachineState,
    pub provider: ProviderKind,
    /// The provider's id for the machine; absent reproduces `503 machine_unavailable`.
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub metadata: ProviderMetadata,
    #[serde(default)]
    pub apps: Vec<AppSpec>,
    /// Run the machine proxy with this shared secret (the OS side of the hardening is not
    /// modelled in V0, so requests through the chain get 401 from the machine).
    #[serde(default)]
    pub proxy_secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSpec {
    pub slug: String,
}

/// Which generation of the OS router to model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouterGeneration {
    /// "step 0": matchers, `.machines.` form, no auth.
    #[default]
    V0,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSpec {
    /// `OS_WORKER_ROUTES`, comma-separated Cloudflare route patterns.
    #[serde(rename = "OS_WORKER_ROUTES")]
    pub os_worker_routes: String,
    /// `PROJECT_INGRESS_PROXY_HOST_MATCHERS`, comma-separated minimatch globs.
    #[serde(rename = "PROJECT_INGRESS_PROXY_HOST_MATCHERS")]
    pub host_matchers: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldSpec {
    /// A short name shown in traces.
    pub name: String,
    #[serde(default)]
    pub router: RouterGeneration,
    pub env: EnvSpec,
    #[serde(default)]
    pub projects: Vec<ProjectSpec>,
    #[serde(default)]
    pub machines: Vec<MachineSpec>,
    /// Faults in force from the start.
    #[serde(default)]
    pub faults: Vec<crate::faults::Fault>,
    #[serde(default)]
    pub edge: EdgeSpec,
}

/// The edge's own settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSpec {
    /// How long the edge waits for the origin's response head before answering 524 (Cloudflare:
    /// 100 s).
    #[serde(default = "EdgeSpec::default_origin_timeout_ms")]
    pub origin_timeout_ms: u64,
}

impl EdgeSpec {
    fn default_origin_timeout_ms() -> u64 {
        100_000
    }
}

impl Default for EdgeSpec {
    fn default() -> Self {
        EdgeSpec {
            origin_timeout_ms: Self::default_origin_timeout_ms(),
        }
    }
}

/// A world file that could not be used.
pub type WorldError = crate::fixture_file::FixtureError;

impl WorldSpec {
    pub fn load(path: &Path) -> Result<WorldSpec, WorldError> {
        let text = crate::fixture_file::read(path, "world file")?;
        WorldSpec::parse(&text, path)
    }

    /// Parses and validates; `path` is used in messages only.
    pub fn parse(text: &str, path: &Path) -> Result<WorldSpec, WorldError> {
        crate::fixture_file::parse(text, path, WorldSpec::validate)
    }

    fn validate(&self) -> Result<(), String> {
        let mut projects = BTreeMap::new();
        for (i, p) in self.projects.iter().enumerate() {
            if p.slug.is_empty() {
                return Err(format!("projects[{i}].slug: must not be empty"));
            }
            if projects.insert(p.slug.as_str(), i).is_some() {
                return Err(format!("projects[{i}].slug: duplicate slug {:?}", p.slug));
            }
        }
        let mut ids = BTreeMap::new();
        for (i, m) in self.machines.iter().enumerate() {
            if !m.id.starts_with("mach_") {
                return Err(format!(
                    "machines[{i}].id: {:?} must start with \"mach_\"",
                    m.id
                ));
            }
            if ids.insert(m.id.as_str(), i).is_some() {
                return Err(format!("machines[{i}].id: duplicate machine id {:?}", m.id));
            }
            if !projects.contains_key(m.project.as_str()) {
                return Err(format!(
                    "machines[{i}].project: unknown project {:?} (declare it under [[projects]])",
                    m.project
                ));
            }
            let mut ports = BTreeMap::new();
            for (j, a) in m.apps.iter().enumerate() {
                if a.port == 0 {
                    return Err(format!("machines[{i}].apps[{j}].port: must be 1..65535"));
                }
                if a.port == 8080 {
                    return Err(format!(
                        "machines[{i}].apps[{j}].port: 8080 is the machine proxy's port"
                    ));
                }
                if ports.insert(a.port, j).is_some() {
                    return Err(format!(
                        "machines[{i}].apps[{j}].port: two apps on port {}",
                        a.port
                    ));
                }
            }
        }
        for (i, f) in self.faults.iter().enumerate() {
            if let Some((m, port)) = fault_target(f) {
                let Some(spec) = self.machine(m) else {
                    return Err(format!("faults[{i}].machine: unknown machine {m:?}"));
                };
                if let Some(p) = port
                    && !spec.apps.iter().any(|a| a.port == p)
                {
                    return Err(format!("faults[{i}].port: machine {m} has no app on {p}"));
                }
            }
        }
        Ok(())
    }

    pub fn machine(&self, id: &str) -> Option<&MachineSpec> {
        self.machines.iter().find(|m| m.id == id)
    }
}

/// The machine (and app port) a fault names, if any.
pub fn fault_target(f: &crate::faults::Fault) -> Option<(&str, Option<u16>)> {
    use crate::faults::Fault::*;
    match f {
        DockerNoPortMapping { machine }
        | MachineState { machine, .. }
        | MachineProxyDown { machine }
        | Container { machine, .. } => Some((machine, None)),
        AppDown { machine, port } | AppUp { machine, port } | AppResetMidBody { machine, port } => {
            Some((machine, Some(*port)))
        }
        ProviderRefuses { .. }
        | ProviderStatus { .. }
        | ProviderSlow { .. }
        | ProviderHealthy { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINI: &str = r#"
name = "mini"
[env]
OS_WORKER_ROUTES = "*.iterate.town/*"
PROJECT_INGRESS_PROXY_HOST_MATCHERS = "*.iterate.town"
[[projects]]
slug = "misha"
[[machines]]
id = "mach_1"
project = "misha"
state = "active"
provider = "docker"
external_id = "c1"
apps = [{ port = 3000, kind = "echo" }, { port = 4096, kind = "sse", gated = true }]
"#;

    #[test]
    fn parses_minimal_world() {
        let w = WorldSpec::parse(MINI, Path::new("mini.toml")).unwrap();
        assert_eq!(w.machines[0].apps.len(), 2);
        assert_eq!(
            w.machines[0].apps[1].kind,
            AppKind::Sse {
                count: 3,
                interval_ms: 100,
                gated: true
            }
        );
        assert!(w.machines[0].metadata.publish_8080);
        assert!(w.machines[0].metadata.public);
        assert_eq!(
            w.machines[0].metadata,
            toml::from_str::<ProviderMetadata>("").unwrap(),
            "an omitted metadata table means the same as an empty one"
        );
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let bad = MINI.replace("state = \"active\"", "state = \"active\"\nstat = 1");
        let e = WorldSpec::parse(&bad, Path::new("w/bad.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("w/bad.toml:12:"), "{e}");
        assert!(e.contains("unknown field `stat`"), "{e}");
    }

    #[test]
    fn bad_enum_value_is_named() {
        let bad = MINI.replace("state = \"active\"", "state = \"running\"");
        let e = WorldSpec::parse(&bad, Path::new("w.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("w.toml:11:"), "{e}");
        assert!(e.contains("running"), "{e}");
    }

    #[test]
    fn app_fields_are_checked_against_the_kind() {
        let bad = MINI.replace("kind = \"echo\"", "kind = \"echo\", gated = true");
        let e = WorldSpec::parse(&bad, Path::new("w.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("w.toml:14:"), "{e}");
        assert!(
            e.contains("field `gated` does not apply to app kind \"echo\""),
            "{e}"
        );
        let bad = MINI.replace("kind = \"echo\"", "kind = \"ehco\"");
        let e = WorldSpec::parse(&bad, Path::new("w.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown app kind \"ehco\""), "{e}");
        let bad = MINI.replace("kind = \"echo\"", "kind = \"echo\", colour = 1");
        let e = WorldSpec::parse(&bad, Path::new("w.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let bad = MINI.replace("project = \"misha\"", "project = \"nobody\"");
        let e = WorldSpec::parse(&bad, Path::new("w.toml"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "w.toml: machines[0].project: unknown project \"nobody\" (declare it under [[projects]])"
        );
        let bad = MINI.replace("id = \"mach_1\"", "id = \"m1\"");
        let e = WorldSpec::parse(&bad, Path::new("w.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("machines[0].id"), "{e}");
        let bad = MINI.replace("port = 4096", "port = 8080");
        let e = WorldSpec::parse(&bad, Path::new("w.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("machines[0].apps[1].port: 8080"), "{e}");
    }

    #[test]
    fn missing_file_is_named() {
        let e = WorldSpec::load(Path::new("/nonexistent/w.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/nonexistent/w.toml: cannot read world file"),
            "{e}"
        );
    }
}
