//! Property tests (proptest; cargo-fuzz needs a nightly toolchain, which this project does not
//! use). `PROPTEST_CASES` sets the budget: the default run is small, `cargo xtask fuzz` runs
//! tens of thousands of cases.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use project_ingress_proxy::localhost::Loopback;
use project_ingress_proxy::{Localhost, ProxyConfig, parse_target_host};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A connection to the proxy that is reset, not closed, when dropped: tens of thousands of cases
/// within a minute would otherwise leave as many sockets in TIME_WAIT on ephemeral ports and run
/// the machine out of them (`cargo xtask fuzz --cases 20000` did).
async fn connect_resetting(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_zero_linger().unwrap();
    s
}

/// `GET /health` on a fresh, resetting connection; whether the proxy answered 200.
async fn health_ok(addr: SocketAddr) -> bool {
    let mut s = connect_resetting(addr).await;
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out.starts_with(b"HTTP/1.1 200 ")
}

/// Header values built from the grammar's pieces, plus noise.
fn target_values() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        Just("localhost".to_string()),
        Just("LOCALHOST".to_string()),
        Just("127.0.0.1".to_string()),
        Just("[::1]".to_string()),
        Just("10.0.0.1".to_string()),
        Just("169.254.169.254".to_string()),
        Just("example.com".to_string()),
        "[a-z0-9.\\-_]{0,20}",
    ];
    let port = prop_oneof![
        "[0-9]{0,7}",
        Just("65535".to_string()),
        Just("65536".to_string()),
        "[^\\r\\n]{0,6}"
    ];
    prop_oneof![
        (port.clone(), host.clone()).prop_map(|(p, h)| format!("{p}__{h}")),
        (host.clone(), port.clone()).prop_map(|(h, p)| format!("{h}:{p}")),
        (host, port).prop_map(|(h, p)| format!(" {h}:{p} ")),
        "[ -~]{0,40}",
    ]
}

proptest! {
    #![proptest_config(cases(2000))]

    /// Parsing is total, and any accepted value names a port on the machine's own loopback.
    #[test]
    fn target_parsing_only_ever_yields_a_local_port(v in any::<String>(), g in target_values()) {
        for value in [v, g] {
            if let Ok(t) = parse_target_host(&value) {
                prop_assert!(t.port >= 1);
                for a in Loopback.addrs(t.port) {
                    prop_assert!(a.ip().is_loopback(), "{value:?} -> {a}");
                    prop_assert_eq!(a.port(), t.port);
                }
                // An explicit host, if any, was local.
                if let Some((h, _)) = value.trim().rsplit_once(':')
                    && !value.contains("__")
                {
                    let h = h.trim().to_ascii_lowercase();
                    prop_assert!(h == "localhost" || h == "127.0.0.1", "{value:?} accepted host {h:?}");
                }
            }
        }
    }
}

/// Records every port the proxy asks the machine's loopback for; serves them all from one echo app.
/// The connector resolves nothing else, so these ports are every place the proxy connects to.
struct Recording(Mutex<Vec<u16>>, SocketAddr);
impl Localhost for Recording {
    fn addrs(&self, port: u16) -> Vec<SocketAddr> {
        self.0.lock().unwrap().push(port);
        vec![self.1]
    }
}

/// A request and the target header value it carries.
fn request_bytes() -> impl Strategy<Value = (Vec<u8>, String)> {
    let target = prop_oneof![
        Just("/".to_string()),
        Just("http://evil.example:80/x".to_string()),
        Just("http://169.254.169.254/latest".to_string()),
        Just("*".to_string()),
        "/[ -~]{0,30}",
    ];
    let method = prop_oneof![
        Just("GET"),
        Just("POST"),
        Just("CONNECT"),
        Just("OPTIONS"),
        Just("BREW")
    ];
    (method, target, target_values(), "[ -~]{0,20}", proptest::collection::vec(any::<u8>(), 0..64)).prop_map(
        |(m, t, th, host, noise)| {
            let mut v = format!("{m} {t} HTTP/1.1\r\nHost: {host}\r\nX-Iterate-Proxy-Target-Host: {th}\r\nConnection: close\r\n")
                .into_bytes();
            v.extend_from_slice(&noise);
            v.extend_from_slice(b"\r\n\r\n");
            (v, th)
        },
    )
}

