//! Soak: a bounded run of mixed traffic through the shipped binary, checking that the proxy's
//! memory and file descriptors do not grow. Not part of the default tests: `cargo xtask soak`
//! runs it in release mode (`SOAK_REQUESTS`, default 1,000,000; `SOAK_SECONDS` caps the time).

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

const BIN: &str = env!("CARGO_BIN_EXE_project-ingress-proxy");

fn proc_stat(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

async fn worker(
    proxy: SocketAddr,
    target: String,
    ws_target: String,
    done: Arc<AtomicU64>,
    total: u64,
    deadline: Instant,
) {
    let upload = Bytes::from(vec![b'u'; 16 * 1024]);
    'outer: loop {
        let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        // Each connection serves a few hundred requests, then a new one opens (churn).
        for _ in 0..300 {
            let n = done.fetch_add(1, Ordering::Relaxed);
            if n >= total || Instant::now() > deadline {
                break 'outer;
            }
            let req = match n % 100 {
                0..=69 => get(&format!("/r{}", n % 1000), "soak", Some(&target)),
                70..=89 => Request::builder()
                    .method("POST")
                    .uri("/upload")
                    .header("host", "soak")
                    .header("x-iterate-proxy-target-host", target.as_str())
                    .body(full(upload.clone()))
                    .unwrap(),
                90..=98 => get("/large?bytes=262144", "soak", Some(&target)),
                _ => {
                    websocket_round(proxy, &ws_target).await;
                    continue;
                }
            };
            let resp = sender
                .send_request(req)
                .await
                .expect("request failed during soak");
            assert!(resp.status().is_success(), "{}", resp.status());
            let _ = resp
                .into_body()
                .collect()
                .await
                .expect("body failed during soak");
        }
    }
}

async fn websocket_round(proxy: SocketAddr, ws_target: &str) {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{proxy}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("x-iterate-proxy-target-host", ws_target.parse().unwrap());
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    for i in 0..3 {
        ws.send(Message::Text(format!("m{i}").into()))
            .await
            .unwrap();
        let _ = ws.next().await;
    }
    let _ = ws.close(None).await;
    while let Some(Ok(_)) = ws.next().await {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: run with `cargo xtask soak`"]
async fn soak_mixed_traffic_no_growth() {
    let total: u64 = std::env::var("SOAK_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let secs: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let (app, _) = start_app().await;
    let ws_app = start_ws_app().await;
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .env("RUST_LOG", "warn,project_ingress_proxy::server=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        let l = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.contains("\"listen\""))
            .unwrap();
        std::thread::spawn(move || for _ in lines {});
        l
    })
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let proxy: SocketAddr = v["listen"].as_str().unwrap().parse().unwrap();
    let pid = child.id();
    let target = format!("localhost:{}", app.port());
    let ws_target = format!("localhost:{}", ws_app.port());
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let (rss0, fd0) = proc_stat(pid);
    let mut workers = Vec::new();
    for _ in 0..32 {
        workers.push(tokio::spawn(worker(
            proxy,
            target.clone(),
            ws_target.clone(),
            done.clone(),
            total,
            deadline,
        )));
    }
    let mut samples = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let n = done.load(Ordering::Relaxed).min(total);
        let (rss, fds) = proc_stat(pid);
        samples.push((start.elapsed().as_secs_f64(), n, rss, fds));
        println!(
            "t={:>6.1}s requests={:>8} rss={:>6} KiB fds={:>4}",
            start.elapsed().as_secs_f64(),
            n,
            rss,
            fds
        );
        if workers.iter().all(|w| w.is_finished()) {
            break;
        }
    }
    for w in workers {
        w.await.unwrap();
    }
    // Idle pooled upstream connections expire after 4 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (rss_end, fd_end) = proc_stat(pid);
    let n = done.load(Ordering::Relaxed).min(total);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "soak: {n} requests in {secs:.1}s ({:.0}/s); proxy rss start {rss0} KiB, end {rss_end} KiB; fds start {fd0}, end {fd_end}",
        n as f64 / secs
    );
    let _ = child.kill();
    let _ = child.wait();
    // Growth checks: after warm-up (the first sample past 10% of the run), resident memory may not
    // keep climbing, and no file descriptors may be left behind.
    let warm = samples
        .iter()
        .find(|s| s.1 >= n / 10)
        .map(|s| s.2)
        .unwrap_or(rss0);
    let peak_after = samples
        .iter()
        .filter(|s| s.1 >= n / 10)
        .map(|s| s.2)
        .max()
        .unwrap_or(rss_end);
    assert!(
        peak_after <= warm + 16 * 1024,
        "RSS grew from {warm} KiB (warm) to {peak_after} KiB"
    );
    assert!(
        rss_end <= warm + 16 * 1024,
        "RSS end {rss_end} KiB vs warm {warm} KiB"
    );
    assert!(
        fd_end <= fd0 + 8,
        "file descriptors leaked: {fd0} -> {fd_end}"
    );
}
