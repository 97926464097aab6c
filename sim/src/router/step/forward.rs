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
        Err(e) => return Err(Refusal::proxy_error(e.to_string())),
    };
    // fetch's default redirect: "follow" (O4), for HTTP only.
    if !websocket {
        while resp.status().is_redirection() && resp.status() != StatusCode::NOT_MODIFIED {
            let Some(loc) = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
            else {
                break;
            };
            if ev.redirects_followed.len() >= MAX_REDIRECTS {
                return Err(Refusal::proxy_error(
                    "fetch failed: redirect count exceeded",
                ));
            }
            let status = resp.status();
            let next = resolve_location(&current_url, &loc);
            ev.redirects_followed
                .push(format!("{} {} → {next}", status.as_u16(), loc));
            let had_body = !matches!(current_method, Method::GET | Method::HEAD);
            let switch_to_get = status == StatusCode::SEE_OTHER && current_method != Method::HEAD
                || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                    && current_method == Method::POST);
            if switch_to_get {
                current_method = Method::GET;
            } else if had_body {
                // A streamed body cannot be replayed (fetch: "duplex: half").
                return Err(Refusal::proxy_error(
                    "fetch failed: cannot follow a redirect with a streamed body",
                ));
            }
            let mut h = headers.clone();
            if switch_to_get {
                h.remove(header::CONTENT_LENGTH);
                h.remove(header::CONTENT_TYPE);
            }
            // The next hop's Host comes from its URL.
            h.remove(header::HOST);
            out = match build(&current_method, &next, h, full("")) {
                Ok(r) => r,
                Err(e) => return Err(Refusal::proxy_error(e)),
            };
            current_url = next;
            resp = match net.send(out).await {
                Ok(r) => r,
                Err(e) => return Err(Refusal::proxy_error(e.to_string())),
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

/// Resolves a `Location` against the current URL (absolute, scheme-relative, absolute-path, or
/// relative-path).
fn resolve_location(current: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return loc.to_string();
    }
    let (scheme, rest) = current.split_once("://").unwrap_or(("http", current));
    if let Some(r) = loc.strip_prefix("//") {
        return format!("{scheme}://{r}");
    }
    let authority = rest.split('/').next().unwrap_or("");
    if loc.starts_with('/') {
        return format!("{scheme}://{authority}{loc}");
    }
    let path = &rest[authority.len()..];
    let path = path.split('?').next().unwrap_or("/");
    let dir = match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    };
    format!("{scheme}://{authority}{dir}{loc}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_resolution() {
        let cur = "https://app.fly.dev/a/b?x=1";
        assert_eq!(resolve_location(cur, "/login"), "https://app.fly.dev/login");
        assert_eq!(resolve_location(cur, "c"), "https://app.fly.dev/a/c");
        assert_eq!(
            resolve_location(cur, "//other.example/x"),
            "https://other.example/x"
        );
        assert_eq!(resolve_location(cur, "http://e.x/"), "http://e.x/");
    }
}
