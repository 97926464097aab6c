//! Router generations V4–V6 and the platform database as a hop, through the whole chain on real
//! loopback sockets (`fixtures/worlds/custom_domains.toml`): each generation's custom-domain
//! outcomes, the default port, the `db` events, the connection slots, and V6's per-isolate cache.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use sim::model::Generation;
use sim::runtime::WorldOptions;
use sim::trace::{DbEvent, Event};
use sim::{Fault, World, WorldSpec};

const ALICE: &str = "__Secure-better-auth.session_token=alice-session";
const BOB: &str = "__Secure-better-auth.session_token=bob-session";

fn spec() -> WorldSpec {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/worlds/custom_domains.toml");
    WorldSpec::load(&p).unwrap()
}

async fn world_with(spec: WorldSpec, g: Generation) -> World {
    let opts = WorldOptions {
        router: Some(g),
        ..WorldOptions::default()
    };
    World::start_opts(spec, opts).await.unwrap()
}

async fn world(g: Generation) -> World {
    world_with(spec(), g).await
}

struct Got {
    status: u16,
    body: serde_json::Value,
    location: Option<String>,
    events: Vec<Event>,
}

impl Got {
    fn error(&self) -> Option<&str> {
        self.body.get("error").and_then(|v| v.as_str())
    }
    fn app_port(&self) -> Option<u64> {
        self.body.pointer("/app/port").and_then(|v| v.as_u64())
    }
    fn queries(&self) -> Vec<&DbEvent> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Db(d) => Some(&**d),
                _ => None,
            })
            .collect()
    }
    fn query_names(&self) -> Vec<&str> {
        self.queries().iter().map(|d| d.query.as_str()).collect()
    }
    fn target_header(&self) -> Option<String> {
        self.events.iter().find_map(|e| match e {
            Event::Router(r) => r.target_header.clone(),
            _ => None,
        })
    }
}

async fn get(w: &World, url: &str, cookie: Option<&str>) -> Got {
    let mut h = vec![];
    if let Some(c) = cookie {
        h.push(("cookie".to_string(), c.to_string()));
    }
    let resp = sim::client::send(w.addrs.edge, "GET", url, &h, Bytes::new())
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
        events,
    }
}

#[tokio::test]
async fn v4_custom_domain_bugs() {
    let w = world(Generation::V4).await;
    // B1: the custom hostname verbatim → the machine proxy picks 3000.
    let g = get(&w, "https://opencode.templestein.com/", Some(ALICE)).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.app_port(), Some(3000));
    assert_eq!(
        g.target_header().as_deref(),
        Some("opencode.templestein.com")
    );
    // B4: the worker and the handler each scan every custom-domain project.
    assert_eq!(
        g.query_names(),
        [
            "getProjectsWithCustomDomain",
            "getProjectsWithCustomDomain",
            "getProjectWithMembership",
            "getActiveMachineForProject"
        ]
    );
    // B4: first match wins: example.com before a.example.com.
    let g = get(&w, "https://4096.a.example.com/", Some(ALICE)).await;
    assert_eq!((g.status, g.error()), (400, Some("invalid_subdomain")));
    // B4: even the control plane's host costs a query.
    let g = get(&w, "https://os.iterate.com/", None).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.query_names(), ["getProjectsWithCustomDomain"]);
    // B2: the exchange path on a custom domain → 404 not_found.
    let g = get(&w, "https://templestein.com/_/exchange-token?token=t", None).await;
    assert_eq!((g.status, g.error()), (404, Some("not_found")));
    // B3: the bridge gets the first label.
    let g = get(&w, "https://opencode.templestein.com/x", None).await;
    assert_eq!(g.status, 302);
    assert!(
        g.location
            .as_deref()
            .unwrap()
            .contains("?subdomain=opencode&path=%2Fx"),
        "{:?}",
        g.location
    );
    // V4 has no routable-state check on a custom machine target; invalid subdomains are 400.
    let g = get(&w, "https://mach_arch.templestein.com/", Some(ALICE)).await;
    assert_eq!(g.status, 200, "{:?}", g.body);
    let g = get(&w, "https://a.b.templestein.com/", Some(ALICE)).await;
    assert_eq!((g.status, g.error()), (400, Some("invalid_subdomain")));
    assert_eq!(
        g.body["details"],
        serde_json::json!({"hostname": "a.b.templestein.com"})
    );
    w.shutdown().await;
}

