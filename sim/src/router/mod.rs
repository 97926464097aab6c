//! The OS router (the `os` worker's ingress path), generation V0 "step 0" (reference §4 V0):
//!
//! 1. `PROJECT_INGRESS_PROXY_HOST_MATCHERS` empty → `500 ingress_not_configured`.
//! 2. Host (the URL hostname) must match a glob → else `404 not_found`.
//! 3. Parse (`.machines.` form and `<port>__` tokens) → `400 invalid_hostname|invalid_port`.
//! 4. No authentication.
//! 5. Resolve: project → its first `active` machine; machine id → state `active|detached`;
//!    none → `404 machine_not_found`; no external id → `503 machine_unavailable`.
//! 6. Provider transport to the machine's 8080 with `X-Iterate-Proxy-Target-Host: <url.hostname>`;
//!    an exception (no host port, connection failure) → `502 proxy_error`.
//!
//! Errors are `{"error":"<code>"}` (the V0 envelope). The structure keeps the pieces (host
//! extraction, matching, parsing, resolution, transport, forwarding) separate so later generations
//! can reuse them.

pub mod glob;
pub mod hostname;

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use serde_json::json;

use crate::machine::Machine;
use crate::net::{BoxBody, boxed, full, is_upgrade, json_response, relay_response};
use crate::providers::daytona::DAYTONA_PROXY_DOMAIN;
use crate::providers::docker::host_port_8080;
use crate::providers::fly::{FLY_BASE_DOMAIN, sanitize_app_name};
use crate::runtime::WorldState;
use crate::trace::{Event, MachineRef, RouterEvent, TRACE_HEADER};
use crate::world::{MachineState, ProviderKind};
use hostname::{ParsedTarget, TargetKind, parse_v0, request_hostname};

pub const TARGET_HEADER: &str = "x-iterate-proxy-target-host";

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

struct Decision {
    ev: RouterEvent,
}

impl Decision {
    fn new(hostname: String) -> Decision {
        Decision {
            ev: RouterEvent {
                generation: "v0".into(),
                hostname,
                host_source: "url".into(),
                matched: None,
                parsed: None,
                machine: None,
                provider_url: None,
                target_header: None,
                forwarded_headers: vec![],
                websocket: false,
                redirects_followed: vec![],
                outcome: String::new(),
                status: 0,
                response_header_notes: vec![],
                error: None,
            },
        }
    }

    fn refuse(&mut self, status: StatusCode, code: &str) -> Response<BoxBody> {
        self.ev.outcome = format!("refused: {code}");
        self.ev.status = status.as_u16();
        json_response(status, &json!({"error": code}))
    }
}

pub async fn handle(
    state: Arc<WorldState>,
    req: Request<Incoming>,
    _peer: SocketAddr,
) -> Response<BoxBody> {
    let trace_id = req
        .headers()
        .get(TRACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut d = Decision::new(request_hostname(host));
    let resp = route(&state, req, &mut d, trace_id.as_deref()).await;
    if let Some(id) = trace_id {
        state.trace.record(&id, Event::Router(Box::new(d.ev)));
    }
    resp
}

async fn route(
    state: &Arc<WorldState>,
    req: Request<Incoming>,
    d: &mut Decision,
    trace_id: Option<&str>,
) -> Response<BoxBody> {
    // 1-2. Matchers.
    let matchers = state.host_matchers();
    if matchers.is_empty() {
        return d.refuse(StatusCode::INTERNAL_SERVER_ERROR, "ingress_not_configured");
    }
    let Some(m) = matchers.iter().find(|g| g.matches(&d.ev.hostname)) else {
        return d.refuse(StatusCode::NOT_FOUND, "not_found");
    };
    d.ev.matched = Some(m.raw.clone());
    // 3. Parse.
    let parsed = match parse_v0(&d.ev.hostname) {
        Ok(p) => p,
        Err(e) => return d.refuse(StatusCode::BAD_REQUEST, e.code()),
    };
    d.ev.parsed = Some(parsed.clone());
    // 5. Resolve.
    let Some((machine, mstate)) = resolve(state, &parsed) else {
        return d.refuse(StatusCode::NOT_FOUND, "machine_not_found");
    };
    d.ev.machine = Some(MachineRef {
        id: machine.spec.id.clone(),
        project: machine.spec.project.clone(),
        state: mstate.as_str().into(),
        provider: machine.spec.provider.as_str().into(),
        external_id: machine.spec.external_id.clone(),
    });
    let Some(external_id) = machine.spec.external_id.clone() else {
        return d.refuse(StatusCode::SERVICE_UNAVAILABLE, "machine_unavailable");
    };
    // 6. Transport.
    let base = match base_url(state, &machine, &external_id, trace_id).await {
        Ok(b) => b,
        Err(msg) => {
            d.ev.error = Some(msg);
            return d.refuse(StatusCode::BAD_GATEWAY, "proxy_error");
        }
    };
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let url = format!("{base}{pq}");
    d.ev.provider_url = Some(url.clone());
    // V0: the target header is the URL hostname; the machine proxy reads the `<port>__` prefix.
    d.ev.target_header = Some(d.ev.hostname.clone());
    forward(state, req, d, url, trace_id).await
}

/// The machine the target means, with its current state.
fn resolve(state: &WorldState, t: &ParsedTarget) -> Option<(Arc<Machine>, MachineState)> {
    match t.kind {
        TargetKind::Project => state.machines_in_order().iter().find_map(|m| {
            let s = state.machine_state(&m.spec.id)?;
            (m.spec.project == t.id && s == MachineState::Active).then(|| (m.clone(), s))
        }),
        TargetKind::Machine => {
            let m = state.machine(&t.id)?;
            let s = state.machine_state(&t.id)?;
            matches!(s, MachineState::Active | MachineState::Detached).then_some((m, s))
        }
    }
}

/// `getBaseUrl({port: 8080})` per provider.
async fn base_url(
    state: &WorldState,
    machine: &Machine,
    external_id: &str,
    trace_id: Option<&str>,
) -> Result<String, String> {
    match machine.spec.provider {
        ProviderKind::Docker => {
            let r = machine
                .spec
                .metadata
                .container_ref
                .clone()
                .unwrap_or_else(|| external_id.to_string());
            let trace = trace_id.map(|id| (&*state.trace, id));
            let port = host_port_8080(&state.net, &state.engine, &r, &machine.spec.id, trace)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("http://127.0.0.1:{port}"))
        }
        ProviderKind::Fly => Ok(format!(
            "https://{}.{FLY_BASE_DOMAIN}",
            sanitize_app_name(external_id)
        )),
        ProviderKind::Daytona => {
            let sandbox = machine
                .spec
                .metadata
                .sandbox_id
                .clone()
                .unwrap_or_else(|| external_id.to_string());
            Ok(format!("https://8080-{sandbox}.{DAYTONA_PROXY_DOMAIN}"))
        }
    }
}

