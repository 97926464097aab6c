//! The scenario harness: discovers `fixtures/scenarios/**/*.toml`, runs each in a fresh world
//! (in parallel), checks explicit expectations, and compares every step's trace with its insta
//! snapshot under `fixtures/snapshots/`. One runner, two entry points: `cargo xtask e2e` (the `e2e`
//! binary) and `cargo test` (the `e2e` test target).

pub mod cli;
pub mod docker;
pub mod expect;
pub mod junit;
pub mod progress;
pub mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sim::scenario::Scenario;
use sim::{World, WorldSpec};

/// Where the fixtures are.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The fixtures directory (holding `worlds/`, `scenarios/`, `snapshots/`).
    pub fixtures: PathBuf,
}

impl Layout {
    /// The workspace's `fixtures/`, found from this crate's location.
    pub fn from_manifest() -> Layout {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        Layout {
            fixtures: here.parent().unwrap_or(here).join("fixtures"),
        }
    }
    pub fn with_fixtures(fixtures: PathBuf) -> Layout {
        Layout { fixtures }
    }
    pub fn scenarios(&self) -> PathBuf {
        self.fixtures.join("scenarios")
    }
    pub fn worlds(&self) -> PathBuf {
        self.fixtures.join("worlds")
    }
    pub fn snapshots(&self) -> PathBuf {
        self.fixtures.join("snapshots")
    }
}

/// How worlds run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Every hop in this process on loopback.
    InProcess,
    /// Docker-provider machines as real containers (the machine image, a real engine); the
    /// rest of the chain in this process. Scenarios that reach no Docker machine are skipped.
    Docker,
}

/// A scenario found on disk: `id` is its path under `fixtures/scenarios` without `.toml`; a
/// scenario that lists `generations` is found once per generation, as `<path>@<generation>`.
#[derive(Debug, Clone)]
pub struct Found {
    pub id: String,
    pub path: PathBuf,
}

