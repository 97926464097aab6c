//! The docker backend: each Docker-provider machine a scenario reaches runs as a real container of
//! the machine image (`cargo xtask image`): the shipped proxy binary on :8080 and the world's apps,
//! its :8080 published on a host port the engine picks. The world's engine address relays to the
//! real engine, so the OS router's Docker client finds that port through the real Engine API.
//!
//! Containers are started and removed with testcontainers (its watchdog removes them on
//! SIGINT/SIGTERM/SIGQUIT); each carries the label `ingress-sim.owner=<host>:<pid>`, and a run
//! first removes containers whose owner process is gone (a crashed run).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;
use sim::machine::RemoteMachine;
use sim::model::{ContainerAction, ContainerState, Fault, MachineSpec};
use sim::providers::docker::{engine_call, percent_encode};
use sim::trace::{Event, RemoteLine, TRACE_HEADER, TraceStore};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio::io::AsyncBufReadExt;
use tokio::sync::Notify;

/// The label every container of ours carries: `<hostname>:<pid>` of the process that owns it.
pub const OWNER_LABEL: &str = "ingress-sim.owner";
/// The machine image (`cargo xtask image`); `INGRESS_MACHINE_IMAGE` overrides it.
pub const DEFAULT_IMAGE: &str = "ingress-machine:latest";
const PROXY_PORT: u16 = 8080;
const CONTROL_PORT: u16 = 8079;
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The engine's Unix socket, if an engine answers on it (`DOCKER_HOST=unix://…` or the default).
pub async fn engine_socket() -> Result<PathBuf, String> {
    let path = match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => match h.strip_prefix("unix://") {
            Some(p) => PathBuf::from(p),
            None => {
                return Err(format!(
                    "DOCKER_HOST={h}: only unix:// engines are supported"
                ));
            }
        },
        _ => PathBuf::from("/var/run/docker.sock"),
    };
    match tokio::time::timeout(
        Duration::from_secs(5),
        engine_call(&path, Method::GET, "/_ping", None),
    )
    .await
    {
        Ok(Ok((200, _))) => Ok(path),
        Ok(Ok((s, b))) => Err(format!(
            "{}: /_ping answered {s}: {}",
            path.display(),
            String::from_utf8_lossy(&b)
        )),
        Ok(Err(e)) => Err(format!("{}: {e}", path.display())),
        Err(_) => Err(format!("{}: no answer within 5s", path.display())),
    }
}

