//! One request through the proxy: health, secret, target header, header rewrite, forward, upgrade.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;

use crate::access_log::{CountingBody, LoggedBody, PendingLog, RequestRecord};
use crate::config::{ProxyConfig, SECRET_HEADER, TARGET_HOST_HEADER, VIA_HEADER};
use crate::hop_headers::{connection_has_token, strip_hop_by_hop};
use crate::localhost::{LocalConnector, UpstreamAddr, connect_local};
use crate::responses::{BoxBody, ProxyError, empty, health, json_error};
use crate::target_host::{Target, TargetHostError, parse_target_host_bytes};
use crate::tunnel::Tunnels;

pub(crate) type UpstreamBody = CountingBody<Incoming>;
pub(crate) type ProxyBody = LoggedBody<BoxBody>;

/// State shared by all connections of one `serve`.
pub(crate) struct Shared {
    pub(crate) cfg: ProxyConfig,
    pub(crate) self_port: u16,
    pub(crate) client: Client<LocalConnector, UpstreamBody>,
    pub(crate) tunnels: Tunnels,
    next_id: AtomicU64,
    id_prefix: String,
}

impl Shared {
    pub(crate) fn new(
        cfg: ProxyConfig,
        self_port: u16,
        client: Client<LocalConnector, UpstreamBody>,
    ) -> Shared {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
            .unwrap_or(0);
        Shared {
            cfg,
            self_port,
            client,
            tunnels: Tunnels::default(),
            next_id: AtomicU64::new(1),
            id_prefix: format!("{:08x}{:04x}", nanos, std::process::id() & 0xffff),
        }
    }

    fn request_id(&self, req: &Request<Incoming>) -> String {
        if let Some(v) = req.headers().get(&self.cfg.request_id_header)
            && let Ok(s) = v.to_str()
            && !s.is_empty()
            && s.len() <= 128
        {
            return s.to_string();
        }
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.id_prefix)
    }
}

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

pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    let start = Instant::now();
    let bytes_in = Arc::new(AtomicU64::new(0));
    let mut record = RequestRecord {
        request_id: shared.request_id(&req),
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        target_header: req
            .headers()
            .get(&TARGET_HOST_HEADER)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        target_port: None,
        target_form: None,
        upstream_addr: None,
        status: 0,
        error: None,
        upgraded: false,
        head_duration: Default::default(),
        duration: Default::default(),
        bytes_in: 0,
        bytes_out: 0,
        completed: false,
    };
    let upgrade = wants_upgrade(&req);
    let resp = match route(&shared, req, upgrade, &mut record, &bytes_in).await {
        Ok(resp) => resp,
        Err(err) => {
            record.error = Some(err.code());
            // A refused upgrade closes the connection: the client may already speak the new protocol.
            json_error(err, upgrade)
        }
    };
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
    if req.headers().get_all(header::HOST).iter().count() > 1 {
        return Err(ProxyError::InvalidRequest);
    }
    if let Some(secret) = &shared.cfg.secret {
        let presented = req.headers().get(&SECRET_HEADER).map(|v| v.as_bytes());
        if !presented.is_some_and(|p| secret.matches(p)) {
            return Err(ProxyError::Unauthorized);
        }
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
    rewrite_request_headers(&mut parts.headers, target, upgrade);
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let upstream_req = Request::from_parts(parts, CountingBody::new(body, bytes_in.clone()));

    match client_upgrade {
        None => forward(shared, upstream_req, record).await,
        Some(client_upgrade) => upgrade_forward(shared, upstream_req, client_upgrade, record).await,
    }
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
    strip_hop_by_hop(&mut parts.headers, keep_upgrade);
    Response::from_parts(parts, body.map_err(Into::into).boxed_unsync())
}

async fn forward(
    shared: &Shared,
    req: Request<UpstreamBody>,
    record: &mut RequestRecord,
) -> Result<Response<BoxBody>, ProxyError> {
    match shared.client.request(req).await {
        Ok(resp) => {
            record.upstream_addr = resp.extensions().get::<UpstreamAddr>().map(|a| a.0);
            Ok(map_upstream_response(resp, false))
        }
        Err(e) => {
            tracing::debug!(request_id = %record.request_id, error = ?e, "upstream request failed");
            Err(ProxyError::ProxyError)
        }
    }
}

/// Forwards an upgrade request on a dedicated upstream connection. Only a `101` from the app opens
/// the byte tunnel; any other answer is passed back as an ordinary response.
async fn upgrade_forward(
    shared: &Shared,
    req: Request<UpstreamBody>,
    client_upgrade: hyper::upgrade::OnUpgrade,
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
        ProxyError::ProxyError
    })?;
    record.upstream_addr = Some(addr);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| ProxyError::ProxyError)?;
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
    let mut resp = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(|_| ProxyError::ProxyError)?;

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
