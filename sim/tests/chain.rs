//! The whole chain, in-process, on real loopback sockets: each provider, each V0 outcome,
//! WebSockets, faults, and world-file errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use sim::client;
use sim::model::{MachineState, ProviderKind};
use sim::trace::Event;
use sim::{Fault, World, WorldSpec};
use tokio_tungstenite::tungstenite::Message;

fn default_world_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/worlds/default.toml")
}

async fn world() -> World {
    World::start(WorldSpec::load(&default_world_path()).unwrap())
        .await
        .unwrap()
}

struct Got {
    status: u16,
    body: serde_json::Value,
    text: String,
    events: Vec<Event>,
}

async fn get(w: &World, url: &str) -> Got {
    req(w, "GET", url, &[], Bytes::new()).await
}

async fn req(w: &World, method: &str, url: &str, headers: &[(&str, &str)], body: Bytes) -> Got {
    let h: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let resp = client::send(w.addrs.edge, method, url, &h, body)
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let id = resp.headers()["x-sim-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let events = w
        .trace()
        .wait_finished(&id, Duration::from_secs(5), |_| true)
        .await;
    Got {
        status,
        body: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        text,
        events,
    }
}

fn app_header<'a>(g: &'a Got, name: &str) -> Option<&'a str> {
    g.body["headers"]
        .as_array()?
        .iter()
        .find(|p| p[0] == name)
        .and_then(|p| p[1].as_str())
}

fn hops(g: &Got) -> Vec<&'static str> {
    let mut v: Vec<_> = g.events.iter().map(|e| e.hop()).collect();
    v.sort();
    v
}

fn router(g: &Got) -> &sim::trace::RouterEvent {
    g.events
        .iter()
        .find_map(|e| match e {
            Event::Router(r) => Some(r),
            _ => None,
        })
        .expect("router event")
}

