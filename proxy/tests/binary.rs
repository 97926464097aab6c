//! The shipped binary: CLI, JSON logs, SIGTERM drain, bounded memory on huge bodies.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::BodyExt;

const BIN: &str = env!("CARGO_BIN_EXE_project-ingress-proxy");

struct Proc {
    child: Child,
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill failed");
    }
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }
    /// Waits for exit with a deadline; returns the exit code.
    async fn wait_exit(&mut self, deadline: Duration) -> i32 {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                tokio::time::Instant::now() < end,
                "proxy did not exit in time"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on an ephemeral port with JSON logs and reads its listen address from the log.
async fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("PROJECT_INGRESS_PROXY_SECRET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let logs = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(l) = v.get("listen").and_then(|l| l.as_str())
                {
                    let _ = tx.send(l.parse::<SocketAddr>().unwrap());
                }
                logs.lock().unwrap().push(line);
            }
        });
    }
    let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("proxy did not log its listen address");
    Proc { child, addr, logs }
}

#[test]
fn help_and_version() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--secret-file",
        "--drain-timeout",
        "--log-format",
        "PROJECT_INGRESS_PROXY_LISTEN",
    ] {
        assert!(help.contains(flag), "help lacks {flag}:\n{help}");
    }
    // `project-ingress-proxy 0.1.0 (<commit>)`: the commit this binary was built from.
    let out = Command::new(BIN).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let commit = version
        .strip_prefix(&format!(
            "project-ingress-proxy {} (",
            env!("CARGO_PKG_VERSION")
        ))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("version line {version:?}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{version:?}"
    );
    // Bad input: a clear error and a non-zero exit, no panic.
    let out = Command::new(BIN)
        .args(["--listen", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'nope'"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

/// A fatal error (here: the listen address is taken) is one log line in the chosen format, and
/// the exit code is non-zero.
#[test]
fn fatal_errors_follow_the_log_format() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["--listen", &addr, "--log-format", "json"])
        .env("RUST_LOG", "info")
        .env_remove("PROJECT_INGRESS_PROXY_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or("");
    let v: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"));
    assert_eq!(v["level"], "ERROR", "{last}");
    assert_eq!(v["message"], "fatal", "{last}");
    assert!(v["error"].as_str().unwrap_or("").contains(&addr), "{last}");
    assert_eq!(v["target"], "project_ingress_proxy", "{last}");
}

#[tokio::test]
async fn listen_env_var_is_honoured() {
    let mut cmd = Command::new(BIN);
    let mut child = cmd
        .env("PROJECT_INGRESS_PROXY_LISTEN", "127.0.0.1:0")
        .args(["--log-format", "json"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("\"listen\""))
    })
    .await
    .unwrap()
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("127.0.0.1:"), "{line}");
}

#[tokio::test]
async fn json_access_log_and_secret_never_logged() {
    let (app, _) = start_app().await;
    let p = spawn(&[], &[("PROJECT_INGRESS_PROXY_SECRET", "topsecret-value")]).await;
    let mut req = get(
        "/logme?q=1",
        "pub.example",
        Some(&format!("localhost:{}", app.port())),
    );
    req.headers_mut().insert(
        "x-iterate-project-ingress-secret",
        "topsecret-value".parse().unwrap(),
    );
    let resp = send(p.addr, req).await;
    assert_eq!(resp.status(), 200);
    let _ = body_string(resp).await;
    let resp = send(p.addr, get("/denied", "h", Some("localhost:1"))).await;
    assert_eq!(resp.status(), 401);
    let _ = body_string(resp).await;
    wait_until(Duration::from_secs(5), "two access lines", || {
        p.logs()
            .iter()
            .filter(|l| l.contains("\"message\":\"request\""))
            .count()
            == 2
    })
    .await;
    let logs = p.logs();
    assert!(
        logs.iter().all(|l| !l.contains("topsecret-value")),
        "secret leaked into logs"
    );
    let line: serde_json::Value =
        serde_json::from_str(logs.iter().find(|l| l.contains("/logme")).unwrap()).unwrap();
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/logme");
    assert_eq!(line["target_port"], app.port());
    assert_eq!(line["target_form"], "local_host_port");
    assert_eq!(
        line["target_header"],
        format!("localhost:{}", app.port()).as_str()
    );
    assert!(
        line["upstream"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!(":{}", app.port()))),
        "{line}"
    );
    assert_eq!(line["status"], 200);
    assert!(line["duration_ms"].as_f64().is_some());
    assert!(line["bytes_out"].as_u64().unwrap() > 0);
    assert!(line["request_id"].as_str().is_some());
}

