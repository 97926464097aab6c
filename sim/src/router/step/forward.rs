//! Forwarding (docs/behaviour.md §3.1): the request to the machine's 8080 through the
//! provider, and the machine's answer back.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use super::target::TARGET_HEADER;
use crate::model::Refusal;
use crate::net::{BoxBody, SimNetwork, boxed, full, is_upgrade, relay_response};
use crate::trace::{RouterEvent, TRACE_HEADER};

/// Request headers the worker does not copy (HTTP path).
const EXCLUDED_REQUEST_HEADERS: [&str; 10] = [
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailers",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
];

/// Response headers the worker does not copy.
const EXCLUDED_RESPONSE_HEADERS: [&str; 3] = ["transfer-encoding", "connection", "keep-alive"];

/// fetch's redirect limit.
const MAX_REDIRECTS: usize = 20;

/// workerd's words for a redirect (other than 303) of a request whose body was a stream.
const ONE_TIME_BODY: &str = "A request with a one-time-use body (it was initialized from a stream, not a buffer) encountered a redirect requiring the body to be retransmitted. To avoid this error in the future, construct this request from a buffer-like body initializer.";

fn set_header(h: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        h.insert(n, v);
    }
}

/// Step: the request forwarded to `url` with the target header, redirects followed as fetch
/// does (O4), the response's headers copied with `Headers.set` (V0–V3: a repeated header keeps
/// its last value, B7). Recorded: the forwarded header names, WebSocket or not, the redirects
/// followed and the collapsed headers. A transport failure → `502 proxy_error`.
pub async fn forward(
    net: &SimNetwork,
    req: Request<Incoming>,
    ev: &mut RouterEvent,
    url: String,
    target: &str,
    trace_id: Option<&str>,
) -> Result<Response<BoxBody>, Refusal> {
    forward_copying(net, req, ev, url, target, trace_id, HeaderCopy::Set).await
}

/// How the router copies the machine's response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderCopy {
    /// V0–V3 `Headers.set`: a repeated header keeps its last value (B7).
    Set,
    /// V4+ `Headers.append`: every value kept (repeated `Set-Cookie` included).
    Append,
}

/// [`forward`], copying the response headers as `copy` says.
pub async fn forward_copying(
    net: &SimNetwork,
    mut req: Request<Incoming>,
    ev: &mut RouterEvent,
    url: String,
    target: &str,
    trace_id: Option<&str>,
    copy: HeaderCopy,
) -> Result<Response<BoxBody>, Refusal> {
    let websocket = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    ev.websocket = websocket;
    let mut headers = HeaderMap::new();
    if websocket {
        for (k, v) in req.headers() {
            let n = k.as_str();
            if n.starts_with("sec-websocket-")
                || n == "origin"
                || n == "upgrade"
                || n == "connection"
            {
                headers.append(k.clone(), v.clone());
            }
        }
    } else {
        for (k, v) in req.headers() {
            if !EXCLUDED_REQUEST_HEADERS.contains(&k.as_str()) {
                headers.append(k.clone(), v.clone());
            }
        }
    }
    set_header(&mut headers, TARGET_HEADER, target);
    if let Some(id) = trace_id {
        // Correlation only; never shown in traces.
        set_header(&mut headers, TRACE_HEADER, id);
    }
    let mut names: Vec<String> = headers
        .keys()
        .map(|k| k.to_string())
        .filter(|k| k != TARGET_HEADER && k != TRACE_HEADER)
        .collect();
    names.sort();
    names.dedup();
    ev.forwarded_headers = names;

    let client_upgrade =
        (websocket && is_upgrade(req.headers())).then(|| hyper::upgrade::on(&mut req));
    let method = req.method().clone();
    let body = boxed(req.into_body());
    let mut out = match build(&method, &url, headers.clone(), body) {
        Ok(r) => r,
        Err(e) => return Err(Refusal::proxy_error(e)),
    };
    let mut current_url = url;
    let mut current_method = method.clone();
    let mut resp = match net.send(out).await {
        Ok(r) => r,
        Err(e) => return Err(Refusal::proxy_error(e.workerd_message())),
    };
    // fetch's default redirect: "follow" (O4), for HTTP only, as the Workers runtime does it
    // (docs/behaviour.md §3.1, redirects).
    if !websocket {
        while resp.status().is_redirection() && resp.status() != StatusCode::NOT_MODIFIED {
            let Some(loc) = resp
                .headers()
                .get(header::LOCATION)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            else {
                break;
            };
            let status = resp.status();
            let Some(next) = resolve_location(&current_url, &loc) else {
                return Err(Refusal::proxy_error(
                    "Invalid Location header; unable to follow redirect.",
                ));
            };
            if ev.redirects_followed.len() >= MAX_REDIRECTS {
                return Err(Refusal::proxy_error("Too many redirects."));
            }
            let mut h = headers.clone();
            let mut note = String::new();
            if !same_origin(&current_url, &next) && h.remove(header::AUTHORIZATION).is_some() {
                note = " (another origin: authorization removed)".into();
            }
            ev.redirects_followed
                .push(format!("{} {} → {next}{note}", status.as_u16(), loc));
            let had_body = !matches!(current_method, Method::GET | Method::HEAD);
            if status != StatusCode::SEE_OTHER && had_body {
                // The request's body is the client's stream, which cannot be sent again.
                return Err(Refusal::proxy_error(ONE_TIME_BODY));
            }
            let switch_to_get = status == StatusCode::SEE_OTHER && current_method != Method::HEAD;
            if switch_to_get {
                current_method = Method::GET;
                // The body is gone; its other Content-* headers stay (workerd keeps them).
                h.remove(header::CONTENT_LENGTH);
            }
            // The next hop's Host comes from its URL.
            h.remove(header::HOST);
            headers = h.clone();
            out = match build(&current_method, &next, h, full("")) {
                Ok(r) => r,
                Err(e) => return Err(Refusal::proxy_error(e)),
            };
            current_url = next;
            resp = match net.send(out).await {
                Ok(r) => r,
                Err(e) => return Err(Refusal::proxy_error(e.workerd_message())),
            };
        }
    }
    // Response headers: drop the excluded ones; V0 copies with `Headers.set`, so a repeated header
    // keeps only its last value (B7: two Set-Cookie become one).
    let (mut parts, body) = resp.into_parts();
    let mut copied = HeaderMap::new();
    for name in parts.headers.keys() {
        if EXCLUDED_RESPONSE_HEADERS.contains(&name.as_str())
            && parts.status != StatusCode::SWITCHING_PROTOCOLS
        {
            continue;
        }
        let values: Vec<HeaderValue> = parts.headers.get_all(name).iter().cloned().collect();
        if copy == HeaderCopy::Append {
            for v in values {
                copied.append(name.clone(), v);
            }
            continue;
        }
        if values.len() > 1 {
            ev.response_header_notes.push(format!(
                "{name}: {} values collapsed to the last (Headers.set)",
                values.len()
            ));
        }
        if let Some(last) = values.last() {
            copied.insert(name.clone(), last.clone());
        }
    }
    parts.headers = copied;
    Ok(relay_response(
        Response::from_parts(parts, body),
        client_upgrade,
    ))
}