/// Every `*.toml` under the scenarios directory, sorted by id.
pub fn discover(layout: &Layout) -> std::io::Result<Vec<Found>> {
    let base = layout.scenarios();
    let mut out = Vec::new();
    let mut stack = vec![base.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "toml") {
                let rel = p.strip_prefix(&base).unwrap_or(&p).with_extension("");
                let id = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                // A scenario that does not load is found once; running it reports the error.
                let generations = Scenario::load(&p)
                    .map(|s| s.generations)
                    .unwrap_or_default();
                if generations.is_empty() {
                    out.push(Found { id, path: p });
                } else {
                    for g in generations {
                        out.push(Found {
                            id: format!("{id}@{g}"),
                            path: p.clone(),
                        });
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Keeps scenarios whose id contains any of the filters (all when there are none).
pub fn filter(found: Vec<Found>, filters: &[String]) -> Vec<Found> {
    if filters.is_empty() {
        return found;
    }
    found
        .into_iter()
        .filter(|f| filters.iter().any(|q| f.id.contains(q.as_str())))
        .collect()
}

/// One step's outcome before snapshot comparison.
#[derive(Debug, Clone)]
pub struct StepRun {
    pub snapshot_name: String,
    pub value: serde_json::Value,
    /// When each hop recorded its decision and how long the step took (for diagrams; never in
    /// snapshots).
    pub timing: Option<sim::diagram::Timing>,
}

/// One scenario's outcome.
#[derive(Debug, Clone)]
pub struct ScenarioRun {
    pub found: Found,
    pub description: String,
    pub steps: Vec<StepRun>,
    pub failures: Vec<String>,
    pub duration: Duration,
    /// Why the scenario did not run with this backend (it is not a failure).
    pub skipped: Option<String>,
    /// The scenario could not be run at all (its file or world does not load, the world does not
    /// start, the task panicked): an error rather than a failed check.
    pub errored: bool,
}

impl ScenarioRun {
    fn failed(found: Found, msg: String, duration: Duration) -> ScenarioRun {
        ScenarioRun {
            found,
            description: String::new(),
            steps: vec![],
            failures: vec![msg],
            duration,
            skipped: None,
            errored: true,
        }
    }
}

/// What the docker backend needs, found once per run.
#[derive(Debug, Clone)]
pub struct DockerEnv {
    pub socket: PathBuf,
    pub image: String,
}

impl DockerEnv {
    /// Finds the engine and the image (`INGRESS_MACHINE_IMAGE`, else the default), and removes
    /// containers left by a crashed run.
    pub async fn prepare() -> Result<DockerEnv, String> {
        Self::prepare_with(None).await
    }

    /// As [`DockerEnv::prepare`], with this image.
    pub async fn prepare_with(image: Option<String>) -> Result<DockerEnv, String> {
        let socket = docker::engine_socket()
            .await
            .map_err(|e| format!("no Docker engine: {e}"))?;
        let image = docker::image(&socket, image).await?;
        match docker::sweep(&socket).await {
            Ok(0) => {}
            Ok(n) => eprintln!("removed {n} container(s) left by an earlier run"),
            Err(e) => eprintln!("could not sweep old containers: {e}"),
        }
        Ok(DockerEnv { socket, image })
    }
}

/// The router generation a found scenario runs under, when it lists `generations`.
pub fn generation(found: &Found) -> Option<sim::model::Generation> {
    let (_, g) = found.id.rsplit_once('@')?;
    g.parse().ok()
}

/// Snapshot file stem for a step: `<file stem>-<NN>` (one-based), or `<file stem>-<generation>-<NN>`
/// for a scenario run once per generation.
pub fn snapshot_name(found: &Found, step: usize) -> String {
    let id = found.id.split('@').next().unwrap_or(&found.id);
    let stem = id.rsplit('/').next().unwrap_or(id);
    match generation(found) {
        Some(g) => format!("{stem}-{g}-{:02}", step + 1),
        None => format!("{stem}-{:02}", step + 1),
    }
}

/// The snapshot directory for a scenario: its group folder under `fixtures/snapshots`.
pub fn snapshot_dir(layout: &Layout, found: &Found) -> PathBuf {
    let id = found.id.split('@').next().unwrap_or(&found.id);
    match id.rsplit_once('/') {
        Some((group, _)) => layout.snapshots().join(group),
        None => layout.snapshots(),
    }
}

/// Runs one scenario in a fresh world (with the docker backend, `docker` says where the engine
/// and image are).
pub async fn run_scenario(
    layout: &Layout,
    found: Found,
    docker: Option<&DockerEnv>,
) -> ScenarioRun {
    let start = Instant::now();
    let scenario = match Scenario::load(&found.path) {
        Ok(s) => s,
        Err(e) => return ScenarioRun::failed(found, e.to_string(), start.elapsed()),
    };
    let world_path = scenario.world_path(&found.path, &layout.worlds());
    let text = std::fs::read_to_string(&found.path).unwrap_or_default();
    if !world_path.is_file() && sim::scenario::is_world_name(&scenario.world) {
        // Name the scenario's line and the worlds there are, rather than a bare "cannot read".
        let msg = sim::scenario::resolve_world_arg(&scenario.world, &[layout.worlds()])
            .err()
            .unwrap_or_default();
        let msg = msg.replacen(&format!("--world {}", scenario.world), "world", 1);
        let e = sim::fixture_file::FixtureError::invalid(&text, &found.path, &msg);
        return ScenarioRun::failed(found, e.to_string(), start.elapsed());
    }
    let mut spec = match WorldSpec::load(&world_path) {
        Ok(s) => s,
        Err(e) => return ScenarioRun::failed(found, e.to_string(), start.elapsed()),
    };
    if let Err(e) = scenario.check_against(&spec, &text, &found.path) {
        return ScenarioRun::failed(found, e.to_string(), start.elapsed());
    }
    if let Some(g) = generation(&found) {
        spec.router = g;
    }
    let world = match docker {
        None => World::start(spec).await.map_err(|e| e.to_string()),
        Some(env) => match docker_world(env, spec, &scenario).await {
            Ok(Some(w)) => Ok(w),
            Ok(None) => {
                return ScenarioRun {
                    found,
                    description: scenario.description,
                    steps: vec![],
                    failures: vec![],
                    duration: start.elapsed(),
                    skipped: Some("reaches no Docker machine".into()),
                    errored: false,
                };
            }
            Err(e) => Err(e),
        },
    };
    let world = match world {
        Ok(w) => w,
        Err(e) => return ScenarioRun::failed(found, e, start.elapsed()),
    };
    let mut steps = Vec::new();
    let mut failures = Vec::new();
    for (i, step) in scenario.steps.iter().enumerate() {
        let before = world.trace().issued();
        let sent = Instant::now();
        let doc = sim::exec::run_step(&world, step).await;
        let timing = sim::diagram::Timing::of_step(world.trace(), before, sent.elapsed());
        let label = step
            .name
            .clone()
            .unwrap_or_else(|| format!("step {}", i + 1));
        for f in expect::check(step, &doc) {
            failures.push(format!("{label}: {f}"));
        }
        steps.push(StepRun {
            snapshot_name: snapshot_name(&found, i),
            value: doc.redacted(&world),
            timing: Some(timing),
        });
    }
    world.shutdown().await;
    ScenarioRun {
        found,
        description: scenario.description,
        steps,
        failures,
        duration: start.elapsed(),
        skipped: None,
        errored: false,
    }
}

/// The Docker machines a scenario reaches: those its steps' traces show (the router chose it, or
/// its proxy answered), those it sends to directly, and those its faults act on. Found by running
/// the scenario in-process first (a few milliseconds).
pub async fn docker_machines_reached(spec: &WorldSpec, scenario: &Scenario) -> Vec<String> {
    let is_docker = |id: &str| {
        spec.machine(id)
            .is_some_and(|m| m.provider == sim::model::ProviderKind::Docker)
    };
    let mut ids: Vec<String> = Vec::new();
    let mut add = |id: &str| {
        if is_docker(id) && !ids.iter().any(|x| x == id) {
            ids.push(id.to_string());
        }
    };
    for step in &scenario.steps {
        if let Some(d) = &step.direct {
            add(d);
        }
        for f in &step.faults {
            if let Some(m) = f.machine_target() {
                add(m);
            }
        }
    }
    for f in &spec.faults {
        if let Some(m) = f.machine_target() {
            add(m);
        }
    }
    if let Ok(world) = World::start(spec.clone()).await {
        for step in &scenario.steps {
            let doc = sim::exec::run_step(&world, step).await;
            for h in &doc.hops {
                match h {
                    sim::trace::Event::Router(r) => {
                        if let Some(m) = &r.machine {
                            add(&m.id);
                        }
                    }
                    sim::trace::Event::Machine(m) => add(&m.machine),
                    _ => {}
                }
            }
        }
        world.shutdown().await;
    }
    ids
}

/// A world whose reached Docker machines are real containers; `None` when it reaches none.
async fn docker_world(
    env: &DockerEnv,
    spec: WorldSpec,
    scenario: &Scenario,
) -> Result<Option<World>, String> {
    let ids = docker_machines_reached(&spec, scenario).await;
    if ids.is_empty() {
        return Ok(None);
    }
    let trace = Arc::new(sim::TraceStore::default());
    let starts = ids.iter().filter_map(|id| spec.machine(id)).map(|m| {
        let trace = trace.clone();
        async move {
            docker::ContainerMachine::start(&env.socket, &env.image, m, trace)
                .await
                .map(|c| (m.clone(), c))
        }
    });
    let started = futures_util::future::join_all(starts).await;
    let mut remotes: std::collections::HashMap<String, Arc<dyn sim::machine::RemoteMachine>> =
        Default::default();
    let mut names = std::collections::HashMap::new();
    let mut first_err = None;
    for r in started {
        match r {
            Ok((m, c)) => {
                if let Some(r) = m
                    .metadata
                    .container_ref
                    .clone()
                    .or_else(|| m.external_id.clone())
                {
                    names.insert(r, c.name.clone());
                }
                remotes.insert(m.id.clone(), c);
            }
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    if let Some(e) = first_err {
        for r in remotes.values() {
            r.shutdown().await;
        }
        return Err(e);
    }
    let opts = sim::runtime::WorldOptions {
        remotes: remotes.clone(),
        engine_relay: Some(sim::providers::docker::EngineRelay {
            socket: env.socket.clone(),
            names,
        }),
        trace: Some(trace),
        ..Default::default()
    };
    match World::start_opts(spec, opts).await {
        Ok(w) => Ok(Some(w)),
        Err(e) => {
            for r in remotes.values() {
                r.shutdown().await;
            }
            Err(e.to_string())
        }
    }
}

/// Runs scenarios concurrently, at most `jobs` at a time; results in input order.
pub async fn run_all(
    layout: &Layout,
    found: Vec<Found>,
    backend: Backend,
    jobs: usize,
) -> Vec<ScenarioRun> {
    let docker = match backend {
        Backend::InProcess => None,
        Backend::Docker => match DockerEnv::prepare().await {
            Ok(env) => Some(env),
            Err(e) => {
                return found
                    .into_iter()
                    .map(|f| ScenarioRun::failed(f, format!("backend docker: {e}"), Duration::ZERO))
                    .collect();
            }
        },
    };
    run_all_in(layout, found, docker, jobs).await
}

/// As [`run_all`], with the docker backend's environment already found (or in-process: `None`).
pub async fn run_all_in(
    layout: &Layout,
    found: Vec<Found>,
    docker: Option<DockerEnv>,
    jobs: usize,
) -> Vec<ScenarioRun> {
    let sem = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut handles = Vec::new();
    // On a terminal, a counter of finished scenarios (the docker backend takes a while).
    static SCENARIOS: progress::Counter = progress::Counter::new("scenarios", "done", false);
    SCENARIOS.expect(found.len());
    for f in found {
        let sem = sem.clone();
        let layout = layout.clone();
        let docker = docker.clone();
        handles.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            SCENARIOS.begin();
            let run = run_scenario(&layout, f, docker.as_ref()).await;
            SCENARIOS.end(&run.found.id);
            run
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        match h.await {
            Ok(r) => out.push(r),
            Err(e) => out.push(ScenarioRun::failed(
                Found {
                    id: "<panicked>".into(),
                    path: PathBuf::new(),
                },
                format!("scenario task panicked: {e}"),
                Duration::ZERO,
            )),
        }
    }
    SCENARIOS.clear();
    out
}

/// The hint printed with a differing or new snapshot: the project's review flow.
pub const REVIEW_HINT: &str =
    "review: cargo insta review, or cargo xtask e2e --accept then git diff fixtures/snapshots";

thread_local! {
    /// Set while insta compares a snapshot on this thread: its mismatch panic is expected, and its
    /// diff is already printed.
    static IN_SNAPSHOT_CHECK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs (once per process) a panic hook that stays quiet for insta's mismatch panics on the
/// thread comparing a snapshot and hands every other panic to the previous hook. Swapping hooks per
/// comparison instead would race when scenarios are compared on several threads at once.
fn quiet_snapshot_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_SNAPSHOT_CHECK.with(|c| c.get()) {
                previous(info);
            }
        }));
    });
}

/// Tells insta this process is driven the way `cargo insta` drives tests, so that it does not
/// print "Run `cargo insta test` to run all snapshots" (this runner already runs them all). Call
/// before any other thread exists.
pub fn quiet_insta_hints() {
    // SAFETY: the callers (the two entry points' `main`) call this before starting threads.
    unsafe { std::env::set_var("INSTA_CARGO_INSTA", "1") };
}

/// Compares each step with its snapshot through insta. Returns the failures (insta prints diffs).
pub fn check_snapshots(layout: &Layout, run: &ScenarioRun) -> Vec<String> {
    quiet_snapshot_panics();
    let mut failures = Vec::new();
    let dir = snapshot_dir(layout, &run.found);
    for step in &run.steps {
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(&dir);
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        settings.set_input_file(&run.found.path);
        settings.set_description(format!("{} ({})", run.description, run.found.id));
        let name = step.snapshot_name.clone();
        let value = step.value.clone();
        IN_SNAPSHOT_CHECK.with(|c| c.set(true));
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            settings.bind(|| {
                insta::assert_yaml_snapshot!(name, value);
            })
        }));
        IN_SNAPSHOT_CHECK.with(|c| c.set(false));
        if res.is_err() {
            failures.push(format!(
                "snapshot {} differs or is new ({REVIEW_HINT})",
                dir.join(format!("{}.snap", step.snapshot_name)).display()
            ));
        }
    }
    failures
}

