//! The byte-level fast path (plain HTTP/1.1 requests): exact upstream request bytes, every
//! response framing, pipelining, reuse, the access log, and the hand-over to the hyper handler in
//! the middle of a connection. A scripted app on a real socket records each request as received
//! and answers with fixed bytes chosen by path.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Each request the app received: its head as sent, and its body.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

struct App {
    addr: SocketAddr,
    seen: Seen,
    connections: Arc<AtomicUsize>,
    /// Connections closed by the proxy while a `/hang` request was waiting for its answer.
    hung_up: Arc<AtomicUsize>,
}

/// The app's answer for a path (without query); `true` closes the connection afterwards.
fn answer(path: &str) -> (&'static [u8], bool) {
    match path {
        "/cl" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-App: 1\r\nConnection: keep-alive, X-Hop\r\nX-Hop: drop\r\nKeep-Alive: timeout=5\r\n\r\nhello",
            false,
        ),
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-t\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n",
            false,
        ),
        "/close" => (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close",
            true,
        ),
        "/head" => (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", false),
        "/204" => (b"HTTP/1.1 204 No Content\r\nX-App: 1\r\n\r\n", false),
        "/103" => (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        "/te-cl" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
        ),
        "/bad-cl" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
            false,
        ),
        "/bad-chunk" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX",
            true,
        ),
        "/reason" => (
            b"HTTP/1.1 299 Fine Thanks\r\nContent-Length: 0\r\nDate: Tue, 01 Jan 2030 00:00:00 GMT\r\n\r\n",
            false,
        ),
        _ => (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false),
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Reads and discards until the peer closes (or the connection fails).
async fn until_closed(s: &mut TcpStream) {
    let mut rest = vec![0u8; 64 * 1024];
    while let Ok(n) = s.read(&mut rest).await {
        if n == 0 {
            break;
        }
    }
}

