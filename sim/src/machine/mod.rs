//! A machine: the real `project-ingress-proxy` (through its public `serve`) on an ephemeral
//! loopback port standing for the machine's :8080, and the machine's apps. The only thing injected
//! into the proxy is where the machine's "localhost:<port>" is.
//!
//! A machine can also be remote: a real container (the docker backend) that runs the shipped
//! proxy binary and the apps, reached through its published port; the world drives it through
//! [`RemoteMachine`].
//!
//! An in-process Docker machine imitates its container: [`docker_proxy`] is the engine's
//! userland proxy on the published host port.

pub mod docker_proxy;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use proxy::access_log::{AccessLog, RequestRecord, Tee, TracingAccessLog};
use proxy::{ProxyConfig, Secret};
use tokio::sync::oneshot;

use crate::apps::App;
use crate::model::{
    ContainerAction, ContainerState, Fault, FaultError, MachineFault, MachineSpec, ProviderKind,
};
use crate::trace::{Event, MachineEvent, TRACE_HEADER, TraceStore};
use docker_proxy::PublishedPort;

/// The port the machine proxy listens on, on the machine.
pub const MACHINE_INGRESS_PORT: u16 = 8080;

/// A machine that runs elsewhere (a real container), driven by the world.
pub trait RemoteMachine: Send + Sync + 'static {
    /// Where the machine's :8080 is reachable now (a restart publishes a new host port).
    fn proxy_addr(&self) -> SocketAddr;
    /// Every host port its :8080 has had (for redaction).
    fn ports_seen(&self) -> Vec<u16>;
    /// Applies a fault aimed at this machine (its proxy, apps or container).
    fn apply<'a>(&'a self, fault: &'a Fault) -> BoxFuture<'a, Result<(), String>>;
    /// Releases a gated SSE app.
    fn release(&self, port: u16) -> BoxFuture<'_, bool>;
    /// Returns once every event of the requests that have finished so far is in the trace.
    fn settle(&self) -> BoxFuture<'_, ()>;
    /// Removes the machine.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

pub struct Machine {
    pub spec: MachineSpec,
    /// In-process apps (empty for a remote machine: its apps run where it runs).
    pub apps: BTreeMap<u16, Arc<App>>,
    pub remote: Option<Arc<dyn RemoteMachine>>,
    proxy_addr: Mutex<SocketAddr>,
    ports_seen: Mutex<Vec<u16>>,
    container: Mutex<ContainerState>,
    trace: Arc<TraceStore>,
    stop: Mutex<Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
    /// While the proxy is down: the port, bound but not listening (see `net::reserve_port`).
    reservation: Mutex<Option<socket2::Socket>>,
    /// A Docker machine's published 8080 (the engine's docker-proxy), while it has one.
    published: Mutex<Option<PublishedPort>>,
}

/// Records the proxy's decisions into the trace.
struct TraceSink {
    machine: String,
    trace: Arc<TraceStore>,
}

/// The machine hop's event for one access record. The app's real port is ephemeral in-process;
/// on the machine it is the target port, which is what the trace shows.
pub fn machine_event(machine: &str, r: &RequestRecord) -> MachineEvent {
    MachineEvent {
        machine: machine.to_string(),
        method: r.method.clone(),
        path: r.path.clone(),
        target_header: r.target_header.clone(),
        target_port: r.target_port,
        target_form: r.target_form.map(str::to_string),
        upstream: r
            .upstream_addr
            .map(|a| upstream_label(a.is_ipv6(), r.target_port)),
        status: r.status,
        error: r.error.map(str::to_string),
        upgraded: r.upgraded,
        bytes_in: r.bytes_in,
        bytes_out: r.bytes_out,
        completed: r.completed,
    }
}

/// `127.0.0.1:<port>` or `[::1]:<port>`.
pub fn upstream_label(ipv6: bool, target_port: Option<u16>) -> String {
    let ip = if ipv6 { "[::1]" } else { "127.0.0.1" };
    format!("{ip}:{}", target_port.unwrap_or(0))
}

impl AccessLog for TraceSink {
    fn record(&self, r: &RequestRecord) {
        self.trace.record(
            &r.request_id,
            Event::Machine(machine_event(&self.machine, r)),
        );
    }
}

