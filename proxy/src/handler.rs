//! One request through the proxy: health, secret, target header, header rewrite, forward, upgrade.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::access_log::{LoggedBody, PendingLog, RequestRecord};
use crate::cause;
use crate::config::{SECRET_HEADER, TARGET_HOST_HEADER, VIA_HEADER};
use crate::guard::EndFlag;
use crate::hop_headers::{connection_has_token, strip_hop_by_hop};
use crate::host::valid_host;
use crate::localhost::{UpstreamAddr, connect_local};
use crate::responses::{BoxBody, ProxyError, empty, health, json_error};
use crate::retry::{is_idempotent, stale_connection};
use crate::shared::Shared;
use crate::target_host::{Target, TargetHostError, parse_target_host_bytes};
use crate::upstream_body::{ClientBody, Progress, UpstreamBody, with_head_timeout};

pub(crate) type ProxyBody = LoggedBody<BoxBody>;

/// Whether a request asks to switch protocols. `h2c` is never honoured: an `Upgrade: h2c` request
/// is forwarded as a plain HTTP/1.1 request with the upgrade stripped (no request smuggling
/// through a tunnel the proxy cannot see into).
fn wants_upgrade(req: &Request<Incoming>) -> bool {
    if req.version() != Version::HTTP_11 || !connection_has_token(req.headers(), "upgrade") {
        return false;
    }
    match req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
    {
        Some(proto) => !proto
            .split(',')
            .any(|p| p.trim().to_ascii_lowercase().starts_with("h2c")),
        None => false,
    }
}

/// Serves one request of a connection the fast path handed over. `ends` is set by the framing
/// guard when it has stopped passing requests: the answer then closes the connection.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    ends: EndFlag,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    let start = Instant::now();
    let bytes_in = Arc::new(AtomicU64::new(0));
    let mut record = RequestRecord::new(
        shared.request_id(&req),
        req.method().as_str(),
        req.uri().path(),
        req.headers().get(&TARGET_HOST_HEADER).map(|v| v.as_bytes()),
    );
    let upgrade = wants_upgrade(&req);
    let mut resp = match route(&shared, req, upgrade, &mut record, &bytes_in).await {
        Ok(resp) => resp,
        Err(err) => {
            record.error = Some(err.code());
            json_error(err)
        }
    };
    // The guard has stopped reading requests (an upgrade was asked for, honoured or not, or a head
    // it cannot frame): unless this is the upgrade's `101`, the connection ends with this answer,
    // since what the client sends next may already be the new protocol.
    if ends.load(Ordering::Relaxed) && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    record.status = resp.status().as_u16();
    record.head_duration = start.elapsed();
    let pending = PendingLog {
        record,
        start,
        bytes_in,
        sink: shared.cfg.access_log.clone(),
    };
    Ok(resp.map(|b| LoggedBody::new(b, pending)))
}