/// The image to run (`image`, else `INGRESS_MACHINE_IMAGE`, else the default), if the engine has it.
pub async fn image(socket: &Path, image: Option<String>) -> Result<String, String> {
    let image = image
        .or_else(|| std::env::var("INGRESS_MACHINE_IMAGE").ok())
        .unwrap_or_else(|| DEFAULT_IMAGE.into());
    match engine_call(socket, Method::GET, &format!("/images/{image}/json"), None).await {
        Ok((200, _)) => Ok(image),
        Ok((404, _)) => Err(format!(
            "image {image} is not built (no registry here: run `cargo xtask image`)"
        )),
        Ok((s, b)) => Err(format!(
            "inspecting image {image}: {s} {}",
            String::from_utf8_lossy(&b)
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// The [`OWNER_LABEL`] value for process `pid` on this host.
pub fn owner_of(pid: u32) -> String {
    format!("{}:{pid}", hostname())
}

fn owner() -> String {
    owner_of(std::process::id())
}

/// Containers in any state whose labels match `label` (`key` or `key=value`), as the engine
/// lists them.
pub async fn containers_labelled(
    socket: &Path,
    label: &str,
) -> Result<Vec<serde_json::Value>, String> {
    let filters = json!({ "label": [label] }).to_string();
    let path = format!(
        "/containers/json?all=1&filters={}",
        percent_encode(&filters)
    );
    let (status, body) = engine_call(socket, Method::GET, &path, None)
        .await
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("listing containers: {status}"));
    }
    match serde_json::from_slice(&body) {
        Ok(serde_json::Value::Array(list)) => Ok(list),
        Ok(other) => Err(format!("listing containers: not a list: {other}")),
        Err(e) => Err(format!("listing containers: {e}")),
    }
}

/// Removes containers of ours whose owner process on this host is gone. Returns how many.
pub async fn sweep(socket: &Path) -> Result<usize, String> {
    let host = hostname();
    let mut removed = 0;
    for c in containers_labelled(socket, OWNER_LABEL).await? {
        let Some(owner) = c["Labels"][OWNER_LABEL].as_str() else {
            continue;
        };
        let Some((h, pid)) = owner.rsplit_once(':') else {
            continue;
        };
        let alive = pid.parse::<i32>().is_ok_and(|pid| {
            // SAFETY: kill(2) with signal 0 only checks that the process exists.
            h != host || unsafe { libc::kill(pid, 0) } == 0
        });
        if alive {
            continue;
        }
        if let Some(id) = c["Id"].as_str() {
            let _ = engine_call(
                socket,
                Method::DELETE,
                &format!("/containers/{id}?force=1&v=1"),
                None,
            )
            .await;
            removed += 1;
        }
    }
    Ok(removed)
}

/// One HTTP/1.1 request to a loopback address: status and body.
async fn http_call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<(u16, Bytes), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// `Ok` for a 200, else what was asked and what came back.
fn expect_200(what: &str, status: u16, body: &[u8]) -> Result<(), String> {
    if status == 200 {
        Ok(())
    } else {
        Err(format!(
            "{what}: {status} {}",
            String::from_utf8_lossy(body)
        ))
    }
}

struct Live {
    proxy: SocketAddr,
    control: SocketAddr,
    ports_seen: Vec<u16>,
    proxy_up: bool,
    state: ContainerState,
}

/// A Docker machine running as a real container.
pub struct ContainerMachine {
    pub machine: String,
    pub name: String,
    socket: PathBuf,
    container: tokio::sync::Mutex<Option<ContainerAsync<GenericImage>>>,
    id: String,
    live: Mutex<Live>,
    trace: Arc<TraceStore>,
    /// stdout lines already read (a new log stream after a restart replays the old ones).
    consumed: Arc<AtomicUsize>,
    reader: Mutex<Option<tokio::task::JoinHandle<()>>>,
    settled: Arc<Mutex<std::collections::HashSet<String>>>,
    settle_seen: Arc<Notify>,
    next_settle: AtomicU64,
}

static NEXT_CONTAINER: AtomicU64 = AtomicU64::new(0);
static START_TIMES: Mutex<Vec<Duration>> = Mutex::new(Vec::new());
/// Container starts, shown as they happen (a counter on a terminal, a line each otherwise).
static STARTS: crate::progress::Counter =
    crate::progress::Counter::new("containers", "healthy", true);

/// Container start times so far (create + start + the proxy answering `/health`): count,
/// median, max.
pub fn start_times() -> Option<(usize, Duration, Duration)> {
    let mut t = START_TIMES.lock().ok()?.clone();
    if t.is_empty() {
        return None;
    }
    t.sort();
    Some((t.len(), t[t.len() / 2], t[t.len() - 1]))
}

impl ContainerMachine {
    /// Starts the machine's container and waits until its proxy answers `/health`.
    pub async fn start(
        socket: &Path,
        image: &str,
        spec: &MachineSpec,
        trace: Arc<TraceStore>,
    ) -> Result<Arc<ContainerMachine>, String> {
        let (repo, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
        let n = NEXT_CONTAINER.fetch_add(1, Ordering::Relaxed);
        let name = format!("ingress-sim-{}-{n}-{}", std::process::id(), spec.id)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect::<String>();
        let spec_json = serde_json::to_string(spec).map_err(|e| e.to_string())?;
        let mut img = GenericImage::new(repo, tag)
            .with_wait_for(WaitFor::message_on_stdout("\"control\""))
            .with_exposed_port(CONTROL_PORT.tcp());
        if spec.metadata.publish_8080 {
            img = img.with_exposed_port(PROXY_PORT.tcp());
        }
        let req = img
            .with_cmd([
                "--spec-json".to_string(),
                spec_json,
                "--control".to_string(),
                format!("0.0.0.0:{CONTROL_PORT}"),
            ])
            .with_container_name(name.clone())
            .with_label(OWNER_LABEL, owner())
            .with_label("ingress-sim.machine", spec.id.clone())
            .with_startup_timeout(READY_TIMEOUT)
            // Apps that listen on ::1 need IPv6 on the container's loopback.
            .with_host_config_modifier(|hc| {
                hc.sysctls = Some(HashMap::from([
                    (
                        "net.ipv6.conf.all.disable_ipv6".to_string(),
                        "0".to_string(),
                    ),
                    ("net.ipv6.conf.lo.disable_ipv6".to_string(), "0".to_string()),
                ]));
            });
        let started = std::time::Instant::now();
        STARTS.begin();
        let container = match req.start().await {
            Ok(c) => c,
            Err(e) => {
                STARTS.end(&format!("{name} failed to start"));
                return Err(format!("starting a container for {}: {e}", spec.id));
            }
        };
        let id = container.id().to_string();
        let m = Arc::new(ContainerMachine {
            machine: spec.id.clone(),
            name,
            socket: socket.to_path_buf(),
            container: tokio::sync::Mutex::new(Some(container)),
            id,
            live: Mutex::new(Live {
                proxy: SocketAddr::from(([127, 0, 0, 1], 0)),
                control: SocketAddr::from(([127, 0, 0, 1], 0)),
                ports_seen: vec![],
                proxy_up: spec.metadata.publish_8080,
                state: ContainerState::Running,
            }),
            trace,
            consumed: Arc::new(AtomicUsize::new(0)),
            reader: Mutex::new(None),
            settled: Arc::default(),
            settle_seen: Arc::new(Notify::new()),
            next_settle: AtomicU64::new(0),
        });
        let up = m.came_up(true).await;
        let took = started.elapsed();
        match &up {
            Ok(()) => STARTS.end(&format!("{} in {} ms", m.name, took.as_millis())),
            Err(_) => STARTS.end(&format!("{} did not become healthy", m.name)),
        }
        up?;
        if let Ok(mut t) = START_TIMES.lock() {
            t.push(took);
        }
        Ok(m)
    }

    /// After a start, restart or reconnect: the new host ports, a healthy proxy, and (after a
    /// start: the old log stream ended with the container) a new log reader.
    async fn came_up(&self, new_logs: bool) -> Result<(), String> {
        let (proxy, control, stream) = {
            let guard = self.container.lock().await;
            let c = guard.as_ref().ok_or("the container is gone")?;
            let control = c
                .get_host_port_ipv4(CONTROL_PORT)
                .await
                .map_err(|e| format!("{}: control port: {e}", self.machine))?;
            let proxy = c.get_host_port_ipv4(PROXY_PORT).await.ok();
            (proxy, control, c.stdout(true))
        };
        {
            let mut live = self.live.lock().map_err(|e| e.to_string())?;
            live.control = SocketAddr::from(([127, 0, 0, 1], control));
            if let Some(p) = proxy {
                live.proxy = SocketAddr::from(([127, 0, 0, 1], p));
                if !live.ports_seen.contains(&p) {
                    live.ports_seen.push(p);
                }
            }
        }
        if new_logs {
            self.spawn_reader(stream).await;
        }
        if let Some(p) = proxy {
            self.wait_healthy(SocketAddr::from(([127, 0, 0, 1], p)))
                .await?;
        }
        Ok(())
    }

    async fn wait_healthy(&self, addr: SocketAddr) -> Result<(), String> {
        let end = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            let last = match http_call(addr, Method::GET, "/health", &[], Bytes::new()).await {
                Ok((200, _)) => return Ok(()),
                Ok((s, _)) => format!("/health answered {s}"),
                Err(e) => e,
            };
            if tokio::time::Instant::now() > end {
                return Err(format!(
                    "{}: proxy not healthy within {READY_TIMEOUT:?}: {last}",
                    self.machine
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn spawn_reader(&self, stream: std::pin::Pin<Box<dyn tokio::io::AsyncBufRead + Send>>) {
        let previous = self.reader.lock().ok().and_then(|mut r| r.take());
        if let Some(mut p) = previous {
            // The old stream ends when the container stops; never two readers at once.
            if tokio::time::timeout(Duration::from_secs(5), &mut p)
                .await
                .is_err()
            {
                p.abort();
            }
        }
        let consumed = self.consumed.clone();
        let trace = self.trace.clone();
        let settled = self.settled.clone();
        let notify = self.settle_seen.clone();
        let task = tokio::spawn(async move {
            let skip = consumed.load(Ordering::SeqCst);
            let mut lines = stream.lines();
            let mut n = 0usize;
            while let Ok(Some(line)) = lines.next_line().await {
                n += 1;
                if n <= skip {
                    continue;
                }
                consumed.store(n, Ordering::SeqCst);
                let Ok(l) = serde_json::from_str::<RemoteLine>(&line) else {
                    continue;
                };
                if l.trace_id.starts_with("settle-") {
                    if let Ok(mut s) = settled.lock() {
                        s.insert(l.trace_id);
                    }
                    notify.notify_waiters();
                } else {
                    trace.record_untimed(&l.trace_id, Event::from(l.event));
                }
            }
        });
        if let Ok(mut r) = self.reader.lock() {
            *r = Some(task);
        }
    }

    fn live<T>(&self, f: impl FnOnce(&mut Live) -> T) -> Option<T> {
        self.live.lock().ok().map(|mut l| f(&mut l))
    }

    async fn control(&self, path: &str, body: String) -> Result<(), String> {
        let addr = self.live(|l| l.control).ok_or("state lock")?;
        let (status, resp) = http_call(
            addr,
            Method::POST,
            path,
            &[("content-type", "application/json")],
            Bytes::from(body),
        )
        .await?;
        expect_200(&format!("control {path}"), status, &resp)
    }

    async fn network(&self, verb: &str) -> Result<(), String> {
        let (status, body) = engine_call(
            &self.socket,
            Method::POST,
            &format!("/networks/bridge/{verb}"),
            Some(json!({"Container": self.id})),
        )
        .await
        .map_err(|e| e.to_string())?;
        expect_200(&format!("network {verb}"), status, &body)
    }

    async fn container_action(&self, action: ContainerAction) -> Result<(), String> {
        use ContainerAction as A;
        use ContainerState as S;
        let state = self.live(|l| l.state).ok_or("state lock")?;
        let set = |s: ContainerState| {
            self.live(|l| l.state = s);
        };
        let err = |e: testcontainers::TestcontainersError| format!("{action:?}: {e}");
        match action {
            A::Stop if state != S::Exited => {
                if state == S::Paused {
                    self.with_container(|c| Box::pin(c.unpause()))
                        .await
                        .map_err(err)?;
                }
                self.with_container(|c| Box::pin(c.stop_with_timeout(Some(10))))
                    .await
                    .map_err(err)?;
                set(S::Exited);
            }
            A::Start if state == S::Exited => {
                self.with_container(|c| Box::pin(c.start()))
                    .await
                    .map_err(err)?;
                set(S::Running);
                self.live(|l| l.proxy_up = true);
                self.came_up(true).await?;
            }
            A::Restart => {
                Box::pin(self.container_action(A::Stop)).await?;
                Box::pin(self.container_action(A::Start)).await?;
            }
            A::Pause if state == S::Running => {
                self.with_container(|c| Box::pin(c.pause()))
                    .await
                    .map_err(err)?;
                set(S::Paused);
            }
            A::Unpause if state == S::Paused => {
                self.with_container(|c| Box::pin(c.unpause()))
                    .await
                    .map_err(err)?;
                set(S::Running);
            }
            A::Disconnect if state == S::Running => {
                self.network("disconnect").await?;
                set(S::Disconnected);
            }
            A::Connect if state == S::Disconnected => {
                self.network("connect").await?;
                set(S::Running);
                self.came_up(false).await?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn with_container<'a, F>(
        &'a self,
        f: F,
    ) -> Result<(), testcontainers::TestcontainersError>
    where
        F: for<'c> FnOnce(
            &'c ContainerAsync<GenericImage>,
        )
            -> BoxFuture<'c, Result<(), testcontainers::TestcontainersError>>,
    {
        let guard = self.container.lock().await;
        match guard.as_ref() {
            Some(c) => f(c).await,
            None => Ok(()),
        }
    }
}

impl RemoteMachine for ContainerMachine {
    fn proxy_addr(&self) -> SocketAddr {
        self.live(|l| l.proxy)
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    fn ports_seen(&self) -> Vec<u16> {
        self.live(|l| l.ports_seen.clone()).unwrap_or_default()
    }

    fn apply<'a>(&'a self, fault: &'a Fault) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            match fault {
                Fault::Container { action, .. } => self.container_action(*action).await,
                Fault::MachineProxyDown { .. } => {
                    self.control("/fault", json!(fault).to_string()).await?;
                    self.live(|l| l.proxy_up = false);
                    Ok(())
                }
                other => self.control("/fault", json!(other).to_string()).await,
            }
        })
    }

    fn release(&self, port: u16) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            self.control(&format!("/release/{port}"), String::new())
                .await
                .is_ok()
        })
    }

    /// A marker request through the proxy: its access line comes after those of every request
    /// that finished before it, and the machine prints lines in order; once the marker's line is
    /// read back from the container's log, so is everything before it.
    fn settle(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some((addr, ok)) =
                self.live(|l| (l.proxy, l.proxy_up && l.state == ContainerState::Running))
            else {
                return;
            };
            if !ok || addr.port() == 0 {
                return;
            }
            let id = format!(
                "settle-{}",
                self.next_settle.fetch_add(1, Ordering::Relaxed)
            );
            let seen = || self.settled.lock().map(|s| s.contains(&id)).unwrap_or(true);
            let wait = async {
                loop {
                    let n = self.settle_seen.notified();
                    tokio::pin!(n);
                    n.as_mut().enable();
                    if seen() {
                        return;
                    }
                    n.await;
                }
            };
            if let Err(e) = http_call(
                addr,
                Method::GET,
                "/",
                &[(TRACE_HEADER, id.as_str())],
                Bytes::new(),
            )
            .await
            {
                eprintln!("{}: settle request failed: {e}", self.machine);
                return;
            }
            if tokio::time::timeout(SETTLE_TIMEOUT, wait).await.is_err() {
                eprintln!(
                    "{}: settle marker not seen in the container log",
                    self.machine
                );
            }
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let taken = self.container.lock().await.take();
            if let Some(c) = taken
                && let Err(e) = c.rm().await
            {
                eprintln!("removing container {}: {e}", self.name);
            }
            if let Some(r) = self.reader.lock().ok().and_then(|mut r| r.take()) {
                r.abort();
            }
        })
    }
}
