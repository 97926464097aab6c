//! Faults as data: a world or a scenario step names them; the same runtime applies them.

use serde::{Deserialize, Serialize};

use crate::machine::ContainerAction;
use crate::world::{MachineState, ProviderKind};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Connections to the provider's endpoint are refused (Docker: the Engine API; Fly: the
    /// `*.fly.dev` edge; Daytona: the preview proxy).
    ProviderRefuses { provider: ProviderKind },
    /// The provider answers every request with this status (Docker: the Engine API; Fly and
    /// Daytona: their edge, without reaching the machine).
    ProviderStatus { provider: ProviderKind, status: u16 },
    /// The provider waits this long before handling a request.
    ProviderSlow {
        provider: ProviderKind,
        delay_ms: u64,
    },
    /// Undo every provider fault for this provider.
    ProviderHealthy { provider: ProviderKind },
    /// The Docker container has no host port for 8080 (`No host port mapped for 8080`).
    DockerNoPortMapping { machine: String },
    /// The platform's record of the machine changes state.
    MachineState {
        machine: String,
        state: MachineState,
    },
    /// The machine proxy on :8080 stops listening (connections refused).
    MachineProxyDown { machine: String },
    /// The app on `port` stops listening; its open connections are cut.
    AppDown { machine: String, port: u16 },
    /// The app listens again.
    AppUp { machine: String, port: u16 },
    /// The app answers every request by dying mid-body.
    AppResetMidBody { machine: String, port: u16 },
    /// A Docker machine's container is stopped, started, restarted, paused, unpaused, or
    /// disconnected from / connected to its network. With the docker backend this is done to the
    /// real container; in-process the machine behaves as the container would (see
    /// `Machine::container_action`).
    Container {
        machine: String,
        action: ContainerAction,
    },
}

impl Fault {
    /// The machine a fault is aimed at, if it is one the machine itself must carry out (its
    /// proxy, apps or container; not the platform's record or a provider).
    pub fn machine_target(&self) -> Option<&str> {
        match self {
            Fault::MachineProxyDown { machine }
            | Fault::AppDown { machine, .. }
            | Fault::AppUp { machine, .. }
            | Fault::AppResetMidBody { machine, .. }
            | Fault::Container { machine, .. } => Some(machine),
            _ => None,
        }
    }
}
