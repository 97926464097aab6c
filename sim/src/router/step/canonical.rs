//! The canonical host (V2+): every target has one hostname, and a request for any other spelling
//! of it is sent there with a `301` before anything else is checked (O6: for every method; O7: the
//! middle labels of a nested host are dropped). Also the environment's hostnames as production
//! validates them (`normalizeProjectIngressCanonicalHost`, the deploy's `PROJECT_INGRESS_DOMAIN`
//! rule, `getIngressSchemeFromPublicUrl`).

use http::StatusCode;

use super::matchers::HostGlob;
use crate::model::ParsedTarget;
use crate::trace::RouterEvent;

/// `normalizeProjectIngressCanonicalHost`: trimmed and lowercased; `None` for an empty value, a
/// wildcard, a port, a scheme or path (`/ ? #`), a leading or trailing `.`, or a label that is
/// not `[a-z0-9]` with inner hyphens (at most 63 characters; underscores are rejected); at most
/// 253 characters in all.
pub fn normalize_host(raw: &str) -> Option<String> {
    let h = raw.trim().to_lowercase();
    if h.is_empty()
        || h.len() > 253
        || h.contains(['*', ':', '/', '?', '#'])
        || h.starts_with('.')
        || h.ends_with('.')
    {
        return None;
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    h.split('.').all(label_ok).then_some(h)
}

/// The control plane's origin (`VITE_PUBLIC_URL`), which also gives the ingress scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicOrigin {
    /// `https` or `http`.
    pub scheme: String,
    /// The hostname (the V5 short-circuit and cookie domains compare with it).
    pub host: String,
    /// `scheme://host[:port]`.
    pub origin: String,
}

/// `VITE_PUBLIC_URL` read as production reads it: `http:`/`https:`, else
/// `Unsupported VITE_PUBLIC_URL protocol: <p>`.
pub fn public_origin(raw: &str) -> Result<PublicOrigin, String> {
    let u = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "Unsupported VITE_PUBLIC_URL protocol: {}:",
            u.scheme()
        ));
    }
    let host = u
        .host_str()
        .ok_or_else(|| format!("{raw:?} has no host"))?
        .to_string();
    Ok(PublicOrigin {
        scheme: u.scheme().to_string(),
        origin: u.origin().ascii_serialization(),
        host,
    })
}

/// `isProjectIngressHostname(host, domain)`: ends with `.<domain>` and is longer.
pub fn is_project_ingress_hostname(host: &str, domain: &str) -> bool {
    let (h, d) = (host.to_lowercase(), domain.to_lowercase());
    !d.is_empty() && h.len() > d.len() + 1 && h.ends_with(&format!(".{d}"))
}

/// V2: the canonical host must be a bare hostname the matchers cover, checked by probing
/// `3000__mach_test.<canonical>`.
pub fn canonical_host_v2(raw: Option<&str>, matchers: &[HostGlob]) -> Result<String, String> {
    let raw = raw.ok_or("PROJECT_INGRESS_PROXY_CANONICAL_HOST is not set")?;
    let host = normalize_host(raw)
        .ok_or_else(|| format!("PROJECT_INGRESS_PROXY_CANONICAL_HOST {raw:?} is invalid"))?;
    let probe = format!("3000__mach_test.{host}");
    if !matchers.iter().any(|m| m.matches(&probe)) {
        return Err(format!(
            "PROJECT_INGRESS_PROXY_CANONICAL_HOST {host:?} is not covered by the host matchers"
        ));
    }
    Ok(host)
}

/// V2: the canonical hostname is the host's first label under the canonical host.
pub fn canonical_v2(hostname: &str, canonical_host: &str) -> String {
    let token = hostname.split('.').find(|l| !l.is_empty()).unwrap_or("");
    format!("{token}.{canonical_host}")
}

