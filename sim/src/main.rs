//! `ingress-sim`: run a simulated world, trace one request through it, or turn a traced request
//! into a scenario file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use sim::diagram::{Diagram, Timing};
use sim::exec::run_step;
use sim::model::Generation;
use sim::render::{Style, render};
use sim::scenario::{Expect, Scenario, Step, StepKind};
use sim::{Fault, World, WorldSpec};

#[derive(Parser)]
#[command(
    name = "ingress-sim",
    version,
    about = "The platform's ingress chain, simulated on loopback"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// One request, as curl would take it (`-X`, `-H`, `-d` behave as curl's).
#[derive(clap::Args, Clone)]
struct RequestArgs {
    /// The public URL, e.g. https://4096__mach_123.machines.iterate.town/path
    url: String,
    /// Method (default GET, or POST with -d, as curl).
    #[arg(short = 'X', long = "request", conflicts_with = "ws_send")]
    method: Option<String>,
    /// A request header, `Name: value` (repeatable). As curl: `Name:` sends no such header,
    /// `Name;` sends it empty.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Request body, as curl's -d: `@FILE` reads a file (`@-` standard input) without its CR and
    /// LF; repeated, the parts are joined with `&`; the method becomes POST and, unless -H gives
    /// one, `Content-Type: application/x-www-form-urlencoded` is sent.
    #[arg(
        long = "data",
        short = 'd',
        value_name = "DATA",
        conflicts_with = "ws_send"
    )]
    data: Vec<String>,
    /// Send straight to this machine's :8080 instead of the edge.
    #[arg(long, value_name = "MACHINE")]
    direct: Option<String>,
    /// A fault to switch on first, as JSON, e.g. '{"fault":"app_down","machine":"mach_123","port":3000}' (repeatable).
    #[arg(long = "fault", value_name = "JSON")]
    faults: Vec<String>,
    /// Open a WebSocket and send these messages (repeatable); `bin:<hex>` sends binary.
    #[arg(long = "ws-send", value_name = "MESSAGE")]
    ws_send: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TraceFormat {
    Text,
    Json,
    Mermaid,
    Svg,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a world and serve it until Ctrl-C. The first line on stdout is `edge: http://ADDR`.
    Up {
        /// A world: a name (fixtures/worlds/<name>.toml) or the path of a world file.
        #[arg(long, value_name = "NAME|PATH")]
        world: String,
        /// Address for the edge (default: an ephemeral port on 127.0.0.1).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Run the OS router under this generation instead of the world's (v0, v1, v2, v3).
        #[arg(long, value_name = "GENERATION")]
        router: Option<Generation>,
    },
    /// Send one request through a fresh world and print what every hop saw and decided.
    Trace {
        /// A world: a name (fixtures/worlds/<name>.toml) or the path of a world file.
        #[arg(long, value_name = "NAME|PATH")]
        world: String,
        #[command(flatten)]
        req: RequestArgs,
        /// Print the trace as JSON (redacted, as in snapshots); the same as `--format json`.
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// How to print the trace: `text` (for a person), `json` (as in snapshots), `mermaid` (a
        /// sequence diagram for a GitHub issue or pull request: paste it in a ```mermaid block),
        /// `svg` (the same diagram drawn as a self-contained SVG).
        #[arg(long, value_enum, default_value = "text")]
        format: TraceFormat,
        /// Write to this file instead of standard output.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
        /// Leave the times out of a diagram (so that it is the same on every run).
        #[arg(long)]
        no_times: bool,
        /// Run the OS router under this generation instead of the world's (v0, v1, v2, v3).
        #[arg(long, value_name = "GENERATION")]
        router: Option<Generation>,
    },
    /// Send one request under every router generation (a fresh world each) and print one row
    /// per generation: status, error code, redirect location, target header, the app reached.
    Diff {
        /// A world: a name (fixtures/worlds/<name>.toml) or the path of a world file.
        #[arg(long, value_name = "NAME|PATH")]
        world: String,
        #[command(flatten)]
        req: RequestArgs,
        /// Send the request with a fresh session of this user (the session cookie).
        #[arg(long = "as", value_name = "USER")]
        as_user: Option<String>,
    },
    /// Run one machine on its own (a container's entrypoint): its apps on their real ports, the
    /// shipped proxy binary on :8080, and every app hop event printed as a JSON line on stdout.
    Machine {
        /// The machine as JSON: one `[[machines]]` entry of a world file.
        #[arg(long, value_name = "JSON")]
        spec_json: String,
        /// The project-ingress-proxy binary to run.
        #[arg(long, default_value = "/project-ingress-proxy")]
        proxy: PathBuf,
        /// Where the proxy listens.
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// A control port: `POST /fault` (a fault JSON for this machine's proxy or apps) and
        /// `POST /release/<port>` (a gated SSE app).
        #[arg(long)]
        control: Option<SocketAddr>,
    },
    /// Scenario files.
    Scenario {
        #[command(subcommand)]
        cmd: ScenarioCmd,
    },
}

