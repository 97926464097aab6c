//! Hostile and broken clients and apps: limits, timeouts, framing, upstream faults, Expect.
//! Raw bytes on real sockets; assertions on what the client got and what the app received.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use project_ingress_proxy::{Limits, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T: &str = "X-Iterate-Proxy-Target-Host: localhost:3000\r\n";

/// Writes `bytes`, then reads until the server closes (or 5 s pass).
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The first 300 characters, for assertion messages.
fn short(s: &str) -> String {
    s.chars().take(300).collect()
}

fn status_of(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn proxy_with(app: SocketAddr, limits: Limits) -> RunningProxy {
    start_proxy(ProxyConfig {
        localhost: Arc::new(move |_p: u16| vec![app]),
        limits,
        ..ProxyConfig::default()
    })
    .await
}

/// A request of exactly `total` bytes of head, padded with one header.
fn head_of_size(total: usize) -> String {
    let base = format!("GET /sized HTTP/1.1\r\nHost: a\r\n{T}Connection: close\r\nX-Pad: \r\n\r\n");
    assert!(total >= base.len());
    let pad = "p".repeat(total - base.len());
    format!("GET /sized HTTP/1.1\r\nHost: a\r\n{T}Connection: close\r\nX-Pad: {pad}\r\n\r\n")
}

#[tokio::test]
async fn request_head_size_limit_is_exact() {
    let (app, ctl) = start_app().await;
    let limits = Limits {
        max_request_head_bytes: 1024,
        ..Limits::default()
    };
    let p = proxy_with(app, limits).await;
    let at = head_of_size(1024);
    assert_eq!(at.len(), 1024);
    assert_eq!(
        status_of(&raw(p.addr, at.as_bytes()).await),
        200,
        "exactly at the limit"
    );
    let over = head_of_size(1025);
    let resp = raw(p.addr, over.as_bytes()).await;
    assert_eq!(status_of(&resp), 431, "{resp}");
    assert_eq!(
        ctl.connections.load(Ordering::SeqCst),
        1,
        "the oversized request never reached the app"
    );
    // A head that never ends but keeps growing is refused too, not buffered without bound.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    let line = format!("X-Long: {}\r\n", "x".repeat(4096));
    let mut refused = false;
    for _ in 0..64 {
        if s.write_all(line.as_bytes()).await.is_err() {
            refused = true;
            break;
        }
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(refused || text.starts_with("HTTP/1.1 431"), "{text}");
}

#[tokio::test]
async fn header_count_limit() {
    let (app, _) = start_app().await;
    let p = proxy_with(
        app,
        Limits {
            max_request_headers: 20,
            ..Limits::default()
        },
    )
    .await;
    let mk = |n: usize| {
        // Host, target, Connection + (n - 3) extra.
        let extra: String = (0..n - 3).map(|i| format!("X-H{i}: v\r\n")).collect();
        format!("GET / HTTP/1.1\r\nHost: a\r\n{T}Connection: close\r\n{extra}\r\n")
    };
    assert_eq!(status_of(&raw(p.addr, mk(20).as_bytes()).await), 200);
    assert_eq!(status_of(&raw(p.addr, mk(21).as_bytes()).await), 431);
}

/// Reads until the end of a request head; false if the peer closed first.
async fn read_head(s: &mut TcpStream, buf: &mut [u8]) -> bool {
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// An app that answers every request with the given raw bytes (after reading the head).
async fn raw_app(answer: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = s2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                if !read_head(&mut s, &mut buf).await {
                    return;
                }
                seen.fetch_add(1, Ordering::SeqCst);
                if !answer.is_empty() {
                    let _ = s.write_all(answer).await;
                }
                // Hold the connection (for "never answers"); the peer closes.
                let _ = s.read(&mut buf).await;
            });
        }
    });
    (a, seen)
}

