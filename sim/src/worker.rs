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
use crate::db::DbError;
use crate::model::Generation;
use crate::model::ProjectSpec;
use crate::net::{BoxBody, BoxError, text_response};
use crate::platform::{Platform, SessionRow};
use crate::router::step::canonical::{PublicOrigin, is_project_ingress_hostname};
use crate::router::step::custom_domain::is_custom_domain_hostname;
use crate::router::step::host::request_host;
use crate::router::step::lookup::{self, Db};
use crate::router::{Handoff, Routed, RouterCtx};
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
    // V6: the isolate serving the request.
    let isolate = ctx.router.next_isolate();
    let isolate_shown = (ctx.router.generation >= Generation::V6)
        .then(|| format!("{} of {}", isolate + 1, ctx.router.isolates.len()));
    // 2. Ingress?
    let decided = if ctx.router.generation >= Generation::V4 {
        should_handle_v4(&ctx.router, &host, trace_id.as_deref()).await
    } else {
        let (ingress, why) = should_handle(&ctx.router, &host);
        Ok((ingress, why, None))
    };
    let (ingress, why, custom_project) = match decided {
        Ok(d) => d,
        Err(e) => {
            // The query threw in the middleware: the worker's error handler answers (our
            // reading: Hono's default).
            let ev = WorkerEvent {
                host,
                host_source: source.into(),
                session: seen,
                ingress: format!("shouldHandleProjectIngressHostname threw: {e}"),
                handled_by: "error handler: 500 Internal Server Error".into(),
                isolate: isolate_shown,
            };
            record(&ctx, &trace_id, ev);
            return text_response(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
            );
        }
    };
    let mut ev = WorkerEvent {
        host: host.clone(),
        host_source: source.into(),
        session: seen,
        ingress: why,
        handled_by: String::new(),
        isolate: isolate_shown,
    };
    if ingress {
        let handoff = Handoff {
            custom_project,
            isolate,
        };
        match crate::router::route_with(&ctx.router, req, session.as_ref(), handoff).await {
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
        Generation::V3 | Generation::V4 | Generation::V5 | Generation::V6 => {
            match router.ingress_domain.as_deref() {
                Some(d) if is_project_ingress_hostname(host, d) => {
                    (true, format!("ingress host (*.{d})"))
                }
                Some(d) => (false, format!("not an ingress host (not under {d})")),
                None => (
                    true,
                    "no PROJECT_INGRESS_DOMAIN: the ingress handler decides".into(),
                ),
            }
        }
    }
}

/// `shouldHandleProjectIngressHostname`, V4+ (async: it may query the database). A standard host
/// is handled at once. V4: every custom-domain project is loaded and the first whose domain
/// covers the host wins, on every request, the control-plane host included (B4). V5+: the
/// control-plane host (`VITE_PUBLIC_URL`'s) is never an ingress host, without a query; any other
/// host is one query, the longest custom domain first, whose project is handed on.
async fn should_handle_v4(
    router: &RouterCtx,
    host: &str,
    trace_id: Option<&str>,
) -> Result<(bool, String, Option<ProjectSpec>), DbError> {
    let (standard, why) = should_handle(router, host);
    if standard || router.ingress_domain.is_none() {
        return Ok((standard, why, None));
    }
    let db = Db {
        db: &router.db,
        trace_id,
    };
    if router.generation == Generation::V4 {
        let projects =
            lookup::projects_with_custom_domain(db, "shouldHandleProjectIngressHostname (V4)")
                .await?;
        let hit = projects.into_iter().find(|p| {
            p.custom_domain
                .as_deref()
                .is_some_and(|d| is_custom_domain_hostname(host, d))
        });
        return Ok(match hit {
            Some(p) => (
                true,
                format!(
                    "custom domain {} (project {}, first match of the scan)",
                    p.custom_domain.as_deref().unwrap_or(""),
                    p.slug
                ),
                None,
            ),
            None => (
                false,
                format!("{why}, and no custom domain covers it"),
                None,
            ),
        });
    }
    if host == router.public.host {
        return Ok((
            false,
            "the control-plane host (VITE_PUBLIC_URL): no query".into(),
            None,
        ));
    }
    Ok(match lookup::project_by_custom_domain(db, host).await? {
        Some(p) => (
            true,
            format!(
                "custom domain {} (project {})",
                p.custom_domain.as_deref().unwrap_or(""),
                p.slug
            ),
            Some(p),
        ),
        None => (
            false,
            format!("{why}, and no custom domain covers it"),
            None,
        ),
    })
}
