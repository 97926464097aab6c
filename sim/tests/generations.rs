//! Router generations V1–V3 and the control plane, through the whole chain on real loopback
//! sockets (the platform world of `fixtures/worlds/platform.toml`): each generation's outcome
//! codes, the worker's routing, and the control plane's endpoints (bridge-start in both versions,
//! the exchange in both versions, sign-in, `/api/auth/*`).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use sim::model::{Exchange, Generation};
use sim::runtime::WorldOptions;
use sim::trace::Event;
use sim::{Fault, World, WorldSpec};

const ALICE: &str = "__Secure-better-auth.session_token=alice-session";
const BOB: &str = "__Secure-better-auth.session_token=bob-session";
const ROOT: &str = "__Secure-better-auth.session_token=root-session";

fn spec() -> WorldSpec {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/worlds/platform.toml");
    WorldSpec::load(&p).unwrap()
}

async fn world(g: Generation) -> World {
    world_with(spec(), g).await
}

async fn world_with(spec: WorldSpec, g: Generation) -> World {
    let opts = WorldOptions {
        router: Some(g),
        ..WorldOptions::default()
    };
    World::start_opts(spec, opts).await.unwrap()
}

struct Got {
    status: u16,
    body: serde_json::Value,
    location: Option<String>,
    set_cookie: Vec<String>,
    events: Vec<Event>,
}

impl Got {
    fn error(&self) -> Option<&str> {
        self.body.get("error").and_then(|v| v.as_str())
    }
}

async fn get(w: &World, url: &str, cookie: Option<&str>) -> Got {
    let mut h = vec![];
    if let Some(c) = cookie {
        h.push(("cookie".to_string(), c.to_string()));
    }
    send(w, "GET", url, h, Bytes::new()).await
}