#[tokio::test]
async fn oversized_or_malformed_response_heads_are_502() {
    let big: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nX-Big: {}\r\ncontent-length: 0\r\n\r\n",
            "b".repeat(100 * 1024)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let many: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\n{}content-length: 0\r\n\r\n",
            (0..300)
                .map(|i| format!("X-{i}: v\r\n"))
                .collect::<String>()
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    for (what, answer) in [
        ("100 KiB header", big),
        ("300 headers", many),
        ("malformed status line", b"HTTP/1.1 abc\r\n\r\n" as &[u8]),
        ("garbage", b"\x00\x01\x02 not http\r\n\r\n"),
        ("reset before head", b""),
    ] {
        let (app, _) = raw_app(answer).await;
        let p = proxy_to(app).await;
        let resp = if answer.is_empty() {
            // The app reads the head, then closes without answering.
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap();
            tokio::spawn(async move {
                while let Ok((mut s, _)) = l.accept().await {
                    let mut b = [0u8; 4096];
                    let _ = s.read(&mut b).await;
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                    drop(s);
                }
            });
            let p2 = proxy_to(a).await;
            raw(p2.addr, format!("POST / HTTP/1.1\r\nHost: a\r\n{T}Content-Length: 1\r\nConnection: close\r\n\r\nx").as_bytes()).await
        } else {
            raw(
                p.addr,
                format!("GET / HTTP/1.1\r\nHost: a\r\n{T}Connection: close\r\n\r\n").as_bytes(),
            )
            .await
        };
        assert_eq!(status_of(&resp), 502, "{what}: {}", short(&resp));
        assert!(
            resp.ends_with("{\"error\":\"proxy_error\"}"),
            "{what}: {}",
            short(&resp)
        );
    }
}