impl Machine {
    /// Starts the machine in this process.
    pub async fn start(spec: MachineSpec, trace: Arc<TraceStore>) -> std::io::Result<Arc<Machine>> {
        let mut apps = BTreeMap::new();
        for a in &spec.apps {
            apps.insert(
                a.port,
                App::start(&spec.id, a.clone(), trace.clone()).await?,
            );
        }
        let listener = crate::net::bind_handover(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let proxy_addr = listener.local_addr()?;
        let m = Arc::new(Machine {
            spec,
            apps,
            remote: None,
            proxy_addr: Mutex::new(proxy_addr),
            ports_seen: Mutex::new(vec![proxy_addr.port()]),
            container: Mutex::new(ContainerState::Running),
            trace,
            stop: Mutex::new(None),
            reservation: Mutex::new(None),
            published: Mutex::new(None),
        });
        m.serve_proxy(listener);
        if m.spec.provider == ProviderKind::Docker && m.spec.metadata.publish_8080 {
            m.publish().await?;
        }
        Ok(m)
    }

    /// A machine that runs elsewhere.
    pub fn remote(
        spec: MachineSpec,
        remote: Arc<dyn RemoteMachine>,
        trace: Arc<TraceStore>,
    ) -> Arc<Machine> {
        let addr = remote.proxy_addr();
        Arc::new(Machine {
            spec,
            apps: BTreeMap::new(),
            remote: Some(remote),
            proxy_addr: Mutex::new(addr),
            ports_seen: Mutex::new(vec![]),
            container: Mutex::new(ContainerState::Running),
            trace,
            stop: Mutex::new(None),
            reservation: Mutex::new(None),
            published: Mutex::new(None),
        })
    }

    fn serve_proxy(&self, listener: tokio::net::TcpListener) {
        let app_map: BTreeMap<u16, Vec<SocketAddr>> = self
            .apps
            .iter()
            .map(|(p, a)| (*p, a.candidates()))
            .collect();
        let config = ProxyConfig {
            secret: self.spec.proxy_secret.as_deref().and_then(Secret::new),
            localhost: Arc::new(move |port: u16| app_map.get(&port).cloned().unwrap_or_default()),
            self_port: Some(MACHINE_INGRESS_PORT),
            drain_timeout: Duration::from_millis(200),
            request_id_header: http::HeaderName::from_static(TRACE_HEADER),
            access_log: Arc::new(Tee(vec![
                Arc::new(TracingAccessLog),
                Arc::new(TraceSink {
                    machine: self.spec.id.clone(),
                    trace: self.trace.clone(),
                }),
            ])),
            ..ProxyConfig::default()
        };
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            if let Err(e) = proxy::serve(listener, config, async move {
                let _ = rx.await;
            })
            .await
            {
                tracing::warn!(error = %e, "machine proxy ended");
            }
        });
        if let Ok(mut s) = self.stop.lock() {
            *s = Some((tx, task));
        }
        if let Ok(mut r) = self.reservation.lock() {
            *r = None;
        }
    }

    /// Where the machine's :8080 is reachable now.
    pub fn proxy_addr(&self) -> SocketAddr {
        if let Some(r) = &self.remote {
            return r.proxy_addr();
        }
        self.proxy_addr
            .lock()
            .map(|a| *a)
            .unwrap_or_else(|e| *e.into_inner())
    }

    /// Every port the machine's :8080 has had.
    pub fn ports_seen(&self) -> Vec<u16> {
        if let Some(r) = &self.remote {
            return r.ports_seen();
        }
        self.ports_seen
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    pub fn container_state(&self) -> ContainerState {
        self.container
            .lock()
            .map(|c| *c)
            .unwrap_or(ContainerState::Running)
    }

    /// Stops the machine proxy; when this returns, its port refuses connections.
    pub async fn proxy_down(&self) {
        let taken = self.stop.lock().ok().and_then(|mut s| s.take());
        if let Some((tx, task)) = taken {
            let addr = self.proxy_addr();
            if let Ok(r) = crate::net::reserve_port(addr)
                && let Ok(mut slot) = self.reservation.lock()
            {
                *slot = Some(r);
            }
            let _ = tx.send(());
            let _ = task.await;
        }
    }

    /// The proxy listens again on its port.
    async fn proxy_up(&self) -> std::io::Result<()> {
        if self.stop.lock().map(|s| s.is_some()).unwrap_or(false) {
            return Ok(());
        }
        let listener = crate::net::bind_handover(self.proxy_addr())?;
        self.serve_proxy(listener);
        Ok(())
    }

    /// Publishes the proxy's port on a new host port (what the engine does at container start
    /// and network connect).
    async fn publish(&self) -> std::io::Result<()> {
        let p = PublishedPort::start(self.proxy_addr()).await?;
        if let Ok(mut seen) = self.ports_seen.lock() {
            seen.push(p.addr.port());
        }
        if let Ok(mut slot) = self.published.lock() {
            *slot = Some(p);
        }
        Ok(())
    }

    async fn unpublish(&self) {
        let taken = self.published.lock().ok().and_then(|mut p| p.take());
        if let Some(p) = taken {
            p.close().await;
        }
    }

    /// A Docker machine's published host port for 8080, if it has one now.
    pub fn host_addr(&self) -> Option<SocketAddr> {
        if let Some(r) = &self.remote {
            let a = r.proxy_addr();
            return (a.port() != 0).then_some(a);
        }
        self.published
            .lock()
            .ok()
            .and_then(|p| p.as_ref().map(|p| p.addr))
    }

    /// Where a client outside the machine reaches its :8080: a Docker machine's published port,
    /// any other machine's proxy.
    pub fn public_addr(&self) -> SocketAddr {
        match self.spec.provider {
            ProviderKind::Docker => self.host_addr().unwrap_or(self.proxy_addr()),
            _ => self.proxy_addr(),
        }
    }

    /// What a container does, in this process: stop ends the apps and the proxy and drops the
    /// port binding; start brings them back with a new host port; pause holds all data through
    /// the published port; disconnect drops the binding while everything keeps running.
    pub async fn container_action(&self, action: ContainerAction) -> std::io::Result<()> {
        use ContainerAction as A;
        use ContainerState as S;
        let state = self.container_state();
        let set = |s: ContainerState| {
            if let Ok(mut c) = self.container.lock() {
                *c = s;
            }
        };
        let pause = |on: bool| {
            if let Ok(p) = self.published.lock()
                && let Some(p) = p.as_ref()
            {
                p.set_paused(on);
            }
        };
        match action {
            A::Stop if state != S::Exited => {
                self.unpublish().await;
                self.proxy_down().await;
                for a in self.apps.values() {
                    a.down().await;
                }
                set(S::Exited);
            }
            A::Start if state == S::Exited => {
                // A started container runs its apps afresh.
                for a in self.apps.values() {
                    a.released.send_replace(false);
                    a.restore().await?;
                }
                self.proxy_up().await?;
                if self.spec.metadata.publish_8080 {
                    self.publish().await?;
                }
                set(S::Running);
            }
            A::Restart => {
                Box::pin(self.container_action(A::Stop)).await?;
                Box::pin(self.container_action(A::Start)).await?;
            }
            A::Pause if state == S::Running => {
                pause(true);
                set(S::Paused);
            }
            A::Unpause if state == S::Paused => {
                pause(false);
                set(S::Running);
            }
            A::Disconnect if state == S::Running => {
                self.unpublish().await;
                set(S::Disconnected);
            }
            A::Connect if state == S::Disconnected => {
                if self.spec.metadata.publish_8080 {
                    self.publish().await?;
                }
                set(S::Running);
            }
            // As the engine: an action that does not apply to the current state changes nothing.
            _ => {}
        }
        Ok(())
    }

    /// Carries out a fault aimed at this machine; `fault` is the whole fault as written (a remote
    /// machine is sent it as is).
    pub async fn apply(&self, fault: &Fault, what: MachineFault) -> Result<(), FaultError> {
        let id = &self.spec.id;
        if matches!(what, MachineFault::Container(_)) && self.spec.provider != ProviderKind::Docker
        {
            return Err(FaultError::NotDocker {
                machine: id.clone(),
            });
        }
        if let Some(r) = &self.remote {
            return r.apply(fault).await.map_err(|message| FaultError::Machine {
                machine: id.clone(),
                message,
            });
        }
        match what {
            MachineFault::ProxyDown => self.proxy_down().await,
            MachineFault::Container(action) => {
                self.container_action(action)
                    .await
                    .map_err(|e| FaultError::Machine {
                        machine: id.clone(),
                        message: e.to_string(),
                    })?
            }
            MachineFault::App { port, fault } => {
                let app = self.app(port).ok_or_else(|| FaultError::UnknownApp {
                    machine: id.clone(),
                    port,
                })?;
                app.apply(fault).await.map_err(|source| FaultError::AppUp {
                    machine: id.clone(),
                    port,
                    source,
                })?
            }
        }
        Ok(())
    }

    pub fn app(&self, port: u16) -> Option<&Arc<App>> {
        self.apps.get(&port)
    }

    /// Stops the machine's proxy and apps (or removes the remote machine).
    pub async fn shutdown(&self) {
        if let Some(r) = &self.remote {
            r.shutdown().await;
            return;
        }
        self.unpublish().await;
        self.proxy_down().await;
        for a in self.apps.values() {
            a.down().await;
        }
    }
}
