//! V0, "step 0" (docs/behaviour.md §3.2), step by step:
//!
//! 1. `PROJECT_INGRESS_PROXY_HOST_MATCHERS` empty → `500 ingress_not_configured`.
//! 2. The host (the URL hostname) must match a glob → else `404 not_found`.
//! 3. Parse (`.machines.` form and `<port>__` tokens) → `400 invalid_hostname|invalid_port`.
//! 4. No authentication.
//! 5. Resolve: project → its first `active` machine; machine id → state `active|detached`;
//!    none → `404 machine_not_found`; no external id → `503 machine_unavailable`.
//! 6. Target header = the URL hostname; provider transport to the machine's 8080; an exception
//!    (no host port, connection failure) → `502 proxy_error`.

use http::Request;
use hyper::body::Incoming;

use super::step::{forward, host, hostname, matchers, resolve, target, transport};
use super::{Outcome, RouterCtx};
use crate::model::Refusal;
use crate::trace::RouterEvent;

pub async fn route(
    ctx: &RouterCtx,
    req: Request<Incoming>,
    ev: &mut RouterEvent,
    trace_id: Option<&str>,
) -> Result<Outcome, Refusal> {
    host::url_hostname(&req, ev);
    // 1-2.
    matchers::configured(&ctx.matchers)?;
    matchers::matching(&ctx.matchers, ev)?;
    // 3.
    let parsed = hostname::parsed_v0(ev)?;
    // 4. No authentication.
    // 5.
    let machine = resolve::machine_v0(&ctx.platform, &parsed, ev)?;
    let external_id = resolve::external_id(&machine)?;
    // 6.
    let url = transport::machine_url(
        &ctx.transport,
        machine.spec,
        external_id,
        &req,
        trace_id,
        ev,
    )
    .await?;
    let target = target::hostname(ev);
    let net = &ctx.transport.net;
    let resp = forward::forward(net, req, ev, url, &target, trace_id).await?;
    Ok(Outcome::Forward(resp))
}
