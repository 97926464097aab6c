//! A machine as the platform records it (id, project, state, provider, external id, provider
//! metadata, apps), and what a Docker machine's container can be and be told.

use serde::{Deserialize, Serialize};

use super::AppSpec;

/// Machine states the platform knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineState {
    Starting,
    Active,
    Detached,
    Stopped,
    Archived,
}

impl MachineState {
    pub fn as_str(self) -> &'static str {
        match self {
            MachineState::Starting => "starting",
            MachineState::Active => "active",
            MachineState::Detached => "detached",
            MachineState::Stopped => "stopped",
            MachineState::Archived => "archived",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Docker,
    Fly,
    Daytona,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Docker => "docker",
            ProviderKind::Fly => "fly",
            ProviderKind::Daytona => "daytona",
        }
    }
}

/// Provider metadata as the platform stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderMetadata {
    /// Docker: `metadata.docker.containerRef` (else the external id is the container name).
    #[serde(default)]
    pub container_ref: Option<String>,
    /// Docker: publish 8080 on a host port (false reproduces `No host port mapped for 8080`).
    #[serde(default = "yes")]
    pub publish_8080: bool,
    /// Daytona: `metadata.daytona.sandboxId` (else the external id).
    #[serde(default)]
    pub sandbox_id: Option<String>,
    /// Daytona: a public sandbox needs no preview token.
    #[serde(default = "yes")]
    pub public: bool,
    /// Daytona: the preview token of a private sandbox.
    #[serde(default)]
    pub preview_token: Option<String>,
    /// Fly: region reported by the edge.
    #[serde(default)]
    pub region: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for ProviderMetadata {
    /// The same values as an empty `metadata = {}` table.
    fn default() -> Self {
        ProviderMetadata {
            container_ref: None,
            publish_8080: true,
            sandbox_id: None,
            public: true,
            preview_token: None,
            region: None,
        }
    }
}

/// A project as the platform records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSpec {
    pub slug: String,
    /// The organization the project belongs to (V1+ check membership in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// `customDomain` (V4+): a hostname the project is also served on (`templestein.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_domain: Option<String>,
    /// `defaultPort` (V5+): the port an implicit target means instead of 3000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_port: Option<u16>,
}

/// A machine as the platform records it, with the apps it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineSpec {
    pub id: String,
    pub project: String,
    pub state: MachineState,
    pub provider: ProviderKind,
    /// The provider's id for the machine; absent reproduces `503 machine_unavailable`.
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub metadata: ProviderMetadata,
    #[serde(default)]
    pub apps: Vec<AppSpec>,
    /// Run the machine proxy with this shared secret (the OS side of the hardening is not
    /// modelled in V0, so requests through the chain get 401 from the machine).
    #[serde(default)]
    pub proxy_secret: Option<String>,
}

impl MachineSpec {
    /// Docker: the container the engine knows it by (`metadata.docker.containerRef`, else the
    /// external id).
    pub fn container_ref(&self) -> Option<&str> {
        let meta = self.metadata.container_ref.as_deref();
        meta.or(self.external_id.as_deref())
    }

    /// Daytona: its sandbox (`metadata.daytona.sandboxId`, else the external id).
    pub fn sandbox_id(&self) -> Option<&str> {
        let meta = self.metadata.sandbox_id.as_deref();
        meta.or(self.external_id.as_deref())
    }
}

/// What can be done to a Docker machine's container (`docker stop|start|restart|pause|unpause`,
/// `docker network disconnect|connect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerAction {
    Stop,
    Start,
    Restart,
    Pause,
    Unpause,
    Disconnect,
    Connect,
}

/// A container's state as the engine reports it (and as an in-process machine imitates it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Running,
    Paused,
    Exited,
    /// Running, but not on the network its port is published from.
    Disconnected,
}

impl ContainerState {
    /// Whether the engine reports a host port for 8080 (a real engine drops the binding when the
    /// container stops or leaves the network, and gives a new one when it comes back).
    pub fn port_published(self) -> bool {
        matches!(self, ContainerState::Running | ContainerState::Paused)
    }
    pub fn running(self) -> bool {
        self != ContainerState::Exited
    }
    pub fn status(self) -> &'static str {
        match self {
            ContainerState::Running | ContainerState::Disconnected => "running",
            ContainerState::Paused => "paused",
            ContainerState::Exited => "exited",
        }
    }
}