fn set_header(h: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        h.insert(n, v);
    }
}

async fn forward(
    state: &Arc<WorldState>,
    mut req: Request<Incoming>,
    d: &mut Decision,
    url: String,
    trace_id: Option<&str>,
) -> Response<BoxBody> {
    let target = d.ev.target_header.clone().unwrap_or_default();
    let websocket = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    d.ev.websocket = websocket;
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
    set_header(&mut headers, TARGET_HEADER, &target);
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
    d.ev.forwarded_headers = names;

    let client_upgrade =
        (websocket && is_upgrade(req.headers())).then(|| hyper::upgrade::on(&mut req));
    let method = req.method().clone();
    let body = boxed(req.into_body());
    let mut out = match build(&method, &url, headers.clone(), body) {
        Ok(r) => r,
        Err(e) => {
            d.ev.error = Some(e);
            return d.refuse(StatusCode::BAD_GATEWAY, "proxy_error");
        }
    };
    let mut current_url = url;
    let mut current_method = method.clone();
    let mut resp = match state.net.send(out).await {
        Ok(r) => r,
        Err(e) => {
            d.ev.error = Some(e.to_string());
            return d.refuse(StatusCode::BAD_GATEWAY, "proxy_error");
        }
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
            if d.ev.redirects_followed.len() >= MAX_REDIRECTS {
                d.ev.error = Some("fetch failed: redirect count exceeded".into());
                return d.refuse(StatusCode::BAD_GATEWAY, "proxy_error");
            }
            let status = resp.status();
            let next = resolve_location(&current_url, &loc);
            d.ev.redirects_followed
                .push(format!("{} {} → {next}", status.as_u16(), loc));
            let had_body = !matches!(current_method, Method::GET | Method::HEAD);
            let switch_to_get = status == StatusCode::SEE_OTHER && current_method != Method::HEAD
                || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                    && current_method == Method::POST);
            if switch_to_get {
                current_method = Method::GET;
            } else if had_body {
                // A streamed body cannot be replayed (fetch: "duplex: half").
                d.ev.error =
                    Some("fetch failed: cannot follow a redirect with a streamed body".into());
                return d.refuse(StatusCode::BAD_GATEWAY, "proxy_error");
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
                Err(e) => {
                    d.ev.error = Some(e);
                    return d.refuse(StatusCode::BAD_GATEWAY, "proxy_error");
                }
            };
            current_url = next;
            resp = match state.net.send(out).await {
                Ok(r) => r,
                Err(e) => {
                    d.ev.error = Some(e.to_string());
                    return d.refuse(StatusCode::BAD_GATEWAY, "proxy_error");
                }
            };
        }
    }
    d.ev.status = resp.status().as_u16();
    d.ev.outcome = if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        "tunnel".into()
    } else {
        "forwarded".into()
    };
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
        if values.len() > 1 {
            d.ev.response_header_notes.push(format!(
                "{name}: {} values collapsed to the last (Headers.set)",
                values.len()
            ));
        }
        if let Some(last) = values.last() {
            copied.insert(name.clone(), last.clone());
        }
    }
    parts.headers = copied;
    relay_response(Response::from_parts(parts, body), client_upgrade)
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
