//! The OS worker (V1+): its middleware in production's order (docs/behaviour.md §3.10):
//!
//! 1. session: Better Auth's `getSession`, from the session cookie (see
//!    `control_plane::cookies`);
//! 2. ingress: if the host is an ingress host (`shouldHandle…`: V1–V2 a host matcher covers it,
//!    V3+ it is `<something>.<PROJECT_INGRESS_DOMAIN>`), the router's generation answers, unless
//!    it returns `null`. With no matchers (V1–V2) or no domain (V3) configured every request goes
//!    to the router, which answers `500 ingress_not_configured` (our reading: a deploy refuses such
//!    an environment, but a world run under another generation can have one);
//! 3. everything else, and what fell through, goes to the control plane (bridge-start,
//!    `/_/exchange-token`, `/api/auth/*`, the app).
//!
//! The host is the one V1+ route on (`X-Forwarded-Host`, else `Host`: O5). Recorded as the
//! `worker` hop. V0 had no control plane modelled: its worker is the router alone.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower::ServiceExt;

use crate::control_plane::{Caller, cookies};
use crate::model::Generation;
use crate::net::{BoxBody, BoxError, text_response};
use crate::platform::{Platform, SessionRow};
use crate::router::step::canonical::{PublicOrigin, is_project_ingress_hostname};
use crate::router::step::host::request_host;
use crate::router::{Routed, RouterCtx};
use crate::trace::{Event, TRACE_HEADER, TraceStore, WorkerEvent};

/// What the worker reads.
pub struct WorkerCtx {
    pub router: Arc<RouterCtx>,
    pub control_plane: axum::Router,
    pub platform: Arc<Platform>,
    pub public: PublicOrigin,
    pub trace: Arc<TraceStore>,
}

pub async fn handle(
    ctx: Arc<WorkerCtx>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<BoxBody> {
    if ctx.router.generation == Generation::V0 {
        return crate::router::handle(ctx.router.clone(), req, peer).await;
    }
    let trace_id = req
        .headers()
        .get(TRACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (host, source) = request_host(req.headers());
    // 1. Session.
    let (session, seen) = session(&ctx, req.headers());
    // 2. Ingress?
    let (ingress, why) = should_handle(&ctx.router, &host);
    let mut ev = WorkerEvent {
        host: host.clone(),
        host_source: source.into(),
        session: seen,
        ingress: why,
        handled_by: String::new(),
    };
    if ingress {
        match crate::router::route(&ctx.router, req, session.as_ref()).await {
            Routed::Answered(resp) => {
                ev.handled_by = "ingress router".into();
                record(&ctx, &trace_id, ev);
                return resp;
            }
            Routed::FellThrough(r) => {
                ev.handled_by = "ingress router (null), then control plane".into();
                req = r;
            }
        }
    } else {
        ev.handled_by = "control plane".into();
    }
    record(&ctx, &trace_id, ev);
    // 3. The control plane.
    req.extensions_mut().insert(Caller {
        host,
        session,
        trace_id,
    });
    match ctx.control_plane.clone().oneshot(req).await {
        Ok(resp) => resp.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()),
        Err(e) => text_response(http::StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn record(ctx: &WorkerCtx, trace_id: &Option<String>, ev: WorkerEvent) {
    if let Some(id) = trace_id {
        ctx.trace.record(id, Event::Worker(ev));
    }
}

/// `getSession`: the session the cookie names, and what was seen.
fn session(ctx: &WorkerCtx, headers: &http::HeaderMap) -> (Option<SessionRow>, String) {
    let name = cookies::name(&ctx.public);
    match cookies::read(headers, &name) {
        None => (None, "none".into()),
        Some(token) => match ctx.platform.session(&token) {
            Some(s) => {
                let seen = format!("{} (session {})", s.user.id, s.token);
                (Some(s), seen)
            }
            None => (None, format!("none ({name}={token} names no live session)")),
        },
    }
}

/// `shouldHandleProjectIngressHostname` for the generation.
fn should_handle(router: &RouterCtx, host: &str) -> (bool, String) {
    match router.generation {
        Generation::V0 | Generation::V1 | Generation::V2 => {
            if router.matchers.is_empty() {
                return (true, "no host matchers: the ingress handler decides".into());
            }
            match router.matchers.iter().find(|m| m.matches(host)) {
                Some(m) => (true, format!("ingress host (matcher {})", m.raw)),
                None => (
                    false,
                    "not an ingress host (no host matcher covers it)".into(),
                ),
            }
        }
        Generation::V3 => match router.ingress_domain.as_deref() {
            Some(d) if is_project_ingress_hostname(host, d) => {
                (true, format!("ingress host (*.{d})"))
            }
            Some(d) => (false, format!("not an ingress host (not under {d})")),
            None => (
                true,
                "no PROJECT_INGRESS_DOMAIN: the ingress handler decides".into(),
            ),
        },
    }
}
