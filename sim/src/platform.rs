//! The platform's records: projects and machines (with their current states), in world-file
//! order. Every lookup the router (and the providers' view of a machine's state) makes goes
//! through here; the state is private, changed only by [`Platform::set_state`] (the
//! `machine_state` fault).

use std::collections::HashMap;
use std::sync::RwLock;

use crate::model::{FaultError, MachineSpec, MachineState, ProjectSpec};

pub struct Platform {
    projects: Vec<ProjectSpec>,
    /// In world-file order (the order "first active machine" uses).
    machines: Vec<MachineSpec>,
    states: RwLock<HashMap<String, MachineState>>,
}

/// A machine's row: its record and its state now.
#[derive(Debug, Clone, Copy)]
pub struct MachineRow<'a> {
    pub spec: &'a MachineSpec,
    pub state: MachineState,
}

impl Platform {
    pub fn new(projects: Vec<ProjectSpec>, machines: Vec<MachineSpec>) -> Platform {
        let states = machines.iter().map(|m| (m.id.clone(), m.state)).collect();
        Platform {
            projects,
            machines,
            states: RwLock::new(states),
        }
    }

    /// The project with this slug.
    pub fn project(&self, slug: &str) -> Option<&ProjectSpec> {
        self.projects.iter().find(|p| p.slug == slug)
    }

    /// The machine's current state.
    pub fn machine_state(&self, id: &str) -> Option<MachineState> {
        self.states.read().ok()?.get(id).copied()
    }

    /// The machine with this id.
    pub fn machine(&self, id: &str) -> Option<MachineRow<'_>> {
        let spec = self.machines.iter().find(|m| m.id == id)?;
        Some(MachineRow {
            spec,
            state: self.machine_state(id)?,
        })
    }

    /// The project's first machine (in world order) whose state passes `wanted`.
    pub fn first_machine_of_project(
        &self,
        project: &str,
        wanted: impl Fn(MachineState) -> bool,
    ) -> Option<MachineRow<'_>> {
        self.machines.iter().find_map(|spec| {
            let state = self.machine_state(&spec.id)?;
            (spec.project == project && wanted(state)).then_some(MachineRow { spec, state })
        })
    }

    /// The `machine_state` fault: the platform's record of the machine changes state.
    pub fn set_state(&self, id: &str, state: MachineState) -> Result<(), FaultError> {
        if !self.machines.iter().any(|m| m.id == id) {
            return Err(FaultError::UnknownMachine(id.into()));
        }
        if let Ok(mut s) = self.states.write() {
            s.insert(id.to_string(), state);
        }
        Ok(())
    }
}