async fn scripted_app() -> App {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let connections = Arc::new(AtomicUsize::new(0));
    let hung_up = Arc::new(AtomicUsize::new(0));
    let (seen2, conns2, hung2) = (seen.clone(), connections.clone(), hung_up.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            conns2.fetch_add(1, Ordering::SeqCst);
            let seen = seen2.clone();
            let hung_up = hung2.clone();
            tokio::spawn(async move {
                let mut buf: Vec<u8> = Vec::new();
                loop {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    if head.starts_with("POST /early ") {
                        // Refuse at once without reading the body; note when the proxy gives up.
                        seen.lock().unwrap().push((head, Vec::new()));
                        let _ = s
                            .write_all(
                                b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n",
                            )
                            .await;
                        until_closed(&mut s).await;
                        hung_up.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    let len = content_length(&head);
                    while buf.len() < end + len {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = buf[end..end + len].to_vec();
                    buf.drain(..end + len);
                    let path = head
                        .split(' ')
                        .nth(1)
                        .unwrap_or("")
                        .split('?')
                        .next()
                        .unwrap_or("")
                        .to_string();
                    seen.lock().unwrap().push((head, body));
                    if path == "/hang" {
                        // Never answer; note when the proxy gives up on the connection.
                        until_closed(&mut s).await;
                        hung_up.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    let (bytes, close) = answer(&path);
                    if s.write_all(bytes).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    App {
        addr,
        seen,
        connections,
        hung_up,
    }
}

/// Writes `bytes` and reads until the proxy closes the connection.
async fn exchange_raw(proxy: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn body_of(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn head_has(resp: &str, line: &str) -> bool {
    let head = resp.split_once("\r\n\r\n").map_or(resp, |(h, _)| h);
    head.lines().any(|l| l.eq_ignore_ascii_case(line))
}

fn head_has_name(resp: &str, name: &str) -> bool {
    let head = resp.split_once("\r\n\r\n").map_or(resp, |(h, _)| h);
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .any(|(k, _)| k.eq_ignore_ascii_case(name))
}

const TARGET: &str = "X-Iterate-Proxy-Target-Host: 4096__x.iterate.town\r\n";

#[tokio::test]
async fn plain_request_is_rewritten_exactly_and_the_connection_reused() {
    let app = scripted_app().await;
    let p = proxy_to(app.addr).await;
    let req = format!(
        "GET /cl?q=1&r=%20 HTTP/1.1\r\nHost: Example.COM\r\n{TARGET}X-Custom-Case: V1\r\n\
         Connection: keep-alive, X-Drop\r\nX-Drop: gone\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\n\
         TE: trailers\r\nX-Iterate-Proxy-Via: forged\r\nAccept: */*\r\nAccept: text/html\r\n\r\n\
         GET /cl HTTP/1.1\r\nHost: b\r\n{TARGET}Connection: close\r\n\r\n"
    );
    let resp = exchange_raw(p.addr, req.as_bytes()).await;

    let seen = app.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    // Order and spelling as the client sent them; hop-by-hop, target and forged via gone; Host
    // rewritten in place; the via header last.
    assert_eq!(
        seen[0].0,
        "GET /cl?q=1&r=%20 HTTP/1.1\r\nhost: localhost:4096\r\nX-Custom-Case: V1\r\nte: trailers\r\n\
         Accept: */*\r\nAccept: text/html\r\nx-iterate-proxy-via: Example.COM\r\n\r\n"
    );
    assert_eq!(
        seen[1].0,
        "GET /cl HTTP/1.1\r\nhost: localhost:4096\r\nx-iterate-proxy-via: b\r\n\r\n"
    );
    assert_eq!(
        app.connections.load(Ordering::SeqCst),
        1,
        "one pooled upstream connection for both"
    );

    // Two responses, in order; the app's hop-by-hop fields removed; the last one closes.
    let (first, second) = resp.split_at(resp.rfind("HTTP/1.1 200").unwrap());
    for r in [first, second] {
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(head_has(r, "Content-Length: 5"), "{r}");
        assert!(head_has(r, "X-App: 1"), "{r}");
        assert!(head_has_name(r, "date"), "{r}");
        for gone in ["X-Hop", "Keep-Alive"] {
            assert!(!head_has_name(r, gone), "{gone} in {r}");
        }
        assert_eq!(body_of(r), "hello");
    }
    assert!(!head_has_name(first, "connection"), "{first}");
    assert!(head_has(second, "connection: close"), "{second}");
}

#[tokio::test]
async fn response_framings_reach_the_client_intact() {
    let app = scripted_app().await;
    let p = proxy_to(app.addr).await;
    let get =
        |path: &str| format!("GET {path} HTTP/1.1\r\nHost: h\r\n{TARGET}Connection: close\r\n\r\n");

    // Chunked: passed byte for byte, extensions and trailers included.
    let r = exchange_raw(p.addr, get("/chunked").as_bytes()).await;
    assert!(head_has(&r, "transfer-encoding: chunked"), "{r}");
    assert!(!head_has_name(&r, "content-length"), "{r}");
    assert_eq!(
        body_of(&r),
        "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n"
    );

    // Until-close: re-chunked, so the client connection could stay open.
    let r = exchange_raw(p.addr, get("/close").as_bytes()).await;
    assert!(head_has(&r, "transfer-encoding: chunked"), "{r}");
    assert_eq!(body_of(&r), "b\r\nuntil close\r\n0\r\n\r\n");

    // Both Transfer-Encoding and Content-Length: chunked wins, the length is dropped.
    let r = exchange_raw(p.addr, get("/te-cl").as_bytes()).await;
    assert!(!head_has_name(&r, "content-length"), "{r}");
    assert_eq!(body_of(&r), "2\r\nok\r\n0\r\n\r\n");

    // An interim 103 is passed on (RFC 9110 §15.2), then the final response.
    let r = exchange_raw(p.addr, get("/103").as_bytes()).await;
    let (interim, last) = r.split_once("\r\n\r\n").unwrap_or_default();
    assert_eq!(interim, "HTTP/1.1 103 Early Hints\r\nLink: </a>", "{r}");
    assert!(last.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert_eq!(body_of(last), "ok");

    // No body: HEAD (its length kept), 204.
    let head = format!("HEAD /head HTTP/1.1\r\nHost: h\r\n{TARGET}Connection: close\r\n\r\n");
    let r = exchange_raw(p.addr, head.as_bytes()).await;
    assert!(head_has(&r, "Content-Length: 100"), "{r}");
    assert_eq!(body_of(&r), "");
    let r = exchange_raw(p.addr, get("/204").as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 204 No Content\r\n"), "{r}");
    assert!(head_has(&r, "X-App: 1"), "{r}");
    assert_eq!(body_of(&r), "");

    // The app's reason phrase and Date are its own.
    let r = exchange_raw(p.addr, get("/reason").as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 299 Fine Thanks\r\n"), "{r}");
    assert!(head_has(&r, "Date: Tue, 01 Jan 2030 00:00:00 GMT"), "{r}");
    assert_eq!(r.matches("ate:").count(), 1, "{r}");
}

/// Every framing on one keep-alive client connection. With `full_handler`, the connection starts
/// with `/health`, which moves it to the hyper-based handler: both paths must agree.
async fn every_framing_on_one_connection(full_handler: bool) {
    let app = scripted_app().await;
    let p = proxy_to(app.addr).await;
    let mut c = keep_alive_client(p.addr).await;
    if full_handler {
        let resp = c.send_request(get("/health", "h", None)).await.unwrap();
        assert_eq!(body_string(resp).await, "OK");
    }
    let expect = [
        ("/close", 200, "until close"),
        ("/cl", 200, "hello"),
        ("/chunked", 200, "hello world"),
        ("/204", 204, ""),
        ("/103", 200, "ok"),
        ("/te-cl", 200, "ok"),
        ("/cl", 200, "hello"),
    ];
    for (path, status, body) in expect {
        let resp = c
            .send_request(get(path, "h", Some("4096__x")))
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{path}");
        assert_eq!(body_string(resp).await, body, "{path}");
    }
    // `/close` used up its connection; everything after shares one.
    assert_eq!(app.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn keep_alive_client_survives_every_framing() {
    every_framing_on_one_connection(false).await;
}

#[tokio::test]
async fn full_handler_agrees_on_every_framing() {
    every_framing_on_one_connection(true).await;
}

#[tokio::test]
async fn broken_app_responses_are_never_passed_as_complete() {
    let app = scripted_app().await;
    let p = proxy_to(app.addr).await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: h\r\n{TARGET}\r\n");

    // Conflicting lengths: the proxy's own 502, and the client connection stays usable.
    let both = format!(
        "{}{}",
        get("/bad-cl"),
        get("/cl").replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
    );
    let r = exchange_raw(p.addr, both.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{r}");
    assert!(
        r.contains("{\"error\":\"proxy_error\"}HTTP/1.1 200 OK"),
        "{r}"
    );

    // Broken chunking mid-body: the head and the valid bytes go out, then the connection closes
    // without the terminating chunk.
    let r = exchange_raw(p.addr, get("/bad-chunk").as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(!r.ends_with("0\r\n\r\n"), "{r}");

    let records = p.records.lock().unwrap().clone();
    let bad_cl = records.iter().find(|r| r.path == "/bad-cl").unwrap();
    assert_eq!(
        (bad_cl.status, bad_cl.error, bad_cl.upstream_addr),
        (502, Some("proxy_error"), Some(app.addr))
    );
    let bad_chunk = records.iter().find(|r| r.path == "/bad-chunk").unwrap();
    assert_eq!((bad_chunk.status, bad_chunk.completed), (200, false));
}

/// The access record of a chunked response with trailers; with `full_handler` the connection
/// first goes to the hyper-based handler (through `/health`): both paths must log the same.
async fn access_record_of_a_chunked_exchange(full_handler: bool) {
    let app = scripted_app().await;
    let p = proxy_to(app.addr).await;
    let health = if full_handler {
        "GET /health HTTP/1.1\r\nHost: h\r\n\r\n"
    } else {
        ""
    };
    let req = format!(
        "{health}POST /chunked?secret=1 HTTP/1.1\r\nHost: h\r\n{TARGET}X-Request-Id: abc-1\r\n\
         Content-Length: 4\r\nConnection: close\r\n\r\nbody"
    );
    let r = exchange_raw(p.addr, req.as_bytes()).await;
    assert!(r.contains("HTTP/1.1 200 OK\r\n"), "{r}");
    assert_eq!(app.seen.lock().unwrap()[0].1, b"body");
    let records = p.records.lock().unwrap().clone();
    let forwarded: Vec<_> = records.iter().filter(|r| r.path != "/health").collect();
    assert_eq!(forwarded.len(), 1, "{records:?}");
    let rec = forwarded[0];
    assert_eq!(rec.request_id, "abc-1");
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.path, "/chunked", "no query in the log");
    assert_eq!(rec.target_header.as_deref(), Some("4096__x.iterate.town"));
    assert_eq!(rec.target_port, Some(4096));
    assert_eq!(rec.target_form, Some("port_prefix"));
    assert_eq!(rec.upstream_addr, Some(app.addr));
    assert_eq!(rec.status, 200);
    assert_eq!(rec.error, None);
    assert_eq!((rec.bytes_in, rec.bytes_out), (4, 11), "decoded body sizes");
    assert!(rec.completed, "{rec:?}");
    assert!(rec.duration >= rec.head_duration);
}

#[tokio::test]
async fn access_log_describes_fast_path_requests() {
    access_record_of_a_chunked_exchange(false).await;
}

#[tokio::test]
async fn full_handler_logs_the_same_record() {
    access_record_of_a_chunked_exchange(true).await;
}

#[tokio::test]
async fn connection_moves_to_the_full_handler_when_a_request_needs_it() {
    let app = scripted_app().await;
    let p = proxy_to(app.addr).await;
    // Plain, then `/health` (the full handler's), then plain again on the same connection.
    let req = format!(
        "GET /cl HTTP/1.1\r\nHost: h\r\n{TARGET}X-Custom-Case: 1\r\n\r\n\
         GET /health HTTP/1.1\r\nHost: h\r\n\r\n\
         GET /cl HTTP/1.1\r\nHost: h\r\n{TARGET}X-Custom-Case: 2\r\nConnection: close\r\n\r\n"
    );
    let r = exchange_raw(p.addr, req.as_bytes()).await;
    assert_eq!(r.matches("HTTP/1.1 200 OK").count(), 3, "{r}");
    assert!(r.contains("\r\n\r\nOK"), "the health answer: {r}");
    let seen = app.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    // The fast path keeps the client's spelling; the hyper client writes names in lower case, which
    // shows the third request went through the full handler.
    assert!(seen[0].0.contains("X-Custom-Case: 1\r\n"), "{}", seen[0].0);
    assert!(seen[1].0.contains("x-custom-case: 2\r\n"), "{}", seen[1].0);
}

#[tokio::test]
async fn client_leaving_before_the_answer_cancels_the_upstream_request() {
    for full_handler in [false, true] {
        let app = scripted_app().await;
        let p = proxy_to(app.addr).await;
        let health = if full_handler {
            "GET /health HTTP/1.1\r\nHost: h\r\n\r\n"
        } else {
            ""
        };
        let mut c = TcpStream::connect(p.addr).await.unwrap();
        let req = format!("{health}GET /hang HTTP/1.1\r\nHost: h\r\n{TARGET}\r\n");
        c.write_all(req.as_bytes()).await.unwrap();
        let seen = app.seen.clone();
        wait_until(Duration::from_secs(5), "the app has the request", || {
            !seen.lock().unwrap().is_empty()
        })
        .await;
        drop(c);
        let hung_up = app.hung_up.clone();
        wait_until(
            Duration::from_secs(5),
            "the proxy closes the upstream connection",
            || hung_up.load(Ordering::SeqCst) == 1,
        )
        .await;
        let records = p.records.lock().unwrap().clone();
        assert!(
            records.iter().all(|r| r.path != "/hang"),
            "full_handler={full_handler}: {records:?}"
        );
    }
}

#[tokio::test]
async fn uploads_that_arrive_after_their_head_stay_on_the_fast_path() {
    let app = scripted_app().await;
    let p = proxy_to(app.addr).await;
    let body: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    let head = format!(
        "POST /cl HTTP/1.1\r\nHost: h\r\n{TARGET}Content-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    // The body follows in pieces, after the head has gone.
    for piece in body.chunks(100 * 1024) {
        c.write_all(piece).await.unwrap();
    }
    let next = format!(
        "GET /cl HTTP/1.1\r\nHost: h\r\n{TARGET}X-Custom-Case: 2\r\nConnection: close\r\n\r\n"
    );
    c.write_all(next.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection")
        .unwrap();
    let r = String::from_utf8_lossy(&out);
    assert_eq!(r.matches("HTTP/1.1 200 OK").count(), 2, "{r}");
    let seen = app.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[0].1 == body,
        "the upload arrived intact ({} bytes)",
        seen[0].1.len()
    );
    // Still the fast path afterwards: the client's spelling reached the app.
    assert!(seen[1].0.contains("X-Custom-Case: 2\r\n"), "{}", seen[1].0);
    let records = p.records.lock().unwrap().clone();
    assert_eq!(records[0].bytes_in, body.len() as u64);
    assert!(
        records.iter().all(|r| r.completed && r.status == 200),
        "{records:?}"
    );
}

#[tokio::test]
async fn app_answering_before_the_whole_body_closes_both_connections() {
    let app = scripted_app().await;
    let p = proxy_to(app.addr).await;
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    let total = 64 * 1024 * 1024usize;
    let head =
        format!("POST /early HTTP/1.1\r\nHost: h\r\n{TARGET}Content-Length: {total}\r\n\r\n");
    c.write_all(head.as_bytes()).await.unwrap();
    let (mut rd, mut wr) = c.into_split();
    // The client keeps sending; the app never reads the body.
    let writer = tokio::spawn(async move {
        let piece = vec![b'u'; 64 * 1024];
        let mut sent = 0;
        while sent < total && wr.write_all(&piece).await.is_ok() {
            sent += piece.len();
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the proxy closes the client connection");
    let r = String::from_utf8_lossy(&got);
    assert!(r.starts_with("HTTP/1.1 413 Payload Too Large\r\n"), "{r}");
    assert!(head_has(&r, "connection: close"), "{r}");
    writer.abort();
    let hung_up = app.hung_up.clone();
    wait_until(
        Duration::from_secs(5),
        "the upstream connection is closed",
        || hung_up.load(Ordering::SeqCst) == 1,
    )
    .await;
    let records = p.records.lock().unwrap().clone();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].status, 413);
    assert!(records[0].bytes_in < total as u64, "{records:?}");
}