proptest! {
    #![proptest_config(cases(300))]

    /// Whatever the request (absolute-form targets at other hosts, odd methods, hostile target
    /// headers, trailing garbage), the proxy answers or closes in time, connects only to the
    /// loopback port the target header names (never to a port or host taken from the request
    /// line or `Host`), and keeps serving.
    #[test]
    fn no_request_connects_anywhere_but_loopback((req, target) in request_bytes()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (app, _) = start_app().await;
            let rec = Arc::new(Recording(Mutex::new(Vec::new()), app));
            let p = start_proxy(ProxyConfig { localhost: rec.clone(), ..ProxyConfig::default() }).await;
            let mut s = connect_resetting(p.addr).await;
            let _ = s.write_all(&req).await;
            let mut out = Vec::new();
            let done = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
            prop_assert!(done.is_ok(), "the proxy hung on {:?}", String::from_utf8_lossy(&req));
            let allowed = parse_target_host(&target).ok().map(|t| t.port);
            for port in rec.0.lock().unwrap().iter() {
                prop_assert_eq!(Some(*port), allowed, "target header {:?}", target);
            }
            prop_assert!(health_ok(p.addr).await);
            Ok(())
        })?;
    }

    /// Arbitrary bytes as a request head never crash or hang the proxy.
    #[test]
    fn arbitrary_heads_never_crash_or_hang(noise in proptest::collection::vec(any::<u8>(), 0..2048), prefix in prop_oneof![Just(&b""[..]), Just(&b"GET / HTTP/1.1\r\n"[..]), Just(&b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"[..])]) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (app, _) = start_app().await;
            let p = start_proxy(ProxyConfig {
                localhost: Arc::new(move |_p: u16| vec![app]),
                limits: project_ingress_proxy::Limits { header_read_timeout: Duration::from_millis(500), ..project_ingress_proxy::Limits::default() },
                ..ProxyConfig::default()
            })
            .await;
            let mut s = connect_resetting(p.addr).await;
            let _ = s.write_all(prefix).await;
            let _ = s.write_all(&noise).await;
            let _ = s.shutdown().await;
            let mut out = Vec::new();
            let done = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
            prop_assert!(done.is_ok(), "hung");
            prop_assert!(health_ok(p.addr).await);
            Ok(())
        })?;
    }
}

/// Request header fields for the rewrite parity property: end-to-end ones in mixed case, every
/// hop-by-hop kind (with `Connection` naming others, `Host` included), the proxy's own headers, and
/// repeats.
fn header_fields() -> impl Strategy<Value = Vec<(String, String)>> {
    let field = prop_oneof![
        Just(("Accept".to_string(), "*/*".to_string())),
        Just(("accept".to_string(), "text/html".to_string())),
        Just(("X-Mixed-Case".to_string(), "v".to_string())),
        Just(("cookie".to_string(), "a=1; b=2".to_string())),
        Just(("keep-alive".to_string(), "timeout=5".to_string())),
        Just(("Proxy-Connection".to_string(), "keep-alive".to_string())),
        Just(("TE".to_string(), "trailers".to_string())),
        Just(("te".to_string(), "gzip, trailers".to_string())),
        Just(("X-Iterate-Proxy-Via".to_string(), "forged".to_string())),
        Just((
            "x-iterate-project-ingress-secret".to_string(),
            "s".to_string()
        )),
        Just((
            "X-Iterate-Proxy-Target-Host".to_string(),
            "localhost:1".to_string()
        )),
        (
            Just("Connection".to_string()),
            proptest::sample::subsequence(
                vec![
                    "keep-alive",
                    "close",
                    "X-Mixed-Case",
                    "cookie",
                    "Host",
                    "te",
                    "x-iterate-proxy-via"
                ],
                0..4
            )
            .prop_map(|t| t.join(", "))
        ),
        ("x-[a-z]{1,6}", "[ -~]{0,12}").prop_map(|(k, v)| (k, v.trim().to_string())),
    ];
    proptest::collection::vec(field, 0..10)
}

/// A rewritten head as a sorted list of (lower-case name, value).
fn fields_of(head: &[u8]) -> Vec<(String, String)> {
    let mut storage = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut storage);
    assert!(req.parse(head).unwrap().is_complete());
    let mut v: Vec<_> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

proptest! {
    #![proptest_config(cases(2000))]

    /// The fast path's byte-level rewrite sends the app the same header fields (names compared
    /// case-insensitively, order aside) as the full handler's `rewrite_request_headers`.
    #[test]
    fn fast_path_rewrite_matches_the_full_handler(fields in header_fields()) {
        let mut raw = String::from("GET /p?q=1 HTTP/1.1\r\nHost: Example.com\r\n");
        raw.push_str("X-Iterate-Proxy-Target-Host: 4096__m.iterate.town\r\n");
        let mut map = http::HeaderMap::new();
        map.append("host", http::HeaderValue::from_static("Example.com"));
        map.append(
            "x-iterate-proxy-target-host",
            http::HeaderValue::from_static("4096__m.iterate.town"),
        );
        for (k, v) in &fields {
            raw.push_str(&format!("{k}: {v}\r\n"));
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        raw.push_str("\r\n");
        let mut out = Vec::new();
        let plan = project_ingress_proxy::plan_request(&ProxyConfig::default(), 8080, raw.as_bytes(), &mut out);
        match plan {
            project_ingress_proxy::HeadPlan::Forward(p) => {
                prop_assert_eq!(p.port, 4096);
                prop_assert_eq!(p.consumed, raw.len());
                prop_assert!(out.starts_with(b"GET /p?q=1 HTTP/1.1\r\n"));
                let target = parse_target_host("4096__m.iterate.town").unwrap();
                project_ingress_proxy::rewrite_request_headers(&mut map, target, false);
                let mut full: Vec<_> = map
                    .iter()
                    .map(|(k, v)| {
                        (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())
                    })
                    .collect();
                full.sort();
                prop_assert_eq!(fields_of(&out), full);
            }
            // The fast path honours up to 8 headers named by `Connection` in place; a request naming
            // more goes to the full handler, and so does one with a second target header (which the
            // full handler refuses). Nothing else generated here needs it.
            other => {
                let second_target = fields
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("x-iterate-proxy-target-host"));
                let named = fields
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
                    .flat_map(|(_, v)| v.split(','))
                    .map(str::trim)
                    .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
                    .count();
                prop_assert!(named > 8 || second_target, "not forwarded: {:?}", other);
            }
        }
    }
}
