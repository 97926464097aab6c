//! V5, the custom-domain fixes and the project default port (docs/behaviour.md §3.7), step by
//! step. The worker has already decided the host is an ingress host (`shouldHandle…`: a standard
//! host at once; the control-plane host never, without a query; any other host by one query,
//! `getProjectByCustomDomain`, the longest custom domain first, whose project it hands on as
//! `cachedCustomDomainProject`).
//!
//! Standard host: V3's steps, except
//! - no session → `302` bridge-start with `projectIngressProxyHost=<canonical host>&path=…`;
//! - the target header is `getEffectiveTargetHost`'s: an implicit port gives way to the project's
//!   `defaultPort` (then `localhost:<port>`), else the request hostname.
//!
//! Custom host (`handleCustomDomainRequest`):
//! 1. The worker's project (`404 not_found` without one).
//! 2. `parseCustomDomainHostname` → `400 not_custom_domain|invalid_subdomain` `{hostname}`.
//! 3. `/_/exchange-token` → `FALL_THROUGH_TO_CONTROL_PLANE`: `null`, and the control plane's
//!    exchange runs (B2 fixed).
//! 4. No session → `302` bridge-start with `projectIngressProxyHost=<host>` (B3 fixed).
//! 5. Resolution as for a standard target (`resolveMachineForIngress`, the machine with
//!    `isPortExplicit: true`; still not checked against the domain's project, O3).
//! 6. Target header `localhost:<effective port>`, where a custom target's port is explicit only
//!    when it is not 3000 (so `3000.<cd>` gives way to `defaultPort`, O2; B1 fixed).
//!
//! V6 runs these same steps with the resolution behind its isolate's cache (`crate::router::v6`).

use http::Request;
use hyper::body::Incoming;

use super::cache::ResolutionCache;
use super::step::bridge::{BRIDGE_START, normalize_redirect_path, query};
use super::step::custom_domain::{
    CustomDomainError, effective_target_host, parse_custom_domain_hostname,
};
use super::step::lookup::{self, Db};
use super::step::resolution::{self, Resolved};
use super::step::{canonical, host, session};
use super::v3::EXCHANGE_TOKEN_PATH;
use super::{Handoff, Outcome, RouterCtx, Stop, v2, v3, v4};
use crate::model::{Code, ParsedTarget, TargetKind};
use crate::platform::SessionRow;
use crate::trace::RouterEvent;

pub async fn route(
    ctx: &RouterCtx,
    req: Request<Incoming>,
    session: Option<&SessionRow>,
    handoff: &Handoff,
    ev: &mut RouterEvent,
    trace_id: Option<&str>,
) -> Result<Outcome, Stop> {
    steps(ctx, req, session, handoff, None, ev, trace_id).await
}

/// V5's steps; with `cache` (V6) the resolution goes through it.
pub(super) async fn steps(
    ctx: &RouterCtx,
    req: Request<Incoming>,
    session: Option<&SessionRow>,
    handoff: &Handoff,
    cache: Option<&ResolutionCache>,
    ev: &mut RouterEvent,
    trace_id: Option<&str>,
) -> Result<Outcome, Stop> {
    host::forwarded_hostname(&req, ev);
    let domain = ctx
        .ingress_domain
        .as_deref()
        .ok_or(Code::IngressNotConfigured)?;
    let db = Db {
        db: &ctx.db,
        trace_id,
    };
    if !canonical::is_project_ingress_hostname(&ev.hostname, domain) {
        return custom(ctx, db, req, session, handoff, cache, ev, trace_id).await;
    }
    let (parsed, req, session) =
        match v3::standard_steps(ctx, req, session, ev, domain, bridge_redirect)? {
            v3::Standard::Answered(o) => return Ok(o),
            v3::Standard::Resolve(p, r, s) => (p, r, s),
        };
    let r = resolve(ctx, db, cache, &parsed, session, ev).await?;
    let target = effective(ev, &parsed, false, &r);
    v4::forward_to(ctx, r, req, ev, trace_id, target, false).await
}