#[tokio::test]
async fn v5_custom_domain_fixes_and_default_port() {
    let w = world(Generation::V5).await;
    // B1 fixed: localhost:<port>.
    let g = get(&w, "https://opencode.templestein.com/", Some(ALICE)).await;
    assert_eq!((g.status, g.app_port()), (200, Some(4096)));
    assert_eq!(g.target_header().as_deref(), Some("localhost:4096"));
    // B4 fixed: one query, the longest match; none for the control plane's host.
    assert_eq!(g.query_names()[0], "getProjectByCustomDomain");
    let g = get(&w, "https://4096.a.example.com/", Some(ALICE)).await;
    assert_eq!((g.status, g.app_port()), (200, Some(4096)));
    let g = get(&w, "https://os.iterate.com/", None).await;
    assert_eq!(g.status, 200);
    assert!(g.queries().is_empty());
    // O2: 3000.<cd> is implicit: defaultPort 8000 wins; an explicit port does not give way.
    let g = get(&w, "https://3000.templestein.com/", Some(ALICE)).await;
    assert_eq!(g.app_port(), Some(8000));
    let g = get(&w, "https://portly.iterate.app/", Some(ALICE)).await;
    assert_eq!(g.app_port(), Some(8000));
    assert_eq!(g.target_header().as_deref(), Some("localhost:8000"));
    let g = get(&w, "https://3000__portly.iterate.app/", Some(ALICE)).await;
    assert_eq!(g.app_port(), Some(3000));
    assert_eq!(
        g.target_header().as_deref(),
        Some("3000__portly.iterate.app")
    );
    // O3: a machine of another project of the organization, through the custom domain.
    let g = get(&w, "https://mach_9.templestein.com/", Some(ALICE)).await;
    assert_eq!(g.status, 200);
    // The custom machine target now has V1's routable-state check, and the membership one.
    let g = get(&w, "https://mach_arch.templestein.com/", Some(ALICE)).await;
    assert_eq!((g.status, g.error()), (409, Some("machine_not_routable")));
    let g = get(&w, "https://opencode.templestein.com/", Some(BOB)).await;
    assert_eq!((g.status, g.error()), (403, Some("forbidden")));
    // B3 fixed.
    let g = get(&w, "https://opencode.templestein.com/x", None).await;
    assert_eq!(
        g.location.as_deref(),
        Some(
            "https://os.iterate.com/api/project-ingress-proxy-auth/bridge-start?projectIngressProxyHost=opencode.templestein.com&path=%2Fx"
        )
    );
    // B2 fixed: the control plane's exchange answers.
    let g = get(&w, "https://templestein.com/_/exchange-token?token=t", None).await;
    assert_eq!(g.status, 400);
    assert_eq!(g.body["message"], "Invalid one-time token");
    w.shutdown().await;
}

#[tokio::test]
async fn the_custom_domain_query_follows_postgres_like() {
    let w = world(Generation::V5).await;
    // `_` in my_site.example matches any character: a.myxsite.example is taken as that project's.
    let g = get(&w, "https://a.myxsite.example/", Some(ALICE)).await;
    assert_eq!((g.status, g.error()), (400, Some("not_custom_domain")));
    let q = &g.queries()[0];
    assert_eq!(q.params, ["a.myxsite.example"]);
    assert_eq!(q.rows, ["project under customDomain=my_site.example"]);
    assert!(q.sql.contains("LIKE '%.' || custom_domain"), "{}", q.sql);
    w.shutdown().await;
}

