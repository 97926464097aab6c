//! One machine on its own, as a container runs it (`ingress-sim machine`): the world's apps on
//! their real ports, the shipped `project-ingress-proxy` binary as a child on :8080, and every hop
//! event — the apps' and the proxy's access log (its stderr) turned into machine events — printed
//! as one JSON line on stdout (`{"trace_id": …, "event": …}`). An optional control port takes the faults that
//! act inside the machine (`POST /fault`) and releases gated SSE apps (`POST /release/<port>`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Mutex, watch};

use crate::apps::App;
use crate::machine::upstream_label;
use crate::model::{Fault, FaultOwner, MachineFault, MachineSpec};
use crate::net::{BoxBody, json_response, serve_http};
use crate::trace::{Event, MachineEvent, TRACE_HEADER, TraceStore};

/// The access-log target of the proxy binary's request lines.
const ACCESS_TARGET: &str = "project_ingress_proxy::access";

/// The proxy's JSON access-log line → the machine hop's event and the request id.
pub fn access_line_event(machine: &str, v: &Value) -> Option<(String, MachineEvent)> {
    if v["target"] != ACCESS_TARGET {
        return None;
    }
    let s = |k: &str| v[k].as_str().map(str::to_string);
    let u = |k: &str| v[k].as_u64();
    let target_port = u("target_port").and_then(|p| u16::try_from(p).ok());
    let ev = MachineEvent {
        machine: machine.to_string(),
        method: s("method")?,
        path: s("path")?,
        target_header: s("target_header"),
        target_port,
        target_form: s("target_form"),
        upstream: v["upstream"]
            .as_str()
            .map(|a| upstream_label(a.starts_with('['), target_port)),
        status: u16::try_from(u("status")?).ok()?,
        error: s("error"),
        upgraded: v["upgraded"].as_bool().unwrap_or(false),
        bytes_in: u("bytes_in").unwrap_or(0),
        bytes_out: u("bytes_out").unwrap_or(0),
        completed: v["completed"].as_bool().unwrap_or(false),
    };
    Some((s("request_id")?, ev))
}

struct Running {
    spec: MachineSpec,
    apps: BTreeMap<u16, Arc<App>>,
    proxy: Mutex<Option<tokio::process::Child>>,
    /// Set before the machine stops its own proxy (a fault), so its exit is not an error.
    proxy_stopping: AtomicBool,
}

impl Running {
    async fn stop_proxy(&self) {
        self.proxy_stopping.store(true, Ordering::SeqCst);
        let child = self.proxy.lock().await.take();
        if let Some(mut child) = child {
            if let Some(pid) = child.id() {
                // SAFETY: kill(2) on our own child.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            let _ = tokio::time::timeout(Duration::from_secs(35), child.wait()).await;
        }
    }

    async fn fault(&self, f: &Fault) -> Result<()> {
        match f.owner() {
            FaultOwner::Machine {
                fault: MachineFault::ProxyDown,
                ..
            } => self.stop_proxy().await,
            FaultOwner::Machine {
                fault: MachineFault::App { port, fault },
                ..
            } => {
                let app = self
                    .apps
                    .get(&port)
                    .with_context(|| format!("no app on port {port}"))?;
                app.apply(fault).await?
            }
            _ => bail!("not a fault a machine carries out itself: {f:?}"),
        }
        Ok(())
    }

    async fn control(self: Arc<Self>, req: Request<Incoming>) -> http::Response<BoxBody> {
        let path = req.uri().path().to_string();
        if req.method() != Method::POST {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "use POST"}),
            );
        }
        if let Some(port) = path.strip_prefix("/release/") {
            let Some(app) = port.parse::<u16>().ok().and_then(|p| self.apps.get(&p)) else {
                return json_response(StatusCode::NOT_FOUND, &json!({"error": "no such app"}));
            };
            app.released.send_replace(true);
            return json_response(StatusCode::OK, &json!({"ok": true}));
        }
        if path != "/fault" {
            return json_response(StatusCode::NOT_FOUND, &json!({"error": "no such endpoint"}));
        }
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return json_response(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()}));
            }
        };
        let fault: Fault = match serde_json::from_slice(&body) {
            Ok(f) => f,
            Err(e) => {
                return json_response(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()}));
            }
        };
        if fault.machine_target() != Some(self.spec.id.as_str()) {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("the fault is not for machine {}", self.spec.id)}),
            );
        }
        match self.fault(&fault).await {
            Ok(()) => json_response(StatusCode::OK, &json!({"ok": true})),
            Err(e) => json_response(StatusCode::BAD_REQUEST, &json!({"error": format!("{e:#}")})),
        }
    }
}