/// V5+ no session: `302 <VITE_PUBLIC_URL>/api/project-ingress-proxy-auth/bridge-start
/// ?projectIngressProxyHost=<host>&path=<normalized path and query>`.
pub fn bridge_redirect(
    public_origin: &str,
    host: &str,
    path_and_query: &str,
) -> (http::StatusCode, String) {
    let path = normalize_redirect_path(Some(path_and_query));
    (
        http::StatusCode::FOUND,
        format!(
            "{public_origin}{BRIDGE_START}?{}",
            query(&[("projectIngressProxyHost", host), ("path", &path)])
        ),
    )
}

async fn resolve<'p>(
    ctx: &'p RouterCtx,
    db: Db<'_>,
    cache: Option<&ResolutionCache>,
    t: &ParsedTarget,
    session: &SessionRow,
    ev: &mut RouterEvent,
) -> Result<Resolved<'p>, Stop> {
    match cache {
        None => resolution::resolve(&ctx.platform, db, t, session, true, ev).await,
        Some(c) => resolution::resolve_cached(&ctx.platform, db, c, t, session, ev).await,
    }
}

/// `getEffectiveTargetHost`, recorded.
fn effective(ev: &mut RouterEvent, t: &ParsedTarget, custom: bool, r: &Resolved<'_>) -> String {
    let (header, port) = effective_target_host(t, custom, r.default_port, &ev.hostname);
    ev.effective_port = Some(match r.default_port {
        Some(d) => format!("{port} (defaultPort {d})"),
        None => format!("{port} (defaultPort null)"),
    });
    header
}

#[allow(clippy::too_many_arguments)]
async fn custom(
    ctx: &RouterCtx,
    db: Db<'_>,
    req: Request<Incoming>,
    session: Option<&SessionRow>,
    handoff: &Handoff,
    cache: Option<&ResolutionCache>,
    ev: &mut RouterEvent,
    trace_id: Option<&str>,
) -> Result<Outcome, Stop> {
    // 1.
    let project = match &handoff.custom_project {
        Some(p) => p.clone(),
        // Not through the worker (it always hands the project on): look it up.
        None => lookup::project_by_custom_domain(db, &ev.hostname)
            .await?
            .ok_or(Code::NotFound)?,
    };
    let cd = project.custom_domain.clone().unwrap_or_default();
    ev.custom_domain = Some(format!("{cd} (project {})", project.slug));
    // 2.
    let target = parse_custom_domain_hostname(&ev.hostname, &cd).map_err(|e| match e {
        CustomDomainError::NotCustomDomain => Code::NotCustomDomain,
        CustomDomainError::InvalidSubdomain => Code::InvalidSubdomain,
    })?;
    let parsed = target.parsed(&project.slug, &cd);
    ev.parsed = Some(parsed.clone());
    // 3.
    if req.uri().path() == EXCHANGE_TOKEN_PATH {
        session::seen(session, ev);
        ev.notes.push(
            "FALL_THROUGH_TO_CONTROL_PLANE: the control plane's /_/exchange-token runs".into(),
        );
        return Ok(Outcome::FallThrough(req));
    }
    // 4.
    let Some(session) = session else {
        session::seen(None, ev);
        let pq = v2::path_and_query(&req);
        return Ok(Outcome::redirect(
            bridge_redirect(&ctx.public.origin, &ev.hostname, &pq),
            "no session: the auth bridge",
        ));
    };
    session::seen(Some(session), ev);
    // 5.
    let as_resolved = match parsed.kind {
        TargetKind::Project => ParsedTarget {
            id: project.slug.clone(),
            ..parsed.clone()
        },
        TargetKind::Machine => ParsedTarget {
            port_explicit: true,
            ..parsed.clone()
        },
    };
    let r = resolve(ctx, db, cache, &as_resolved, session, ev).await?;
    // 6.
    let target = effective(ev, &parsed, true, &r);
    v4::forward_to(ctx, r, req, ev, trace_id, target, true).await
}
