//! V2, the canonical host and the auth bridge (docs/behaviour.md §3.4), step by step:
//!
//! 1. Host: `X-Forwarded-Host`, else `Host` (O5).
//! 2. Matchers: none → `500 ingress_not_configured`; no match → `404 not_found`.
//! 3. `PROJECT_INGRESS_PROXY_CANONICAL_HOST` must be a bare hostname the matchers cover (probed
//!    with `3000__mach_test.<canonical>`), else `500 ingress_not_configured` (our reading: the
//!    reference does not say what the router answers).
//! 4. Parse (standard rules) → `400 <code>`.
//! 5. Canonical = `<first label>.<canonical host>`; any other host → `301` there, same path and
//!    query, before auth and for every method (O6, O7).
//! 6. No session: `/login…` and `/api/auth/*` → `null` (the control plane's app); anything else →
//!    `302 <VITE_PUBLIC_URL>/login?redirectUrl=<bridge-start?projectIngressProxyHost=<canonical>
//!    &redirectPath=<path and query>>`.
//! 7. Resolution, authorization and forwarding as V1 (target header = the request hostname).

use http::Request;
use hyper::body::Incoming;

use super::step::{bridge, canonical, host, hostname, matchers, session};
use super::{Outcome, RouterCtx, v1};
use crate::model::{Code, Refusal};
use crate::platform::SessionRow;
use crate::trace::RouterEvent;

pub async fn route(
    ctx: &RouterCtx,
    req: Request<Incoming>,
    session: Option<&SessionRow>,
    ev: &mut RouterEvent,
    trace_id: Option<&str>,
) -> Result<Outcome, Refusal> {
    // 1-2.
    host::forwarded_hostname(&req, ev);
    matchers::configured(&ctx.matchers)?;
    matchers::matching(&ctx.matchers, ev)?;
    // 3.
    let canonical_host = canonical::canonical_host_v2(ctx.canonical_host.as_deref(), &ctx.matchers)
        .map_err(|e| {
            ev.error = Some(e);
            Refusal::new(Code::IngressNotConfigured)
        })?;
    // 4.
    let parsed = hostname::parsed_standard(ev)?;
    // 5.
    let pq = path_and_query(&req);
    let canonical = canonical::canonical_v2(&ev.hostname, &canonical_host);
    if let Some(to) = canonical::redirect_unless_canonical(ev, &canonical, &ctx.public.scheme, &pq)
    {
        return Ok(Outcome::redirect(to, "not the canonical host"));
    }
    // 6.
    let Some(session) = session else {
        session::seen(None, ev);
        let path = req.uri().path();
        if path == "/login" || path.starts_with("/login?") || path.starts_with("/api/auth/") {
            return Ok(Outcome::FallThrough(req));
        }
        let to = bridge::login_redirect_v2(&ctx.public.origin, &canonical, &pq);
        return Ok(Outcome::redirect(
            to,
            "no session: sign in, then the auth bridge",
        ));
    };
    session::seen(Some(session), ev);
    // 7.
    let machine = super::step::authz::resolve(&ctx.platform, &parsed, session, ev)?;
    v1::forward_to(ctx, machine, req, ev, trace_id).await
}

/// The request's path and query, as the redirects keep them.
pub(super) fn path_and_query(req: &Request<Incoming>) -> String {
    req.uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into())
}
