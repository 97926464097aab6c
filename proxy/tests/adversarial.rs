//! The findings of the adversarial review (issue 13), one regression test each, on both paths
//! where both can see the input: a fresh connection (the fast path) and one that `GET /health`
//! moved to the full handler. Findings 1–3 (the desyncs) are in `desync.rs`; SIGHUP (finding 10)
//! is in `binary.rs`.

mod common;
#[path = "common/wire.rs"]
mod wire;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::start_proxy;
use project_ingress_proxy::{Limits, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wire::Parse;

const T: &str = "X-Iterate-Proxy-Target-Host: localhost:3000\r\n";
/// The app's head timeout in these tests.
const HEAD_TIMEOUT: Duration = Duration::from_millis(300);

/// A strict app: answers by path, records every request target it parsed, and every upload it saw
/// end cleanly.
struct App {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn app_conn(mut s: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let head = loop {
            match wire::request_head(&buf) {
                Ok(Some((h, _))) => break h,
                Ok(None) => match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                },
                Err(_) => return,
            }
        };
        let path = head.target.clone();
        let interim: &[u8] = match path.as_str() {
            "/hints" => b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
            "/continue" => b"HTTP/1.1 100 Continue\r\n\r\n",
            _ => b"",
        };
        if s.write_all(interim).await.is_err() {
            return;
        }
        let (msg, used) = loop {
            match wire::request(&buf) {
                Ok(Parse::Done(m, n)) => break (m, n),
                Ok(_) => match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                },
                Err(_) => return,
            }
        };
        buf.drain(..used);
        seen.lock().unwrap().push(path.clone());
        let got = format!("got {}", msg.body.len());
        let answer = match path.as_str() {
            "/silent" => {
                // The body is in; never answer.
                while let Ok(n) = s.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                }
                return;
            }
            "/101" => {
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"
                    .to_string()
            }
            "/dupcl" => {
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok".into()
            }
            "/refuse-upgrade" => "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno".into(),
            "/garbage" => "NOT HTTP AT ALL\r\n\r\n".into(),
            "/closes" => return,
            _ => format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{got}",
                got.len()
            ),
        };
        if s.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn app() -> App {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(app_conn(s, seen2.clone()));
        }
    });
    App { addr, seen }
}

async fn proxy_for(app: SocketAddr) -> common::RunningProxy {
    start_proxy(ProxyConfig {
        localhost: Arc::new(move |_port: u16| vec![app]),
        limits: Limits {
            upstream_head_timeout: HEAD_TIMEOUT,
            ..Limits::default()
        },
        ..ProxyConfig::default()
    })
    .await
}

/// Sends `parts` with `gap` between them (on the full handler when `full`), then reads until the
/// proxy closes the connection (every test's last request says `Connection: close`, or the proxy
/// must close by itself).
async fn talk(proxy: SocketAddr, full: bool, parts: &[&[u8]], gap: Duration) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    if full {
        s.write_all(b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        while !matches!(wire::response(&got, "GET"), Ok(Parse::Done(..))) {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before /health answered");
            got.extend_from_slice(&chunk[..n]);
        }
    }
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            // Shapes the input (a body that arrives after its head); nothing waits on it.
            tokio::time::sleep(gap).await;
        }
        s.write_all(p).await.unwrap();
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// The final responses in `text` (1xx listed too), parsed strictly.
fn responses(text: &str) -> Vec<wire::Message> {
    let mut buf = text.as_bytes();
    let mut out = Vec::new();
    loop {
        match wire::response(buf, "POST") {
            Ok(Parse::Done(m, n)) => {
                out.push(m);
                buf = &buf[n..];
            }
            Ok(Parse::UntilClose(mut m, n)) => {
                m.body = buf[n..].to_vec();
                out.push(m);
                return out;
            }
            Ok(Parse::Partial) if buf.is_empty() => return out,
            other => panic!("unframeable answer {other:?} in {text:?}"),
        }
    }
}

fn statuses(text: &str) -> Vec<u16> {
    responses(text).iter().map(|m| m.status()).collect()
}

fn upload_head(path: &str, len: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: h\r\n{T}Content-Length: {len}\r\nConnection: close\r\n\r\n"
    )
}

