//! V1, session + authorization (docs/behaviour.md §3.3), step by step:
//!
//! 1. Host: `X-Forwarded-Host`, else `Host` (trusted though the client sets it, O5).
//! 2. `PROJECT_INGRESS_PROXY_HOST_MATCHERS` empty → `500 ingress_not_configured`; no glob
//!    matches → `404 not_found` (the `.machines.` special case is gone).
//! 3. No session → `401 unauthorized`.
//! 4. Parse with the standard rules → `400 invalid_port|invalid_project_slug|invalid_hostname`.
//! 5. Resolve with the user's membership (admins pass): `404 project_not_found`, `403 forbidden`,
//!    `404 machine_not_found`, `409 machine_not_routable` (routable: starting, active, detached).
//! 6. No external id → `503 machine_unavailable`.
//! 7. Target header = the request hostname; provider transport; an exception → `502 proxy_error`
//!    with the machine in `resolution`.
//!
//! Every refusal is `{"error", "details"}`.

use http::Request;
use hyper::body::Incoming;

use super::step::forward::{self, HeaderCopy};
use super::step::{authz, host, hostname, matchers, session, transport};
use super::{Outcome, RouterCtx};
use crate::model::Refusal;
use crate::platform::{MachineRow, SessionRow};
use crate::trace::RouterEvent;

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
    matchers::configured(&ctx.matchers)?;
    matchers::matching(&ctx.matchers, ev)?;
    // 3.
    let session = session::required(session, ev)?;
    // 4.
    let parsed = hostname::parsed_standard(ev)?;
    // 5-7.
    let machine = authz::resolve(&ctx.platform, &parsed, session, ev)?;
    forward_to(ctx, machine, req, ev, trace_id).await
}

/// Steps 6–7, shared by V1–V3: the machine's external id, the transport, the target header (the
/// request hostname), forwarding.
pub(super) async fn forward_to(
    ctx: &RouterCtx,
    machine: MachineRow<'_>,
    req: Request<Incoming>,
    ev: &mut RouterEvent,
    trace_id: Option<&str>,
) -> Result<Outcome, Refusal> {
    // The request hostname (recorded once the transport has a URL).
    let how = Forwarding {
        target: ev.hostname.clone(),
        copy: HeaderCopy::Set,
        show_machine: true,
    };
    forward_machine(ctx, machine, req, ev, trace_id, how).await
}

/// How a generation forwards: the target header, how response headers are copied, and whether a
/// transport failure shows the machine in `resolution`.
pub(super) struct Forwarding {
    pub target: String,
    pub copy: HeaderCopy,
    pub show_machine: bool,
}

/// The external id (`503`), the transport and forwarding (`502 proxy_error`), V1+.
pub(super) async fn forward_machine(
    ctx: &RouterCtx,
    machine: MachineRow<'_>,
    req: Request<Incoming>,
    ev: &mut RouterEvent,
    trace_id: Option<&str>,
    how: Forwarding,
) -> Result<Outcome, Refusal> {
    let with_machine = |e: Refusal| {
        if how.show_machine {
            authz::with_machine(e, &machine)
        } else {
            e
        }
    };
    let external_id = authz::external_id(&machine)?;
    let url = transport::machine_url(
        &ctx.transport,
        machine.spec,
        external_id,
        &req,
        trace_id,
        ev,
    )
    .await
    .map_err(with_machine)?;
    ev.target_header = Some(how.target.clone());
    let net = &ctx.transport.net;
    let resp = forward::forward_copying(net, req, ev, url, &how.target, trace_id, how.copy)
        .await
        .map_err(with_machine)?;
    Ok(Outcome::Forward(resp))
}
