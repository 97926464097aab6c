//! Resolution with authorization (V1+): the target looked up with the user's membership, each
//! refusal carrying the `resolution` its details show.

use serde_json::json;

use super::resolve::record;
use crate::model::{Code, MachineState, ParsedTarget, Refusal, Role, TargetKind};
use crate::platform::{MachineRow, Platform, SessionRow};
use crate::trace::RouterEvent;

/// States a machine target may be in (V1+).
pub const ROUTABLE_STATES: [MachineState; 3] = [
    MachineState::Starting,
    MachineState::Active,
    MachineState::Detached,
];

/// The user may reach the project's organization: a member, or `role = admin`. Recorded.
fn access(platform: &Platform, session: &SessionRow, project: &str, ev: &mut RouterEvent) -> bool {
    let org = platform
        .project(project)
        .and_then(|p| p.organization.as_deref());
    let member = org.is_some_and(|o| platform.is_member(&session.user.id, o));
    decide(session, org, member, ev)
}

/// Whether a member (or not) of `org` may pass: members and admins do. Recorded as the event's
/// authorization (shared with the V4+ resolution, which reads membership from its query).
pub fn decide(session: &SessionRow, org: Option<&str>, member: bool, ev: &mut RouterEvent) -> bool {
    let user = &session.user;
    let org = org.unwrap_or("(no organization)");
    ev.authorization = Some(if member {
        format!("{} is a member of {org}", user.id)
    } else if user.role == Role::Admin {
        format!("{} is not a member of {org} but an admin", user.id)
    } else {
        format!("{} is not a member of {org}", user.id)
    });
    member || user.role == Role::Admin
}

/// Step (V1+): project → by slug with the user's membership (`404 project_not_found`,
/// `403 forbidden`), then its first `active` machine (`404 machine_not_found`); machine → by id
/// (`404 machine_not_found`), the user's access to its project (`403 forbidden`, which shows the
/// machine's state, O8), a routable state (`409 machine_not_routable`).
pub fn resolve<'p>(
    platform: &'p Platform,
    t: &ParsedTarget,
    session: &SessionRow,
    ev: &mut RouterEvent,
) -> Result<MachineRow<'p>, Refusal> {
    match t.kind {
        TargetKind::Project => {
            if platform.project(&t.id).is_none() {
                return Err(Refusal::resolution(
                    Code::ProjectNotFound,
                    json!({"projectFound": false}),
                ));
            }
            if !access(platform, session, &t.id, ev) {
                return Err(Refusal::resolution(
                    Code::Forbidden,
                    json!({"projectFound": true}),
                ));
            }
            let row = platform
                .first_machine_of_project(&t.id, |s| s == MachineState::Active)
                .ok_or_else(|| {
                    Refusal::resolution(
                        Code::MachineNotFound,
                        json!({"projectFound": true, "machineExists": false, "machineState": null}),
                    )
                })?;
            record(&row, ev);
            Ok(row)
        }
        TargetKind::Machine => {
            let row = platform.machine(&t.id).ok_or_else(|| {
                Refusal::resolution(Code::MachineNotFound, json!({"machineExists": false}))
            })?;
            record(&row, ev);
            let state = row.state.as_str();
            if !access(platform, session, &row.spec.project, ev) {
                return Err(Refusal::resolution(
                    Code::Forbidden,
                    json!({"projectFound": null, "machineExists": true, "machineState": state}),
                ));
            }
            if !ROUTABLE_STATES.contains(&row.state) {
                let routable: Vec<&str> = ROUTABLE_STATES.iter().map(|s| s.as_str()).collect();
                return Err(Refusal::resolution(
                    Code::MachineNotRoutable,
                    json!({"machineExists": true, "machineState": state, "routableStates": routable}),
                ));
            }
            Ok(row)
        }
    }
}

/// Step (V1+): the machine has a provider id, else `503 machine_unavailable`
/// `{machineId, machineState, missing: "externalId"}`.
pub fn external_id<'p>(row: &MachineRow<'p>) -> Result<&'p str, Refusal> {
    row.spec.external_id.as_deref().ok_or_else(|| {
        Refusal::resolution(
            Code::MachineUnavailable,
            json!({"machineId": row.spec.id, "machineState": row.state.as_str(), "missing": "externalId"}),
        )
    })
}

/// A transport failure (V1+) shows which machine it was: `{resolution: {machineId,
/// machineState, machineType}, proxyError}`.
pub fn with_machine(mut r: Refusal, row: &MachineRow<'_>) -> Refusal {
    if r.code == Code::ProxyError {
        r.details.resolution = Some(json!({
            "machineId": row.spec.id,
            "machineState": row.state.as_str(),
            "machineType": row.spec.provider.as_str(),
        }));
    }
    r
}