/// Finding 4: a 1xx from the app while the body is still coming (`103 Early Hints`, an unprompted
/// `100`) is not an early answer: the body goes on, and on the fast path the 1xx is passed on to
/// the client before the final response. (The full handler runs on hyper's server, which cannot
/// send a 1xx other than its own `100 Continue`: there the 1xx is dropped, as the contract says.)
#[tokio::test]
async fn finding_4_interim_responses_during_an_upload() {
    let app = app().await;
    let p = proxy_for(app.addr).await;
    for path in ["/hints", "/continue"] {
        for full in [false, true] {
            let head = upload_head(path, 10);
            let r = talk(
                p.addr,
                full,
                &[head.as_bytes(), b"01234", b"56789"],
                Duration::from_millis(60),
            )
            .await;
            let got = responses(&r);
            let last = got
                .last()
                .unwrap_or_else(|| panic!("{path} full={full}: {r:?}"));
            assert_eq!(last.status(), 200, "{path} full={full}: {r}");
            assert_eq!(last.body, b"got 10", "{path} full={full}: {r}");
            let interim = if path == "/hints" { 103 } else { 100 };
            if !full {
                assert_eq!(statuses(&r), vec![interim, 200], "{path}: {r}");
                if path == "/hints" {
                    assert_eq!(got[0].header("link"), Some("</s.css>; rel=preload"));
                }
            }
        }
    }
    // A 1xx before the answer to a body-less request is passed on too.
    let get = format!("GET /hints HTTP/1.1\r\nHost: h\r\n{T}Connection: close\r\n\r\n");
    let r = talk(p.addr, false, &[get.as_bytes()], Duration::ZERO).await;
    assert_eq!(statuses(&r), vec![103, 200], "{r}");
}

