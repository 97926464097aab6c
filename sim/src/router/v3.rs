//! V3, `PROJECT_INGRESS_DOMAIN` and the shared parsing module (docs/behaviour.md §3.5), step by step:
//!
//! 1. Host: `X-Forwarded-Host`, else `Host` (O5).
//! 2. Domain empty → `500 ingress_not_configured` `{hostname}`.
//! 3. Not `<something>.<domain>` (`isProjectIngressHostname`) → `404 not_found`.
//! 4. Parse (`parseProjectIngressHostname`) → `400 <code>`.
//! 5. Canonical = `(port 3000 and implicit ? id : <port>__id).<domain>`; any other host → `301`
//!    there (O6, O7).
//! 6. Path `/_/exchange-token` → `null` (the control plane exchanges the token).
//! 7. No session → `302 <VITE_PUBLIC_URL>/api/project-ingress-proxy-auth/bridge-start
//!    ?subdomain=<first label of the canonical host>&path=<normalized path and query>`.
//! 8. Resolution, authorization and forwarding as V1 (target header = the request hostname).

use http::Request;
use hyper::body::Incoming;

use super::step::{authz, bridge, canonical, host, hostname, session};
use super::{Outcome, RouterCtx, v1, v2};
use crate::model::{Code, ParsedTarget, Refusal};
use crate::platform::SessionRow;
use crate::trace::RouterEvent;

/// The exchange path on an ingress host (W5).
pub const EXCHANGE_TOKEN_PATH: &str = "/_/exchange-token";

pub async fn route(
    ctx: &RouterCtx,
    req: Request<Incoming>,
    session: Option<&SessionRow>,
    ev: &mut RouterEvent,
    trace_id: Option<&str>,
) -> Result<Outcome, Refusal> {
    // 1.
    host::forwarded_hostname(&req, ev);
    // 2.
    let domain = ctx
        .ingress_domain
        .as_deref()
        .ok_or(Code::IngressNotConfigured)?;
    // 3.
    if !canonical::is_project_ingress_hostname(&ev.hostname, domain) {
        return Err(Code::NotFound.into());
    }
    // 4–7.
    let (parsed, req, session) =
        match standard_steps(ctx, req, session, ev, domain, bridge::bridge_redirect_v3)? {
            Standard::Answered(o) => return Ok(o),
            Standard::Resolve(p, r, s) => (p, r, s),
        };
    // 8.
    let machine = authz::resolve(&ctx.platform, &parsed, session, ev)?;
    v1::forward_to(ctx, machine, req, ev, trace_id).await
}

/// What steps 4–7 left for a standard host: an answer, or the target to resolve for a session.
pub(super) enum Standard<'s> {
    Answered(Outcome),
    Resolve(ParsedTarget, Request<Incoming>, &'s SessionRow),
}

/// Steps 4–7 on a standard host (shared by V3–V6; `bridge` builds the no-session redirect, which
/// changed in V5): parse, the canonical host's 301, `/_/exchange-token` falls through, no session
/// → the auth bridge.
pub(super) fn standard_steps<'s>(
    ctx: &RouterCtx,
    req: Request<Incoming>,
    session: Option<&'s SessionRow>,
    ev: &mut RouterEvent,
    domain: &str,
    bridge: fn(&str, &str, &str) -> (http::StatusCode, String),
) -> Result<Standard<'s>, Refusal> {
    let parsed = hostname::parsed_standard(ev)?;
    let pq = v2::path_and_query(&req);
    let canonical = canonical::canonical_v3(&parsed, domain);
    if let Some(to) = canonical::redirect_unless_canonical(ev, &canonical, &ctx.public.scheme, &pq)
    {
        return Ok(Standard::Answered(Outcome::redirect(
            to,
            "not the canonical host",
        )));
    }
    if req.uri().path() == EXCHANGE_TOKEN_PATH {
        session::seen(session, ev);
        return Ok(Standard::Answered(Outcome::FallThrough(req)));
    }
    let Some(session) = session else {
        session::seen(None, ev);
        let to = bridge(&ctx.public.origin, &canonical, &pq);
        return Ok(Standard::Answered(Outcome::redirect(
            to,
            "no session: the auth bridge",
        )));
    };
    session::seen(Some(session), ev);
    Ok(Standard::Resolve(parsed, req, session))
}
