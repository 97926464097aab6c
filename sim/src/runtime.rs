//! A running world: every hop a real HTTP server on an ephemeral loopback port. The runtime is the
//! one module that builds the hops' contexts and wires them to their listeners, and the one that
//! hands each fault to its owner.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::sync::watch;

use crate::control_plane::ControlPlaneCtx;
use crate::db::Database;
use crate::edge::EdgeCtx;
use crate::machine::{Machine, RemoteMachine};
use crate::model::{Fault, FaultError, FaultOwner, Generation, ProviderKind};
use crate::net::{Handler, SimNetwork, bind_local, serve_http, serve_https};
use crate::platform::{Accounts, Platform};
use crate::providers::Endpoint;
use crate::providers::daytona::{DAYTONA_PROXY_DOMAIN, DaytonaProxy};
use crate::providers::docker::{DockerEngine, ENGINE_HOST, EngineEndpoint, EngineRelay};
use crate::providers::fly::{FLY_BASE_DOMAIN, FlyEdge};
use crate::route_pattern::RoutePattern;
use crate::router::RouterCtx;
use crate::router::cache::ResolutionCache;
use crate::router::step::canonical::{normalize_host, public_origin};
use crate::router::step::matchers::parse_matchers;
use crate::router::step::transport::Transport;
use crate::tls::SimCa;
use crate::trace::{Redactor, TraceStore};
use crate::worker::WorkerCtx;
use crate::world::WorldSpec;

/// Addresses of the world's hops.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    /// The edge over plain HTTP (`Host` names the public hostname).
    pub edge: SocketAddr,
    /// The edge over TLS (the certificate picked by SNI).
    pub edge_tls: SocketAddr,
    pub router: SocketAddr,
    pub docker_engine: SocketAddr,
    pub fly_edge: SocketAddr,
    pub daytona_proxy: SocketAddr,
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
    #[error("world {world:?}: {message}")]
    Env { world: String, message: String },
    #[error("world {world:?}: TLS: {source}")]
    Tls {
        world: String,
        #[source]
        source: crate::tls::TlsError,
    },
    #[error("world {world:?}: cannot bind a loopback port: {source}")]
    Bind {
        world: String,
        #[source]
        source: std::io::Error,
    },
}

/// How a world is started beyond its spec.
#[derive(Default)]
pub struct WorldOptions {
    /// Where the router's Docker client finds the engine (default: the engine's sim address).
    pub engine: Option<EngineEndpoint>,
    /// The edge's address (`ingress-sim up --listen`).
    pub edge_listen: Option<SocketAddr>,
    /// Machines that run elsewhere (real containers), by machine id.
    pub remotes: HashMap<String, Arc<dyn RemoteMachine>>,
    /// Relay the engine address to a real engine.
    pub engine_relay: Option<EngineRelay>,
    /// The trace store (remote machines record into it, so it exists before the world).
    pub trace: Option<Arc<TraceStore>>,
    /// Run the OS router under this generation instead of the world's (`--router`).
    pub router: Option<Generation>,
}

