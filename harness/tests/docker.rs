//! The docker backend against a real engine: every scenario that reaches a Docker machine, with
//! that machine a real container of the machine image, compared with the in-process snapshots;
//! the router's Docker client on the real Engine API socket; cleanup of crashed and interrupted
//! runs. Where no engine answers, each test says so in one line and passes without running.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use harness::docker::{
    ContainerMachine, OWNER_LABEL, containers_labelled, engine_socket, owner_of, sweep,
};
use harness::{DockerEnv, Layout, check_snapshots, discover, run_all_in};
use http::Method;
use serde_json::json;
use sim::machine::RemoteMachine;
use sim::providers::docker::{EngineEndpoint, engine_call, host_port_8080};

/// The engine's socket, or `None` after printing why the test is skipped.
async fn engine() -> Option<PathBuf> {
    match engine_socket().await {
        Ok(s) => Some(s),
        Err(e) => {
            println!("skipped: no Docker engine answers ({e})");
            None
        }
    }
}

/// Builds the machine image of this tree once per test binary (`cargo xtask image`).
fn image() -> String {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["xtask", "image"])
            .current_dir(Layout::from_manifest().fixtures.join(".."))
            .output()
            .expect("running cargo xtask image");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "cargo xtask image failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("image:"))
            .and_then(|l| l.split_whitespace().next())
            .expect("cargo xtask image printed no tag")
            .to_string()
    })
    .clone()
}

async fn env() -> Option<DockerEnv> {
    engine().await?;
    let tag = tokio::task::spawn_blocking(image)
        .await
        .expect("image build");
    Some(
        DockerEnv::prepare_with(Some(tag))
            .await
            .expect("docker env"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_backend_matches_the_in_process_snapshots() {
    let Some(env) = env().await else { return };
    let layout = Layout::from_manifest();
    let found = discover(&layout).unwrap();
    let total = found.len();
    let runs = run_all_in(&layout, found, Some(env), 4).await;
    let mut ran = 0;
    let mut failures = Vec::new();
    for run in &runs {
        if run.skipped.is_some() {
            continue;
        }
        ran += 1;
        let mut f = run.failures.clone();
        f.extend(check_snapshots(&layout, run));
        for x in f {
            failures.push(format!("{}: {x}", run.found.id));
        }
    }
    println!("docker backend: {ran} of {total} scenarios reach a Docker machine and ran");
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every scenario under containers/ and every docker_* one reaches a Docker machine.
    for id in [
        "containers/paused",
        "providers/docker_post_body",
        "websocket/docker_echo",
    ] {
        assert!(
            runs.iter().any(|r| r.found.id == id && r.skipped.is_none()),
            "{id} did not run with the docker backend"
        );
    }
    assert!(ran >= 40, "only {ran} scenarios ran in containers");
}

fn machine_spec(id: &str) -> sim::model::MachineSpec {
    serde_json::from_value(json!({
        "id": id, "project": "p", "state": "active", "provider": "docker",
        "external_id": id, "apps": [{"port": 3000, "kind": "echo"}],
    }))
    .unwrap()
}

/// The router's Docker client, pointed straight at the real Engine API socket, finds the host
/// port testcontainers published for the container's 8080.
#[tokio::test]
async fn docker_client_reads_the_published_port_from_the_real_engine() {
    let Some(env) = env().await else { return };
    let trace = Arc::new(sim::TraceStore::default());
    let m = ContainerMachine::start(
        &env.socket,
        &env.image,
        &machine_spec("mach_c"),
        trace.clone(),
    )
    .await
    .unwrap();
    let port = host_port_8080(
        &sim::net::SimNetwork::default(),
        &EngineEndpoint::Unix(env.socket.clone()),
        &m.name,
        "mach_c",
        Some((&trace, "t1")),
    )
    .await;
    let expected = m.proxy_addr().port();
    let missing = host_port_8080(
        &sim::net::SimNetwork::default(),
        &EngineEndpoint::Unix(env.socket.clone()),
        "ingress-sim-no-such-container",
        "mach_c",
        None,
    )
    .await;
    m.shutdown().await;
    assert_eq!(port, Ok(expected));
    assert!(matches!(
        missing,
        Err(sim::providers::docker::DockerError::NoSuchContainer(_))
    ));
    let evs = trace.events("t1");
    assert_eq!(evs.len(), 1, "{evs:?}");
    let sim::Event::Provider(p) = &evs[0] else {
        panic!("{evs:?}")
    };
    assert_eq!(p.status, Some(200));
    assert!(
        p.decision.ends_with(&format!(":{expected}")),
        "{}",
        p.decision
    );
}

/// Ids of our containers whose owner label is `owner`.
async fn containers_owned_by(socket: &std::path::Path, owner: &str) -> Vec<String> {
    containers_labelled(socket, &format!("{OWNER_LABEL}={owner}"))
        .await
        .unwrap()
        .iter()
        .filter_map(|c| c["Id"].as_str().map(str::to_string))
        .collect()
}

/// A container left by a run whose process is gone is removed by the next run; one whose owner
/// is alive is left alone.
#[tokio::test]
async fn sweep_removes_containers_of_dead_runs_only() {
    let Some(env) = env().await else { return };
    // Above Linux's pid_max (4194304): no such process can exist.
    let dead = owner_of(4_194_305);
    let alive = owner_of(std::process::id());
    let mut ids = Vec::new();
    for owner in [&dead, &alive] {
        let (s, body) = engine_call(
            &env.socket,
            Method::POST,
            "/containers/create",
            Some(json!({"Image": env.image, "Labels": {OWNER_LABEL: owner}})),
        )
        .await
        .unwrap();
        assert_eq!(s, 201, "{}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        ids.push(v["Id"].as_str().unwrap().to_string());
    }
    let removed = sweep(&env.socket).await.unwrap();
    let dead_left = containers_owned_by(&env.socket, &dead).await;
    let alive_left = containers_owned_by(&env.socket, &alive).await;
    let _ = engine_call(
        &env.socket,
        Method::DELETE,
        &format!("/containers/{}?force=1", ids[1]),
        None,
    )
    .await;
    assert!(removed >= 1);
    assert!(dead_left.is_empty(), "a dead run's container survived");
    assert!(
        alive_left.contains(&ids[1]),
        "a live run's container was removed"
    );
}

/// Ctrl-C in the middle of a docker run removes its containers (testcontainers' watchdog).
#[tokio::test]
async fn interrupted_run_removes_its_containers() {
    let Some(env) = env().await else { return };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_e2e"))
        .args(["--backend", "docker", "containers/paused"])
        .env("INGRESS_MACHINE_IMAGE", &env.image)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let owner = owner_of(child.id().unwrap());
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    while containers_owned_by(&env.socket, &owner).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < end,
            "the run started no container"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGINT) };
    let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = containers_owned_by(&env.socket, &owner).await;
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "containers left after Ctrl-C: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
