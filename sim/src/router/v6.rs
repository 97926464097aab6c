//! V6, the per-isolate resolution cache (docs/behaviour.md §3.8): V5's steps, with
//! `resolveMachineForIngress` behind the cache of the isolate serving the request
//! (`crate::router::cache`: key, TTL and what is stored are our reading). Requests reach the
//! isolates round robin (`[os] isolates` in the world, default 1).

use http::Request;
use hyper::body::Incoming;

use super::{Handoff, Outcome, RouterCtx, Stop, v5};
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
    let cache = ctx.isolates.get(handoff.isolate);
    v5::steps(ctx, req, session, handoff, cache, ev, trace_id).await
}