#[tokio::test]
async fn secret_file_flag() {
    let (app, _) = start_app().await;
    let dir = std::env::temp_dir().join(format!("pip-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("secret");
    std::fs::write(&file, "from-file\n").unwrap();
    let p = spawn(&["--secret-file", file.to_str().unwrap()], &[]).await;
    let target = format!("localhost:{}", app.port());
    assert_eq!(
        send(p.addr, get("/x", "h", Some(&target))).await.status(),
        401
    );
    let mut req = get("/x", "h", Some(&target));
    req.headers_mut().insert(
        "x-iterate-project-ingress-secret",
        "from-file".parse().unwrap(),
    );
    assert_eq!(send(p.addr, req).await.status(), 200);
    // An empty secret file is a configuration error, not an open proxy.
    std::fs::write(&file, "\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--secret-file",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sigterm_drains_in_flight_then_exits_zero() {
    let (app, ctl) = start_app().await;
    let mut p = spawn(&["--drain-timeout", "10s"], &[]).await;
    let addr = p.addr;
    let target = format!("localhost:{}", app.port());
    let t = target.clone();
    let inflight = tokio::spawn(async move { send(addr, get("/slow", "h", Some(&t))).await });
    wait_until(Duration::from_secs(5), "request at app", || {
        ctl.connections.load(Ordering::SeqCst) == 1
    })
    .await;
    p.signal(libc::SIGTERM);
    // The listener closes: new connections are refused.
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "listener still accepting after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The in-flight request still completes.
    ctl.slow_release.notify_one();
    let resp = inflight.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(body_string(resp).await, "slow done");
    assert_eq!(p.wait_exit(Duration::from_secs(10)).await, 0);
}

/// SIGHUP is ignored (logged): a request in flight completes, the proxy goes on serving, and only
/// SIGTERM stops it.
#[tokio::test]
async fn sighup_is_ignored_and_cuts_nothing() {
    let (app, ctl) = start_app().await;
    let mut p = spawn(&[], &[]).await;
    let addr = p.addr;
    let t = format!("localhost:{}", app.port());
    let t2 = t.clone();
    let inflight = tokio::spawn(async move { send(addr, get("/slow", "h", Some(&t2))).await });
    wait_until(Duration::from_secs(5), "request at app", || {
        ctl.connections.load(Ordering::SeqCst) == 1
    })
    .await;
    p.signal(libc::SIGHUP);
    let logs = p.logs.clone();
    wait_until(Duration::from_secs(5), "the SIGHUP log line", || {
        logs.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("SIGHUP received"))
    })
    .await;
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "SIGHUP killed the proxy"
    );
    ctl.slow_release.notify_one();
    let resp = inflight.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(body_string(resp).await, "slow done");
    // Still serving new connections.
    let resp = send(addr, get("/after-hup", "h", Some(&t))).await;
    assert_eq!(resp.status(), 200);
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(Duration::from_secs(10)).await, 0);
}

#[tokio::test]
async fn sigterm_drain_deadline_cuts_stalled_requests_and_exits_zero() {
    let (app, ctl) = start_app().await;
    let mut p = spawn(&["--drain-timeout", "200ms"], &[]).await;
    let addr = p.addr;
    let t = format!("localhost:{}", app.port());
    let inflight = tokio::spawn(async move {
        let resp = send(addr, get("/sse", "h", Some(&t))).await;
        resp.into_body().collect().await.map(|c| c.to_bytes())
    });
    wait_until(Duration::from_secs(5), "request at app", || {
        ctl.connections.load(Ordering::SeqCst) == 1
    })
    .await;
    p.signal(libc::SIGINT);
    assert_eq!(p.wait_exit(Duration::from_secs(10)).await, 0);
    // The SSE stream never finished: the client must see an error, not a clean end.
    let res = inflight.await.unwrap();
    assert!(res.is_err(), "stalled stream ended cleanly: {res:?}");
}

#[tokio::test]
async fn huge_bodies_stream_in_bounded_memory() {
    const TOTAL: u64 = 256 * 1024 * 1024;
    let (app, _) = start_app().await;
    let p = spawn(&[], &[]).await;
    let target = format!("localhost:{}", app.port());
    let base_kib = p.peak_rss_kib();

    let resp = send(
        p.addr,
        get(&format!("/large?bytes={TOTAL}"), "h", Some(&target)),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(f) = body.frame().await {
        n += f.unwrap().data_ref().map(|d| d.len() as u64).unwrap_or(0);
    }
    assert_eq!(n, TOTAL);

    let (tx, mut rx) = tokio::sync::mpsc::channel::<
        Result<hyper::body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
    >(2);
    tokio::spawn(async move {
        let chunk = Bytes::from(vec![7u8; 256 * 1024]);
        let mut off = 0;
        while off < TOTAL {
            if tx
                .send(Ok(hyper::body::Frame::data(chunk.clone())))
                .await
                .is_err()
            {
                return;
            }
            off += chunk.len() as u64;
        }
    });
    let req = Request::builder()
        .method("POST")
        .uri("/upload")
        .header("host", "h")
        .header("x-iterate-proxy-target-host", target.as_str())
        .body(
            http_body_util::StreamBody::new(futures_util::stream::poll_fn(move |cx| {
                rx.poll_recv(cx)
            }))
            .boxed(),
        )
        .unwrap();
    let resp = send(p.addr, req).await;
    assert_eq!(resp.status(), 200);
    assert!(body_string(resp).await.starts_with(&format!("{TOTAL} ")));

    let peak_kib = p.peak_rss_kib();
    eprintln!("proxy peak RSS: start {base_kib} KiB, after 2 x 256 MiB: {peak_kib} KiB");
    assert!(
        peak_kib < 64 * 1024,
        "proxy peak RSS {peak_kib} KiB: bodies are being buffered"
    );
}

#[tokio::test]
async fn sigterm_drain_with_requests_sse_and_websockets() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let (app, ctl) = start_app().await;
    let ws_app = start_ws_app().await;
    let mut p = spawn(&["--drain-timeout", "1s"], &[]).await;
    let addr = p.addr;
    let target = format!("localhost:{}", app.port());

    // An open WebSocket, proven to work before the signal.
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut().insert(
        "x-iterate-proxy-target-host",
        format!("localhost:{}", ws_app.port()).parse().unwrap(),
    );
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    ws.send(Message::Text("before".into())).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Text("echo:before".into())
    );

    // An open SSE stream that never ends by itself.
    let t = target.clone();
    let sse = tokio::spawn(async move {
        let resp = send(addr, get("/sse", "h", Some(&t))).await;
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        (first, body.collect().await.map(|c| c.to_bytes()))
    });
    // A short request in flight.
    let t = target.clone();
    let short = tokio::spawn(async move { send(addr, get("/slow", "h", Some(&t))).await });
    wait_until(Duration::from_secs(5), "sse + slow at the app", || {
        ctl.connections.load(Ordering::SeqCst) >= 2
    })
    .await;

    p.signal(libc::SIGTERM);
    ctl.slow_release.notify_one();
    // The short request completes normally.
    let resp = short.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(body_string(resp).await, "slow done");
    // The process exits 0 once the drain deadline closes the long streams.
    assert_eq!(p.wait_exit(Duration::from_secs(10)).await, 0);
    // The SSE stream was cut, visibly (an error, not a clean end).
    let (first, rest) = sse.await.unwrap();
    assert_eq!(first, "data: first\n\n");
    assert!(rest.is_err(), "the SSE stream ended cleanly at shutdown");
    // The WebSocket was closed by the drain.
    let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("websocket left open");
    assert!(!matches!(next, Some(Ok(Message::Text(_)))), "{next:?}");
}

