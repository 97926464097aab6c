//! Faults as data: a world or a scenario step names them; each is carried out by its owner (the
//! provider it names, the platform's records, or the machine), which [`Fault::owner`] tells.

use serde::{Deserialize, Serialize};

use super::{ContainerAction, MachineState, ProviderKind};

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
    /// The provider's HTTPS endpoint (Fly's edge, Daytona's preview proxy) presents a certificate
    /// that does not verify. Docker is plain HTTP and has none.
    ProviderCertificate {
        provider: ProviderKind,
        certificate: BadCertificate,
    },
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
    /// The world's clock moves forward (one-time tokens and sessions expire by it).
    Clock { advance_s: u64 },
    /// The platform database's connection slots change (`max_connections`,
    /// `superuser_reserved_connections`).
    DbSlots {
        max_connections: u32,
        #[serde(default = "reserved_default")]
        reserved: u32,
    },
    /// Every database query takes this long (holding its connection slot).
    DbLatency { ms: u64 },
    /// The database stops accepting connections.
    DbDown,
    /// The database accepts connections again.
    DbUp,
}

/// Postgres's `superuser_reserved_connections` default.
fn reserved_default() -> u32 {
    3
}

/// How a certificate a server presents is broken (the `provider_certificate` fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadCertificate {
    /// Signed by a CA nobody trusts (its own key).
    SelfSigned,
    /// From the sim CA, but for another name.
    WrongName,
    /// From the sim CA, for the right name, expired on 2020-01-01.
    Expired,
}

impl BadCertificate {
    pub fn as_str(self) -> &'static str {
        match self {
            BadCertificate::SelfSigned => "self_signed",
            BadCertificate::WrongName => "wrong_name",
            BadCertificate::Expired => "expired",
        }
    }
}

/// Who carries a fault out, and what it is to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOwner<'a> {
    /// The part of the provider that answers (Docker: the Engine API; Fly: the edge; Daytona: the
    /// preview proxy).
    Provider(ProviderKind, ProviderFault),
    /// The Docker engine, about one machine's container.
    DockerEngine {
        machine: &'a str,
        fault: EngineFault,
    },
    /// The platform's records.
    Platform {
        machine: &'a str,
        state: MachineState,
    },
    /// The platform's clock.
    Clock { advance_s: u64 },
    /// The platform database.
    Database(DbFault),
    /// The machine itself: its proxy, its container, its apps.
    Machine {
        machine: &'a str,
        fault: MachineFault,
    },
}

/// A fault of a provider's answering endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderFault {
    Refuses,
    Status(u16),
    Slow { delay_ms: u64 },
    Certificate(BadCertificate),
    Healthy,
}

/// A fault of the platform database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFault {
    Slots { max_connections: u32, reserved: u32 },
    Latency { ms: u64 },
    Down,
    Up,
}

/// A fault of the Docker engine about one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineFault {
    NoPortMapping,
}

/// A fault a machine carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineFault {
    ProxyDown,
    Container(ContainerAction),
    App { port: u16, fault: AppFault },
}

/// A fault an app carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppFault {
    Down,
    Up,
    ResetMidBody,
}

impl Fault {
    /// Who carries the fault out.
    pub fn owner(&self) -> FaultOwner<'_> {
        use FaultOwner as O;
        let app = |machine, port, fault| O::Machine {
            machine,
            fault: MachineFault::App { port, fault },
        };
        match self {
            Fault::ProviderRefuses { provider } => O::Provider(*provider, ProviderFault::Refuses),
            Fault::ProviderStatus { provider, status } => {
                O::Provider(*provider, ProviderFault::Status(*status))
            }
            Fault::ProviderSlow { provider, delay_ms } => O::Provider(
                *provider,
                ProviderFault::Slow {
                    delay_ms: *delay_ms,
                },
            ),
            Fault::ProviderHealthy { provider } => O::Provider(*provider, ProviderFault::Healthy),
            Fault::ProviderCertificate {
                provider,
                certificate,
            } => O::Provider(*provider, ProviderFault::Certificate(*certificate)),
            Fault::DockerNoPortMapping { machine } => O::DockerEngine {
                machine,
                fault: EngineFault::NoPortMapping,
            },
            Fault::MachineState { machine, state } => O::Platform {
                machine,
                state: *state,
            },
            Fault::MachineProxyDown { machine } => O::Machine {
                machine,
                fault: MachineFault::ProxyDown,
            },
            Fault::Container { machine, action } => O::Machine {
                machine,
                fault: MachineFault::Container(*action),
            },
            Fault::AppDown { machine, port } => app(machine, *port, AppFault::Down),
            Fault::AppUp { machine, port } => app(machine, *port, AppFault::Up),
            Fault::AppResetMidBody { machine, port } => app(machine, *port, AppFault::ResetMidBody),
            Fault::Clock { advance_s } => O::Clock {
                advance_s: *advance_s,
            },
            Fault::DbSlots {
                max_connections,
                reserved,
            } => O::Database(DbFault::Slots {
                max_connections: *max_connections,
                reserved: *reserved,
            }),
            Fault::DbLatency { ms } => O::Database(DbFault::Latency { ms: *ms }),
            Fault::DbDown => O::Database(DbFault::Down),
            Fault::DbUp => O::Database(DbFault::Up),
        }
    }

    /// The machine a fault names (and the app port, for an app's fault), if any.
    pub fn names(&self) -> Option<(&str, Option<u16>)> {
        match self.owner() {
            FaultOwner::Provider(..) | FaultOwner::Clock { .. } | FaultOwner::Database(_) => None,
            FaultOwner::DockerEngine { machine, .. } | FaultOwner::Platform { machine, .. } => {
                Some((machine, None))
            }
            FaultOwner::Machine { machine, fault } => Some((
                machine,
                match fault {
                    MachineFault::App { port, .. } => Some(port),
                    _ => None,
                },
            )),
        }
    }

    /// The machine a fault is aimed at, if it is one the machine itself must carry out (its
    /// proxy, apps or container; not the platform's record or a provider).
    pub fn machine_target(&self) -> Option<&str> {
        match self.owner() {
            FaultOwner::Machine { machine, .. } => Some(machine),
            _ => None,
        }
    }
}

/// Why a fault could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("fault names unknown machine {0:?}")]
    UnknownMachine(String),
    #[error("fault names unknown app {machine}:{port}")]
    UnknownApp { machine: String, port: u16 },
    #[error("app {machine}:{port} cannot listen again: {source}")]
    AppUp {
        machine: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("container fault on {machine:?}: the machine's provider is not docker")]
    NotDocker { machine: String },
    #[error("the {provider} provider is plain HTTP: it presents no certificate")]
    NoCertificate { provider: String },
    #[error("machine {machine:?}: {message}")]
    Machine { machine: String, message: String },
}
