//! A running world: every hop a real HTTP server on an ephemeral loopback port.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::faults::Fault;
use crate::machine::Machine;
use crate::net::{Handler, SimNetwork, bind_local, serve_http};
use crate::providers::daytona::DAYTONA_PROXY_DOMAIN;
use crate::providers::docker::{ENGINE_HOST, EngineEndpoint, EngineRelay};
use crate::providers::fly::{FLY_BASE_DOMAIN, sanitize_app_name};
use crate::route_pattern::RoutePattern;
use crate::router::glob::HostGlob;
use crate::trace::{Redactor, TraceStore};
use crate::world::{MachineState, ProviderKind, WorldSpec};

#[derive(Default)]
struct FaultState {
    provider_status: HashMap<ProviderKind, u16>,
    provider_delay: HashMap<ProviderKind, u64>,
    docker_unmapped: HashSet<String>,
}

/// Addresses of the world's hops.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub edge: SocketAddr,
    pub router: SocketAddr,
    pub docker_engine: SocketAddr,
    pub fly_edge: SocketAddr,
    pub daytona_proxy: SocketAddr,
}

/// State every hop reads.
pub struct WorldState {
    pub spec: WorldSpec,
    pub net: SimNetwork,
    pub trace: Arc<TraceStore>,
    pub engine: EngineEndpoint,
    /// With the docker backend, the engine address relays to a real engine.
    pub engine_relay: Option<EngineRelay>,
    /// In world-file order (the order "first active machine" uses).
    machines: Vec<Arc<Machine>>,
    states: RwLock<HashMap<String, MachineState>>,
    faults: RwLock<FaultState>,
    /// `OS_WORKER_ROUTES` and `PROJECT_INGRESS_PROXY_HOST_MATCHERS`, parsed once.
    routes: Vec<RoutePattern>,
    matchers: Vec<HostGlob>,
    pub addrs: Addrs,
}

impl WorldState {
    pub fn routes(&self) -> &[RoutePattern] {
        &self.routes
    }

    pub fn host_matchers(&self) -> &[HostGlob] {
        &self.matchers
    }

    pub fn machine(&self, id: &str) -> Option<Arc<Machine>> {
        self.machines.iter().find(|m| m.spec.id == id).cloned()
    }

    /// Machines in world-file order (the order "first active machine" uses).
    pub fn machines_in_order(&self) -> &[Arc<Machine>] {
        &self.machines
    }

    pub fn machine_state(&self, id: &str) -> Option<MachineState> {
        self.states.read().ok()?.get(id).copied()
    }

    pub fn provider_status(&self, p: ProviderKind) -> Option<u16> {
        self.faults.read().ok()?.provider_status.get(&p).copied()
    }

    pub fn provider_delay(&self, p: ProviderKind) -> Option<Duration> {
        self.faults
            .read()
            .ok()?
            .provider_delay
            .get(&p)
            .map(|ms| Duration::from_millis(*ms))
    }

    pub fn docker_unmapped(&self, machine: &str) -> bool {
        self.faults
            .read()
            .map(|f| f.docker_unmapped.contains(machine))
            .unwrap_or(false)
    }

    pub fn docker_machine_by_ref(&self, container: &str) -> Option<Arc<Machine>> {
        self.machines
            .iter()
            .find(|m| {
                m.spec.provider == ProviderKind::Docker
                    && m.spec
                        .metadata
                        .container_ref
                        .as_deref()
                        .or(m.spec.external_id.as_deref())
                        == Some(container)
            })
            .cloned()
    }

    pub fn fly_machine_by_app(&self, app: &str) -> Option<Arc<Machine>> {
        self.machines
            .iter()
            .find(|m| {
                m.spec.provider == ProviderKind::Fly
                    && m.spec
                        .external_id
                        .as_deref()
                        .map(sanitize_app_name)
                        .as_deref()
                        == Some(app)
            })
            .cloned()
    }

    pub fn daytona_machine_by_sandbox(&self, sandbox: &str) -> Option<Arc<Machine>> {
        self.machines
            .iter()
            .find(|m| {
                m.spec.provider == ProviderKind::Daytona
                    && m.spec
                        .metadata
                        .sandbox_id
                        .as_deref()
                        .or(m.spec.external_id.as_deref())
                        == Some(sandbox)
            })
            .cloned()
    }

    fn provider_addr(&self, p: ProviderKind) -> SocketAddr {
        match p {
            ProviderKind::Docker => self.addrs.docker_engine,
            ProviderKind::Fly => self.addrs.fly_edge,
            ProviderKind::Daytona => self.addrs.daytona_proxy,
        }
    }
}

/// Why a world did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("world {world:?}: OS_WORKER_ROUTES: {source}")]
    Routes {
        world: String,
        #[source]
        source: crate::route_pattern::PatternError,
    },
    #[error("world {world:?}: cannot bind a loopback port: {source}")]
    Bind {
        world: String,
        #[source]
        source: std::io::Error,
    },
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
    #[error("machine {machine:?}: {message}")]
    Machine { machine: String, message: String },
}

