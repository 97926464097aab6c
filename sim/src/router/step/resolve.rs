//! Resolution: the machine a parsed target means, looked up in the platform's records.

use crate::model::{Code, MachineState, ParsedTarget, Refusal, TargetKind};
use crate::platform::{MachineRow, Platform};
use crate::trace::{MachineRef, RouterEvent};

/// Step (V0): project → its first `active` machine; machine id → the machine if it is
/// `active|detached`. None → `404 machine_not_found`. The machine is recorded.
pub fn machine_v0<'p>(
    platform: &'p Platform,
    t: &ParsedTarget,
    ev: &mut RouterEvent,
) -> Result<MachineRow<'p>, Refusal> {
    let row = match t.kind {
        TargetKind::Project => {
            platform.first_machine_of_project(&t.id, |s| s == MachineState::Active)
        }
        TargetKind::Machine => platform
            .machine(&t.id)
            .filter(|m| matches!(m.state, MachineState::Active | MachineState::Detached)),
    }
    .ok_or(Code::MachineNotFound)?;
    record(&row, ev);
    Ok(row)
}

/// Records the machine resolved.
pub fn record(row: &MachineRow<'_>, ev: &mut RouterEvent) {
    ev.machine = Some(MachineRef {
        id: row.spec.id.clone(),
        project: row.spec.project.clone(),
        state: row.state.as_str().into(),
        provider: row.spec.provider.as_str().into(),
        external_id: row.spec.external_id.clone(),
    });
}

/// Step: the machine has a provider id, else `503 machine_unavailable`.
pub fn external_id<'p>(row: &MachineRow<'p>) -> Result<&'p str, Refusal> {
    row.spec
        .external_id
        .as_deref()
        .ok_or_else(|| Code::MachineUnavailable.into())
}