#[tokio::test]
async fn docker_project_hostname_reaches_app_3000() {
    let w = world().await;
    let g = get(&w, "https://misha.iterate.town/hello?x=1").await;
    assert_eq!(g.status, 200, "{}", g.text);
    assert_eq!(g.body["app"]["machine"], "mach_123");
    assert_eq!(g.body["app"]["port"], 3000);
    assert_eq!(g.body["path"], "/hello");
    assert_eq!(g.body["query"], "x=1");
    assert_eq!(app_header(&g, "host"), Some("localhost:3000"));
    // The router reaches a Docker machine through its published host port (docker-proxy).
    let port = w.machine("mach_123").unwrap().host_addr().unwrap().port();
    assert_eq!(
        app_header(&g, "x-iterate-proxy-via"),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    assert_eq!(app_header(&g, "x-iterate-proxy-target-host"), None);
    assert_eq!(
        app_header(&g, "x-sim-trace-id"),
        None,
        "correlation header must be hidden"
    );
    assert_eq!(app_header(&g, "cf-connecting-ip"), Some("127.0.0.1"));
    assert_eq!(
        hops(&g),
        vec!["app", "edge", "machine", "provider", "router"]
    );
    let r = router(&g);
    assert_eq!(r.matched.as_deref(), Some("*.iterate.town"));
    assert_eq!(r.target_header.as_deref(), Some("misha.iterate.town"));
    assert_eq!(
        r.provider_url.as_deref(),
        Some(format!("http://127.0.0.1:{port}/hello?x=1").as_str())
    );
    assert_eq!(r.machine.as_ref().unwrap().state, "active");
    w.shutdown().await;
}

#[tokio::test]
async fn docker_machine_form_with_port_prefix() {
    let w = world().await;
    let g = get(&w, "https://4096__mach_123.machines.iterate.town/session").await;
    assert_eq!(g.status, 200, "{}", g.text);
    assert_eq!(g.body["app"]["port"], 4096);
    assert_eq!(app_header(&g, "host"), Some("localhost:4096"));
    let r = router(&g);
    let p = r.parsed.as_ref().unwrap();
    assert_eq!(
        (p.id.as_str(), p.target_port, p.root_domain.as_str()),
        ("mach_123", 4096, "iterate.town")
    );
    assert_eq!(
        r.target_header.as_deref(),
        Some("4096__mach_123.machines.iterate.town")
    );
}

#[tokio::test]
async fn fly_machine_through_fly_edge() {
    let w = world().await;
    let g = req(
        &w,
        "POST",
        "https://4096__mach_abc123.iterate.app/api?q=1",
        &[("content-type", "text/plain")],
        Bytes::from("hello"),
    )
    .await;
    assert_eq!(g.status, 200, "{}", g.text);
    assert_eq!(g.body["app"]["machine"], "mach_abc123");
    assert_eq!(g.body["app"]["port"], 4096);
    assert_eq!(g.body["method"], "POST");
    assert_eq!(g.body["body"]["bytes"], 5);
    assert_eq!(
        app_header(&g, "x-iterate-proxy-via"),
        Some("prd-mach-abc123.fly.dev")
    );
    assert_eq!(app_header(&g, "fly-region"), Some("iad"));
    assert_eq!(app_header(&g, "fly-forwarded-port"), Some("443"));
    assert_eq!(app_header(&g, "via"), Some("1.1 fly.io"));
    assert_eq!(
        router(&g).provider_url.as_deref(),
        Some("https://prd-mach-abc123.fly.dev/api?q=1")
    );
}

#[tokio::test]
async fn daytona_sandbox_through_preview_proxy() {
    let w = world().await;
    let g = get(
        &w,
        "https://3000__mach_01kh7nrrtkfap865vjbmv559ta.jonas2.dev.iterate.com/",
    )
    .await;
    assert_eq!(g.status, 200, "{}", g.text);
    assert_eq!(g.body["app"]["machine"], "mach_01kh7nrrtkfap865vjbmv559ta");
    assert_eq!(
        app_header(&g, "x-forwarded-host"),
        Some("8080-sb-banana-01.proxy.daytona.works")
    );
    assert_eq!(
        router(&g).provider_url.as_deref(),
        Some("https://8080-sb-banana-01.proxy.daytona.works/")
    );
}

#[tokio::test]
async fn every_v0_outcome_code() {
    let w = world().await;
    let cases: &[(&str, u16, &str)] = &[
        ("https://jonas.dev.iterate.com/", 404, "not_found"),
        (
            "https://misha.machines.iterate.town/",
            400,
            "invalid_hostname",
        ),
        ("https://__x.iterate.town/", 400, "invalid_port"),
        ("https://abc__proj.iterate.app/", 400, "invalid_port"),
        ("https://nosuch.iterate.app/", 404, "machine_not_found"),
        ("https://mach_zzz.iterate.app/", 404, "machine_not_found"),
        (
            "https://mach_stopped.iterate.town/",
            404,
            "machine_not_found",
        ),
        (
            "https://mach_starting.iterate.town/",
            404,
            "machine_not_found",
        ),
        ("https://sleepy.iterate.town/", 404, "machine_not_found"),
        ("https://noext.iterate.town/", 503, "machine_unavailable"),
        ("https://nomap.iterate.town/", 502, "proxy_error"),
        ("https://google.com/", 404, "edge_no_route"),
    ];
    for (url, status, code) in cases {
        let g = get(&w, url).await;
        assert_eq!(g.status, *status, "{url}: {}", g.text);
        assert_eq!(g.body["error"], *code, "{url}: {}", g.text);
    }
    let g = get(&w, "https://nomap.iterate.town/").await;
    assert_eq!(
        router(&g).error.as_deref(),
        Some("No host port mapped for 8080")
    );
}

#[tokio::test]
async fn empty_matchers_is_500_ingress_not_configured() {
    let text = std::fs::read_to_string(default_world_path())
        .unwrap()
        .replace(
            "PROJECT_INGRESS_PROXY_HOST_MATCHERS = \"*.local",
            "PROJECT_INGRESS_PROXY_HOST_MATCHERS = \" , \"\nX = \"*.local",
        );
    let text = text.replace("\nX = ", "\n# ");
    let spec = WorldSpec::parse(&text, Path::new("inline.toml")).unwrap();
    let w = World::start(spec).await.unwrap();
    let g = get(&w, "https://misha.iterate.town/").await;
    assert_eq!(
        (g.status, g.body["error"].as_str()),
        (500, Some("ingress_not_configured"))
    );
}

#[tokio::test]
async fn machine_proxy_errors_pass_through() {
    let w = world().await;
    // Nothing listens on 9999 on the machine: the machine proxy answers 502 itself.
    let g = get(&w, "https://9999__mach_123.machines.iterate.town/").await;
    assert_eq!(
        (g.status, g.body["error"].as_str()),
        (502, Some("proxy_error"))
    );
    let machine = g
        .events
        .iter()
        .find_map(|e| match e {
            Event::Machine(m) => Some(m),
            _ => None,
        })
        .unwrap();
    assert_eq!(machine.error.as_deref(), Some("proxy_error"));
    // /health is the machine proxy's own, on any hostname.
    let g = get(&w, "https://misha.iterate.town/health").await;
    assert_eq!((g.status, g.text.as_str()), (200, "OK"));
}

#[tokio::test]
async fn detached_routable_by_id_and_two_machines_share_port_3000() {
    let w = world().await;
    let g = get(&w, "https://mach_det.iterate.town/").await;
    assert_eq!(g.status, 200, "{}", g.text);
    assert_eq!(g.body["app"]["machine"], "mach_det");
    let g = get(&w, "https://org.iterate.town/").await;
    assert_eq!(g.body["app"]["machine"], "mach_org1");
    assert_eq!(g.body["app"]["port"], 3000);
}

#[tokio::test]
async fn ipv6_only_app_is_reached() {
    let w = world().await;
    let g = get(&w, "https://5173__misha.iterate.town/").await;
    assert_eq!(g.status, 200, "{}", g.text);
    assert_eq!(g.body["app"]["port"], 5173);
    let m = g
        .events
        .iter()
        .find_map(|e| match e {
            Event::Machine(m) => Some(m),
            _ => None,
        })
        .unwrap();
    assert_eq!(m.upstream.as_deref(), Some("[::1]:5173"));
}

#[tokio::test]
async fn websocket_through_each_provider() {
    let w = world().await;
    for url in [
        "wss://3001__mach_123.machines.iterate.town/ws",
        "wss://3001__mach_abc123.iterate.app/ws",
        "wss://3001__mach_01kh7nrrtkfap865vjbmv559ta.jonas2.dev.iterate.com/ws",
    ] {
        let (mut ws, resp) = client::websocket(
            w.addrs.edge,
            url,
            &[("origin".into(), "https://example.test".into())],
        )
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(resp.status(), 101);
        ws.send(Message::Text("ping".into())).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Text("echo:ping".into()),
            "{url}"
        );
        ws.send(Message::Binary(vec![0u8, 1, 2, 255].into()))
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Binary(vec![0u8, 1, 2, 255].into())
        );
        ws.close(None).await.unwrap();
    }
}