#[tokio::test]
async fn upstream_that_never_answers_is_504_after_the_timeout() {
    let (app, seen) = raw_app(b"").await;
    let p = proxy_with(
        app,
        Limits {
            upstream_head_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    )
    .await;
    let resp = raw(
        p.addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\n{T}Connection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&resp), 504, "{resp}");
    assert!(resp.ends_with("{\"error\":\"upstream_timeout\"}"), "{resp}");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn slowloris_does_not_delay_normal_requests_and_is_cut() {
    let (app, _) = start_app().await;
    let p = proxy_with(
        app,
        Limits {
            header_read_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
    )
    .await;
    let mut trickles = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
            .await
            .unwrap();
        trickles.push(s);
    }
    // A normal request still goes through at once.
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        send(p.addr, get("/normal", "h", Some("localhost:3000"))),
    )
    .await
    .expect("a normal request was held up by trickling connections");
    assert_eq!(resp.status(), 200);
    // The trickling connections are closed by the header timeout.
    for s in trickles.iter_mut().take(20) {
        let mut b = [0u8; 256];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "trickling connection still open"
        );
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let (app, _) = start_app().await;
    let p = proxy_with(
        app,
        Limits {
            header_read_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    )
    .await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(format!("GET /ka HTTP/1.1\r\nHost: a\r\n{T}\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Then nothing: the proxy closes the idle connection.
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "idle keep-alive connection was not closed");
}

#[tokio::test]
async fn long_lived_streams_outlive_every_timeout() {
    let (app, ctl) = start_app().await;
    let limits = Limits {
        header_read_timeout: Duration::from_millis(150),
        upstream_head_timeout: Duration::from_millis(150),
        ..Limits::default()
    };
    let p = proxy_with(app, limits).await;
    let resp = send(p.addr, get("/sse", "h", Some("localhost:3000"))).await;
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "data: first\n\n");
    // A quiet stream, well past both timeouts (the gap is the behaviour under test).
    tokio::time::sleep(Duration::from_millis(600)).await;
    ctl.sse_release.notify_one();
    let rest = body
        .collect()
        .await
        .expect("a quiet stream was cut")
        .to_bytes();
    assert_eq!(rest, "data: second\n\n");
}

#[tokio::test]
async fn framing_attacks_never_reach_the_app_as_a_request() {
    let (app, ctl) = start_app().await;
    let p = proxy_to(app).await;
    let cases: &[(&str, String)] = &[
        (
            "differing CLs",
            format!(
                "POST /upload HTTP/1.1\r\nHost: a\r\n{T}Content-Length: 5\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello!"
            ),
        ),
        (
            "obs-fold",
            format!(
                "GET / HTTP/1.1\r\nHost: a\r\n{T}X-Folded: a\r\n b\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "NUL in value",
            format!("GET / HTTP/1.1\r\nHost: a\r\n{T}X-Nul: a\0b\r\nConnection: close\r\n\r\n"),
        ),
        (
            "duplicate Host",
            format!("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n{T}Connection: close\r\n\r\n"),
        ),
        (
            "missing Host",
            format!("GET / HTTP/1.1\r\n{T}Connection: close\r\n\r\n"),
        ),
        (
            "space before colon",
            format!("GET / HTTP/1.1\r\nHost: a\r\n{T}X-Bad : v\r\nConnection: close\r\n\r\n"),
        ),
    ];
    for (what, req) in cases {
        let resp = raw(p.addr, req.as_bytes()).await;
        assert_eq!(status_of(&resp), 400, "{what}: {}", short(&resp));
    }
    assert_eq!(
        ctl.connections.load(Ordering::SeqCst),
        0,
        "a refused request reached the app"
    );
}

/// CL.TE and TE.CL request smuggling: Transfer-Encoding wins (RFC 9112 §6.3), Content-Length is
/// dropped, and the proxy re-frames the body for the app, so the app and the proxy cannot disagree
/// about where the request ends: the "smuggled" request is never seen by the app as a request.
#[tokio::test]
async fn cl_te_smuggling_is_normalised() {
    let (app, ctl) = start_app().await;
    let p = proxy_to(app).await;
    let smuggled =
        "GET /smuggled HTTP/1.1\r\nHost: a\r\nX-Iterate-Proxy-Target-Host: localhost:3000\r\n\r\n";
    for order in ["cl-te", "te-cl"] {
        let (first, second) = if order == "cl-te" {
            (
                format!("Content-Length: {}", 5 + smuggled.len()),
                "Transfer-Encoding: chunked".to_string(),
            )
        } else {
            (
                "Transfer-Encoding: chunked".to_string(),
                format!("Content-Length: {}", 5 + smuggled.len()),
            )
        };
        let req = format!(
            "POST /upload HTTP/1.1\r\nHost: a\r\n{T}{first}\r\n{second}\r\n\r\n0\r\n\r\n{smuggled}"
        );
        let resp = raw(p.addr, req.as_bytes()).await;
        // The body is the (empty) chunked body; Content-Length was not used.
        assert!(
            resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.1 400"),
            "{order}: {}",
            short(&resp)
        );
        if resp.starts_with("HTTP/1.1 200") {
            assert!(
                resp.contains("\r\n\r\n0 "),
                "{order}: the app got a body: {}",
                short(&resp)
            );
        }
    }
    // Each attempt is exactly one clean (empty) upload at the app: what followed the chunked body
    // was never part of an upload; at most it was parsed as the client's next request.
    assert_eq!(ctl.uploads_ok.load(Ordering::SeqCst), 2);
    assert_eq!(ctl.uploads_failed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn invalid_chunked_body_is_never_a_complete_upload() {
    let (app, ctl) = start_app().await;
    let p = proxy_to(app).await;
    let resp = raw(
        p.addr,
        format!("POST /upload HTTP/1.1\r\nHost: a\r\n{T}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\nZZ\r\nmore\r\n0\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(matches!(status_of(&resp), 400 | 0), "{resp}");
    assert_eq!(
        ctl.uploads_ok.load(Ordering::SeqCst),
        0,
        "the app saw a complete upload"
    );
}

#[tokio::test]
async fn normalised_forms_reach_the_app_well_formed() {
    let (app, _) = start_app().await;
    let p = proxy_to(app).await;
    // Bare LF line endings: parsed, re-serialised properly.
    let resp = raw(p.addr, b"GET /lf HTTP/1.1\nHost: a\nX-Iterate-Proxy-Target-Host: localhost:3000\nConnection: close\n\n").await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(resp.contains("\"uri\":\"/lf\""), "{resp}");
    // Absolute-form: the app gets origin-form, Host localhost:<port>, Via = the client's Host.
    let resp = raw(
        p.addr,
        format!("GET http://evil.example/abs?q=1 HTTP/1.1\r\nHost: a.example\r\n{T}Connection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(resp.contains("\"uri\":\"/abs?q=1\""), "{resp}");
    assert!(resp.contains("[\"host\",\"localhost:3000\"]"), "{resp}");
    assert!(
        resp.contains("[\"x-iterate-proxy-via\",\"a.example\"]"),
        "{resp}"
    );
    assert!(!resp.contains("evil.example"), "{resp}");
    // HTTP/1.0 without Host is allowed.
    let resp = raw(p.addr, format!("GET /old HTTP/1.0\r\n{T}\r\n").as_bytes()).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
}

/// An app whose first connection answers one request and then drops the next one unanswered
/// (the app closed a keep-alive connection as the proxy reused it); later connections answer.
async fn stale_app() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    let heads = Arc::new(AtomicUsize::new(0));
    let h2 = heads.clone();
    tokio::spawn(async move {
        let mut conn_no = 0;
        while let Ok((mut s, _)) = l.accept().await {
            conn_no += 1;
            let first_conn = conn_no == 1;
            let heads = h2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut served = 0;
                loop {
                    if !read_head(&mut s, &mut buf).await {
                        return;
                    }
                    heads.fetch_add(1, Ordering::SeqCst);
                    if first_conn && served == 1 {
                        return; // close without answering
                    }
                    served += 1;
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (a, heads)
}

#[tokio::test]
async fn stale_pooled_connection_is_retried_for_idempotent_requests() {
    let (app, heads) = stale_app().await;
    let p = proxy_to(app).await;
    assert_eq!(
        send(p.addr, get("/one", "h", Some("localhost:3000")))
            .await
            .status(),
        200
    );
    // Reuses the pooled connection, which the app drops: retried on a fresh one.
    let resp = send(p.addr, get("/two", "h", Some("localhost:3000"))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        heads.load(Ordering::SeqCst),
        3,
        "one request on the stale connection, one retry"
    );
}

#[tokio::test]
async fn stale_pooled_connection_is_not_retried_with_a_body() {
    let (app, heads) = stale_app().await;
    let p = proxy_to(app).await;
    assert_eq!(
        send(p.addr, get("/one", "h", Some("localhost:3000")))
            .await
            .status(),
        200
    );
    let req = http::Request::builder()
        .method("POST")
        .uri("/two")
        .header("host", "h")
        .header("x-iterate-proxy-target-host", "localhost:3000")
        .body(full("payload"))
        .unwrap();
    let resp = send(p.addr, req).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(
        heads.load(Ordering::SeqCst),
        2,
        "a request with a body must not be sent twice"
    );
}

#[tokio::test]
async fn expect_continue_early_rejection_without_upload() {
    let (app, _) = raw_app(
        b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
    .await;
    let p = proxy_to(app).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(format!("POST /upload HTTP/1.1\r\nHost: a\r\n{T}Expect: 100-continue\r\nContent-Length: 1000000\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // No body is sent: the answer must still come, and it must be the app's 413.
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the client hangs waiting")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
}

#[tokio::test]
async fn expect_continue_upload_proceeds_when_the_app_wants_it() {
    let (app, ctl) = start_app().await;
    let p = proxy_to(app).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(format!("POST /upload HTTP/1.1\r\nHost: a\r\n{T}Expect: 100-continue\r\nContent-Length: 10\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 100 Continue"), "{text}");
    s.write_all(b"0123456789").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\r\n\r\n10 "), "{text}");
    assert_eq!(ctl.uploads_ok.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn upstream_connect_timeout_is_502() {
    // A listener that never accepts, its queue filled: further SYNs are dropped, so a connect
    // hangs until the proxy's connect timeout.
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(0).unwrap();
    let app = s.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(c)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(app)).await
        {
            fillers.push(c);
        }
    }
    let p = proxy_with(
        app,
        Limits {
            connect_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    )
    .await;
    let started = std::time::Instant::now();
    let resp = raw(
        p.addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\n{T}Connection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&resp), 502, "{}", short(&resp));
    assert!(
        resp.ends_with("{\"error\":\"proxy_error\"}"),
        "{}",
        short(&resp)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "answered before the connect timeout: the queue was not full"
    );
    drop(s);
}
