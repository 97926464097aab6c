//! The auth bridge as the router sees it (V2+): where a request without a session is sent, and
//! the redirect-path rule the control plane applies (`normalizeProjectIngressProxyRedirectPath`).

use http::StatusCode;

/// The control plane's bridge-start path.
pub const BRIDGE_START: &str = "/api/project-ingress-proxy-auth/bridge-start";

/// `application/x-www-form-urlencoded` pairs (as `URLSearchParams` writes them).
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// `normalizeProjectIngressProxyRedirectPath`: no path → `/`; resolved against
/// `https://project-ingress-proxy.local`, anything that lands on another origin (an absolute
/// URL, `//evil.com`, `javascript:`) → `/`; else its path and query (the fragment dropped).
pub fn normalize_redirect_path(p: Option<&str>) -> String {
    let Some(p) = p else {
        return "/".into();
    };
    let Ok(base) = url::Url::parse("https://project-ingress-proxy.local/") else {
        return "/".into();
    };
    match base.join(p) {
        Ok(u) if u.origin() == base.origin() => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        },
        _ => "/".into(),
    }
}

/// Step (V2, no session): `302 <control plane>/login?redirectUrl=<bridge-start with
/// projectIngressProxyHost=<canonical>&redirectPath=<path and query>>`.
pub fn login_redirect_v2(
    public_origin: &str,
    canonical: &str,
    path_and_query: &str,
) -> (StatusCode, String) {
    let bridge = format!(
        "{BRIDGE_START}?{}",
        query(&[
            ("projectIngressProxyHost", canonical),
            ("redirectPath", path_and_query)
        ])
    );
    (
        StatusCode::FOUND,
        format!(
            "{public_origin}/login?{}",
            query(&[("redirectUrl", &bridge)])
        ),
    )
}

/// Step (V3, no session): `302 <VITE_PUBLIC_URL>/api/project-ingress-proxy-auth/bridge-start
/// ?subdomain=<first label of the canonical host>&path=<normalized path and query>`.
pub fn bridge_redirect_v3(
    public_origin: &str,
    canonical: &str,
    path_and_query: &str,
) -> (StatusCode, String) {
    let subdomain = canonical.split('.').next().unwrap_or("");
    let path = normalize_redirect_path(Some(path_and_query));
    (
        StatusCode::FOUND,
        format!(
            "{public_origin}{BRIDGE_START}?{}",
            query(&[("subdomain", subdomain), ("path", &path)])
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_paths() {
        assert_eq!(normalize_redirect_path(None), "/");
        assert_eq!(normalize_redirect_path(Some("foo")), "/foo");
        assert_eq!(
            normalize_redirect_path(Some("/console?tab=logs#x")),
            "/console?tab=logs"
        );
        for evil in [
            "https://evil.com/x",
            "//evil.com",
            "javascript:alert(1)",
            "http://project-ingress-proxy.local/x",
        ] {
            assert_eq!(normalize_redirect_path(Some(evil)), "/", "{evil}");
        }
    }

    #[test]
    fn bridge_urls() {
        assert_eq!(
            bridge_redirect_v3(
                "https://os.iterate.com",
                "misha.iterate.app",
                "/console?tab=logs"
            )
            .1,
            "https://os.iterate.com/api/project-ingress-proxy-auth/bridge-start?subdomain=misha&path=%2Fconsole%3Ftab%3Dlogs"
        );
        assert_eq!(
            login_redirect_v2(
                "https://os.iterate.com",
                "misha.iterate.town",
                "/console?tab=logs"
            )
            .1,
            "https://os.iterate.com/login?redirectUrl=%2Fapi%2Fproject-ingress-proxy-auth%2Fbridge-start%3FprojectIngressProxyHost%3Dmisha.iterate.town%26redirectPath%3D%252Fconsole%253Ftab%253Dlogs"
        );
    }
}