async fn route(
    shared: &Shared,
    mut req: Request<Incoming>,
    upgrade: bool,
    record: &mut RequestRecord,
    bytes_in: &Arc<AtomicU64>,
) -> Result<Response<BoxBody>, ProxyError> {
    if !upgrade && req.uri().path() == "/health" {
        return Ok(health());
    }
    if req.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }
    // One request must reach the app as exactly one request: no ambiguous Host, no ambiguous
    // framing (RFC 9112 §3.2, §6.1).
    let hosts = req.headers().get_all(header::HOST).iter().count();
    if hosts > 1 || (hosts == 0 && req.version() == Version::HTTP_11) {
        return Err(ProxyError::InvalidRequest);
    }
    if let Some(host) = req.headers().get(header::HOST)
        && !valid_host(host.as_bytes())
    {
        return Err(ProxyError::InvalidRequest);
    }
    if req.headers().contains_key(header::TRANSFER_ENCODING)
        && req.headers().contains_key(header::CONTENT_LENGTH)
    {
        return Err(ProxyError::InvalidRequest);
    }
    if let Some(secret) = &shared.cfg.secret {
        let presented = req.headers().get(&SECRET_HEADER).map(|v| v.as_bytes());
        if !presented.is_some_and(|p| secret.matches(p)) {
            return Err(ProxyError::Unauthorized);
        }
    }
    if req
        .headers()
        .get_all(&TARGET_HOST_HEADER)
        .iter()
        .nth(1)
        .is_some()
    {
        // Two target headers: which one a hop before us read is unknowable.
        return Err(ProxyError::InvalidTargetHost);
    }
    let target =
        parse_target_host_bytes(req.headers().get(&TARGET_HOST_HEADER).map(|v| v.as_bytes()))
            .map_err(|e| match e {
                TargetHostError::Missing => ProxyError::MissingTargetHost,
                TargetHostError::Invalid => ProxyError::InvalidTargetHost,
            })?;
    record.target_port = Some(target.port);
    record.target_form = Some(target.form.as_str());
    if target.port == shared.self_port {
        return Err(ProxyError::TargetIsSelf);
    }

    let uri = upstream_uri(req.uri(), target)?;
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let expects_continue = parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    rewrite_request_headers(&mut parts.headers, target, upgrade);
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let client_errored = Arc::new(AtomicBool::new(false));
    let body_started = Arc::new(AtomicBool::new(false));
    let body_empty = hyper::body::Body::is_end_stream(&body);
    let progress = Arc::new(Progress::new());
    let mut client_body = ClientBody::new(
        body,
        bytes_in.clone(),
        client_errored.clone(),
        body_started.clone(),
        progress.clone(),
    );
    // A template for one safe retry: idempotent method, no body.
    let retry = (is_idempotent(parts.method.as_str()) && body_empty && !upgrade).then(|| {
        (
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
        )
    });
    let go_tx = if expects_continue && !body_empty {
        let (go_tx, go_rx) = tokio::sync::watch::channel(false);
        client_body = client_body.gated(go_rx, shared.cfg.limits.expect_continue_timeout);
        Some(go_tx)
    } else {
        None
    };
    let mut upstream_req = Request::from_parts(parts, UpstreamBody::Left(client_body));
    if let Some(go_tx) = go_tx {
        hyper::ext::on_informational(&mut upstream_req, move |res| {
            if res.status() == StatusCode::CONTINUE {
                go_tx.send_replace(true);
            }
        });
    }

    let mut resp = match client_upgrade {
        None => {
            forward(
                shared,
                upstream_req,
                retry,
                &client_errored,
                &progress,
                record,
            )
            .await?
        }
        Some(client_upgrade) => {
            upgrade_forward(shared, upstream_req, client_upgrade, &progress, record).await?
        }
    };
    if expects_continue && !body_empty && !body_started.load(Ordering::Relaxed) {
        // The app answered before asking for the body: close instead of letting hyper read the
        // body to keep the connection (which would send `100 Continue` and pull the upload).
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

/// Size of a response head as it came off the wire, near enough: status line and
/// `name: value\r\n` per field.
fn response_head_len(resp: &Response<Incoming>) -> usize {
    let fields: usize = resp
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    fields + 17 + resp.status().canonical_reason().map_or(0, str::len)
}

/// `http://localhost:<port><path-and-query>`, the path and query byte-for-byte.
fn upstream_uri(inbound: &Uri, target: Target) -> Result<Uri, ProxyError> {
    let pq = inbound
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    if !pq.starts_with('/') {
        // `*` (OPTIONS *) or anything else that is not origin-form after parsing.
        return Err(ProxyError::InvalidRequest);
    }
    Uri::builder()
        .scheme("http")
        .authority(format!("localhost:{}", target.port))
        .path_and_query(pq)
        .build()
        .map_err(|_| ProxyError::InvalidRequest)
}

/// Strip hop-by-hop headers first, then apply the proxy's own rewrite, so that a client cannot
/// remove the proxy's headers by naming them in `Connection`.
pub fn rewrite_request_headers(headers: &mut http::HeaderMap, target: Target, upgrade: bool) {
    let via = headers
        .get(header::HOST)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(""));
    strip_hop_by_hop(headers, upgrade);
    headers.remove(&TARGET_HOST_HEADER);
    headers.remove(&SECRET_HEADER);
    let host = HeaderValue::from_str(&target.upstream_host_header())
        .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
    headers.insert(header::HOST, host);
    headers.insert(VIA_HEADER, via);
}

fn map_upstream_response(resp: Response<Incoming>, keep_upgrade: bool) -> Response<BoxBody> {
    let (mut parts, body) = resp.into_parts();
    // With both, Transfer-Encoding frames the body (RFC 9112 §6.3); the length is wrong and must
    // not reach the client next to the re-framed body.
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    strip_hop_by_hop(&mut parts.headers, keep_upgrade);
    Response::from_parts(parts, body.map_err(Into::into).boxed_unsync())
}

type RetryTemplate = (Method, Uri, http::HeaderMap);

