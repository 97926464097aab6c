//! Hop-by-hop header removal (RFC 9110 §7.6.1), applied in both directions.
//!
//! Removed: `Connection` and every header named by any `Connection` line, `Keep-Alive`,
//! `Proxy-Connection`, `TE` (unless it is exactly a `trailers` request), `Transfer-Encoding`, and
//! `Upgrade` (unless the caller is forwarding an upgrade). This runs *before* the proxy adds its own
//! headers, so a client that names `X-Iterate-Proxy-Via` in `Connection` cannot strip it.
//!
//! A message's framing is decided before, and independently of, this removal: `Connection` never
//! removes `Content-Length`, `Transfer-Encoding` or `Host` (`never_nominated`). A nomination of
//! one of them is ignored (RFC 9110 §7.6.1 forbids sending it; honouring it would forward a body
//! without the field that delimits it, and the next hop would read the body as the next request).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The fields that are hop-by-hop whatever `Connection` says (lower case).
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// The fields a `Connection` option never removes: they frame the message (or, for `Host`, say
/// what it is for). `Transfer-Encoding` is hop-by-hop anyway and is set again by whoever frames
/// the body on the next hop.
const NEVER_NOMINATED: [&str; 3] = ["content-length", "transfer-encoding", "host"];

/// Whether `Connection` naming this field (any case) is ignored.
pub(crate) fn never_nominated(name: &[u8]) -> bool {
    NEVER_NOMINATED
        .iter()
        .any(|h| h.len() == name.len() && h.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether a field name (any case) is one of [`HOP_BY_HOP`].
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| h.len() == name.len() && h.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether the `Connection` header lists `token` (case-insensitive, on any `Connection` line).
pub fn connection_has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers. With `keep_upgrade`, the `Upgrade` header is kept and
/// `Connection: upgrade` is set again after the removal (used for upgrade requests and 101 responses).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names (no hashing) first: most messages carry none of these, or only
    // `Connection`, and each removal below is a hashed lookup.
    if !headers.keys().any(|k| is_hop_by_hop(k.as_str().as_bytes())) {
        if keep_upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !never_nominated(t.as_bytes()))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            if keep_upgrade && name == header::UPGRADE {
                continue;
            }
            headers.remove(&name);
        }
        headers.remove(header::CONNECTION);
    }
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    // TE: only "trailers" may be forwarded (RFC 9110 §10.1.4 allows it end to end for HTTP/1.1 peers).
    let te_trailers_only = headers.contains_key(header::TE) && {
        let mut values = headers.get_all(header::TE).iter().peekable();
        values.peek().is_some()
            && values.all(|v| {
                v.to_str()
                    .map(|s| {
                        s.split(',')
                            .all(|t| t.trim().eq_ignore_ascii_case("trailers"))
                    })
                    .unwrap_or(false)
            })
    };
    if te_trailers_only {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    } else {
        headers.remove(header::TE);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn removes_connection_named_on_every_line() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Foo"),
            ("connection", "x-bar"),
            ("x-foo", "1"),
            ("x-bar", "2"),
            ("x-keep", "3"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
        assert_eq!(names, vec!["x-keep"]);
    }

    #[test]
    fn framing_fields_are_never_removed_by_nomination() {
        let mut h = map(&[
            (
                "connection",
                "Content-Length, host, transfer-encoding, x-foo",
            ),
            ("content-length", "5"),
            ("host", "a"),
            ("x-foo", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
        names.sort();
        assert_eq!(names, vec!["content-length", "host"]);
    }

    #[test]
    fn te_trailers_is_kept() {
        let mut h = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.get("te").unwrap(), "trailers");
        let mut h = map(&[("te", "trailers, deflate")]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("te").is_none());
    }

    #[test]
    fn upgrade_kept_when_upgrading() {
        let mut h = map(&[
            ("connection", "Upgrade, x-secret"),
            ("upgrade", "websocket"),
            ("x-secret", "s"),
            ("sec-websocket-key", "k"),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert!(h.get("x-secret").is_none());
        assert_eq!(h.get("sec-websocket-key").unwrap(), "k");
    }

    #[test]
    fn repeated_end_to_end_headers_survive() {
        let mut h = map(&[("set-cookie", "a=1"), ("set-cookie", "b=2")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.get_all("set-cookie").iter().count(), 2);
    }

    #[test]
    fn connection_token_lookup() {
        let h = map(&[("connection", "keep-alive"), ("connection", "Upgrade")]);
        assert!(connection_has_token(&h, "upgrade"));
        assert!(!connection_has_token(&h, "close"));
    }
}