#[derive(Subcommand)]
enum ScenarioCmd {
    /// Trace a request and write it as a scenario file, with its observed outcome as expectations.
    New {
        /// Scenario id: a path under fixtures/scenarios without `.toml`, e.g. regressions/opencode_port.
        name: String,
        /// A world: a name (fixtures/worlds/<name>.toml) or the path of a world file.
        #[arg(long, value_name = "NAME|PATH")]
        world: String,
        #[command(flatten)]
        req: RequestArgs,
        /// Description written into the file.
        #[arg(long)]
        description: Option<String>,
        /// The scenarios directory.
        #[arg(long, default_value = "fixtures/scenarios")]
        dir: PathBuf,
        /// Overwrite an existing scenario.
        #[arg(long)]
        force: bool,
    },
}

/// A `-H` value as curl reads it: `Name: value`; `Name:` (nothing after the colon) removes the
/// header, so none is sent (`None`); `Name;` sends it with an empty value.
fn parse_header(h: &str) -> Result<Option<(String, String)>> {
    let (k, v, empty) = match h.split_once(':') {
        Some((k, v)) => (k, v.trim(), false),
        None => match h.strip_suffix(';') {
            Some(k) => (k, "", true),
            None => bail!("header {h:?}: expected `Name: value` (or `Name;` for an empty value)"),
        },
    };
    let k = k.trim();
    if k.is_empty() || http::HeaderName::from_bytes(k.as_bytes()).is_err() {
        bail!("header {h:?}: invalid name");
    }
    if v.is_empty() && !empty {
        return Ok(None);
    }
    Ok(Some((k.to_string(), v.to_string())))
}

/// The body `-d` values make, as curl: `@FILE` (or `@-`, standard input) is the file's content
/// with carriage returns and newlines removed; several parts are joined with `&`.
fn data_body(parts: &[String]) -> Result<Option<String>> {
    if parts.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for p in parts {
        let text = match p.strip_prefix('@') {
            Some("-") => {
                std::io::read_to_string(std::io::stdin()).context("-d @-: reading stdin")?
            }
            Some(file) => std::fs::read_to_string(file).with_context(|| format!("-d @{file}"))?,
            None => p.clone(),
        };
        out.push(if p.starts_with('@') {
            text.replace(['\r', '\n'], "")
        } else {
            text
        });
    }
    Ok(Some(out.join("&")))
}

