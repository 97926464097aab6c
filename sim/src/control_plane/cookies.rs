//! Better Auth's session cookie as the control plane sets it and the worker reads it.
//!
//! The name is `better-auth.session_token`; with secure cookies (Better Auth uses them when its
//! base URL, `VITE_PUBLIC_URL`, is https) it carries the `__Secure-` prefix and the `Secure`
//! flag: `__Secure-better-auth.session_token`. Attributes: `Path=/`, `HttpOnly`, `SameSite=Lax`,
//! `Max-Age` of the session (7 days), and, with `crossSubDomainCookies` (O10), a `Domain` of the
//! control plane's hostname. The value is the session token itself (Better Auth signs it,
//! `<token>.<signature>`; the signature is not modelled).

use crate::platform::SESSION_TTL_S;
use crate::router::step::canonical::PublicOrigin;

pub const BASE_NAME: &str = "better-auth.session_token";

/// The session cookie's name under this control-plane origin.
pub fn name(public: &PublicOrigin) -> String {
    if public.scheme == "https" {
        format!("__Secure-{BASE_NAME}")
    } else {
        BASE_NAME.to_string()
    }
}

/// `Set-Cookie` for a session.
pub fn set_session(public: &PublicOrigin, token: &str, cross_subdomain: bool) -> String {
    let mut c = format!(
        "{}={token}; Max-Age={SESSION_TTL_S}; Path=/; HttpOnly; SameSite=Lax",
        name(public)
    );
    if public.scheme == "https" {
        c.push_str("; Secure");
    }
    if cross_subdomain {
        c.push_str(&format!("; Domain={}", public.host));
    }
    c
}

/// The session token a request's `Cookie` headers carry under `name`, if any.
pub fn read(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::step::canonical::public_origin;

    #[test]
    fn names_and_attributes() {
        let https = public_origin("https://os.iterate.com").unwrap();
        let http = public_origin("http://os.iterate.com.localhost").unwrap();
        assert_eq!(name(&https), "__Secure-better-auth.session_token");
        assert_eq!(name(&http), "better-auth.session_token");
        assert_eq!(
            set_session(&https, "sess-0001", true),
            "__Secure-better-auth.session_token=sess-0001; Max-Age=604800; Path=/; HttpOnly; SameSite=Lax; Secure; Domain=os.iterate.com"
        );
        assert!(!set_session(&http, "t", false).contains("Secure"));
        let mut h = http::HeaderMap::new();
        h.append(
            "cookie",
            "a=1; better-auth.session_token=tok".parse().unwrap(),
        );
        assert_eq!(read(&h, BASE_NAME).as_deref(), Some("tok"));
        assert_eq!(read(&h, "b"), None);
    }
}
