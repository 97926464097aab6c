//! V4, custom domains, first cut (docs/behaviour.md §3.6), step by step. The worker has already
//! decided the host is an ingress host (`shouldHandle…`: a standard host at once; any other host
//! by loading every custom-domain project, B4).
//!
//! Standard host (`<something>.<PROJECT_INGRESS_DOMAIN>`): V3's steps, resolved through the
//! database, the response headers appended (B7 fixed).
//!
//! Custom host (`handleCustomDomainRequest`):
//! 1. Every custom-domain project again (`getProjectsWithCustomDomain`), the first whose domain
//!    covers the host (B4); none → `404 not_found`.
//! 2. `parseCustomDomainHostname` → `400 not_custom_domain|invalid_subdomain` `{hostname}`.
//! 3. `/_/exchange-token` → `null`, which the outer handler answers `404 not_found` (B2).
//! 4. No session → `302` bridge-start with `subdomain=<first label of the host>` (B3: the bridge
//!    rebuilds `<label>.<PROJECT_INGRESS_DOMAIN>`).
//! 5. Project target → the user's membership (`403`) and the active machine (`404`); machine
//!    target → V1's machine resolution without the routable-state check (and not checked against
//!    the domain's project, O3).
//! 6. No external id → `503`; a transport failure → `502 proxy_error` `{hostname, proxyError}`.
//! 7. Target header = the custom hostname verbatim, so the machine proxy picks port 3000 (B1).

use http::Request;
use hyper::body::Incoming;

use super::step::custom_domain::{is_custom_domain_hostname, parse_custom_domain_hostname};
use super::step::forward::HeaderCopy;
use super::step::lookup::{self, Db};
use super::step::resolution::{self, Resolved};
use super::step::{bridge, canonical, host, session};
use super::v3::EXCHANGE_TOKEN_PATH;
use super::{Outcome, RouterCtx, Stop, v1, v2, v3};
use crate::model::{Code, ParsedTarget, TargetKind};
use crate::platform::SessionRow;
use crate::trace::RouterEvent;

pub async fn route(
    ctx: &RouterCtx,
    req: Request<Incoming>,
    session: Option<&SessionRow>,
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
        return custom(ctx, db, req, session, ev, trace_id).await;
    }
    // The standard host: V3's steps.
    let (parsed, req, session) =
        match v3::standard_steps(ctx, req, session, ev, domain, bridge::bridge_redirect_v3)? {
            v3::Standard::Answered(o) => return Ok(o),
            v3::Standard::Resolve(p, r, s) => (p, r, s),
        };
    let r = resolution::resolve(&ctx.platform, db, &parsed, session, true, ev).await?;
    let target = ev.hostname.clone();
    forward_to(ctx, r, req, ev, trace_id, target, false).await
}

/// `handleCustomDomainRequest` (steps 1–7).
async fn custom(
    ctx: &RouterCtx,
    db: Db<'_>,
    req: Request<Incoming>,
    session: Option<&SessionRow>,
    ev: &mut RouterEvent,
    trace_id: Option<&str>,
) -> Result<Outcome, Stop> {
    // 1.
    let projects =
        lookup::projects_with_custom_domain(db, "handleCustomDomainRequest (V4)").await?;
    let Some(project) = projects.into_iter().find(|p| {
        p.custom_domain
            .as_deref()
            .is_some_and(|d| is_custom_domain_hostname(&ev.hostname, d))
    }) else {
        return Err(Code::NotFound.into());
    };
    let cd = project.custom_domain.clone().unwrap_or_default();
    ev.custom_domain = Some(format!("{cd} (project {}, first match)", project.slug));
    // 2.
    let target = parse_custom_domain_hostname(&ev.hostname, &cd).map_err(|e| match e {
        crate::router::step::custom_domain::CustomDomainError::NotCustomDomain => {
            Code::NotCustomDomain
        }
        crate::router::step::custom_domain::CustomDomainError::InvalidSubdomain => {
            Code::InvalidSubdomain
        }
    })?;
    let parsed = target.parsed(&project.slug, &cd);
    ev.parsed = Some(parsed.clone());
    // 3.
    if req.uri().path() == EXCHANGE_TOKEN_PATH {
        session::seen(session, ev);
        ev.notes.push(
            "handleCustomDomainRequest returned null for /_/exchange-token; the outer handler answers 404 (B2)"
                .into(),
        );
        return Err(Code::NotFound.into());
    }
    // 4.
    let Some(session) = session else {
        session::seen(None, ev);
        let pq = v2::path_and_query(&req);
        let to = bridge::bridge_redirect_v3(&ctx.public.origin, &ev.hostname, &pq);
        ev.notes
            .push("bridge-start gets subdomain=<first label> of a custom host (B3)".into());
        return Ok(Outcome::redirect(to, "no session: the auth bridge"));
    };
    session::seen(Some(session), ev);
    // 5.
    let r = match parsed.kind {
        TargetKind::Project => {
            let as_project = ParsedTarget {
                kind: TargetKind::Project,
                id: project.slug.clone(),
                ..parsed.clone()
            };
            resolution::resolve(&ctx.platform, db, &as_project, session, true, ev).await?
        }
        TargetKind::Machine => {
            resolution::resolve(&ctx.platform, db, &parsed, session, false, ev).await?
        }
    };
    // 6–7.
    let target = ev.hostname.clone();
    ev.notes.push(
        "target header = the custom hostname verbatim: the machine proxy reads no port from it (B1)"
            .into(),
    );
    forward_to(ctx, r, req, ev, trace_id, target, true).await
}

/// The external id, the transport, the target header, forwarding with the response headers
/// appended (V4+). A transport failure shows the machine (a standard target) or only the
/// hostname and the error (a custom one).
pub(super) async fn forward_to(
    ctx: &RouterCtx,
    r: Resolved<'_>,
    req: Request<Incoming>,
    ev: &mut RouterEvent,
    trace_id: Option<&str>,
    target: String,
    custom: bool,
) -> Result<Outcome, Stop> {
    let how = v1::Forwarding {
        target,
        copy: HeaderCopy::Append,
        show_machine: !custom,
    };
    Ok(v1::forward_machine(ctx, r.machine, req, ev, trace_id, how).await?)
}
