//! The leaf types every hop shares: machines and their states, provider kinds, apps, faults,
//! parsed targets and the router's refusals. Nothing here imports another module of the crate
//! (`tests/module_graph.rs` keeps it so).

mod account;
mod app;
mod fault;
mod generation;
mod machine;
mod refusal;
mod target;

pub use account::{
    AuthSpec, Exchange, MembershipSpec, OrganizationSpec, Role, SessionSpec, UserSpec,
};
pub use app::{AppKind, AppSpec, Bind};
pub use fault::{
    AppFault, BadCertificate, DbFault, EngineFault, Fault, FaultError, FaultOwner, MachineFault,
    ProviderFault,
};
pub use generation::Generation;
pub use machine::{
    ContainerAction, ContainerState, MachineSpec, MachineState, ProjectSpec, ProviderKind,
    ProviderMetadata,
};
pub use refusal::{Code, Details, Envelope, Refusal};
pub use target::{DEFAULT_PORT, ParseError, ParsedTarget, TargetKind, request_hostname};