/// Runs the machine until SIGTERM/SIGINT (then lets the proxy drain) or until the proxy exits on
/// its own (an error).
pub async fn run(
    spec: MachineSpec,
    proxy_bin: &Path,
    listen: SocketAddr,
    control: Option<SocketAddr>,
) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let trace = Arc::new(TraceStore::default());
    trace.print_json.store(true, Ordering::Relaxed);
    let mut apps = BTreeMap::new();
    for a in &spec.apps {
        let app = App::start_on(&spec.id, a.clone(), trace.clone(), true)
            .await
            .with_context(|| format!("starting the app on port {}", a.port))?;
        apps.insert(a.port, app);
    }
    let mut cmd = tokio::process::Command::new(proxy_bin);
    cmd.args(["--listen", &listen.to_string(), "--log-format", "json"])
        .args(["--request-id-header", TRACE_HEADER])
        // Each access line at once: the machine's events are read from it as they happen.
        .args(["--access-log-buffer", "0"])
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(s) = &spec.proxy_secret {
        cmd.env("PROJECT_INGRESS_PROXY_SECRET", s);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", proxy_bin.display()))?;
    // The proxy logs to stderr.
    let log = child.stderr.take().context("the proxy's stderr")?;
    let machine = Arc::new(Running {
        spec: spec.clone(),
        apps,
        proxy: Mutex::new(Some(child)),
        proxy_stopping: AtomicBool::new(false),
    });
    // The proxy's log: access lines become machine events; the rest goes to stderr.
    let (proxy_gone_tx, mut proxy_gone) = watch::channel(false);
    let id = spec.id.clone();
    let t = trace.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(log).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let parsed = serde_json::from_str::<Value>(&line).ok();
            match parsed.as_ref().and_then(|v| access_line_event(&id, v)) {
                Some((rid, ev)) => t.record(&rid, Event::Machine(ev)),
                None => eprintln!("{line}"),
            }
        }
        proxy_gone_tx.send_replace(true);
    });
    let _control_stop = match control {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the control port {addr}"))?;
            let m = machine.clone();
            let (tx, rx) = watch::channel(false);
            serve_http(
                listener,
                Arc::new(move |req, _| Box::pin(m.clone().control(req))),
                rx,
            );
            Some(tx)
        }
        None => None,
    };
    let ports: Vec<u16> = machine.apps.keys().copied().collect();
    println!(
        "{}",
        json!({"machine": spec.id, "apps": ports, "proxy": listen.to_string(),
               "control": control.map(|c| c.to_string())})
    );
    let mut watching = true;
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = proxy_gone.changed(), if watching => {
                if !machine.proxy_stopping.load(Ordering::SeqCst) {
                    bail!("the proxy exited");
                }
                watching = false;
            }
        }
    }
    // Let the proxy drain as it would on a real machine.
    machine.stop_proxy().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines_become_machine_events() {
        let line = r#"{"timestamp":"2026-11-25T22:08:48.711356Z","level":"INFO","message":"request","request_id":"abc","method":"GET","path":"/x","target_header":"localhost:13000","target_port":13000,"target_form":"local_host_port","upstream":"[::1]:13000","status":200,"upgraded":false,"duration_ms":2.268455,"head_ms":2.22873,"bytes_in":0,"bytes_out":313,"completed":true,"target":"project_ingress_proxy::access"}"#;
        let v: Value = serde_json::from_str(line).unwrap();
        let (id, ev) = access_line_event("m1", &v).expect("an access line");
        assert_eq!(id, "abc");
        assert_eq!(ev.machine, "m1");
        assert_eq!(ev.target_port, Some(13000));
        assert_eq!(ev.target_form.as_deref(), Some("local_host_port"));
        assert_eq!(ev.upstream.as_deref(), Some("[::1]:13000"));
        assert_eq!(ev.status, 200);
        assert!(ev.completed);
        let other: Value = serde_json::from_str(
            r#"{"message":"project-ingress-proxy listening","target":"project_ingress_proxy::server"}"#,
        )
        .unwrap();
        assert!(access_line_event("m1", &other).is_none());
    }
}
