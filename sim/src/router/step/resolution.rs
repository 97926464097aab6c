//! Resolution through the platform database (V4+): `resolveMachineForIngress` as queries
//! ([`super::lookup`]), with V1's refusals, and the project's `defaultPort` (V5+). V6 puts it
//! behind the isolate's cache ([`resolve_cached`]).

use serde_json::json;

use super::authz::{self, ROUTABLE_STATES};
use super::lookup::{self, Db};
use super::resolve::record;
use crate::model::{Code, MachineState, ParsedTarget, Refusal, TargetKind};
use crate::platform::{MachineRow, Platform, SessionRow};
use crate::router::Stop;
use crate::router::cache::{Cached, How, Miss, ResolutionCache, TTL_S};
use crate::trace::RouterEvent;

/// The machine a target resolved to, and its project's `defaultPort`.
pub struct Resolved<'p> {
    pub machine: MachineRow<'p>,
    pub default_port: Option<u16>,
}

/// Project → `getProjectWithMembership` (`404 project_not_found`, `403 forbidden`), then
/// `getActiveMachineForProject` (`404 machine_not_found`); machine → `getMachineWithMembership`
/// (`404 machine_not_found`, `403 forbidden` showing its state, O8), and with `routable` a
/// routable state (`409 machine_not_routable`; V4's custom-domain path has no such check).
pub async fn resolve<'p>(
    platform: &'p Platform,
    db: Db<'_>,
    t: &ParsedTarget,
    session: &SessionRow,
    routable: bool,
    ev: &mut RouterEvent,
) -> Result<Resolved<'p>, Stop> {
    let user = session.user.id.as_str();
    match t.kind {
        TargetKind::Project => {
            let Some(pa) = lookup::project_with_membership(db, &t.id, user).await? else {
                return Err(Refusal::resolution(
                    Code::ProjectNotFound,
                    json!({"projectFound": false}),
                )
                .into());
            };
            let org = pa.project.organization.as_deref();
            if !authz::decide(session, org, pa.member, ev) {
                return Err(
                    Refusal::resolution(Code::Forbidden, json!({"projectFound": true})).into(),
                );
            }
            let Some((id, state)) = lookup::active_machine_of_project(db, &t.id).await? else {
                return Err(Refusal::resolution(
                    Code::MachineNotFound,
                    json!({"projectFound": true, "machineExists": false, "machineState": null}),
                )
                .into());
            };
            let row = platform
                .machine_as(&id, state)
                .ok_or(Code::MachineNotFound)?;
            record(&row, ev);
            Ok(Resolved {
                machine: row,
                default_port: pa.project.default_port,
            })
        }
        TargetKind::Machine => {
            let Some(ma) = lookup::machine_with_membership(db, &t.id, user).await? else {
                return Err(Refusal::resolution(
                    Code::MachineNotFound,
                    json!({"machineExists": false}),
                )
                .into());
            };
            let row = platform
                .machine_as(&ma.id, ma.state)
                .ok_or(Code::MachineNotFound)?;
            record(&row, ev);
            let state = ma.state.as_str();
            let org = ma.project.organization.as_deref();
            if !authz::decide(session, org, ma.member, ev) {
                return Err(Refusal::resolution(
                    Code::Forbidden,
                    json!({"projectFound": null, "machineExists": true, "machineState": state}),
                )
                .into());
            }
            if routable && !ROUTABLE_STATES.contains(&ma.state) {
                let states: Vec<&str> = ROUTABLE_STATES.iter().map(|s| s.as_str()).collect();
                return Err(Refusal::resolution(
                    Code::MachineNotRoutable,
                    json!({"machineExists": true, "machineState": state, "routableStates": states}),
                )
                .into());
            }
            Ok(Resolved {
                machine: row,
                default_port: ma.project.default_port,
            })
        }
    }
}

/// The cache's key: the target and the user.
pub fn cache_key(t: &ParsedTarget, session: &SessionRow) -> String {
    format!("{}:{}|{}", t.kind.as_str(), t.id, session.user.id)
}

/// V6: [`resolve`] behind the isolate's cache (see `crate::router::cache`). Recorded: what the
/// cache did.
pub async fn resolve_cached<'p>(
    platform: &'p Platform,
    db: Db<'_>,
    cache: &ResolutionCache,
    t: &ParsedTarget,
    session: &SessionRow,
    ev: &mut RouterEvent,
) -> Result<Resolved<'p>, Stop> {
    let key = cache_key(t, session);
    let now = platform.now();
    let got = cache
        .get_or_lookup(&key, now, || async {
            let r = resolve(platform, db, t, session, true, ev)
                .await
                .map_err(Miss::Stop)?;
            let c = Cached {
                machine_id: r.machine.spec.id.clone(),
                state: r.machine.state,
                default_port: r.default_port,
                authorization: ev.authorization.clone(),
                stored_at: now,
            };
            if r.machine.state == MachineState::Starting {
                Err(Miss::Uncacheable(c))
            } else {
                Ok(c)
            }
        })
        .await;
    let (c, how) = match got {
        Ok(x) => x,
        Err(stop) => {
            ev.cache.push(format!(
                "miss: {key} (looked up; refused or failed, not stored)"
            ));
            return Err(stop);
        }
    };
    let at = |s: u64| s.saturating_sub(crate::platform::CLOCK_START);
    ev.cache.push(match how {
        How::Stored => format!(
            "miss: {key} → looked up, stored at clock +{}s (ttl {TTL_S}s)",
            at(c.stored_at)
        ),
        How::NotStored => format!("miss: {key} → looked up, not stored (machine is starting)"),
        How::Hit => format!(
            "hit: {key} (stored at clock +{}s, now +{}s, ttl {TTL_S}s)",
            at(c.stored_at),
            at(now)
        ),
        How::Waited => format!("miss: {key} → waited for the lookup in flight"),
    });
    let row = platform
        .machine_as(&c.machine_id, c.state)
        .ok_or(Code::MachineNotFound)?;
    if matches!(how, How::Hit | How::Waited) {
        ev.authorization = c.authorization.clone();
        record(&row, ev);
    }
    Ok(Resolved {
        machine: row,
        default_port: c.default_port,
    })
}