/// How a world is started beyond its spec.
#[derive(Default)]
pub struct WorldOptions {
    /// Where the router's Docker client finds the engine (default: the engine's sim address).
    pub engine: Option<EngineEndpoint>,
    /// The edge's address (`ingress-sim up --listen`).
    pub edge_listen: Option<SocketAddr>,
    /// Machines that run elsewhere (real containers), by machine id.
    pub remotes: HashMap<String, Arc<dyn crate::machine::RemoteMachine>>,
    /// Relay the engine address to a real engine.
    pub engine_relay: Option<EngineRelay>,
    /// The trace store (remote machines record into it, so it exists before the world).
    pub trace: Option<Arc<TraceStore>>,
}

/// A running world.
pub struct World {
    pub state: Arc<WorldState>,
    pub addrs: Addrs,
    stops: Vec<watch::Sender<bool>>,
}

impl World {
    /// Starts every hop, machine and app of `spec`, then applies the world's own faults.
    pub async fn start(spec: WorldSpec) -> Result<World, StartError> {
        Self::start_with(spec, EngineEndpoint::Sim).await
    }

    pub async fn start_with(spec: WorldSpec, engine: EngineEndpoint) -> Result<World, StartError> {
        Self::start_opts(
            spec,
            WorldOptions {
                engine: Some(engine),
                ..WorldOptions::default()
            },
        )
        .await
    }

    /// Starts a world with [`WorldOptions`].
    pub async fn start_opts(spec: WorldSpec, opts: WorldOptions) -> Result<World, StartError> {
        let WorldOptions {
            engine,
            edge_listen,
            mut remotes,
            engine_relay,
            trace,
        } = opts;
        let engine = engine.unwrap_or(EngineEndpoint::Sim);
        let world = spec.name.clone();
        let routes = RoutePattern::parse_list(&spec.env.os_worker_routes).map_err(|source| {
            StartError::Routes {
                world: world.clone(),
                source,
            }
        })?;
        let bind_err = |source| StartError::Bind {
            world: world.clone(),
            source,
        };
        let trace = trace.unwrap_or_default();
        let mut machines = Vec::new();
        let mut states = HashMap::new();
        for m in &spec.machines {
            let machine = match remotes.remove(&m.id) {
                Some(r) => Machine::remote(m.clone(), r, trace.clone()),
                None => Machine::start(m.clone(), trace.clone())
                    .await
                    .map_err(bind_err)?,
            };
            machines.push(machine);
            states.insert(m.id.clone(), m.state);
        }
        let (l_edge, edge) = match edge_listen {
            Some(a) => {
                let l = tokio::net::TcpListener::bind(a).await.map_err(bind_err)?;
                let addr = l.local_addr().map_err(bind_err)?;
                (l, addr)
            }
            None => bind_local().await.map_err(bind_err)?,
        };
        let (l_router, router) = bind_local().await.map_err(bind_err)?;
        let (l_engine, docker_engine) = bind_local().await.map_err(bind_err)?;
        let (l_fly, fly_edge) = bind_local().await.map_err(bind_err)?;
        let (l_day, daytona_proxy) = bind_local().await.map_err(bind_err)?;
        let addrs = Addrs {
            edge,
            router,
            docker_engine,
            fly_edge,
            daytona_proxy,
        };
        let net = SimNetwork::default();
        net.add_exact(ENGINE_HOST, docker_engine);
        net.add_suffix(FLY_BASE_DOMAIN, fly_edge);
        net.add_suffix(DAYTONA_PROXY_DOMAIN, daytona_proxy);
        let initial_faults = spec.faults.clone();
        let matchers = crate::router::glob::parse_matchers(&spec.env.host_matchers);
        let state = Arc::new(WorldState {
            spec,
            net,
            trace,
            engine,
            engine_relay,
            machines,
            states: RwLock::new(states),
            faults: RwLock::new(FaultState::default()),
            routes,
            matchers,
            addrs,
        });
        let mut stops = Vec::new();
        let mut start = |l: tokio::net::TcpListener, h: Handler| {
            let (tx, rx) = watch::channel(false);
            serve_http(l, h, rx);
            stops.push(tx);
        };
        let s = state.clone();
        start(
            l_edge,
            Arc::new(move |req, peer| Box::pin(crate::edge::handle(s.clone(), req, peer))),
        );
        let s = state.clone();
        start(
            l_router,
            Arc::new(move |req, peer| Box::pin(crate::router::handle(s.clone(), req, peer))),
        );
        let s = state.clone();
        start(
            l_engine,
            Arc::new(move |req, _| {
                Box::pin(crate::providers::docker::engine_handle(s.clone(), req))
            }),
        );
        let s = state.clone();
        start(
            l_fly,
            Arc::new(move |req, peer| {
                Box::pin(crate::providers::fly::edge_handle(s.clone(), req, peer))
            }),
        );
        let s = state.clone();
        start(
            l_day,
            Arc::new(move |req, peer| {
                Box::pin(crate::providers::daytona::proxy_handle(
                    s.clone(),
                    req,
                    peer,
                ))
            }),
        );
        let w = World {
            state,
            addrs,
            stops,
        };
        for f in &initial_faults {
            // World files are validated; a fault naming an unknown machine is reported at start.
            if let Err(e) = w.apply_fault(f).await {
                tracing::warn!(error = %e, "world fault not applied");
            }
        }
        Ok(w)
    }