/// Access lines of a log, in order (JSON lines whose target is the access log).
fn access_paths(logs: &[String]) -> Vec<String> {
    logs.iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "project_ingress_proxy::access")
        .map(|v| v["path"].as_str().unwrap_or("").to_string())
        .collect()
}

/// With a buffer larger than the traffic and an hour-long flush interval nothing is written while
/// the proxy runs; SIGTERM writes every line, in order, before the process exits.
#[tokio::test]
async fn buffered_access_log_keeps_every_line_in_order_and_sigterm_flushes() {
    let (app, _) = start_app().await;
    let mut p = spawn(
        &[
            "--access-log-buffer",
            "1000000",
            "--access-log-flush",
            "60m",
        ],
        &[],
    )
    .await;
    let t = format!("localhost:{}", app.port());
    let mut c = keep_alive_client(p.addr).await;
    for i in 0..200 {
        let resp = c
            .send_request(get(&format!("/n/{i}"), "h", Some(&t)))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let _ = body_string(resp).await;
    }
    assert!(
        access_paths(&p.logs()).is_empty(),
        "written before a flush was due"
    );
    drop(c);
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(Duration::from_secs(10)).await, 0);
    let logs = p.logs.clone();
    wait_until(
        Duration::from_secs(5),
        "the stderr reader to finish",
        || {
            logs.lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("shutdown complete"))
        },
    )
    .await;
    let want: Vec<String> = (0..200).map(|i| format!("/n/{i}")).collect();
    assert_eq!(access_paths(&p.logs()), want);
}