fn build_step(r: &RequestArgs) -> Result<Step> {
    sim::client::PublicUrl::parse(&r.url).with_context(|| format!("cannot use URL {:?}", r.url))?;
    let ws = !r.ws_send.is_empty() || r.url.starts_with("ws");
    if ws && (!r.data.is_empty() || r.method.is_some()) {
        bail!("a WebSocket request ({}) takes no -d or -X", r.url);
    }
    let body = data_body(&r.data)?;
    let method = match (&r.method, &body) {
        (Some(m), _) => m.clone(),
        (None, Some(_)) => "POST".to_string(),
        (None, None) => "GET".to_string(),
    };
    if http::Method::from_bytes(method.as_bytes()).is_err() {
        bail!("invalid method {method:?}");
    }
    let mut headers = Vec::new();
    for h in &r.headers {
        if let Some(pair) = parse_header(h)? {
            headers.push(pair);
        }
    }
    let named = |n: &str| {
        r.headers.iter().any(|h| {
            h.split([':', ';'])
                .next()
                .is_some_and(|k| k.trim().eq_ignore_ascii_case(n))
        })
    };
    if body.is_some() && !named("content-type") {
        headers.push((
            "Content-Type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ));
    }
    let faults = r
        .faults
        .iter()
        .map(|f| serde_json::from_str::<Fault>(f).with_context(|| format!("--fault {f}")))
        .collect::<Result<Vec<_>>>()?;
    Ok(Step {
        kind: if ws {
            StepKind::Websocket
        } else {
            StepKind::Http
        },
        name: None,
        method,
        url: r.url.clone(),
        headers,
        body,
        direct: r.direct.clone(),
        faults,
        send: r.ws_send.clone(),
        close_code: None,
        release: None,
        concurrent: None,
        count: None,
        as_user: None,
        login: None,
        max_navigations: None,
        expect: Expect::default(),
    })
}

async fn start(
    world: &Path,
    listen: Option<SocketAddr>,
    router: Option<Generation>,
) -> Result<(World, std::time::Duration)> {
    let spec = WorldSpec::load(world)?;
    let t = Instant::now();
    let w = World::start_opts(
        spec,
        sim::runtime::WorldOptions {
            edge_listen: listen,
            router,
            ..Default::default()
        },
    )
    .await?;
    Ok((w, t.elapsed()))
}

async fn trace(
    world: &Path,
    req: &RequestArgs,
    format: TraceFormat,
    times: bool,
    router: Option<Generation>,
) -> Result<(sim::exec::StepDoc, String)> {
    let step = build_step(req)?;
    // The machines --direct and --fault name are checked before the world starts.
    let check = Scenario {
        description: String::new(),
        world: String::new(),
        generations: Vec::new(),
        steps: vec![step.clone()],
    };
    if let Err(e) = check.check_against(&WorldSpec::load(world)?, "", world) {
        let e = e.to_string();
        let why = e.split_once("steps[0].").map_or(e.as_str(), |(_, w)| w);
        let why = why
            .replace(" (step 1, faults)", "")
            .replace(" (step 1, direct)", "");
        bail!(
            "--{}",
            why.strip_prefix("faults")
                .map_or(why.clone(), |r| format!("fault{r}"))
        );
    }
    let (w, _) = start(world, None, router).await?;
    let before = w.trace().issued();
    let sent = Instant::now();
    let doc = run_step(&w, &step).await;
    let timing = times.then(|| Timing::of_step(w.trace(), before, sent.elapsed()));
    let title = format!("{} {}", step.method, step.url);
    let text = match format {
        TraceFormat::Json => serde_json::to_string_pretty(&doc.redacted(&w))? + "\n",
        TraceFormat::Mermaid => Diagram::from_doc(&doc.redacted(&w), timing.as_ref()).mermaid(),
        TraceFormat::Svg => Diagram::from_doc(&doc.redacted(&w), timing.as_ref()).svg(&title),
        TraceFormat::Text => {
            let color = std::io::IsTerminal::is_terminal(&std::io::stdout())
                && std::env::var_os("NO_COLOR").is_none();
            w.redactor().redact_str(&render(&doc, Style { color }))
        }
    };
    w.shutdown().await;
    Ok((doc, text))
}

/// `ingress-sim diff`: the request under every generation, one row each.
async fn diff(world: &Path, req: &RequestArgs, as_user: Option<&str>) -> Result<String> {
    let step = build_step(req)?;
    let mut rows = vec![[
        "generation".to_string(),
        "status".into(),
        "error".into(),
        "location".into(),
        "target header".into(),
        "app".into(),
    ]];
    for g in Generation::KNOWN {
        let (w, _) = start(world, None, Some(g)).await?;
        let mut step = step.clone();
        if let Some(user) = as_user {
            let Some(s) = w.platform().create_session(user) else {
                bail!("--as: no user {user:?} in {}", world.display());
            };
            let public = sim::router::step::canonical::public_origin(w.spec().env.public_url())
                .map_err(anyhow::Error::msg)?;
            let name = sim::control_plane::cookies::name(&public);
            step.headers
                .push(("cookie".into(), format!("{name}={}", s.token)));
        }
        let doc = run_step(&w, &step).await;
        rows.push(diff_row(g, &doc));
        w.shutdown().await;
    }
    Ok(table(&rows))
}

fn diff_row(g: Generation, doc: &sim::exec::StepDoc) -> [String; 6] {
    let dash = || "-".to_string();
    let resp = doc.response.as_ref();
    let header = |n: &str| {
        resp.and_then(|r| r.headers.iter().find(|(k, _)| k == n))
            .map(|(_, v)| v.clone())
    };
    let target = doc.hops.iter().find_map(|h| match h {
        sim::Event::Router(r) => r.target_header.clone(),
        _ => None,
    });
    let app = doc.hops.iter().find_map(|h| match h {
        sim::Event::App(a) => Some(format!("{}:{}", a.machine, a.port)),
        sim::Event::ControlPlane(c) => Some(format!("control plane ({})", c.route)),
        _ => None,
    });
    [
        g.to_string(),
        resp.map(|r| r.status.to_string())
            .or_else(|| doc.client_error.clone())
            .unwrap_or_else(dash),
        resp.and_then(|r| r.body.get("error"))
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(dash),
        header("location").unwrap_or_else(dash),
        target.unwrap_or_else(dash),
        app.unwrap_or_else(dash),
    ]
}

fn table(rows: &[[String; 6]]) -> String {
    let mut widths = [0usize; 6];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

async fn up(
    world: &Path,
    world_arg: &str,
    listen: Option<SocketAddr>,
    router: Option<Generation>,
) -> Result<()> {
    // Handlers first: a Ctrl-C sent as soon as the edge line appears must not be lost.
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let (w, took) = start(world, listen, router).await?;
    w.trace()
        .log_events
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let edge = w.addrs.edge;
    let edge_tls = w.addrs.edge_tls;
    // The root of this run's CA, for `curl --cacert` (never installed anywhere; removed on exit).
    let ca_dir = std::env::temp_dir().join(format!("ingress-sim-{}", std::process::id()));
    let ca = ca_dir.join("ca.pem");
    std::fs::create_dir_all(&ca_dir).with_context(|| format!("creating {}", ca_dir.display()))?;
    std::fs::write(&ca, w.ca().root_pem()).with_context(|| format!("writing {}", ca.display()))?;
    println!("edge: http://{edge}");
    println!("edge-tls: https://{edge_tls}");
    println!("ca: {}", ca.display());
    println!(
        "world {:?} (router {}) started in {:.1?}",
        w.spec().name,
        w.generation,
        took
    );
    for m in w.machines() {
        let apps: Vec<String> = m
            .apps
            .iter()
            .map(|(p, a)| format!("{p}={} ({})", a.addr, a.spec.kind.name()))
            .collect();
        println!(
            "machine {} [{} {}, {}] proxy http://{}  apps: {}",
            m.spec.id,
            m.spec.provider.as_str(),
            m.spec.state.as_str(),
            m.spec.project,
            m.proxy_addr(),
            apps.join(", ")
        );
    }
    if let Some(m) = w.machines().first() {
        let id = &m.spec.id;
        println!();
        println!("try:");
        println!("  curl -s -H 'Host: {id}.machines.iterate.town' http://{edge}/hello");
        println!(
            "  curl -s --connect-to ::{}:{} http://4096__{id}.machines.iterate.town/session",
            edge.ip(),
            edge.port()
        );
        let port = edge_tls.port();
        let ca = ca.display();
        println!(
            "  curl -s --cacert {ca} --resolve {id}.machines.iterate.town:{port}:127.0.0.1 https://{id}.machines.iterate.town:{port}/hello   # over TLS, trusting this run's CA only"
        );
        println!(
            "  curl -s --cacert {ca} --resolve 4096__{id}.machines.iterate.town:{port}:127.0.0.1 https://4096__{id}.machines.iterate.town:{port}/session   # a wildcard certificate for a name with '_'"
        );
        println!(
            "  curl -s -H 'x-iterate-proxy-target-host: localhost:3000' http://{}/direct   # straight to {id}'s :8080",
            m.proxy_addr()
        );
        println!(
            "  curl -s -i --max-time 2 -H 'Host: 3001__{id}.machines.iterate.town' -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' http://{edge}/ws   # a WebSocket handshake (101)"
        );
        println!(
            "  cargo run -q -p ingress-sim -- trace --world {world_arg} https://{id}.machines.iterate.town/   # one request through a fresh copy of this world"
        );
    }
    println!("(Ctrl-C to stop)");
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!("stopping");
    w.shutdown().await;
    let _ = std::fs::remove_dir_all(&ca_dir);
    Ok(())
}

async fn machine(
    spec_json: &str,
    proxy: &Path,
    listen: SocketAddr,
    control: Option<SocketAddr>,
) -> Result<()> {
    let spec: sim::model::MachineSpec = serde_json::from_str(spec_json).context("--spec-json")?;
    sim::standalone::run(spec, proxy, listen, control).await
}

fn scenario_new(
    name: &str,
    world: &Path,
    req: &RequestArgs,
    description: Option<String>,
    dir: &Path,
    force: bool,
    doc: &sim::exec::StepDoc,
) -> Result<PathBuf> {
    if name.is_empty()
        || name.contains("..")
        || name.starts_with('/')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-/".contains(c))
    {
        bail!(
            "scenario name {name:?}: use letters, digits, _ - and / (e.g. regressions/opencode_port)"
        );
    }
    let path = dir.join(format!("{name}.toml"));
    if path.exists() && !force {
        bail!("{} exists (use --force to overwrite)", path.display());
    }
    let mut step = build_step(req)?;
    // The observed outcome becomes the expectation; the snapshot will hold the rest.
    if let Some(r) = &doc.response {
        step.expect.status = Some(r.status);
        if let Some(code) = r.body.get("error").and_then(|v| v.as_str()) {
            step.expect.error = Some(code.to_string());
        }
        if let (Some(m), Some(p)) = (
            r.body.pointer("/app/machine").and_then(|v| v.as_str()),
            r.body.pointer("/app/port").and_then(|v| v.as_u64()),
        ) {
            step.expect.app = Some(format!("{m}:{p}"));
        }
        step.expect.truncated = r.truncated;
    }
    if let Some(ws) = &doc.websocket {
        step.expect.messages = ws.received.clone();
    }
    // A world in a `worlds` folder is named; another world inside the repository (the folder
    // holding fixtures/, i.e. two levels above the scenarios directory) is referenced relative
    // to the scenario; one outside it is refused: the scenario would point out of the repository.
    let world_ref = match (
        world.parent().and_then(|p| p.file_name()),
        world.file_stem(),
    ) {
        (Some(parent), Some(stem)) if parent == "worlds" => stem.to_string_lossy().into_owned(),
        _ => {
            let abs = std::fs::canonicalize(world)
                .with_context(|| format!("--world {}", world.display()))?;
            let target_dir = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(target_dir)?;
            let repo = std::fs::canonicalize(dir)?
                .parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .unwrap_or_default();
            if !abs.starts_with(&repo) {
                bail!(
                    "--world {}: the world is outside the repository ({}), so a scenario cannot \
                     refer to it; copy it to {}/<name>.toml and pass --world <name>",
                    world.display(),
                    repo.display(),
                    dir.join("../worlds").display()
                );
            }
            relative(&std::fs::canonicalize(target_dir)?, &abs)
        }
    };
    let scenario = Scenario {
        description: description.unwrap_or_else(|| {
            format!(
                "{} {} (recorded with ingress-sim scenario new)",
                step.method, req.url
            )
        }),
        world: world_ref,
        generations: vec![],
        steps: vec![step],
    };
    let text = scenario.to_toml()?;
    // What we write must load back as written.
    Scenario::parse(&text, &path)
        .map_err(|e| anyhow::anyhow!("generated scenario does not parse: {e}"))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The file a `--world` names: a path as given, or a name looked up in `fixtures/worlds` under
/// the current directory, then in the source tree this binary was built from.
fn world_file(arg: &str) -> Result<PathBuf> {
    let dirs = [
        PathBuf::from("fixtures/worlds"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/worlds"),
    ];
    sim::scenario::resolve_world_arg(arg, &dirs).map_err(anyhow::Error::msg)
}

/// `to` relative to directory `from` (both absolute).
fn relative(from: &Path, to: &Path) -> String {
    let f: Vec<_> = from.components().collect();
    let t: Vec<_> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = std::iter::repeat_n("..".to_string(), f.len() - common).collect();
    parts.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbose_up = matches!(cli.cmd, Cmd::Up { .. });
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if verbose_up {
            "info,project_ingress_proxy::access=warn,project_ingress_proxy::server=warn"
        } else {
            "warn"
        })
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ingress-sim: cannot start tokio: {e}");
            return ExitCode::from(2);
        }
    };
    let res: Result<()> = rt.block_on(async {
        match cli.cmd {
            Cmd::Up { world, listen, router } => {
                up(&world_file(&world)?, &world, listen, router).await
            }
            Cmd::Machine { spec_json, proxy, listen, control } => {
                machine(&spec_json, &proxy, listen, control).await
            }
            Cmd::Trace { world, req, json, format, output, no_times, router } => {
                let format = if json { TraceFormat::Json } else { format };
                let (doc, text) =
                    trace(&world_file(&world)?, &req, format, !no_times, router).await?;
                match output {
                    Some(path) => std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?,
                    None => print!("{text}"),
                }
                // A refusal is a result; hops that disagree are a broken chain.
                if !doc.invariant_violations.is_empty() {
                    bail!(
                        "the trace breaks {} chain invariant(s): {}",
                        doc.invariant_violations.len(),
                        doc.invariant_violations.join("; ")
                    );
                }
                Ok(())
            }
            Cmd::Diff { world, req, as_user } => {
                let redacted = diff(&world_file(&world)?, &req, as_user.as_deref()).await?;
                print!("{redacted}");
                Ok(())
            }
            Cmd::Scenario {
                cmd: ScenarioCmd::New { name, world, req, description, dir, force },
            } => {
                let world = world_file(&world)?;
                let (doc, text) = trace(&world, &req, TraceFormat::Text, false, None).await?;
                print!("{text}");
                let path = scenario_new(&name, &world, &req, description, &dir, force, &doc)?;
                println!("wrote {}", path.display());
                println!("next: cargo xtask e2e {name} --accept   (then read the new snapshot before committing)");
                Ok(())
            }
        }
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingress-sim: {e:#}");
            ExitCode::from(1)
        }
    }
}
