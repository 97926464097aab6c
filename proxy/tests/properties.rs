//! Property tests (proptest; cargo-fuzz needs a nightly toolchain, which this project does not
//! use). `PROPTEST_CASES` sets the budget: the default run is small, `cargo xtask fuzz` runs
//! tens of thousands of cases.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use proxy::localhost::Loopback;
use proxy::{Localhost, ProxyConfig, parse_target_host};
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
            let mut s = TcpStream::connect(p.addr).await.unwrap();
            let _ = s.write_all(&req).await;
            let mut out = Vec::new();
            let done = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
            prop_assert!(done.is_ok(), "the proxy hung on {:?}", String::from_utf8_lossy(&req));
            let allowed = parse_target_host(&target).ok().map(|t| t.port);
            for port in rec.0.lock().unwrap().iter() {
                prop_assert_eq!(Some(*port), allowed, "target header {:?}", target);
            }
            let health = send(p.addr, get("/health", "h", None)).await;
            prop_assert_eq!(health.status(), 200);
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
                limits: proxy::Limits { header_read_timeout: Duration::from_millis(500), ..proxy::Limits::default() },
                ..ProxyConfig::default()
            })
            .await;
            let mut s = TcpStream::connect(p.addr).await.unwrap();
            let _ = s.write_all(prefix).await;
            let _ = s.write_all(&noise).await;
            let _ = s.shutdown().await;
            let mut out = Vec::new();
            let done = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
            prop_assert!(done.is_ok(), "hung");
            let health = send(p.addr, get("/health", "h", None)).await;
            prop_assert_eq!(health.status(), 200);
            Ok(())
        })?;
    }
}