/// Finding 5: the head timeout counts from the last body byte sent, so an upload longer than it
/// succeeds on both paths (and with a chunked body), while an app silent after the body still
/// gets 504.
#[tokio::test]
async fn finding_5_uploads_longer_than_the_head_timeout() {
    let app = app().await;
    let p = proxy_for(app.addr).await;
    let piece = [b'x'; 100];
    // Eight pieces 120 ms apart: about three times the 300 ms head timeout.
    let mut parts: Vec<&[u8]> = vec![];
    let head = upload_head("/upload", 800);
    parts.push(head.as_bytes());
    parts.extend(std::iter::repeat_n(&piece[..], 8));
    for full in [false, true] {
        let r = talk(p.addr, full, &parts, Duration::from_millis(120)).await;
        let got = responses(&r);
        assert_eq!(got.len(), 1, "full={full}: {r}");
        assert_eq!(
            (got[0].status(), &got[0].body[..]),
            (200, &b"got 800"[..]),
            "full={full}: {r}"
        );
    }
    let chunked = format!(
        "POST /upload HTTP/1.1\r\nHost: h\r\n{T}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let chunk = format!("64\r\n{}\r\n", "y".repeat(100));
    let mut parts: Vec<&[u8]> = vec![chunked.as_bytes()];
    parts.extend(std::iter::repeat_n(chunk.as_bytes(), 8));
    parts.push(b"0\r\n\r\n");
    let r = talk(p.addr, false, &parts, Duration::from_millis(120)).await;
    assert_eq!(statuses(&r), vec![200], "chunked: {r}");
    assert!(r.ends_with("got 800"), "{r}");
    // Silent after the whole body: 504 on both paths.
    for full in [false, true] {
        let head = upload_head("/silent", 4);
        let r = talk(
            p.addr,
            full,
            &[head.as_bytes(), b"abcd"],
            Duration::from_millis(50),
        )
        .await;
        assert_eq!(statuses(&r), vec![504], "full={full}: {r}");
        assert!(r.contains("upstream_timeout"), "{r}");
    }
}

/// Finding 6: a bare LF inside a chunked body's trailers (which hyper's decoder takes as part of
/// the line) never swallows the pipelined request after it: the upload is cut, the client gets
/// 400 and the connection closes; the app sees neither the upload's end nor the next request.
#[tokio::test]
async fn finding_6_bare_lf_in_chunked_trailers() {
    let app = app().await;
    let p = proxy_for(app.addr).await;
    for full in [false, true] {
        let req = format!(
            "POST /trailers HTTP/1.1\r\nHost: h\r\n{T}Transfer-Encoding: chunked\r\n\r\n\
             3\r\nabc\r\n0\r\nX-T: 1\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n{T}Connection: close\r\n\r\n"
        );
        let r = talk(p.addr, full, &[req.as_bytes()], Duration::ZERO).await;
        assert_eq!(statuses(&r), vec![400], "full={full}: {r}");
        assert!(r.contains("invalid_request"), "{r}");
        let seen = app.seen.lock().unwrap().clone();
        assert!(
            !seen.iter().any(|s| s == "/next" || s == "/trailers"),
            "{seen:?}"
        );
    }
}

/// Finding 7: a `101` from the app to a request that asked for no upgrade is a 502 on both paths.
#[tokio::test]
async fn finding_7_unrequested_101_is_502() {
    let app = app().await;
    let p = proxy_for(app.addr).await;
    for full in [false, true] {
        let req = format!("GET /101 HTTP/1.1\r\nHost: h\r\n{T}Connection: close\r\n\r\n");
        let r = talk(p.addr, full, &[req.as_bytes()], Duration::ZERO).await;
        assert_eq!(statuses(&r), vec![502], "full={full}: {r}");
        assert!(r.contains("proxy_error"), "{r}");
    }
}

/// Finding 8: a `Host` that is not `uri-host [":" port]` is a 400 on both paths and reaches no app;
/// the platform's own hostnames (underscores, ports, IP literals) pass.
#[tokio::test]
async fn finding_8_invalid_host_values_are_400() {
    let app = app().await;
    let p = proxy_for(app.addr).await;
    for host in [
        "a b.example",
        "evil.example/path",
        "user@evil.example",
        "[::1",
        "a:b",
    ] {
        for full in [false, true] {
            let req = format!("GET /host HTTP/1.1\r\nHost: {host}\r\n{T}Connection: close\r\n\r\n");
            let r = talk(p.addr, full, &[req.as_bytes()], Duration::ZERO).await;
            assert_eq!(statuses(&r), vec![400], "{host:?} full={full}: {r}");
            assert!(r.contains("invalid_request"), "{r}");
        }
    }
    assert!(app.seen.lock().unwrap().is_empty());
    for host in [
        "4096__mach_123.machines.iterate.town",
        "misha.iterate.town:443",
        "[::1]:8080",
        "",
    ] {
        for full in [false, true] {
            let req = format!("GET /host HTTP/1.1\r\nHost: {host}\r\n{T}Connection: close\r\n\r\n");
            let r = talk(p.addr, full, &[req.as_bytes()], Duration::ZERO).await;
            assert_eq!(statuses(&r), vec![200], "{host:?} full={full}: {r}");
        }
    }
}

/// Finding 9: an app's repeated identical `Content-Length` goes to the client once.
#[tokio::test]
async fn finding_9_repeated_identical_length_is_sent_once() {
    let app = app().await;
    let p = proxy_for(app.addr).await;
    for full in [false, true] {
        let req = format!("GET /dupcl HTTP/1.1\r\nHost: h\r\n{T}Connection: close\r\n\r\n");
        let r = talk(p.addr, full, &[req.as_bytes()], Duration::ZERO).await;
        let got = responses(&r);
        assert_eq!(got.len(), 1, "{r}");
        assert_eq!(
            got[0].headers_named("content-length"),
            1,
            "full={full}: {r}"
        );
        assert_eq!(got[0].body, b"ok");
    }
}

/// Finding 11: two target headers, differing or not, are refused on both paths: which one a hop
/// before the proxy read cannot be known.
#[tokio::test]
async fn finding_11_two_target_headers_are_400() {
    let app = app().await;
    let p = proxy_for(app.addr).await;
    for second in ["localhost:4096", "localhost:3000"] {
        for full in [false, true] {
            let req = format!(
                "GET /t HTTP/1.1\r\nHost: h\r\n{T}X-Iterate-Proxy-Target-Host: {second}\r\nConnection: close\r\n\r\n"
            );
            let r = talk(p.addr, full, &[req.as_bytes()], Duration::ZERO).await;
            assert_eq!(statuses(&r), vec![400], "{second} full={full}: {r}");
            assert!(r.contains("invalid_proxy_target_host"), "{r}");
        }
    }
    assert!(app.seen.lock().unwrap().is_empty());
}

/// Past an upgrade request the full handler's framing guard stops reading requests, so an upgrade
/// the app refuses ends the connection (a pipelined request after it is not served), and a head
/// the guard cannot frame (`CONNECT`) is answered and the connection closed.
#[tokio::test]
async fn unhonoured_upgrades_and_unframeable_heads_end_the_connection() {
    let app = app().await;
    let p = proxy_for(app.addr).await;
    for full in [false, true] {
        let req = format!(
            "GET /refuse-upgrade HTTP/1.1\r\nHost: h\r\n{T}Connection: upgrade\r\nUpgrade: websocket\r\n\r\n\
             GET /after HTTP/1.1\r\nHost: h\r\n{T}\r\n"
        );
        let r = talk(p.addr, full, &[req.as_bytes()], Duration::ZERO).await;
        let got = responses(&r);
        assert_eq!(got.len(), 1, "full={full}: {r}");
        assert_eq!(got[0].status(), 403);
        assert!(got[0].closes(), "{r}");
        let req = format!(
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n{T}\r\nGET /after HTTP/1.1\r\nHost: h\r\n{T}\r\n"
        );
        let r = talk(p.addr, full, &[req.as_bytes()], Duration::ZERO).await;
        assert_eq!(statuses(&r), vec![405], "full={full}: {r}");
    }
    assert!(!app.seen.lock().unwrap().iter().any(|s| s == "/after"));
}

/// Every failed exchange's access-log record says why (`cause`), the same word on both paths.
#[tokio::test]
async fn access_records_say_why_the_app_failed() {
    let app = app().await;
    let dead = common::dead_addr().await;
    let up = app.addr;
    let p = start_proxy(ProxyConfig {
        localhost: Arc::new(move |port: u16| vec![if port == 3999 { dead } else { up }]),
        limits: Limits {
            upstream_head_timeout: HEAD_TIMEOUT,
            ..Limits::default()
        },
        ..ProxyConfig::default()
    })
    .await;
    let cases = [
        ("/x", "localhost:3999", 502, "connect_refused"),
        ("/garbage", "localhost:3000", 502, "invalid_response_head"),
        ("/101", "localhost:3000", 502, "unrequested_101"),
        ("/closes", "localhost:3000", 502, "closed_before_head"),
        ("/silent", "localhost:3000", 504, "head_timeout"),
    ];
    for full in [false, true] {
        for (path, target, status, cause) in cases {
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: h\r\nX-Iterate-Proxy-Target-Host: {target}\r\nConnection: close\r\n\r\n"
            );
            let r = talk(p.addr, full, &[req.as_bytes()], Duration::ZERO).await;
            assert_eq!(statuses(&r), vec![status], "{path} full={full}: {r}");
            let rec = p
                .records
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|r| r.path == path)
                .cloned()
                .unwrap_or_else(|| panic!("no record for {path}"));
            assert_eq!(rec.cause, Some(cause), "{path} full={full}: {rec:?}");
        }
    }
}