fn build(
    method: &Method,
    url: &str,
    headers: HeaderMap,
    body: BoxBody,
) -> Result<Request<BoxBody>, String> {
    let uri: Uri = url.parse().map_err(|e| format!("invalid url {url}: {e}"))?;
    let mut r = Request::new(body);
    *r.method_mut() = method.clone();
    *r.uri_mut() = uri;
    *r.headers_mut() = headers;
    Ok(r)
}

/// Resolves a `Location` against the current URL with the WHATWG URL parser (workerd's
/// `fetch_standard_url`); `None` when it is not a URL.
fn resolve_location(current: &str, loc: &str) -> Option<String> {
    let base = url::Url::parse(current).ok()?;
    let next = base.join(loc).ok()?;
    matches!(next.scheme(), "http" | "https").then(|| next.to_string())
}

/// Whether two URLs have the same origin (scheme, host, port).
fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_resolution() {
        let cur = "https://app.fly.dev/a/b?x=1";
        let r = |loc: &str| resolve_location(cur, loc);
        assert_eq!(r("/login").as_deref(), Some("https://app.fly.dev/login"));
        assert_eq!(r("c").as_deref(), Some("https://app.fly.dev/a/c"));
        assert_eq!(
            r("//other.example/x").as_deref(),
            Some("https://other.example/x")
        );
        assert_eq!(r("http://e.x/").as_deref(), Some("http://e.x/"));
        // What resolving by hand got wrong: dot segments, a query-only reference, a scheme in
        // capitals, backslashes (the WHATWG parser reads them as slashes in http(s) URLs).
        assert_eq!(r("../up").as_deref(), Some("https://app.fly.dev/up"));
        assert_eq!(r("?y=2").as_deref(), Some("https://app.fly.dev/a/b?y=2"));
        assert_eq!(r("HTTPS://E.X/p").as_deref(), Some("https://e.x/p"));
        assert_eq!(
            r("\\\\evil.example\\x").as_deref(),
            Some("https://evil.example/x")
        );
        // Not a URL, or not one fetch can follow.
        assert_eq!(r("http://[::1"), None);
        assert_eq!(r("mailto:a@b.example"), None);
    }

    #[test]
    fn origins() {
        assert!(same_origin(
            "https://a.example/x",
            "https://a.example:443/y?z"
        ));
        assert!(!same_origin("https://a.example/", "http://a.example/"));
        assert!(!same_origin(
            "https://a.example/",
            "https://a.example:8443/"
        ));
        assert!(!same_origin("http://127.0.0.1:1/", "https://p.fly.dev/"));
    }
}