/// V3+: `(port == 3000 && !explicit ? id : "<port>__" + id) + "." + domain`.
pub fn canonical_v3(t: &ParsedTarget, domain: &str) -> String {
    if t.target_port == 3000 && !t.port_explicit {
        format!("{}.{domain}", t.id)
    } else {
        format!("{}__{}.{domain}", t.target_port, t.id)
    }
}

/// Step: the host is canonical, else `301` to the same path and query there (any method, O6).
/// Recorded.
pub fn redirect_unless_canonical(
    ev: &mut RouterEvent,
    canonical: &str,
    scheme: &str,
    path_and_query: &str,
) -> Option<(StatusCode, String)> {
    ev.canonical_host = Some(canonical.to_string());
    (ev.hostname != canonical).then(|| {
        (
            StatusCode::MOVED_PERMANENTLY,
            format!("{scheme}://{canonical}{path_and_query}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::step::matchers::parse_matchers;

    /// docs/behaviour.md §6, the canonical-host utilities.
    #[test]
    fn canonical_host_utilities() {
        assert_eq!(
            normalize_host("P.OS.ITERATE.COM").as_deref(),
            Some("p.os.iterate.com")
        );
        for bad in [
            "",
            "*.p.os.iterate.com",
            "https://p.os.iterate.com",
            "p.os.iterate.com:443",
            "p.os.iterate.com/path",
            "a_b.iterate.com",
            ".iterate.com",
            "iterate.com.",
            "-a.iterate.com",
        ] {
            assert_eq!(normalize_host(bad), None, "{bad:?}");
        }
        let covered = |h: &str, m: &str| canonical_host_v2(Some(h), &parse_matchers(m)).is_ok();
        assert!(covered("p.os.iterate.com", "*.p.os.iterate.com"));
        assert!(!covered("jonas.dev.iterate.com", "*.p.os.iterate.com"));
        assert!(covered(
            "dev-rahul-os.dev.iterate.com",
            "*.*.dev.iterate.com,*.iterate.app"
        ));
        assert!(!covered("os.iterate.com", "*.iterate.app"));
    }

    #[test]
    fn public_origins() {
        let o = public_origin("https://os.iterate.com").unwrap();
        assert_eq!(
            (o.scheme.as_str(), o.host.as_str()),
            ("https", "os.iterate.com")
        );
        assert_eq!(o.origin, "https://os.iterate.com");
        assert_eq!(
            public_origin("ftp://os.iterate.com").unwrap_err(),
            "Unsupported VITE_PUBLIC_URL protocol: ftp:"
        );
        assert_eq!(
            public_origin("http://os.iterate.com.localhost:5173")
                .unwrap()
                .origin,
            "http://os.iterate.com.localhost:5173"
        );
    }

    #[test]
    fn ingress_hostnames_and_canonical_forms() {
        assert!(is_project_ingress_hostname(
            "Misha.Iterate.App",
            "iterate.app"
        ));
        assert!(!is_project_ingress_hostname("iterate.app", "iterate.app"));
        assert!(!is_project_ingress_hostname(
            "os.iterate.com",
            "iterate.app"
        ));
        assert!(!is_project_ingress_hostname("xiterate.app", "iterate.app"));
        assert_eq!(
            canonical_v2("a.b.iterate.town", "iterate.town"),
            "a.iterate.town"
        );
        let t = |id: &str, port, explicit| ParsedTarget {
            kind: crate::model::TargetKind::Project,
            id: id.into(),
            target_port: port,
            port_explicit: explicit,
            root_domain: String::new(),
        };
        assert_eq!(
            canonical_v3(&t("misha", 3000, false), "iterate.app"),
            "misha.iterate.app"
        );
        assert_eq!(
            canonical_v3(&t("misha", 3000, true), "iterate.app"),
            "3000__misha.iterate.app"
        );
        assert_eq!(
            canonical_v3(&t("misha", 4096, true), "iterate.app"),
            "4096__misha.iterate.app"
        );
    }
}
