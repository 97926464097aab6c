//! Custom domains and the project default port (V4+, docs/behaviour.md §3.6, §3.7, §3.9): the shared
//! module's pieces as production has them (`parseCustomDomainHostname`,
//! `isCustomDomainHostname`, `isBlockedCustomDomain`, `SERVICE_ALIASES`, `buildProjectPortUrl`,
//! `buildMachinePortUrl`) and V5's `getEffectiveTargetHost`. Their example tables are the tests
//! below.

use crate::model::{DEFAULT_PORT, ParsedTarget, TargetKind};

/// `SERVICE_ALIASES`: a custom domain's subdomain that names a port.
pub const SERVICE_ALIASES: [(&str, u16); 2] = [("opencode", 4096), ("terminal", 4096)];

/// Domains no project may claim (`isBlockedCustomDomain`).
pub const BLOCKED_DOMAINS: [&str; 4] = ["iterate.com", "iterate.app", "nustom.com", "nustom.app"];

/// What a host under a custom domain means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomTarget {
    /// The domain's project, on a port.
    Project { port: u16 },
    /// A machine by id, on a port.
    Machine { id: String, port: u16 },
}

/// Why a host is not a target under a custom domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CustomDomainError {
    #[error("not_custom_domain")]
    NotCustomDomain,
    #[error("invalid_subdomain")]
    InvalidSubdomain,
}

impl CustomDomainError {
    pub fn as_str(self) -> &'static str {
        match self {
            CustomDomainError::NotCustomDomain => "not_custom_domain",
            CustomDomainError::InvalidSubdomain => "invalid_subdomain",
        }
    }
}

fn valid_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|p| *p >= 1)
}

/// The port an alias names (`opencode` → 4096).
pub fn alias_port(label: &str) -> Option<u16> {
    SERVICE_ALIASES
        .iter()
        .find(|(a, _)| *a == label)
        .map(|(_, p)| *p)
}

/// `PORT_TO_ALIAS`: the first alias of a port.
pub fn port_alias(port: u16) -> Option<&'static str> {
    SERVICE_ALIASES
        .iter()
        .find(|(_, p)| *p == port)
        .map(|(a, _)| *a)
}

/// `isCustomDomainHostname(host, cd)`: equal, or ends with `.<cd>` (case-insensitive).
pub fn is_custom_domain_hostname(host: &str, custom_domain: &str) -> bool {
    let (h, d) = (host.to_lowercase(), custom_domain.to_lowercase());
    !d.is_empty() && (h == d || h.ends_with(&format!(".{d}")))
}

/// `parseCustomDomainHostname(host, cd)` (both lowercased): the domain itself → the project on
/// 3000; not under it → `not_custom_domain`; the part before it must be one label, else
/// `invalid_subdomain`; `<port>__mach_*` → that machine on that port (any other `__` form →
/// `invalid_subdomain`); `mach_*` → the machine on 3000; an alias or a port → the project on it;
/// anything else → `invalid_subdomain`.
pub fn parse_custom_domain_hostname(
    host: &str,
    custom_domain: &str,
) -> Result<CustomTarget, CustomDomainError> {
    let (h, d) = (host.to_lowercase(), custom_domain.to_lowercase());
    if h == d {
        return Ok(CustomTarget::Project { port: DEFAULT_PORT });
    }
    let Some(sub) = h.strip_suffix(&format!(".{d}")) else {
        return Err(CustomDomainError::NotCustomDomain);
    };
    if sub.is_empty() || sub.contains('.') {
        return Err(CustomDomainError::InvalidSubdomain);
    }
    if let Some(i) = sub.find("__")
        && i > 0
    {
        let (port, id) = (&sub[..i], &sub[i + 2..]);
        return match valid_port(port) {
            Some(port) if id.starts_with("mach_") => Ok(CustomTarget::Machine {
                id: id.to_string(),
                port,
            }),
            _ => Err(CustomDomainError::InvalidSubdomain),
        };
    }
    if sub.starts_with("mach_") {
        return Ok(CustomTarget::Machine {
            id: sub.to_string(),
            port: DEFAULT_PORT,
        });
    }
    if let Some(port) = alias_port(sub).or_else(|| valid_port(sub)) {
        return Ok(CustomTarget::Project { port });
    }
    Err(CustomDomainError::InvalidSubdomain)
}