/// The snapshot files the given scenarios produce, read from their files (one per step); the
/// first scenario that does not load is the error.
pub fn expected_snapshots(
    layout: &Layout,
    found: &[Found],
) -> Result<std::collections::BTreeSet<PathBuf>, String> {
    let mut out = std::collections::BTreeSet::new();
    for f in found {
        let scenario = Scenario::load(&f.path).map_err(|e| e.to_string())?;
        let dir = snapshot_dir(layout, f);
        for i in 0..scenario.steps.len() {
            out.insert(dir.join(format!("{}.snap", snapshot_name(f, i))));
        }
    }
    Ok(out)
}

/// Every `*.snap` under the snapshots directory that is not in `produced`, sorted.
pub fn orphan_snapshots(
    layout: &Layout,
    produced: &std::collections::BTreeSet<PathBuf>,
) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = files_under(&layout.snapshots())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "snap") && !produced.contains(p))
        .collect();
    out.sort();
    out
}

/// After `--accept`: removes pending `.snap.new` files left from earlier runs (of snapshots now
/// accepted, or of scenarios since removed or renamed) — all of them, or with `only` those beside
/// these snapshots — and snapshot folders left empty. Returns what was removed.
pub fn tidy_snapshots(
    layout: &Layout,
    only: Option<&std::collections::BTreeSet<PathBuf>>,
) -> Vec<PathBuf> {
    let mut removed: Vec<PathBuf> = files_under(&layout.snapshots())
        .into_iter()
        .filter(|p| {
            let name = p.to_string_lossy();
            name.ends_with(".snap.new")
                && only.is_none_or(|o| o.contains(Path::new(&name[..name.len() - 4])))
        })
        .filter(|p| std::fs::remove_file(p).is_ok())
        .collect();
    // Deepest first, so a folder whose only content was an empty folder goes too.
    let mut dirs = dirs_under(&layout.snapshots());
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        if std::fs::remove_dir(&d).is_ok() {
            removed.push(d);
        }
    }
    removed.sort();
    removed
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    walk(root).0
}

/// Folders strictly under `root`.
fn dirs_under(root: &Path) -> Vec<PathBuf> {
    walk(root).1
}

/// (files, folders) under `root`, at any depth.
fn walk(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    (files, dirs)
}

/// Runs one scenario in-process on its own runtime and checks its expectations and snapshots;
/// the failures, one per line, as the error (the `cargo test` / nextest entry point).
pub fn run_and_check(layout: &Layout, found: Found) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    let run = runtime.block_on(run_scenario(layout, found, None));
    drop(runtime);
    let mut fails = run.failures.clone();
    fails.extend(check_snapshots(layout, &run));
    if fails.is_empty() {
        Ok(())
    } else {
        Err(fails.join("\n"))
    }
}