/// A line waits at most the flush interval.
#[tokio::test]
async fn buffered_access_log_flushes_within_its_interval() {
    let (app, _) = start_app().await;
    let p = spawn(&["--access-log-flush", "100ms"], &[]).await;
    let t = format!("localhost:{}", app.port());
    let resp = send(p.addr, get("/soon", "h", Some(&t))).await;
    assert_eq!(resp.status(), 200);
    let logs = p.logs.clone();
    wait_until(Duration::from_secs(5), "the access line", || {
        access_paths(&logs.lock().unwrap()) == ["/soon"]
    })
    .await;
}

/// A log nobody reads (stderr a full pipe) never holds requests up: they are all served, the
/// lines that did not fit are dropped, and the count is logged once the log is read again.
#[tokio::test]
async fn a_log_that_cannot_keep_up_drops_lines_not_requests() {
    let (app, _) = start_app().await;
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--access-log-buffer",
            "0",
        ])
        .env("RUST_LOG", "info")
        .env_remove("PROJECT_INGRESS_PROXY_SECRET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = Vec::new();
    let addr: SocketAddr = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no listen line");
        first.push(line.clone());
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && let Some(l) = v.get("listen").and_then(|l| l.as_str())
        {
            break l.parse().unwrap();
        }
    };
    // From here nobody reads stderr: the pipe (64 KiB) fills, then the log's own buffer.
    let t = format!("localhost:{}", app.port());
    let mut c = keep_alive_client(addr).await;
    const N: usize = 2000;
    let served = tokio::time::timeout(Duration::from_secs(60), async {
        for i in 0..N {
            let path = format!("/flood/{i}/{}", "x".repeat(200));
            let resp = c.send_request(get(&path, "h", Some(&t))).await.unwrap();
            assert_eq!(resp.status(), 200);
            let _ = body_string(resp).await;
        }
    })
    .await;
    assert!(served.is_ok(), "requests waited for the log");
    drop(c);
    // Read the log again, then stop the proxy.
    let reader = std::thread::spawn(move || {
        stderr
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success());
    let mut logs = first;
    logs.extend(reader.join().unwrap());
    let written = access_paths(&logs).len();
    let dropped: u64 = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["dropped"].as_u64())
        .sum();
    assert!(
        dropped > 0,
        "nothing dropped: the test did not fill the log"
    );
    assert_eq!(
        written as u64 + dropped,
        N as u64,
        "every line written or counted as dropped"
    );
    // The lines that were written are in order.
    let paths = access_paths(&logs);
    let idx: Vec<usize> = paths
        .iter()
        .filter_map(|p| p.split('/').nth(2).and_then(|n| n.parse().ok()))
        .collect();
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "out of order");
}
