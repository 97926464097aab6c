//! The edge (Cloudflare in production): a request reaches the OS router only when a worker route
//! from `OS_WORKER_ROUTES` matches its URL (see [`crate::route_pattern`] for our reading of the
//! matching rules). The public scheme is `https`. The edge listens twice: over TLS (its
//! certificates picked by SNI, [`EdgeTls`]; a name none covers fails the handshake, recorded as an
//! edge decision) and over plain HTTP (the `Host` header names the public hostname, as before TLS
//! was modelled).
//!
//! No route → `404 {"error":"edge_no_route","details":{"hostname":…,"path":…}}`: in production
//! such a request would go to the zone's origin, which this world does not have.
//!
//! Forwarded to the router: method, path, body and headers (hop-by-hop removed, upgrades kept),
//! plus the headers Cloudflare adds: `CF-Connecting-IP`, `CF-IPCountry`, `CF-Ray`, `CF-Visitor`,
//! `X-Forwarded-For`, `X-Forwarded-Proto`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;

use crate::model::request_hostname;
use crate::net::{
    BoxBody, OnEnd, SimNetwork, boxed, is_upgrade, json_response, relay_response, text_response,
};
use crate::net::{TlsPolicy, TlsSession};
use crate::route_pattern::{RoutePattern, best_match};
use crate::tls::{EdgeCertificates, SimCa, SniChoice};
use crate::trace::{EdgeEvent, Event, TRACE_HEADER, TraceStore};

/// The edge's TLS: its certificates, the CA that signs them in this world, and the trace a refused
/// handshake is recorded into.
pub struct EdgeTls {
    pub certificates: EdgeCertificates,
    pub ca: Arc<SimCa>,
    pub trace: Arc<TraceStore>,
}

impl TlsPolicy for EdgeTls {
    fn choose(
        &self,
        sni: Option<&str>,
        peer: SocketAddr,
    ) -> Result<(Arc<rustls::ServerConfig>, TlsSession), String> {
        let announced = self.trace.connection_id(peer);
        let why = match self.certificates.choose(sni) {
            SniChoice::Certificate(cert) => match self.ca.server_config(&cert.sans, None) {
                Ok(cfg) => {
                    return Ok((
                        cfg,
                        TlsSession {
                            sni: sni.map(str::to_string),
                            certificate: cert.describe(),
                            version: String::new(),
                        },
                    ));
                }
                Err(e) => format!("cannot issue {}: {e}", cert.describe()),
            },
            SniChoice::Refused(why) => why,
        };
        let id = announced.unwrap_or_else(|| self.trace.next_id());
        let host = sni.unwrap_or("");
        self.trace.record(
            &id,
            Event::Edge(EdgeEvent {
                method: "TLS".into(),
                url: format!("https://{host}"),
                route: None,
                decision: format!(
                    "refused: TLS handshake for SNI {}: {why} → fatal alert handshake_failure",
                    sni.unwrap_or("(none)")
                ),
                tls: None,
                added_headers: vec![],
            }),
        );
        self.trace.finish(&id);
        Err(why)
    }
}

/// How a request's TLS session reads in the trace.
fn describe_session(s: &TlsSession) -> String {
    format!(
        "SNI {} → {} ({})",
        s.sni.as_deref().unwrap_or("(none)"),
        s.certificate,
        s.version
    )
}

/// What the edge reads: the worker routes, its origin timeout, where the OS router is, the
/// network and the trace.
pub struct EdgeCtx {
    /// `OS_WORKER_ROUTES`, parsed.
    pub routes: Vec<RoutePattern>,
    /// No response head from the origin within this → 524.
    pub origin_timeout: Duration,
    /// The OS router's address (the worker routes' origin).
    pub router: SocketAddr,
    pub net: Arc<SimNetwork>,
    pub trace: Arc<TraceStore>,
}