impl CustomTarget {
    pub fn port(&self) -> u16 {
        match self {
            CustomTarget::Project { port } | CustomTarget::Machine { port, .. } => *port,
        }
    }

    /// As a parsed target: the project's slug for a project target; explicit when the port is
    /// not 3000 (how V5 reads a custom target, so `3000.<cd>` counts as implicit, O2).
    pub fn parsed(&self, project: &str, custom_domain: &str) -> ParsedTarget {
        let (kind, id) = match self {
            CustomTarget::Project { .. } => (TargetKind::Project, project.to_string()),
            CustomTarget::Machine { id, .. } => (TargetKind::Machine, id.clone()),
        };
        ParsedTarget {
            kind,
            id,
            target_port: self.port(),
            port_explicit: self.port() != DEFAULT_PORT,
            root_domain: custom_domain.to_string(),
        }
    }
}

/// `isBlockedCustomDomain`: our own domains and their subdomains (case-insensitive).
pub fn is_blocked_custom_domain(domain: &str) -> bool {
    let d = domain.trim().to_lowercase();
    BLOCKED_DOMAINS
        .iter()
        .any(|b| d == *b || d.ends_with(&format!(".{b}")))
}

fn with_path(base: &url::Url, host: &str, path: Option<&str>) -> String {
    let mut u = base.clone();
    if u.set_host(Some(host)).is_err() {
        return base.to_string();
    }
    let p = match path {
        None | Some("") => "/".to_string(),
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => format!("/{p}"),
    };
    u.set_path(&p);
    u.to_string()
}

/// `buildProjectPortUrl({projectBaseUrl, port, path})`: port 3000 → the base URL; a standard
/// base (under `iterate.app` or `iterate.app.localhost`) → `<port>__<host>`; a custom domain →
/// `<alias or port>.<host>`.
pub fn build_project_port_url(project_base_url: &str, port: u16, path: Option<&str>) -> String {
    let Ok(base) = url::Url::parse(project_base_url) else {
        return project_base_url.to_string();
    };
    let host = base.host_str().unwrap_or("").to_string();
    if port == DEFAULT_PORT {
        return with_path(&base, &host, path);
    }
    let standard = host.ends_with(".iterate.app") || host.ends_with(".iterate.app.localhost");
    let host = if standard {
        format!("{port}__{host}")
    } else {
        let label = port_alias(port).map_or_else(|| port.to_string(), str::to_string);
        format!("{label}.{host}")
    };
    with_path(&base, &host, path)
}

/// `buildMachinePortUrl`: `<scheme>://<id or port__id>.<domain><path or />`.
pub fn build_machine_port_url(
    scheme: &str,
    domain: &str,
    machine_id: &str,
    port: u16,
    path: Option<&str>,
) -> String {
    let label = if port == DEFAULT_PORT {
        machine_id.to_string()
    } else {
        format!("{port}__{machine_id}")
    };
    let path = match path {
        None | Some("") => "/".to_string(),
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => format!("/{p}"),
    };
    format!("{scheme}://{label}.{domain}{path}")
}

