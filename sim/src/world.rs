//! The world file: edge routes, host matchers, projects, machines and their apps (TOML).
//!
//! Errors name the file, the line and column, and the field (see [`WorldError`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::{
    AuthSpec, Fault, Generation, MachineSpec, MembershipSpec, OrganizationSpec, ProjectSpec,
    SessionSpec, UserSpec,
};

/// The control plane's origin when a world does not say (production's).
pub const DEFAULT_PUBLIC_URL: &str = "https://os.iterate.com";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSpec {
    /// `OS_WORKER_ROUTES`, comma-separated Cloudflare route patterns.
    #[serde(rename = "OS_WORKER_ROUTES")]
    pub os_worker_routes: String,
    /// `PROJECT_INGRESS_PROXY_HOST_MATCHERS`, comma-separated minimatch globs (V0–V2).
    #[serde(rename = "PROJECT_INGRESS_PROXY_HOST_MATCHERS", default)]
    pub host_matchers: String,
    /// `PROJECT_INGRESS_PROXY_CANONICAL_HOST`, a bare hostname (V2). Checked when V2 reads it.
    #[serde(
        rename = "PROJECT_INGRESS_PROXY_CANONICAL_HOST",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub canonical_host: Option<String>,
    /// `PROJECT_INGRESS_DOMAIN`, a bare hostname (V3+). Checked at load, as the deploy does.
    #[serde(
        rename = "PROJECT_INGRESS_DOMAIN",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ingress_domain: Option<String>,
    /// `VITE_PUBLIC_URL`, the control plane's origin (default [`DEFAULT_PUBLIC_URL`]).
    #[serde(
        rename = "VITE_PUBLIC_URL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub public_url: Option<String>,
}

impl EnvSpec {
    /// `VITE_PUBLIC_URL`, or production's.
    pub fn public_url(&self) -> &str {
        self.public_url.as_deref().unwrap_or(DEFAULT_PUBLIC_URL)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldSpec {
    /// A short name shown in traces.
    pub name: String,
    /// The OS router's generation (`router = "v0"`).
    #[serde(default)]
    pub router: Generation,
    pub env: EnvSpec,
    #[serde(default)]
    pub users: Vec<UserSpec>,
    #[serde(default)]
    pub organizations: Vec<OrganizationSpec>,
    #[serde(default)]
    pub memberships: Vec<MembershipSpec>,
    /// Sessions that exist from the start (their token is the session cookie's value).
    #[serde(default)]
    pub sessions: Vec<SessionSpec>,
    #[serde(default)]
    pub projects: Vec<ProjectSpec>,
    #[serde(default)]
    pub machines: Vec<MachineSpec>,
    /// Faults in force from the start.
    #[serde(default)]
    pub faults: Vec<Fault>,
    #[serde(default)]
    pub edge: EdgeSpec,
    #[serde(default)]
    pub auth: AuthSpec,
    /// The OS worker's runtime (V6: its isolates).
    #[serde(default, skip_serializing_if = "is_default")]
    pub os: OsSpec,
    /// The platform database (V4+ query it).
    #[serde(default, skip_serializing_if = "is_default")]
    pub db: crate::db::DbSpec,
}

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

/// The OS worker's runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsSpec {
    /// How many isolates serve the worker's requests (each with its own V6 cache); requests
    /// reach them round robin.
    #[serde(default = "OsSpec::one")]
    pub isolates: u32,
}

impl OsSpec {
    fn one() -> u32 {
        1
    }
}

impl Default for OsSpec {
    fn default() -> Self {
        OsSpec { isolates: 1 }
    }
}

/// The edge's own settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSpec {
    /// How long the edge waits for the origin's response head before answering 524 (Cloudflare:
    /// 100 s).
    #[serde(default = "EdgeSpec::default_origin_timeout_ms")]
    pub origin_timeout_ms: u64,
    /// TLS at the edge and its certificates (`[edge.tls]`).
    #[serde(default)]
    pub tls: EdgeTlsSpec,
}