pub async fn handle(
    ctx: Arc<EdgeCtx>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<BoxBody> {
    let id = req
        .headers()
        .get(TRACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .map(str::to_string)
        .unwrap_or_else(|| ctx.trace.next_id());
    let host_header = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let host = request_hostname(&host_header);
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let url = format!("https://{host}{pq}");
    let mut ev = EdgeEvent {
        method: req.method().to_string(),
        url: url.clone(),
        route: None,
        decision: String::new(),
        tls: req.extensions().get::<TlsSession>().map(describe_session),
        added_headers: vec![],
    };
    let hosts = req.headers().get_all(header::HOST).iter().count();
    let resp = match best_match(&ctx.routes, "https", &host, &pq)
        .map(|r: &RoutePattern| r.raw.clone())
    {
        // Cloudflare refuses a request with two `Host` fields before any route or worker runs
        // (docs/behaviour.md §2).
        _ if hosts > 1 => {
            ev.decision = format!("refused: {hosts} Host headers → 400 (Cloudflare's page)");
            cloudflare_bad_request()
        }
        None => {
            ev.decision = "refused: edge_no_route (no worker route matches)".into();
            let path = req.uri().path().to_string();
            json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": "edge_no_route", "details": {"hostname": host, "path": path}}),
            )
        }
        Some(route) => {
            ev.route = Some(route);
            let client_ip = peer.ip().to_string();
            let added = vec![
                ("cf-connecting-ip".to_string(), client_ip.clone()),
                ("cf-ipcountry".to_string(), "XX".to_string()),
                ("cf-ray".to_string(), format!("{id}-SIM")),
                (
                    "cf-visitor".to_string(),
                    "{\"scheme\":\"https\"}".to_string(),
                ),
                ("x-forwarded-for".to_string(), client_ip),
                ("x-forwarded-proto".to_string(), "https".to_string()),
            ];
            let upgrade = is_upgrade(req.headers());
            let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
            let (mut parts, body) = req.into_parts();
            proxy::hop_headers::strip_hop_by_hop(&mut parts.headers, upgrade);
            for (k, v) in &added {
                if let (Ok(k), Ok(v)) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    parts.headers.insert(k, v);
                }
            }
            if let Ok(v) = HeaderValue::from_str(&id) {
                parts.headers.insert(TRACE_HEADER, v);
            }
            ev.added_headers = added;
            let router = ctx.router;
            match format!("http://{router}{pq}").parse::<Uri>() {
                Ok(u) => parts.uri = u,
                Err(_) => {
                    ev.decision = "refused: bad request target".into();
                    ctx.trace.record(&id, Event::Edge(ev));
                    ctx.trace.finish(&id);
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "bad_request"}),
                    );
                }
            }
            let limit = ctx.origin_timeout;
            match tokio::time::timeout(limit, ctx.net.send(Request::from_parts(parts, boxed(body))))
                .await
            {
                Err(_) => {
                    ev.decision = format!(
                        "origin timeout: no response head within {} ms → 524",
                        limit.as_millis()
                    );
                    text_response(
                        StatusCode::from_u16(524).unwrap_or(StatusCode::GATEWAY_TIMEOUT),
                        "error code: 524",
                    )
                }
                Ok(Ok(r)) => {
                    ev.decision = "forwarded to the OS router".into();
                    relay_response(r, client_upgrade)
                }
                Ok(Err(e)) => {
                    ev.decision = format!("OS router unreachable: {e}");
                    json_response(
                        StatusCode::BAD_GATEWAY,
                        &json!({"error": "edge_origin_unreachable"}),
                    )
                }
            }
        }
    };
    ctx.trace.record(&id, Event::Edge(ev));
    let (mut parts, body) = resp.into_parts();
    if let Ok(v) = HeaderValue::from_str(&id) {
        parts.headers.insert(TRACE_HEADER, v);
    }
    let st = ctx.clone();
    let done_id = id.clone();
    let body = OnEnd::new(body, move || st.trace.finish(&done_id)).boxed_unsync();
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        // The exchange continues in the tunnel; the request is finished for tracing.
        ctx.trace.finish(&id);
    }
    Response::from_parts(parts, body)
}

/// Cloudflare's answer to a request it cannot parse as one HTTP request (our reading: its
/// nginx-style page with `Server: cloudflare`, docs/behaviour.md §2).
pub const CLOUDFLARE_400_PAGE: &str = "<html>\r\n<head><title>400 Bad Request</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n";

fn cloudflare_bad_request() -> Response<BoxBody> {
    let mut r = text_response(StatusCode::BAD_REQUEST, CLOUDFLARE_400_PAGE);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    r.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("cloudflare"));
    r
}