/// V5's `getEffectiveTargetHost`: the port is explicit for a standard target when the host
/// said so (`isPortExplicit`), for a custom target when it is not 3000; an implicit port gives
/// way to the project's `defaultPort` (when set and not 3000). A standard target whose port did
/// not change keeps the request hostname (the machine proxy reads its `<port>__`); otherwise,
/// and always for a custom target, `localhost:<effective>`. Returns the header and the port.
pub fn effective_target_host(
    t: &ParsedTarget,
    custom: bool,
    default_port: Option<u16>,
    request_hostname: &str,
) -> (String, u16) {
    let explicit = if custom {
        t.target_port != DEFAULT_PORT
    } else {
        t.port_explicit
    };
    let effective = match default_port {
        Some(d) if !explicit && d != DEFAULT_PORT => d,
        _ => t.target_port,
    };
    if !custom && effective == t.target_port {
        (request_hostname.to_string(), effective)
    } else {
        (format!("localhost:{effective}"), effective)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CustomDomainError::*;

    fn project(port: u16) -> Result<CustomTarget, CustomDomainError> {
        Ok(CustomTarget::Project { port })
    }
    fn machine(id: &str, port: u16) -> Result<CustomTarget, CustomDomainError> {
        Ok(CustomTarget::Machine {
            id: id.into(),
            port,
        })
    }

    /// docs/behaviour.md §6, the custom-domain table (`cd = templestein.com`).
    #[test]
    fn custom_domain_table() {
        let cd = "templestein.com";
        let rows = [
            ("templestein.com", project(3000)),
            ("4096.templestein.com", project(4096)),
            ("opencode.templestein.com", project(4096)),
            ("terminal.templestein.com", project(4096)),
            ("OpenCode.Templestein.COM", project(4096)),
            (
                "4096__mach_abc123.templestein.com",
                machine("mach_abc123", 4096),
            ),
            ("mach_abc123.templestein.com", machine("mach_abc123", 3000)),
            ("example.com", Err(NotCustomDomain)),
            ("xtemplestein.com", Err(NotCustomDomain)),
            ("a.b.templestein.com", Err(InvalidSubdomain)),
            ("foo.templestein.com", Err(InvalidSubdomain)),
            ("4096__foo.templestein.com", Err(InvalidSubdomain)),
            ("abc__mach_1.templestein.com", Err(InvalidSubdomain)),
            ("0.templestein.com", Err(InvalidSubdomain)),
            ("70000.templestein.com", Err(InvalidSubdomain)),
            ("__mach_1.templestein.com", Err(InvalidSubdomain)),
        ];
        for (host, want) in rows {
            assert_eq!(parse_custom_domain_hostname(host, cd), want, "{host}");
        }
        // The custom domain may itself be a subdomain.
        let cd = "iterate.templestein.com";
        assert_eq!(parse_custom_domain_hostname(cd, cd), project(3000));
        assert_eq!(
            parse_custom_domain_hostname("4096.iterate.templestein.com", cd),
            project(4096)
        );
    }

    /// docs/behaviour.md §6, the custom-domain table's target header column (V5).
    #[test]
    fn effective_target_hosts() {
        let cd = "templestein.com";
        let header = |host: &str, default: Option<u16>| {
            let t = parse_custom_domain_hostname(host, cd)
                .unwrap()
                .parsed("p", cd);
            effective_target_host(&t, true, default, host).0
        };
        assert_eq!(header("templestein.com", None), "localhost:3000");
        assert_eq!(header("templestein.com", Some(8000)), "localhost:8000");
        assert_eq!(header("3000.templestein.com", Some(8000)), "localhost:8000");
        assert_eq!(header("4096.templestein.com", Some(8000)), "localhost:4096");
        assert_eq!(header("opencode.templestein.com", None), "localhost:4096");
        assert_eq!(
            header("4096__mach_abc123.templestein.com", Some(8000)),
            "localhost:4096"
        );
        assert_eq!(
            header("mach_abc123.templestein.com", None),
            "localhost:3000"
        );
        assert_eq!(
            header("mach_abc123.templestein.com", Some(8000)),
            "localhost:8000"
        );
        // Standard targets (docs/behaviour.md §6 scenarios 1–5).
        let std = |host: &str, default: Option<u16>| {
            let t = crate::router::step::hostname::parse_standard(host).unwrap();
            effective_target_host(&t, false, default, host)
        };
        assert_eq!(
            std("misha.iterate.app", None),
            ("misha.iterate.app".into(), 3000)
        );
        assert_eq!(
            std("4096__misha.iterate.app", None),
            ("4096__misha.iterate.app".into(), 4096)
        );
        assert_eq!(
            std("misha.iterate.app", Some(8000)),
            ("localhost:8000".into(), 8000)
        );
        assert_eq!(
            std("4096__misha.iterate.app", Some(8000)),
            ("4096__misha.iterate.app".into(), 4096)
        );
        assert_eq!(
            std("3000__misha.iterate.app", Some(8000)),
            ("3000__misha.iterate.app".into(), 3000)
        );
        assert_eq!(
            std("misha.iterate.app", Some(3000)),
            ("misha.iterate.app".into(), 3000)
        );
    }

    #[test]
    fn custom_domain_hostnames_and_blocked_domains() {
        assert!(is_custom_domain_hostname(
            "templestein.com",
            "templestein.com"
        ));
        assert!(is_custom_domain_hostname(
            "A.Templestein.com",
            "templestein.com"
        ));
        assert!(!is_custom_domain_hostname(
            "xtemplestein.com",
            "templestein.com"
        ));
        assert!(!is_custom_domain_hostname("templestein.com", ""));
        for d in [
            "iterate.com",
            "ITERATE.APP",
            "a.iterate.app",
            "nustom.com",
            "x.nustom.app",
        ] {
            assert!(is_blocked_custom_domain(d), "{d}");
        }
        for d in ["templestein.com", "xiterate.com", "iterate.town"] {
            assert!(!is_blocked_custom_domain(d), "{d}");
        }
        assert_eq!(port_alias(4096), Some("opencode"));
        assert_eq!(port_alias(3001), None);
    }

    /// docs/behaviour.md §6, the URL builders.
    #[test]
    fn url_builders() {
        let p = build_project_port_url;
        assert_eq!(
            p("https://my-proj.iterate.app", 3000, None),
            "https://my-proj.iterate.app/"
        );
        assert_eq!(
            p("https://my-proj.iterate.app", 4096, None),
            "https://4096__my-proj.iterate.app/"
        );
        assert_eq!(
            p("https://my-proj.iterate.app", 4096, Some("/foo/bar")),
            "https://4096__my-proj.iterate.app/foo/bar"
        );
        assert_eq!(
            p("https://my-proj.iterate.app", 4096, Some("foo")),
            "https://4096__my-proj.iterate.app/foo"
        );
        assert_eq!(
            p("https://my-proj.iterate.app", 3000, Some("/foo/bar")),
            "https://my-proj.iterate.app/foo/bar"
        );
        assert_eq!(
            p("https://my-proj.iterate.app.localhost", 4096, None),
            "https://4096__my-proj.iterate.app.localhost/"
        );
        assert_eq!(
            p("https://templestein.com", 4096, None),
            "https://opencode.templestein.com/"
        );
        assert_eq!(
            p("https://templestein.com", 8080, None),
            "https://8080.templestein.com/"
        );
        assert_eq!(
            p("https://templestein.com", 3000, None),
            "https://templestein.com/"
        );
        assert_eq!(
            p("https://iterate.templestein.com", 4096, None),
            "https://opencode.iterate.templestein.com/"
        );
        let m = build_machine_port_url;
        assert_eq!(
            m("https", "iterate.app", "mach_123", 4096, None),
            "https://4096__mach_123.iterate.app/"
        );
        assert_eq!(
            m("https", "iterate.app", "mach_123", 3000, None),
            "https://mach_123.iterate.app/"
        );
        assert_eq!(
            m(
                "https",
                "iterate.app",
                "mach_123",
                16686,
                Some("/trace/abc")
            ),
            "https://16686__mach_123.iterate.app/trace/abc"
        );
    }
}