async fn forward(
    shared: &Shared,
    req: Request<UpstreamBody>,
    retry: Option<RetryTemplate>,
    client_errored: &AtomicBool,
    progress: &Progress,
    record: &mut RequestRecord,
) -> Result<Response<BoxBody>, ProxyError> {
    let head_timeout = shared.cfg.limits.upstream_head_timeout;
    let mut attempt = with_head_timeout(head_timeout, progress, shared.client.request(req)).await;
    if let (Ok(Err(e)), Some((method, uri, headers))) = (&attempt, retry)
        && stale_connection(e)
    {
        tracing::debug!(request_id = %record.request_id, error = ?e, "stale upstream connection; retrying once");
        let mut again = Request::new(UpstreamBody::Right(http_body_util::Empty::new()));
        *again.method_mut() = method;
        *again.uri_mut() = uri;
        *again.headers_mut() = headers;
        attempt = with_head_timeout(head_timeout, progress, shared.client.request(again)).await;
    }
    match attempt {
        Ok(Ok(resp)) => {
            record.upstream_addr = resp.extensions().get::<UpstreamAddr>().map(|a| a.0);
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                // Nobody asked for it (upgrades go to `upgrade_forward`).
                tracing::debug!(request_id = %record.request_id, "101 to a request without an upgrade");
                record.cause = Some(cause::UNREQUESTED_101);
                return Err(ProxyError::ProxyError);
            }
            if response_head_len(&resp) > shared.cfg.limits.max_response_head_bytes {
                tracing::debug!(request_id = %record.request_id, "response head too large");
                record.cause = Some(cause::HEAD_TOO_LARGE);
                return Err(ProxyError::ProxyError);
            }
            Ok(map_upstream_response(resp, false))
        }
        Ok(Err(e)) => {
            tracing::debug!(request_id = %record.request_id, error = ?e, "upstream request failed");
            if client_errored.load(Ordering::Relaxed) {
                // The client's own body was malformed or cut: not the app's fault.
                Err(ProxyError::InvalidRequest)
            } else {
                record.cause = Some(cause::of_client_error(&e));
                Err(ProxyError::ProxyError)
            }
        }
        Err(_) => {
            record.cause = Some(cause::HEAD_TIMEOUT);
            Err(ProxyError::UpstreamTimeout)
        }
    }
}

/// Forwards an upgrade request on a dedicated upstream connection. Only a `101` from the app opens
/// the byte tunnel; any other answer is passed back as an ordinary response.
async fn upgrade_forward(
    shared: &Shared,
    req: Request<UpstreamBody>,
    client_upgrade: hyper::upgrade::OnUpgrade,
    progress: &Progress,
    record: &mut RequestRecord,
) -> Result<Response<BoxBody>, ProxyError> {
    let port = req.uri().port_u16().ok_or(ProxyError::InvalidRequest)?;
    let (stream, addr) = connect_local(
        shared.cfg.localhost.as_ref(),
        port,
        shared.cfg.limits.connect_timeout,
    )
    .await
    .map_err(|e| {
        tracing::debug!(request_id = %record.request_id, error = %e, "upstream connect failed");
        record.cause = Some(cause::of_connect(&e));
        ProxyError::ProxyError
    })?;
    record.upstream_addr = Some(addr);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| {
            record.cause = Some(cause::UPSTREAM_FAILED);
            ProxyError::ProxyError
        })?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    // The request target must be origin-form on a direct connection.
    let (mut parts, body) = req.into_parts();
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|pq| Uri::from(pq.clone()))
        .unwrap_or_else(|| Uri::from_static("/"));
    let mut resp = with_head_timeout(
        shared.cfg.limits.upstream_head_timeout,
        progress,
        sender.send_request(Request::from_parts(parts, body)),
    )
    .await
    .map_err(|_| {
        record.cause = Some(cause::HEAD_TIMEOUT);
        ProxyError::UpstreamTimeout
    })?
    .map_err(|e| {
        record.cause = Some(if e.is_parse() {
            cause::INVALID_HEAD
        } else {
            cause::CLOSED
        });
        ProxyError::ProxyError
    })?;

    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(map_upstream_response(resp, false));
    }
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let (parts, _) = resp.into_parts();
    let mut out = Response::from_parts(parts, empty());
    strip_hop_by_hop(out.headers_mut(), true);
    record.upgraded = true;
    shared.tunnels.spawn(client_upgrade, upstream_upgrade);
    Ok(out)
}
