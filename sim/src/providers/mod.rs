//! Provider transports from the OS router to a machine's port 8080: Docker (host-mapped port found
//! through the Engine API), Fly (`https://<app>.fly.dev`, the edge forwards to the machine's 8080)
//! and Daytona (`https://8080-<sandbox>.proxy.daytona.works`).

pub mod daytona;
pub mod docker;
pub mod docker_proxy;
pub mod fly;

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use crate::net::{BoxBody, boxed, is_upgrade, relay_response, text_response};
use crate::runtime::WorldState;
use crate::trace::{Event, ProviderEvent, TRACE_HEADER};

/// Forwards a request that a provider edge accepted to an address on the machine, adding the
/// provider's headers, and records what the provider did.
pub(crate) async fn forward_to_machine(
    state: &Arc<WorldState>,
    provider: &str,
    mut req: Request<Incoming>,
    target: SocketAddr,
    added: Vec<(String, String)>,
    decision: String,
) -> Response<BoxBody> {
    let trace_id = trace_id(&req);
    let request = format!("{} {}", req.method(), describe_url(&req));
    let client_upgrade = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    for (k, v) in &added {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            parts.headers.insert(k, v);
        }
    }
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = match format!("http://{target}{pq}").parse::<Uri>() {
        Ok(u) => u,
        Err(_) => return text_response(StatusCode::BAD_REQUEST, "bad request target"),
    };
    let result = state
        .net
        .send(Request::from_parts(parts, boxed(body)))
        .await;
    let (resp, status, decision) = match result {
        Ok(resp) => {
            let s = resp.status().as_u16();
            (relay_response(resp, client_upgrade), Some(s), decision)
        }
        Err(e) => {
            let (code, text) = provider_unreachable(provider);
            (
                text_response(code, text),
                Some(code.as_u16()),
                format!("{decision}; machine unreachable ({e}) → {}", code.as_u16()),
            )
        }
    };
    if let Some(id) = trace_id {
        state.trace.record(
            &id,
            Event::Provider(ProviderEvent {
                provider: provider.into(),
                request,
                decision,
                added_headers: added,
                status,
            }),
        );
    }
    resp
}

/// What each provider's edge answers when the machine's port refuses.
fn provider_unreachable(provider: &str) -> (StatusCode, &'static str) {
    match provider {
        // fly-proxy error PC01: "Machine refused connection on port".
        "fly" => (StatusCode::BAD_GATEWAY, ""),
        _ => (StatusCode::BAD_GATEWAY, "bad gateway"),
    }
}

/// The provider's switched-on faults: first a delay, then, if set, a fixed answer that never
/// reaches the machine. `label` names the part of the provider that answers.
pub(crate) async fn provider_faults(
    state: &Arc<WorldState>,
    kind: crate::world::ProviderKind,
    req: &Request<Incoming>,
    label: &str,
    body: &str,
) -> Option<Response<BoxBody>> {
    if let Some(delay) = state.provider_delay(kind) {
        tokio::time::sleep(delay).await;
    }
    let code = state.provider_status(kind)?;
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    Some(refuse(
        state,
        kind.as_str(),
        req,
        format!("{label} fault: answers {code}"),
        text_response(status, body),
    ))
}

/// The request's `Host`, lowercased, without a port.
pub(crate) fn host_of(req: &Request<Incoming>) -> String {
    let h = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    h.split(':').next().unwrap_or("").to_string()
}

pub(crate) fn trace_id(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get(TRACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `https://<host><path>` as the provider saw it.
pub(crate) fn describe_url(req: &Request<Incoming>) -> String {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    format!("https://{host}{pq}")
}

/// Records a provider refusal (no machine reached) and returns the response.
pub(crate) fn refuse(
    state: &Arc<WorldState>,
    provider: &str,
    req: &Request<Incoming>,
    decision: String,
    resp: Response<BoxBody>,
) -> Response<BoxBody> {
    if let Some(id) = trace_id(req) {
        state.trace.record(
            &id,
            Event::Provider(ProviderEvent {
                provider: provider.into(),
                request: format!("{} {}", req.method(), describe_url(req)),
                decision,
                added_headers: vec![],
                status: Some(resp.status().as_u16()),
            }),
        );
    }
    resp
}