/// A running world. Only the runtime builds the hops' contexts and wires them to their
/// listeners; each hop reads nothing but its own context.
pub struct World {
    pub addrs: Addrs,
    /// The generation the OS router runs (the world's, or the run's override).
    pub generation: Generation,
    spec: WorldSpec,
    trace: Arc<TraceStore>,
    /// This run's certificate authority.
    ca: Arc<SimCa>,
    /// A client configuration trusting `ca` only.
    tls_client: Arc<rustls::ClientConfig>,
    platform: Arc<Platform>,
    db: Arc<Database>,
    /// In world-file order.
    machines: Vec<Arc<Machine>>,
    docker: Arc<DockerEngine>,
    fly: Arc<FlyEdge>,
    daytona: Arc<DaytonaProxy>,
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
            router: router_override,
        } = opts;
        let generation = router_override.unwrap_or(spec.router);
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
        for m in &spec.machines {
            let machine = match remotes.remove(&m.id) {
                Some(r) => Machine::remote(m.clone(), r, trace.clone()),
                None => Machine::start(m.clone(), trace.clone())
                    .await
                    .map_err(bind_err)?,
            };
            machines.push(machine);
        }
        let (l_edge, edge) = match edge_listen {
            Some(a) => {
                let l = tokio::net::TcpListener::bind(a).await.map_err(bind_err)?;
                let addr = l.local_addr().map_err(bind_err)?;
                (l, addr)
            }
            None => bind_local().await.map_err(bind_err)?,
        };
        let (l_edge_tls, edge_tls) = bind_local().await.map_err(bind_err)?;
        let (l_router, router) = bind_local().await.map_err(bind_err)?;
        let (l_engine, docker_engine) = bind_local().await.map_err(bind_err)?;
        let (l_fly, fly_edge) = bind_local().await.map_err(bind_err)?;
        let (l_day, daytona_proxy) = bind_local().await.map_err(bind_err)?;
        let addrs = Addrs {
            edge,
            edge_tls,
            router,
            docker_engine,
            fly_edge,
            daytona_proxy,
        };
        let tls_err = |source| StartError::Tls {
            world: world.clone(),
            source,
        };
        let ca = Arc::new(SimCa::new().map_err(tls_err)?);
        let tls_client = ca.client_config().map_err(tls_err)?;
        let net = Arc::new(SimNetwork::default());
        // The OS router's subrequests verify Fly's and Daytona's certificates (the Workers runtime
        // does); a failure is the provider's hop in the trace.
        net.set_tls_client(tls_client.clone());
        let hook_trace = trace.clone();
        net.on_tls_failure(Arc::new(move |id, host, error| {
            let Some(id) = id else { return };
            let provider = if host.ends_with(&format!(".{FLY_BASE_DOMAIN}")) {
                ProviderKind::Fly
            } else if host.ends_with(&format!(".{DAYTONA_PROXY_DOMAIN}")) {
                ProviderKind::Daytona
            } else {
                ProviderKind::Docker
            };
            hook_trace.record(
                id,
                crate::trace::Event::Provider(crate::trace::ProviderEvent {
                    provider: provider.as_str().into(),
                    request: format!("TLS handshake with {host}"),
                    decision: format!(
                        "the OS router's fetch did not accept the certificate ({error}) → the Workers runtime answers 526 (invalid SSL certificate)"
                    ),
                    added_headers: vec![],
                    status: Some(crate::net::INVALID_CERTIFICATE_STATUS),
                }),
            );
        }));
        net.add_exact(ENGINE_HOST, docker_engine);
        net.add_suffix(FLY_BASE_DOMAIN, fly_edge);
        net.add_suffix(DAYTONA_PROXY_DOMAIN, daytona_proxy);
        let accounts = Accounts {
            users: spec.users.clone(),
            organizations: spec.organizations.clone(),
            memberships: spec.memberships.clone(),
            sessions: spec.sessions.clone(),
        };
        let platform = Arc::new(Platform::with_accounts(
            spec.projects.clone(),
            spec.machines.clone(),
            accounts,
        ));
        let db = Arc::new(Database::new(platform.clone(), spec.db, trace.clone()));
        let public = public_origin(spec.env.public_url()).map_err(|message| StartError::Env {
            world: world.clone(),
            message: format!("VITE_PUBLIC_URL: {message}"),
        })?;
        let matchers = parse_matchers(&spec.env.host_matchers);
        let ingress_domain = spec.env.ingress_domain.as_deref().and_then(normalize_host);
        let endpoint = |kind, addr| Endpoint::new(kind, addr, net.clone(), trace.clone());
        let docker = Arc::new(DockerEngine::new(
            endpoint(ProviderKind::Docker, docker_engine),
            &machines,
            engine_relay,
        ));
        let fly = Arc::new(FlyEdge::new(
            endpoint(ProviderKind::Fly, fly_edge),
            platform.clone(),
            &machines,
        ));
        let daytona = Arc::new(DaytonaProxy::new(
            endpoint(ProviderKind::Daytona, daytona_proxy),
            platform.clone(),
            &machines,
        ));
        let edge_tls_policy = Arc::new(crate::edge::EdgeTls {
            certificates: spec.edge_certificates(),
            ca: ca.clone(),
            trace: trace.clone(),
        });
        let fly_tls = fly
            .endpoint
            .tls_policy(ca.clone(), vec![format!("*.{FLY_BASE_DOMAIN}")]);
        let daytona_tls = daytona
            .endpoint
            .tls_policy(ca.clone(), vec![format!("*.{DAYTONA_PROXY_DOMAIN}")]);
        let edge_ctx = Arc::new(EdgeCtx {
            routes,
            origin_timeout: Duration::from_millis(spec.edge.origin_timeout_ms),
            router,
            net: net.clone(),
            trace: trace.clone(),
        });
        let router_ctx = Arc::new(RouterCtx {
            generation,
            matchers: matchers.clone(),
            canonical_host: spec.env.canonical_host.clone(),
            ingress_domain: ingress_domain.clone(),
            public: public.clone(),
            platform: platform.clone(),
            db: db.clone(),
            isolates: (0..spec.os.isolates.max(1))
                .map(|_| ResolutionCache::default())
                .collect(),
            served: AtomicUsize::new(0),
            transport: Transport {
                net: net.clone(),
                engine,
                trace: trace.clone(),
            },
            trace: trace.clone(),
        });
        let control_plane = crate::control_plane::app(Arc::new(ControlPlaneCtx {
            generation,
            public: public.clone(),
            platform: platform.clone(),
            db: db.clone(),
            matchers,
            canonical_host: spec.env.canonical_host.clone(),
            ingress_domain,
            auth: spec.auth.clone(),
            trace: trace.clone(),
        }));
        let worker_ctx = Arc::new(WorkerCtx {
            router: router_ctx,
            control_plane,
            platform: platform.clone(),
            public,
            trace: trace.clone(),
        });
        let mut stops = Vec::new();
        let mut start_tls =
            |l: tokio::net::TcpListener,
             h: Handler,
             policy: Option<Arc<dyn crate::net::TlsPolicy>>| {
                let (tx, rx) = watch::channel(false);
                // Detached: these servers stop with the world (`stops`).
                drop(match policy {
                    Some(p) => serve_https(l, h, p, rx),
                    None => serve_http(l, h, rx),
                });
                stops.push(tx);
            };
        let edge_handler: Handler =
            Arc::new(move |req, peer| Box::pin(crate::edge::handle(edge_ctx.clone(), req, peer)));
        start_tls(l_edge, edge_handler.clone(), None);
        start_tls(l_edge_tls, edge_handler, Some(edge_tls_policy));
        let mut start = |l, h| start_tls(l, h, None);
        start(
            l_router,
            Arc::new(move |req, peer| {
                Box::pin(crate::worker::handle(worker_ctx.clone(), req, peer))
            }),
        );
        let c = docker.clone();
        start(
            l_engine,
            Arc::new(move |req, _| {
                Box::pin(crate::providers::docker::engine_handle(c.clone(), req))
            }),
        );
        let c = fly.clone();
        start_tls(
            l_fly,
            Arc::new(move |req, peer| {
                Box::pin(crate::providers::fly::edge_handle(c.clone(), req, peer))
            }),
            Some(fly_tls),
        );
        let c = daytona.clone();
        start_tls(
            l_day,
            Arc::new(move |req, peer| {
                Box::pin(crate::providers::daytona::proxy_handle(
                    c.clone(),
                    req,
                    peer,
                ))
            }),
            Some(daytona_tls),
        );
        let w = World {
            addrs,
            generation,
            spec,
            trace,
            ca,
            tls_client,
            platform,
            db,
            machines,
            docker,
            fly,
            daytona,
            stops,
        };
        for f in &w.spec.faults {
            // World files are validated; a fault naming an unknown machine is reported at start.
            if let Err(e) = w.apply_fault(f).await {
                tracing::warn!(error = %e, "world fault not applied");
            }
        }
        Ok(w)
    }

    /// The platform's records (a browser step signs its user in through them).
    pub fn platform(&self) -> &Arc<Platform> {
        &self.platform
    }

    /// The platform database (a burst step reads its counters).
    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }

    pub fn spec(&self) -> &WorldSpec {
        &self.spec
    }

    pub fn trace(&self) -> &Arc<TraceStore> {
        &self.trace
    }

    /// This run's certificate authority (its root: [`SimCa::root_pem`]).
    pub fn ca(&self) -> &Arc<SimCa> {
        &self.ca
    }

    /// A client configuration that trusts this run's CA only.
    pub fn tls_client(&self) -> Arc<rustls::ClientConfig> {
        self.tls_client.clone()
    }

    /// Whether `https://`/`wss://` steps through the edge go over TLS (`[edge.tls] enabled`).
    pub fn tls_enabled(&self) -> bool {
        self.spec.edge.tls.enabled
    }

    pub fn machine(&self, id: &str) -> Option<Arc<Machine>> {
        self.machines.iter().find(|m| m.spec.id == id).cloned()
    }

    /// Machines in world-file order.
    pub fn machines(&self) -> &[Arc<Machine>] {
        &self.machines
    }

    /// Applies a fault (its owner carries it out); it holds until undone by another fault or the
    /// world stops.
    pub async fn apply_fault(&self, f: &Fault) -> Result<(), FaultError> {
        let machine = |id: &str| {
            self.machine(id)
                .ok_or_else(|| FaultError::UnknownMachine(id.into()))
        };
        if let Some((id, _)) = f.names() {
            machine(id)?;
        }
        if let FaultOwner::Provider(
            ProviderKind::Docker,
            crate::model::ProviderFault::Certificate(_),
        ) = f.owner()
        {
            return Err(FaultError::NoCertificate {
                provider: "docker".into(),
            });
        }
        match f.owner() {
            FaultOwner::Provider(kind, fault) => self.endpoint(kind).apply(fault),
            FaultOwner::DockerEngine { machine, fault } => self.docker.apply(machine, fault),
            FaultOwner::Platform { machine, state } => self.platform.set_state(machine, state)?,
            FaultOwner::Clock { advance_s } => self.platform.advance_clock(advance_s),
            FaultOwner::Database(fault) => self.db.apply(fault),
            FaultOwner::Machine { machine: id, fault } => machine(id)?.apply(f, fault).await?,
        }
        Ok(())
    }

    fn endpoint(&self, kind: ProviderKind) -> &Endpoint {
        match kind {
            ProviderKind::Docker => &self.docker.endpoint,
            ProviderKind::Fly => &self.fly.endpoint,
            ProviderKind::Daytona => &self.daytona.endpoint,
        }
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
        r.add_port(self.addrs.edge_tls.port(), "edge-tls");
        r.add_port(self.addrs.router.port(), "os-router");
        r.add_port(self.addrs.docker_engine.port(), "docker-engine");
        r.add_port(self.addrs.fly_edge.port(), "fly-edge");
        r.add_port(self.addrs.daytona_proxy.port(), "daytona-proxy");
        for m in &self.machines {
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
        for m in &self.machines {
            m.shutdown().await;
        }
    }

    /// Waits until the events of every finished request are in the trace (remote machines report
    /// theirs with a delay; in-process ones record as they go).
    pub async fn settle(&self) {
        for m in &self.machines {
            if let Some(r) = &m.remote {
                r.settle().await;
            }
        }
    }
}