async fn send(w: &World, method: &str, url: &str, h: Vec<(String, String)>, body: Bytes) -> Got {
    let resp = sim::client::send(w.addrs.edge, method, url, &h, body)
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let id = resp.headers()["x-sim-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    let set_cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    let events = w
        .trace()
        .wait_finished(&id, Duration::from_secs(5), |_| true)
        .await;
    Got {
        status,
        body,
        location,
        set_cookie,
        events,
    }
}

fn app_port(g: &Got) -> Option<u64> {
    g.body.pointer("/app/port").and_then(|v| v.as_u64())
}

#[tokio::test]
async fn v1_outcome_codes() {
    let w = world(Generation::V1).await;
    // 401 before parsing; details name the matcher.
    let g = get(&w, "https://org.iterate.app/", None).await;
    assert_eq!((g.status, g.error()), (401, Some("unauthorized")));
    assert_eq!(g.body["details"]["matchedHostMatcher"], "*.iterate.app");
    let cases: &[(&str, &str, u16, Option<&str>)] = &[
        (
            "https://org.iterate.app/",
            ALICE,
            400,
            Some("invalid_project_slug"),
        ),
        (
            "https://0__misha.iterate.app/",
            ALICE,
            400,
            Some("invalid_port"),
        ),
        (
            "https://nosuch.iterate.app/",
            ALICE,
            404,
            Some("project_not_found"),
        ),
        ("https://misha.iterate.app/", BOB, 403, Some("forbidden")),
        ("https://misha.iterate.app/", ROOT, 200, None),
        ("https://misha.iterate.app/", ALICE, 200, None),
        (
            "https://idle.iterate.app/",
            ALICE,
            404,
            Some("machine_not_found"),
        ),
        (
            "https://mach_zzz.iterate.app/",
            ALICE,
            404,
            Some("machine_not_found"),
        ),
        (
            "https://mach_arch.iterate.app/",
            ALICE,
            409,
            Some("machine_not_routable"),
        ),
        (
            "https://mach_arch.iterate.app/",
            BOB,
            403,
            Some("forbidden"),
        ),
        (
            "https://mach_noext.iterate.app/",
            ALICE,
            503,
            Some("machine_unavailable"),
        ),
        ("https://mach_start.iterate.app/", ALICE, 200, None),
        (
            "https://example.iterate.com/",
            ALICE,
            404,
            Some("edge_no_route"),
        ),
    ];
    for (url, cookie, status, code) in cases {
        let g = get(&w, url, Some(cookie)).await;
        assert_eq!((g.status, g.error()), (*status, *code), "{url} as {cookie}");
    }
    // O8: the 403 on a machine shows its state.
    let g = get(&w, "https://mach_arch.iterate.app/", Some(BOB)).await;
    assert_eq!(g.body["details"]["resolution"]["machineState"], "archived");
    // The target header is the request hostname.
    let g = get(&w, "https://4096__misha.iterate.town/", Some(ALICE)).await;
    assert_eq!(app_port(&g), Some(4096));
    // O5: X-Forwarded-Host decides.
    let h = vec![
        (
            "x-forwarded-host".to_string(),
            "4096__misha.iterate.app".to_string(),
        ),
        ("cookie".to_string(), ALICE.to_string()),
    ];
    let g = send(&w, "GET", "https://os.iterate.com/", h, Bytes::new()).await;
    assert_eq!(app_port(&g), Some(4096));
    // A proxy error names the machine.
    w.apply_fault(&Fault::DockerNoPortMapping {
        machine: "mach_1".into(),
    })
    .await
    .unwrap();
    let g = get(&w, "https://misha.iterate.app/", Some(ALICE)).await;
    assert_eq!((g.status, g.error()), (502, Some("proxy_error")));
    assert_eq!(g.body["details"]["resolution"]["machineId"], "mach_1");
    assert_eq!(
        g.body["details"]["proxyError"],
        "No host port mapped for 8080"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn v2_canonical_host_and_bridge() {
    let w = world(Generation::V2).await;
    // 301 before auth, for every method (O6), nested labels dropped (O7).
    let g = send(
        &w,
        "POST",
        "https://4096__mach_1.foo.iterate.app/api?x=1",
        vec![],
        Bytes::from_static(b"hi"),
    )
    .await;
    assert_eq!(g.status, 301);
    assert_eq!(
        g.location.as_deref(),
        Some("https://4096__mach_1.iterate.town/api?x=1")
    );
    // No session: sign in, with bridge-start as the redirect.
    let g = get(&w, "https://misha.iterate.town/console?tab=logs", None).await;
    assert_eq!(g.status, 302);
    assert_eq!(
        g.location.as_deref(),
        Some(
            "https://os.iterate.com/login?redirectUrl=%2Fapi%2Fproject-ingress-proxy-auth%2Fbridge-start%3FprojectIngressProxyHost%3Dmisha.iterate.town%26redirectPath%3D%252Fconsole%253Ftab%253Dlogs"
        )
    );
    // /login and /api/auth/* pass to the control plane.
    let g = get(&w, "https://misha.iterate.town/api/auth/get-session", None).await;
    assert_eq!((g.status, &g.body), (200, &serde_json::Value::Null));
    let cp = g
        .events
        .iter()
        .any(|e| matches!(e, Event::ControlPlane(c) if c.route == "/api/auth/*"));
    assert!(cp, "the control plane answered");
    // A session on the canonical host is proxied.
    let g = get(&w, "https://misha.iterate.town/", Some(ALICE)).await;
    assert_eq!(app_port(&g), Some(3000));
    // W2 bridge-start: its errors, and the exchange URL.
    let bs = "https://os.iterate.com/api/project-ingress-proxy-auth/bridge-start";
    let g = get(&w, bs, Some(ALICE)).await;
    assert_eq!(
        (g.status, g.error()),
        (400, Some("Missing projectIngressProxyHost"))
    );
    let g = get(
        &w,
        &format!("{bs}?projectIngressProxyHost=x.example.com"),
        Some(ALICE),
    )
    .await;
    assert_eq!(
        (g.status, g.error()),
        (400, Some("Invalid projectIngressProxyHost"))
    );
    let g = get(
        &w,
        &format!("{bs}?projectIngressProxyHost=misha.iterate.app&redirectPath=%2F%2Fevil.com"),
        Some(ALICE),
    )
    .await;
    assert_eq!(g.status, 302);
    assert_eq!(
        g.location.as_deref(),
        Some(
            "https://misha.iterate.town/api/auth/project-ingress-proxy/one-time-token/exchange?token=ott-0001&redirectPath=%2F"
        )
    );
    // The exchange (earlier version, crossSubDomainCookies by default in V2: O10).
    let g = get(
        &w,
        "https://misha.iterate.town/api/auth/project-ingress-proxy/one-time-token/exchange?token=ott-0001&redirectPath=%2F",
        None,
    )
    .await;
    assert_eq!((g.status, g.location.as_deref()), (302, Some("/")));
    assert!(
        g.set_cookie[0].ends_with("; Domain=os.iterate.com"),
        "{:?}",
        g.set_cookie
    );
    w.shutdown().await;
}

#[tokio::test]
async fn v3_domain_bridge_and_exchange() {
    let w = world(Generation::V3).await;
    let g = get(&w, "https://misha.iterate.app/console?tab=logs", None).await;
    assert_eq!(
        (g.status, g.location.as_deref()),
        (
            302,
            Some(
                "https://os.iterate.com/api/project-ingress-proxy-auth/bridge-start?subdomain=misha&path=%2Fconsole%3Ftab%3Dlogs"
            )
        )
    );
    // Parse before the session: 400 without one.
    let g = get(&w, "https://org.iterate.app/", None).await;
    assert_eq!((g.status, g.error()), (400, Some("invalid_project_slug")));
    // Not under the domain: the control plane's app.
    let g = get(&w, "https://misha.iterate.town/", Some(ALICE)).await;
    assert_eq!(g.body["app"], "control-plane");
    // The canonical check comes before the exchange pass-through.
    let g = get(
        &w,
        "https://x.misha.iterate.app/_/exchange-token?token=t",
        None,
    )
    .await;
    assert_eq!(
        (g.status, g.location.as_deref()),
        (301, Some("https://x.iterate.app/_/exchange-token?token=t"))
    );
    // W5 bridge-start.
    let bs = "https://os.iterate.com/api/project-ingress-proxy-auth/bridge-start";
    for (q, want) in [
        ("", "Missing projectIngressProxyHost or subdomain"),
        ("?subdomain=a.b", "Invalid subdomain"),
        ("?subdomain=", "Invalid subdomain"),
        (
            "?projectIngressProxyHost=org.iterate.app",
            "Invalid projectIngressProxyHost",
        ),
    ] {
        let g = get(&w, &format!("{bs}{q}"), Some(ALICE)).await;
        assert_eq!((g.status, g.error()), (400, Some(want)), "{q}");
    }
    let g = get(
        &w,
        &format!("{bs}?subdomain=misha&path=https%3A%2F%2Fevil.com%2Fx"),
        None,
    )
    .await;
    assert_eq!(
        g.location.as_deref(),
        Some(
            "https://os.iterate.com/login?redirectUrl=%2Fapi%2Fproject-ingress-proxy-auth%2Fbridge-start%3FprojectIngressProxyHost%3Dmisha.iterate.app%26path%3D%252F"
        )
    );
    let g = get(
        &w,
        &format!("{bs}?subdomain=misha&path=%2Fconsole"),
        Some(ALICE),
    )
    .await;
    assert_eq!(
        g.location.as_deref(),
        Some("https://misha.iterate.app/_/exchange-token?token=ott-0001&redirectPath=%2Fconsole")
    );
    // /_/exchange-token: one use (DELETE … RETURNING in V3), the cookie without a Domain.
    let ex = "https://misha.iterate.app/_/exchange-token?token=ott-0001&redirectPath=%2Fconsole";
    let g = get(&w, ex, None).await;
    assert_eq!((g.status, g.location.as_deref()), (302, Some("/console")));
    assert_eq!(
        g.set_cookie,
        [
            "__Secure-better-auth.session_token=alice-session; Max-Age=604800; Path=/; HttpOnly; SameSite=Lax; Secure"
        ]
    );
    let g = get(&w, ex, None).await;
    assert_eq!(
        (g.status, &g.body["message"]),
        (400, &"Invalid one-time token".into())
    );
    // The cookie it set lets the browser in.
    let g = get(&w, "https://misha.iterate.app/console", Some(ALICE)).await;
    assert_eq!(app_port(&g), Some(3000));
    w.shutdown().await;
}

#[tokio::test]
async fn sign_in_and_session_endpoints() {
    let w = world(Generation::V3).await;
    let g = get(&w, "https://os.iterate.com/login?redirectUrl=%2Fx", None).await;
    assert_eq!(g.status, 200);
    assert!(g.body.as_str().unwrap().contains("name=\"userId\""));
    let form = |user: &str, to: &str| {
        let h = vec![(
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        )];
        let body = format!("userId={user}&redirectUrl={to}");
        (h, Bytes::from(body))
    };
    let (h, b) = form("nobody", "%2F");
    let g = send(&w, "POST", "https://os.iterate.com/login", h, b).await;
    assert_eq!(g.status, 401);
    let (h, b) = form("alice", "https%3A%2F%2Fevil.com%2F");
    let g = send(&w, "POST", "https://os.iterate.com/login", h, b).await;
    assert_eq!((g.status, g.location.as_deref()), (302, Some("/")));
    let token = g.set_cookie[0]
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string();
    assert_eq!(token, "sess-0001");
    let cookie = format!("__Secure-better-auth.session_token={token}");
    let g = get(
        &w,
        "https://os.iterate.com/api/auth/get-session",
        Some(&cookie),
    )
    .await;
    assert_eq!(g.body["user"]["id"], "alice");
    let g = get(&w, "https://os.iterate.com/api/auth/nothing", Some(&cookie)).await;
    assert_eq!(g.status, 404);
    // Signed in: /login sends the user on.
    let g = get(
        &w,
        "https://os.iterate.com/login?redirectUrl=%2Fhome",
        Some(&cookie),
    )
    .await;
    assert_eq!((g.status, g.location.as_deref()), (302, Some("/home")));
    w.shutdown().await;
}

/// The token's expiry follows the world's clock; the earlier exchange says so in its own words.
#[tokio::test]
async fn expiry_by_the_world_clock_in_both_versions() {
    for (exchange, message) in [
        (Exchange::FindDeleteCheck, "One-time token expired"),
        (Exchange::DeleteReturning, "Invalid one-time token"),
    ] {
        let mut s = spec();
        s.auth.exchange = Some(exchange);
        s.auth.db_latency_ms = 0;
        let w = world_with(s, Generation::V3).await;
        let bs =
            "https://os.iterate.com/api/project-ingress-proxy-auth/bridge-start?subdomain=misha";
        assert_eq!(get(&w, bs, Some(ALICE)).await.status, 302);
        w.apply_fault(&Fault::Clock { advance_s: 180 })
            .await
            .unwrap();
        let ex = "https://misha.iterate.app/_/exchange-token?token=ott-0001";
        assert_eq!(
            get(&w, ex, None).await.status,
            302,
            "{exchange:?}: at 180 s it holds"
        );
        assert_eq!(get(&w, bs, Some(ALICE)).await.status, 302);
        w.apply_fault(&Fault::Clock { advance_s: 181 })
            .await
            .unwrap();
        let g = get(
            &w,
            "https://misha.iterate.app/_/exchange-token?token=ott-0002",
            None,
        )
        .await;
        assert_eq!(
            (g.status, &g.body["message"]),
            (400, &message.into()),
            "{exchange:?}"
        );
        w.shutdown().await;
    }
}

/// B10: two concurrent exchanges of one token.
#[tokio::test]
async fn exchange_race() {
    for (exchange, winners) in [
        (Exchange::FindDeleteCheck, 2),
        (Exchange::DeleteReturning, 1),
    ] {
        let mut s = spec();
        s.auth.exchange = Some(exchange);
        s.auth.db_latency_ms = 200;
        let w = world_with(s, Generation::V3).await;
        let bs =
            "https://os.iterate.com/api/project-ingress-proxy-auth/bridge-start?subdomain=misha";
        assert_eq!(get(&w, bs, Some(ALICE)).await.status, 302);
        let ex = "https://misha.iterate.app/_/exchange-token?token=ott-0001";
        let (a, b) = tokio::join!(get(&w, ex, None), get(&w, ex, None));
        let ok = [a.status, b.status].iter().filter(|s| **s == 302).count();
        assert_eq!(ok, winners, "{exchange:?}: {} {}", a.status, b.status);
        w.shutdown().await;
    }
}

#[test]
fn unknown_generation_lists_the_known_ones() {
    let e = "v9".parse::<Generation>().unwrap_err();
    assert_eq!(
        e,
        "unknown router generation \"v9\": the known ones are v0, v1, v2, v3, v4, v5, v6"
    );
}

#[test]
fn world_env_is_validated() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/worlds/platform.toml"),
    )
    .unwrap();
    let bad = text.replace(
        "PROJECT_INGRESS_DOMAIN = \"iterate.app\"",
        "PROJECT_INGRESS_DOMAIN = \"*.iterate.app\"",
    );
    let e = WorldSpec::parse(&bad, Path::new("w.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("PROJECT_INGRESS_DOMAIN is required and must be a hostname (no wildcard, scheme, port, or path)."), "{e}");
    let bad = text.replace("https://os.iterate.com", "ftp://os.iterate.com");
    let e = WorldSpec::parse(&bad, Path::new("w.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Unsupported VITE_PUBLIC_URL protocol: ftp:"),
        "{e}"
    );
    let bad = text.replace(
        "user = \"bob\"\norganization",
        "user = \"carol\"\norganization",
    );
    let e = WorldSpec::parse(&bad, Path::new("w.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("memberships[1].user: unknown user \"carol\""),
        "{e}"
    );
}