/// Switches a fault on, then asserts what one request gets (status and, if any, error code).
async fn after_fault(w: &World, f: Fault, url: &str, status: u16, error: Option<&str>) {
    w.apply_fault(&f).await.unwrap();
    let g = get(w, url).await;
    assert_eq!(
        (g.status, g.body["error"].as_str()),
        (status, error),
        "{f:?} then {url}: {}",
        g.text
    );
}

#[tokio::test]
async fn faults_change_outcomes() {
    let w = world().await;
    let fly = "https://my-proj.iterate.app/";
    let misha = "https://misha.iterate.town/";
    after_fault(
        &w,
        Fault::ProviderRefuses {
            provider: ProviderKind::Fly,
        },
        fly,
        502,
        Some("proxy_error"),
    )
    .await;
    after_fault(
        &w,
        Fault::ProviderHealthy {
            provider: ProviderKind::Fly,
        },
        fly,
        200,
        None,
    )
    .await;
    after_fault(
        &w,
        Fault::AppDown {
            machine: "mach_123".into(),
            port: 3000,
        },
        misha,
        502,
        Some("proxy_error"),
    )
    .await;
    after_fault(
        &w,
        Fault::AppUp {
            machine: "mach_123".into(),
            port: 3000,
        },
        misha,
        200,
        None,
    )
    .await;
    after_fault(
        &w,
        Fault::MachineState {
            machine: "mach_123".into(),
            state: MachineState::Stopped,
        },
        misha,
        404,
        Some("machine_not_found"),
    )
    .await;
    // The provider's own HTTP answer passes through (not an exception, so not proxy_error).
    after_fault(
        &w,
        Fault::ProviderStatus {
            provider: ProviderKind::Daytona,
            status: 503,
        },
        "https://banana.iterate.app/",
        503,
        None,
    )
    .await;
}

#[tokio::test]
async fn world_file_errors_are_clear() {
    let e = WorldSpec::parse("name = 1", Path::new("fixtures/worlds/bad.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("fixtures/worlds/bad.toml:1:8:"), "{e}");
    let e = WorldSpec::load(Path::new("no/such/world.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no/such/world.toml: cannot read world file"),
        "{e}"
    );
}