/// `[edge.tls]`: whether `https://` steps go over TLS, and the edge's certificates as Cloudflare
/// issues them. With none of `universal`, `total_tls`, `advanced` given, the world declares no
/// certificates and every name in its zones is covered (see `docs/behaviour.md` §8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeTlsSpec {
    /// `false`: `https://` steps go over plain HTTP to the edge, as before TLS was modelled.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The zones (default: the last two labels of every worker route's host and of
    /// `VITE_PUBLIC_URL`'s host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
    /// Universal SSL: `<zone>` and `*.<zone>` for each zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub universal: Option<bool>,
    /// Total TLS: a certificate for each proxied DNS record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tls: Option<bool>,
    /// The proxied DNS records (default: every worker route's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxied: Option<Vec<String>>,
    /// Advanced certificates, each with its SAN list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advanced: Vec<AdvancedCertSpec>,
}

fn yes() -> bool {
    true
}

impl Default for EdgeTlsSpec {
    fn default() -> Self {
        EdgeTlsSpec {
            enabled: true,
            zones: None,
            universal: None,
            total_tls: None,
            proxied: None,
            advanced: vec![],
        }
    }
}

/// An advanced certificate: a name (shown in traces) and its SANs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvancedCertSpec {
    pub name: String,
    pub sans: Vec<String>,
}