/// Found by review: a `Connection` field the handler cannot read as text (obs-text) but whose
/// bytes name `upgrade` made the framing guard pass everything after it unchecked while hyper kept
/// the connection, reopening finding 6. Past anything the guard reads as an upgrade request, the
/// connection now ends after the answer (unless it is a `101`).
#[tokio::test]
async fn an_upgrade_only_the_guard_can_read_still_ends_the_connection() {
    let app = app().await;
    let p = proxy_for(app.addr).await;
    for full in [false, true] {
        let mut req = b"GET /first HTTP/1.1\r\nHost: h\r\n".to_vec();
        req.extend_from_slice(T.as_bytes());
        req.extend_from_slice(b"Connection: \x80, upgrade\r\n\r\n");
        req.extend_from_slice(
            format!(
                "POST /trailers HTTP/1.1\r\nHost: h\r\n{T}Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\n\r\n\
                 GET /smuggled HTTP/1.1\r\nHost: h\r\n{T}\r\nGET /fourth HTTP/1.1\r\nHost: h\r\n{T}Connection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        let r = talk(p.addr, full, &[&req], Duration::ZERO).await;
        let got = responses(&r);
        assert_eq!(got.len(), 1, "full={full}: {r}");
        assert_eq!(got[0].status(), 200, "{r}");
        assert!(got[0].closes(), "{r}");
    }
    let seen = app.seen.lock().unwrap().clone();
    assert_eq!(seen, ["/first", "/first"], "{seen:?}");
}
