//! The HTTP contract of the proxy, through a running proxy on real sockets.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::BodyExt;
use project_ingress_proxy::{ProxyConfig, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn health_answers_ok_with_any_query_and_method_without_header() {
    let p = proxy_to(dead_addr().await).await;
    for (method, path) in [
        ("GET", "/health"),
        ("GET", "/health?x=1&y"),
        ("POST", "/health"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "whatever")
            .body(full(""))
            .unwrap();
        let resp = send(p.addr, req).await;
        assert_eq!(resp.status(), 200, "{method} {path}");
        assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(body_string(resp).await, "OK");
    }
    // `/health/` and `/healthz` are not the health endpoint: they need a target.
    for path in ["/health/", "/healthz"] {
        let resp = send(p.addr, get(path, "h", None)).await;
        assert_eq!(resp.status(), 400, "{path}");
    }
}

#[tokio::test]
async fn missing_and_blank_target_header_is_400_json() {
    let p = proxy_to(dead_addr().await).await;
    for target in [None, Some(""), Some("   ")] {
        let resp = send(p.addr, get("/x", "h", target)).await;
        assert_eq!(resp.status(), 400);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert!(resp.headers().contains_key("content-length"));
        assert_eq!(
            json(resp).await,
            serde_json::json!({"error": "missing_proxy_target_host"})
        );
    }
}

/// Every row of the docs/behaviour.md §5.3 table, through a running proxy: the app sees `Host:
/// localhost:<port>` for the port the proxy chose, and refusals are 400 JSON.
#[tokio::test]
async fn target_header_table_through_running_proxy() {
    let (app, _) = start_app().await;
    let p = proxy_to(app).await;
    let rows: &[(&str, Option<u16>)] = &[
        ("4096__bla.bla.com", Some(4096)),
        ("4096__mach_1.iterate.app", Some(4096)),
        ("banana.boopie.lala.internal", Some(3000)),
        ("70000__x", None),
        ("0__x", None),
        ("4096__", None),
        ("localhost:4096", Some(4096)),
        ("127.0.0.1:3001", Some(3001)),
        ("LOCALHOST:4096", Some(4096)),
        ("example.com:4096", None),
        ("opencode.templestein.com", Some(3000)),
        ("4096.templestein.com", Some(3000)),
        ("abc__x.y", None),
        ("__x.y", Some(3000)),
        ("localhost", Some(3000)),
        ("localhost:", None),
        ("localhost:abc", None),
        ("[::1]:4096", None),
        ("10.0.0.1:80", None),
        ("169.254.169.254:80", None),
    ];
    for (target, want) in rows {
        let resp = send(p.addr, get("/x", "pub.example", Some(target))).await;
        match want {
            Some(port) => {
                assert_eq!(resp.status(), 200, "target {target:?}");
                let v = json(resp).await;
                let h = echoed_headers(&v);
                assert_eq!(
                    header(&h, "host"),
                    Some(format!("localhost:{port}").as_str()),
                    "target {target:?}"
                );
            }
            None => {
                assert_eq!(resp.status(), 400, "target {target:?}");
                assert_eq!(
                    json(resp).await,
                    serde_json::json!({"error": "invalid_proxy_target_host"}),
                    "target {target:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn forwards_method_path_query_body_and_rewrites_headers() {
    let (app, _) = start_app().await;
    let p = proxy_to(app).await;
    let req = Request::builder()
        .method("POST")
        .uri("/foo/%7Ebar/../x?hello=world&a=%20b&&c")
        .header("host", "127.0.0.1:8080")
        .header(
            "x-iterate-proxy-target-host",
            "4096__banana.boopie.lala.internal",
        )
        .header("x-custom", "one")
        .header("x-custom", "two")
        .header("cookie", "sid=1")
        .body(full("hello body"))
        .unwrap();
    let v = json(send(p.addr, req).await).await;
    assert_eq!(v["method"], "POST");
    assert_eq!(v["uri"], "/foo/%7Ebar/../x?hello=world&a=%20b&&c");
    assert_eq!(v["body"], "hello body");
    let h = echoed_headers(&v);
    assert_eq!(header(&h, "host"), Some("localhost:4096"));
    assert_eq!(header(&h, "x-iterate-proxy-via"), Some("127.0.0.1:8080"));
    assert_eq!(header(&h, "x-iterate-proxy-target-host"), None);
    assert_eq!(header(&h, "cookie"), Some("sid=1"));
    let customs: Vec<_> = h
        .iter()
        .filter(|(k, _)| k == "x-custom")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(customs, vec!["one", "two"]);
    // No X-Forwarded-* is added.
    assert!(h.iter().all(|(k, _)| !k.starts_with("x-forwarded")));
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_before_proxy_headers_are_added() {
    let (app, _) = start_app().await;
    let p = proxy_to(app).await;
    let req = Request::builder()
        .uri("/")
        .header("host", "pub.example")
        .header("x-iterate-proxy-target-host", "localhost:3000")
        .header("connection", "keep-alive, x-iterate-proxy-via")
        .header("connection", "X-Strip-Me, host")
        .header("x-strip-me", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers")
        .header("upgrade", "websocket")
        .header("x-keep", "yes")
        .body(full(""))
        .unwrap();
    let v = json(send(p.addr, req).await).await;
    let h = echoed_headers(&v);
    assert_eq!(header(&h, "x-iterate-proxy-via"), Some("pub.example"));
    assert_eq!(header(&h, "host"), Some("localhost:3000"));
    assert_eq!(header(&h, "x-strip-me"), None);
    assert_eq!(header(&h, "keep-alive"), None);
    assert_eq!(header(&h, "proxy-connection"), None);
    assert_eq!(header(&h, "upgrade"), None);
    assert_eq!(header(&h, "te"), Some("trailers"));
    assert_eq!(header(&h, "x-keep"), Some("yes"));
}

#[tokio::test]
async fn response_hop_by_hop_removed_and_repeated_set_cookie_kept() {
    let (app, _) = start_app().await;
    let p = proxy_to(app).await;
    let resp = send(p.addr, get("/cookies", "h", Some("localhost:3000"))).await;
    assert_eq!(resp.status(), 200);
    let cookies: Vec<_> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(cookies, vec!["a=1; Path=/", "b=2; Path=/"]);
    assert!(resp.headers().get("x-app-hop").is_none());
    assert!(resp.headers().get("keep-alive").is_none());
}

#[tokio::test]
async fn closed_port_is_502_proxy_error() {
    let dead = dead_addr().await;
    let p = proxy_to(dead).await;
    let resp = send(p.addr, get("/x", "h", Some("localhost:3000"))).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(
        json(resp).await,
        serde_json::json!({"error": "proxy_error"})
    );
}

#[tokio::test]
async fn real_loopback_502_when_nothing_listens() {
    // Production mapping: 127.0.0.1 then ::1, both refused.
    let dead = dead_addr().await;
    let p = start_proxy(ProxyConfig::default()).await;
    let target = format!("localhost:{}", dead.port());
    let resp = send(p.addr, get("/x", "h", Some(&target))).await;
    assert_eq!(resp.status(), 502);
}

#[tokio::test]
async fn app_bound_only_to_ipv6_loopback_is_reached() {
    let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
        eprintln!("SKIP: [::1] is not available on this host");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    // Nothing may listen on 127.0.0.1:<port> for this test to mean anything.
    if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
        eprintln!("SKIP: 127.0.0.1:{port} is taken by something else");
        return;
    }
    serve_app(listener, Arc::new(AppControl::default()));
    let p = start_proxy(ProxyConfig::default()).await;
    let resp = send(p.addr, get("/v6", "h", Some(&format!("localhost:{port}")))).await;
    assert_eq!(resp.status(), 200);
    let v = json(resp).await;
    assert_eq!(v["uri"], "/v6");
    let recs = p.records.lock().unwrap().clone();
    let rec = recs.iter().find(|r| r.path == "/v6").expect("record");
    assert_eq!(rec.upstream_addr.map(|a| a.is_ipv6()), Some(true));
}

#[tokio::test]
async fn sse_events_arrive_before_the_stream_ends() {
    let (app, ctl) = start_app().await;
    let p = proxy_to(app).await;
    let resp = send(p.addr, get("/sse", "h", Some("localhost:3000"))).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // The app holds the stream open until released: the first event must arrive now.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first SSE event did not arrive while the stream was open")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), Bytes::from("data: first\n\n"));
    ctl.sse_release.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, Bytes::from("data: second\n\n"));
}

#[tokio::test]
async fn large_bodies_stream_both_ways_intact() {
    let (app, _) = start_app().await;
    let p = proxy_to(app).await;
    const TOTAL: u64 = 32 * 1024 * 1024;
    // Download.
    let resp = send(
        p.addr,
        get(
            &format!("/large?bytes={TOTAL}"),
            "h",
            Some("localhost:3000"),
        ),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let (mut n, mut h) = (0u64, FNV_INIT);
    while let Some(f) = body.frame().await {
        if let Some(d) = f.unwrap().data_ref() {
            n += d.len() as u64;
            for b in d.iter() {
                h ^= *b as u64;
                h = h.wrapping_mul(0x100000001b3);
            }
        }
    }
    assert_eq!(n, TOTAL);
    assert_eq!(h, pattern_hash(TOTAL, 64 * 1024));
    // Upload (chunked, streamed).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<
        Result<hyper::body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
    >(2);
    tokio::spawn(async move {
        let mut off = 0;
        while off < TOTAL {
            let n = (64 * 1024).min((TOTAL - off) as usize);
            if tx
                .send(Ok(hyper::body::Frame::data(pattern_chunk(off, n))))
                .await
                .is_err()
            {
                return;
            }
            off += n as u64;
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let req = Request::builder()
        .method("PUT")
        .uri("/upload")
        .header("host", "h")
        .header("x-iterate-proxy-target-host", "localhost:3000")
        .body(http_body_util::StreamBody::new(stream).boxed())
        .unwrap();
    let resp = send(p.addr, req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        body_string(resp).await,
        format!("{TOTAL} {:x}", pattern_hash(TOTAL, 64 * 1024))
    );
}

#[tokio::test]
async fn keep_alive_requests_reuse_pooled_upstream_connections() {
    let (app, ctl) = start_app().await;
    let p = proxy_to(app).await;
    // One client connection, many requests.
    let mut sender = keep_alive_client(p.addr).await;
    for i in 0..50 {
        get_ok(&mut sender, &format!("/r{i}")).await;
    }
    assert_eq!(
        ctl.connections.load(Ordering::SeqCst),
        1,
        "upstream connections opened for 50 sequential requests"
    );
}

#[tokio::test]
async fn secret_required_when_configured() {
    let (app, _) = start_app().await;
    let p = start_proxy(ProxyConfig {
        localhost: Arc::new(move |_p: u16| vec![app]),
        secret: Secret::new("s3cret"),
        ..ProxyConfig::default()
    })
    .await;
    // Health needs no secret.
    assert_eq!(send(p.addr, get("/health", "h", None)).await.status(), 200);
    // Missing or wrong secret: 401 without reaching the app.
    for presented in [None, Some("wrong"), Some("s3cret2"), Some("")] {
        let mut req = get("/x", "h", Some("localhost:3000"));
        if let Some(s) = presented {
            req.headers_mut()
                .insert("x-iterate-project-ingress-secret", s.parse().unwrap());
        }
        let resp = send(p.addr, req).await;
        assert_eq!(resp.status(), 401, "{presented:?}");
        assert_eq!(
            json(resp).await,
            serde_json::json!({"error": "unauthorized"})
        );
    }
    // Right secret: forwarded, header removed.
    let mut req = get("/x", "h", Some("localhost:3000"));
    req.headers_mut().insert(
        "x-iterate-project-ingress-secret",
        "s3cret".parse().unwrap(),
    );
    let resp = send(p.addr, req).await;
    assert_eq!(resp.status(), 200);
    let h = echoed_headers(&json(resp).await);
    assert_eq!(header(&h, "x-iterate-project-ingress-secret"), None);
    let recs = p.records.lock().unwrap().clone();
    assert!(
        recs.iter()
            .filter(|r| r.status == 401)
            .all(|r| r.upstream_addr.is_none())
    );
}

#[tokio::test]
async fn secret_off_needs_no_secret_and_never_forwards_one() {
    let (app, _) = start_app().await;
    let p = proxy_to(app).await;
    let resp = send(p.addr, get("/x", "h", Some("localhost:3000"))).await;
    assert_eq!(resp.status(), 200);
    // A client that sends the header anyway: it still never reaches the app.
    let mut req = get("/x", "h", Some("localhost:3000"));
    req.headers_mut()
        .insert("x-iterate-project-ingress-secret", "guess".parse().unwrap());
    let resp = send(p.addr, req).await;
    assert_eq!(resp.status(), 200);
    let h = echoed_headers(&json(resp).await);
    assert_eq!(header(&h, "x-iterate-project-ingress-secret"), None);
}

#[tokio::test]
async fn target_equal_to_own_port_is_refused() {
    let (app, _) = start_app().await;
    let p = start_proxy(ProxyConfig {
        localhost: Arc::new(move |_p: u16| vec![app]),
        self_port: Some(8080),
        ..ProxyConfig::default()
    })
    .await;
    let resp = send(p.addr, get("/x", "h", Some("8080__m.example"))).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        json(resp).await,
        serde_json::json!({"error": "proxy_target_is_self"})
    );
}

#[tokio::test]
async fn failure_after_head_is_not_a_clean_end() {
    // An app that promises 1000 bytes, sends 10, and resets.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
                .await;
            drop(s);
        }
    });
    let p = proxy_to(app).await;
    let resp = send(p.addr, get("/x", "h", Some("localhost:3000"))).await;
    assert_eq!(resp.status(), 200);
    let res = resp.into_body().collect().await;
    assert!(
        res.is_err(),
        "a truncated body must surface as an error, got {:?}",
        res.map(|c| c.to_bytes().len())
    );
}

#[tokio::test]
async fn access_log_records_each_request() {
    let (app, _) = start_app().await;
    let p = proxy_to(app).await;
    let mut req = get("/logged?secret=not-logged", "h", Some("4096__x.y"));
    req.headers_mut()
        .insert("x-request-id", "req-42".parse().unwrap());
    let resp = send(p.addr, req).await;
    let _ = body_string(resp).await;
    wait_until(Duration::from_secs(5), "access record", || {
        !p.records.lock().unwrap().is_empty()
    })
    .await;
    let rec = p.records.lock().unwrap()[0].clone();
    assert_eq!(rec.request_id, "req-42");
    assert_eq!(rec.method, "GET");
    assert_eq!(rec.path, "/logged");
    assert_eq!(rec.target_port, Some(4096));
    assert_eq!(rec.status, 200);
    assert!(rec.bytes_out > 0);
    assert!(rec.completed);
}

#[tokio::test]
async fn connect_method_refused() {
    let p = proxy_to(dead_addr().await).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\nx-iterate-proxy-target-host: localhost:3000\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");
}

#[tokio::test]
async fn graceful_stop_waits_for_in_flight_request() {
    let (app, ctl) = start_app().await;
    let p = proxy_to(app).await;
    let addr = p.addr;
    let inflight =
        tokio::spawn(async move { send(addr, get("/slow", "h", Some("localhost:3000"))).await });
    // Wait until the request reached the app (one upstream connection accepted).
    wait_until(Duration::from_secs(5), "request at app", || {
        ctl.connections.load(Ordering::SeqCst) == 1
    })
    .await;
    let stopper = tokio::spawn(p.stop());
    ctl.slow_release.notify_one();
    let resp = inflight.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(body_string(resp).await, "slow done");
    stopper.await.unwrap().unwrap();
}

#[tokio::test]
async fn idle_upstream_connection_past_the_idle_timeout_is_not_reused() {
    let (app, ctl) = start_app().await;
    let limits = project_ingress_proxy::config::Limits {
        pool_idle_timeout: Duration::from_millis(100),
        ..Default::default()
    };
    let p = start_proxy(ProxyConfig {
        localhost: Arc::new(move |_p: u16| vec![app]),
        limits,
        ..ProxyConfig::default()
    })
    .await;
    let mut sender = keep_alive_client(p.addr).await;
    for i in 0..2 {
        get_ok(&mut sender, &format!("/r{i}")).await;
    }
    assert_eq!(ctl.connections.load(Ordering::SeqCst), 1);
    // The expiry itself is what is under test: let the connection sit idle past it.
    tokio::time::sleep(Duration::from_millis(250)).await;
    get_ok(&mut sender, "/later").await;
    assert_eq!(
        ctl.connections.load(Ordering::SeqCst),
        2,
        "an upstream connection idle past the timeout was reused"
    );
}