impl WorldSpec {
    /// The hosts of the worker routes (`*.iterate.town/*` → `*.iterate.town`).
    fn route_hosts(&self) -> Vec<String> {
        self.env
            .os_worker_routes
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|r| {
                let r = r.split_once("://").map(|(_, x)| x).unwrap_or(r);
                r.split('/').next().unwrap_or(r).to_ascii_lowercase()
            })
            .collect()
    }

    /// The edge's certificates, from `[edge.tls]`.
    pub fn edge_certificates(&self) -> crate::tls::EdgeCertificates {
        let t = &self.edge.tls;
        let zones = t.zones.clone().unwrap_or_else(|| {
            let public = url::Url::parse(self.env.public_url())
                .ok()
                .and_then(|u| u.host_str().map(str::to_string));
            let mut z: Vec<String> = Vec::new();
            for h in self.route_hosts().iter().chain(public.iter()) {
                if let Some(zone) = crate::tls::zone_of(h)
                    && !z.contains(&zone)
                {
                    z.push(zone);
                }
            }
            z
        });
        if t.universal.is_none() && t.total_tls.is_none() && t.advanced.is_empty() {
            return crate::tls::EdgeCertificates::any_in_zones(&zones);
        }
        let proxied = t.proxied.clone().unwrap_or_else(|| self.route_hosts());
        let advanced: Vec<(String, Vec<String>)> = t
            .advanced
            .iter()
            .map(|a| (a.name.clone(), a.sans.clone()))
            .collect();
        crate::tls::EdgeCertificates::cloudflare(
            &zones,
            t.universal.unwrap_or(true),
            t.total_tls.unwrap_or(false),
            &proxied,
            &advanced,
        )
    }
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
            tls: EdgeTlsSpec::default(),
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

    /// Parses and validates; `path` is used in messages only. A semantic error names the line of
    /// its field and counts from 1 (`machines[0].project: … (machine 1, project)`).
    pub fn parse(text: &str, path: &Path) -> Result<WorldSpec, WorldError> {
        crate::fixture_file::parse_located(text, path, WorldSpec::validate)
    }

    fn validate(&self) -> Result<(), String> {
        for a in &self.edge.tls.advanced {
            if a.sans.is_empty() {
                return Err(format!(
                    "edge.tls.advanced {:?}: a certificate needs at least one SAN",
                    a.name
                ));
            }
            for san in &a.sans {
                crate::tls::issuable(san)
                    .map_err(|why| format!("edge.tls.advanced {:?}: {why}", a.name))?;
            }
        }
        if let Some(d) = &self.env.ingress_domain
            && crate::router::step::canonical::normalize_host(d).is_none()
        {
            return Err(format!(
                "env.PROJECT_INGRESS_DOMAIN: {d:?}: PROJECT_INGRESS_DOMAIN is required and must be a hostname (no wildcard, scheme, port, or path)."
            ));
        }
        if self.env.ingress_domain.is_none() && self.router >= Generation::V3 {
            return Err(format!(
                "env.PROJECT_INGRESS_DOMAIN: PROJECT_INGRESS_DOMAIN is required and must be a hostname (no wildcard, scheme, port, or path). (router = \"{}\")",
                self.router
            ));
        }
        if !(1..=64).contains(&self.os.isolates) {
            return Err(format!(
                "os.isolates: {} (1..=64 isolates)",
                self.os.isolates
            ));
        }
        if self.db.superuser_reserved_connections >= self.db.max_connections {
            return Err(format!(
                "db.superuser_reserved_connections: {} must be below max_connections ({}), as Postgres requires",
                self.db.superuser_reserved_connections, self.db.max_connections
            ));
        }
        if let Some(u) = &self.env.public_url {
            crate::router::step::canonical::public_origin(u)
                .map_err(|e| format!("env.VITE_PUBLIC_URL: {e}"))?;
        }
        let mut users = BTreeMap::new();
        for (i, u) in self.users.iter().enumerate() {
            if users.insert(u.id.as_str(), i).is_some() {
                return Err(format!("users[{i}].id: duplicate user {:?}", u.id));
            }
        }
        let orgs: Vec<&str> = self.organizations.iter().map(|o| o.id.as_str()).collect();
        for (i, m) in self.memberships.iter().enumerate() {
            if !users.contains_key(m.user.as_str()) {
                return Err(format!("memberships[{i}].user: unknown user {:?}", m.user));
            }
            if !orgs.contains(&m.organization.as_str()) {
                return Err(format!(
                    "memberships[{i}].organization: unknown organization {:?}",
                    m.organization
                ));
            }
        }
        for (i, s) in self.sessions.iter().enumerate() {
            if !users.contains_key(s.user.as_str()) {
                return Err(format!("sessions[{i}].user: unknown user {:?}", s.user));
            }
        }
        for (i, p) in self.projects.iter().enumerate() {
            if let Some(o) = &p.organization
                && !orgs.contains(&o.as_str())
            {
                return Err(format!(
                    "projects[{i}].organization: unknown organization {o:?}"
                ));
            }
        }
        let mut domains = BTreeMap::new();
        for (i, p) in self.projects.iter().enumerate() {
            if let Some(d) = &p.custom_domain {
                if d.is_empty() || d.contains(['/', ':', '*', ' ']) {
                    return Err(format!(
                        "projects[{i}].custom_domain: {d:?} is not a hostname"
                    ));
                }
                if domains.insert(d.as_str(), i).is_some() {
                    return Err(format!(
                        "projects[{i}].custom_domain: {d:?} belongs to another project"
                    ));
                }
            }
            if p.default_port == Some(0) {
                return Err(format!("projects[{i}].default_port: must be 1..65535"));
            }
        }
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
                let hint = crate::fixture_file::did_you_mean(&m.project, projects.keys().copied())
                    .map(|s| format!("; did you mean {s:?}?"))
                    .unwrap_or_default();
                return Err(format!(
                    "machines[{i}].project: unknown project {:?} (declare it under [[projects]]){hint}",
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
            if let Some((m, port)) = f.names() {
                let Some(spec) = self.machine(m) else {
                    let hint = crate::fixture_file::did_you_mean(
                        m,
                        self.machines.iter().map(|x| x.id.as_str()),
                    )
                    .map(|s| format!("; did you mean {s:?}?"))
                    .unwrap_or_default();
                    return Err(format!("faults[{i}].machine: unknown machine {m:?}{hint}"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AppKind, ProviderMetadata};

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
        let line = MINI
            .lines()
            .position(|l| l.trim_start().starts_with("project = \"misha\""))
            .map(|i| i + 1)
            .unwrap_or(0);
        assert_eq!(
            e,
            format!(
                "w.toml:{line}:1: machines[0].project: unknown project \"nobody\" (declare it under [[projects]]) (machine 1, project)"
            )
        );
        let bad = MINI.replace("project = \"misha\"", "project = \"mish\"");
        let e = WorldSpec::parse(&bad, Path::new("w.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean \"misha\"?"), "{e}");
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
    fn router_generation_is_read_and_checked() {
        let w = WorldSpec::parse(MINI, Path::new("w.toml")).unwrap();
        assert_eq!(w.router, Generation::V0, "the default");
        let v0 = MINI.replace("name = \"mini\"", "name = \"mini\"\nrouter = \"v0\"");
        let w = WorldSpec::parse(&v0, Path::new("w.toml")).unwrap();
        assert_eq!(w.router.as_str(), "v0");
        let bad = MINI.replace("name = \"mini\"", "name = \"mini\"\nrouter = \"v9\"");
        let e = WorldSpec::parse(&bad, Path::new("w.toml"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "w.toml:3:10: unknown router generation \"v9\": the known ones are v0, v1, v2, v3, v4, v5, v6"
        );
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