#[tokio::test]
async fn slots_run_out_and_the_worker_answers_500() {
    let w = world(Generation::V5).await;
    w.apply_fault(&Fault::DbSlots {
        max_connections: 3,
        reserved: 3,
    })
    .await
    .unwrap();
    let g = get(&w, "https://misha.iterate.app/", Some(ALICE)).await;
    assert_eq!(g.status, 500);
    assert_eq!(g.body, "Internal Server Error");
    let q = &g.queries()[0];
    assert_eq!(
        q.error.as_deref(),
        Some("remaining connection slots are reserved for superuser connections")
    );
    w.apply_fault(&Fault::DbSlots {
        max_connections: 100,
        reserved: 3,
    })
    .await
    .unwrap();
    w.apply_fault(&Fault::DbDown).await.unwrap();
    let g = get(&w, "https://templestein.com/", Some(ALICE)).await;
    assert_eq!(g.status, 500);
    w.apply_fault(&Fault::DbUp).await.unwrap();
    let g = get(&w, "https://misha.iterate.app/", Some(ALICE)).await;
    assert_eq!(g.status, 200);
    w.shutdown().await;
}

async fn burst(w: &World, n: usize, url: &str) -> BTreeMap<u16, usize> {
    let sends = (0..n).map(|_| get(w, url, Some(ALICE)));
    let mut out = BTreeMap::new();
    for g in futures_util::future::join_all(sends).await {
        *out.entry(g.status).or_default() += 1;
    }
    out
}

#[tokio::test]
async fn v6_cache_contract() {
    let w = world(Generation::V6).await;
    let url = "https://misha.iterate.app/api/health";
    let g = get(&w, url, Some(ALICE)).await;
    assert_eq!(g.status, 200);
    // A database that fails from the second query on still serves the rest.
    w.apply_fault(&Fault::DbDown).await.unwrap();
    let statuses = burst(&w, 100, url).await;
    assert_eq!(statuses, BTreeMap::from([(200, 100)]));
    let stats = w.db().stats();
    assert_eq!(stats.queries.get("getProjectWithMembership"), Some(&1));
    assert_eq!(stats.queries.get("getActiveMachineForProject"), Some(&1));
    w.apply_fault(&Fault::DbUp).await.unwrap();
    // Starting machines are never cached.
    for _ in 0..2 {
        assert_eq!(
            get(&w, "https://mach_start.iterate.app/", Some(ALICE))
                .await
                .status,
            200
        );
    }
    assert_eq!(
        w.db().stats().queries.get("getMachineWithMembership"),
        Some(&2)
    );
    // The TTL runs on the world's clock.
    let g = get(&w, url, Some(ALICE)).await;
    assert!(g.queries().is_empty());
    w.apply_fault(&Fault::Clock { advance_s: 30 })
        .await
        .unwrap();
    let g = get(&w, url, Some(ALICE)).await;
    assert_eq!(g.queries().len(), 2, "expired after 30 s");
    w.shutdown().await;
}

#[tokio::test]
async fn v6_isolates_have_their_own_caches() {
    let mut s = spec();
    s.os.isolates = 2;
    let w = world_with(s, Generation::V6).await;
    let url = "https://misha.iterate.app/";
    let mut queried = Vec::new();
    for _ in 0..4 {
        let g = get(&w, url, Some(ALICE)).await;
        assert_eq!(g.status, 200);
        queried.push(g.queries().len());
    }
    // Round robin: isolate 1, 2, 1, 2: each looks up once.
    assert_eq!(queried, [2, 2, 0, 0]);
    w.shutdown().await;
}

#[tokio::test]
async fn v5_bursts_exhaust_slots_and_v6_does_not() {
    for (g, want_ok) in [(Generation::V5, false), (Generation::V6, true)] {
        let w = world(g).await;
        w.apply_fault(&Fault::DbSlots {
            max_connections: 4,
            reserved: 3,
        })
        .await
        .unwrap();
        w.apply_fault(&Fault::DbLatency { ms: 300 }).await.unwrap();
        let statuses = burst(&w, 10, "https://misha.iterate.app/").await;
        if want_ok {
            assert_eq!(statuses, BTreeMap::from([(200, 10)]), "{g}");
        } else {
            assert!(
                statuses.get(&500).is_some_and(|n| *n > 0),
                "{g}: {statuses:?}"
            );
        }
        assert_eq!(w.db().stats().slots_high_water, 1);
        w.shutdown().await;
    }
}