    pub fn trace(&self) -> &Arc<TraceStore> {
        &self.state.trace
    }

    pub fn machine(&self, id: &str) -> Option<Arc<Machine>> {
        self.state.machine(id)
    }

    /// Applies a fault; it holds until undone by another fault or the world stops.
    pub async fn apply_fault(&self, f: &Fault) -> Result<(), FaultError> {
        let st = &self.state;
        let machine = |id: &str| {
            st.machine(id)
                .ok_or_else(|| FaultError::UnknownMachine(id.into()))
        };
        let app = |id: &str, port: u16| {
            machine(id)?
                .app(port)
                .cloned()
                .ok_or_else(|| FaultError::UnknownApp {
                    machine: id.into(),
                    port,
                })
        };
        if let Some(id) = f.machine_target() {
            let m = machine(id)?;
            if matches!(f, Fault::Container { .. })
                && m.spec.provider != crate::world::ProviderKind::Docker
            {
                return Err(FaultError::NotDocker {
                    machine: id.to_string(),
                });
            }
            if let Some(r) = &m.remote {
                return r.apply(f).await.map_err(|message| FaultError::Machine {
                    machine: id.to_string(),
                    message,
                });
            }
        }
        match f {
            Fault::ProviderRefuses { provider } => {
                st.net.set_refused(st.provider_addr(*provider), true)
            }
            Fault::ProviderStatus { provider, status } => {
                if let Ok(mut fs) = st.faults.write() {
                    fs.provider_status.insert(*provider, *status);
                }
            }
            Fault::ProviderSlow { provider, delay_ms } => {
                if let Ok(mut fs) = st.faults.write() {
                    fs.provider_delay.insert(*provider, *delay_ms);
                }
            }
            Fault::ProviderHealthy { provider } => {
                if let Ok(mut fs) = st.faults.write() {
                    fs.provider_status.remove(provider);
                    fs.provider_delay.remove(provider);
                }
                st.net.set_refused(st.provider_addr(*provider), false);
            }
            Fault::DockerNoPortMapping { machine: id } => {
                machine(id)?;
                if let Ok(mut fs) = st.faults.write() {
                    fs.docker_unmapped.insert(id.clone());
                }
            }
            Fault::MachineState { machine: id, state } => {
                machine(id)?;
                if let Ok(mut s) = st.states.write() {
                    s.insert(id.clone(), *state);
                }
            }
            Fault::MachineProxyDown { machine: id } => machine(id)?.proxy_down().await,
            Fault::AppDown { machine: id, port } => app(id, *port)?.down(),
            Fault::AppUp { machine: id, port } => {
                app(id, *port)?
                    .restore()
                    .await
                    .map_err(|source| FaultError::AppUp {
                        machine: id.clone(),
                        port: *port,
                        source,
                    })?;
            }
            Fault::AppResetMidBody { machine: id, port } => {
                app(id, *port)?
                    .reset_mid_body
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Fault::Container {
                machine: id,
                action,
            } => machine(id)?
                .container_action(*action)
                .await
                .map_err(|e| FaultError::Machine {
                    machine: id.clone(),
                    message: e.to_string(),
                })?,
        }
        Ok(())
    }

    /// Releases a gated SSE app.
    pub async fn release(&self, machine: &str, port: u16) -> bool {
        let Some(m) = self.machine(machine) else {
            return false;
        };
        if let Some(r) = &m.remote {
            return r.release(port).await;
        }
        match m.app(port).cloned() {
            Some(app) => {
                app.released.send_replace(true);
                true
            }
            None => false,
        }
    }

    /// Ephemeral ports → stable tokens, for snapshots.
    pub fn redactor(&self) -> Redactor {
        let mut r = Redactor::default();
        r.add_port(self.addrs.edge.port(), "edge");
        r.add_port(self.addrs.router.port(), "os-router");
        r.add_port(self.addrs.docker_engine.port(), "docker-engine");
        r.add_port(self.addrs.fly_edge.port(), "fly-edge");
        r.add_port(self.addrs.daytona_proxy.port(), "daytona-proxy");
        for m in self.state.machines_in_order() {
            for p in m.ports_seen() {
                r.add_port(p, format!("{}:8080", m.spec.id));
            }
            for (p, a) in &m.apps {
                r.add_port(a.addr.port(), format!("{}:app{}", m.spec.id, p));
            }
        }
        r
    }

    /// Stops every hop, machine proxy and app.
    pub async fn shutdown(self) {
        for s in &self.stops {
            s.send_replace(true);
        }
        for m in self.state.machines_in_order() {
            m.shutdown().await;
        }
    }

    /// Waits until the events of every finished request are in the trace (remote machines report
    /// theirs with a delay; in-process ones record as they go).
    pub async fn settle(&self) {
        for m in self.state.machines_in_order() {
            if let Some(r) = &m.remote {
                r.settle().await;
            }
        }
    }
}
