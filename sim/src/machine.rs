//! A machine: the real `project-ingress-proxy` (through its public `serve`) on an ephemeral
//! loopback port standing for the machine's :8080, and the machine's apps. The only thing injected
//! into the proxy is where the machine's "localhost:<port>" is.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy::access_log::{AccessLog, RequestRecord, Tee, TracingAccessLog};
use proxy::{ProxyConfig, Secret};
use tokio::sync::oneshot;

use crate::apps::App;
use crate::trace::{Event, MachineEvent, TRACE_HEADER, TraceStore};
use crate::world::MachineSpec;

/// The port the machine proxy listens on, on the machine.
pub const MACHINE_INGRESS_PORT: u16 = 8080;

pub struct Machine {
    pub spec: MachineSpec,
    pub proxy_addr: SocketAddr,
    pub apps: BTreeMap<u16, Arc<App>>,
    stop: Mutex<Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
    /// After `proxy_down`: the port, bound but not listening (see `net::reserve_port`).
    reservation: Mutex<Option<socket2::Socket>>,
}

/// Records the proxy's decisions into the trace.
struct TraceSink {
    machine: String,
    trace: Arc<TraceStore>,
}

impl AccessLog for TraceSink {
    fn record(&self, r: &RequestRecord) {
        let upstream = r.upstream_addr.map(|a| {
            let ip = if a.is_ipv6() { "[::1]" } else { "127.0.0.1" };
            // The app's real port is ephemeral; on the machine it is the target port.
            format!("{ip}:{}", r.target_port.unwrap_or(0))
        });
        self.trace.record(
            &r.request_id,
            Event::Machine(MachineEvent {
                machine: self.machine.clone(),
                method: r.method.clone(),
                path: r.path.clone(),
                target_header: r.target_header.clone(),
                target_port: r.target_port,
                target_form: r.target_form.map(str::to_string),
                upstream,
                status: r.status,
                error: r.error.map(str::to_string),
                upgraded: r.upgraded,
                bytes_in: r.bytes_in,
                bytes_out: r.bytes_out,
                completed: r.completed,
            }),
        );
    }
}

impl Machine {
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
        let app_map: BTreeMap<u16, Vec<SocketAddr>> =
            apps.iter().map(|(p, a)| (*p, a.candidates())).collect();
        let config = ProxyConfig {
            secret: spec.proxy_secret.as_deref().and_then(Secret::new),
            localhost: Arc::new(move |port: u16| app_map.get(&port).cloned().unwrap_or_default()),
            self_port: Some(MACHINE_INGRESS_PORT),
            drain_timeout: Duration::from_millis(200),
            request_id_header: http::HeaderName::from_static(TRACE_HEADER),
            access_log: Arc::new(Tee(vec![
                Arc::new(TracingAccessLog),
                Arc::new(TraceSink {
                    machine: spec.id.clone(),
                    trace,
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
        Ok(Arc::new(Machine {
            spec,
            proxy_addr,
            apps,
            stop: Mutex::new(Some((tx, task))),
            reservation: Mutex::new(None),
        }))
    }

    /// Stops the machine proxy; when this returns, its port refuses connections.
    pub async fn proxy_down(&self) {
        let taken = self.stop.lock().ok().and_then(|mut s| s.take());
        if let Some((tx, task)) = taken {
            if let Ok(r) = crate::net::reserve_port(self.proxy_addr)
                && let Ok(mut slot) = self.reservation.lock()
            {
                *slot = Some(r);
            }
            let _ = tx.send(());
            let _ = task.await;
        }
    }

    pub fn app(&self, port: u16) -> Option<&Arc<App>> {
        self.apps.get(&port)
    }
}
