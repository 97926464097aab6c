//! `cargo xtask bench [--quick]`: the machine proxy against direct, nginx and HAProxy, in one run on
//! this machine, with wrk as the load generator; plus proxy-only figures (memory, WebSockets,
//! streaming, upstream connection reuse) and the criterion micro-benchmarks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::upstream;

pub struct Opts {
    pub quick: bool,
    /// Another proxy binary, benchmarked as `baseline` beside `ours`.
    pub baseline: Option<PathBuf>,
}

fn which(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// wrk, nginx and haproxy from Debian's packages; installed when missing and possible.
fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = ["wrk", "nginx", "haproxy", "taskset"]
        .into_iter()
        .filter(|b| !which(b))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = unsafe { libc::geteuid() } == 0;
    if is_root && which("apt-get") {
        println!("bench: installing {} with apt-get", missing.join(", "));
        let pkgs: Vec<&str> = missing
            .iter()
            .map(|m| if *m == "taskset" { "util-linux" } else { m })
            .collect();
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        let st = Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?;
        if !st.success() {
            bail!("apt-get install {} failed", pkgs.join(" "));
        }
        // The nginx package may start a system nginx; the bench runs its own.
        let _ = Command::new("sh")
            .args(["-c", "service nginx stop >/dev/null 2>&1; true"])
            .status();
        return Ok(());
    }
    bail!(
        "bench needs {} (Debian: apt-get install wrk nginx haproxy util-linux); run as root to let the bench install them",
        missing.join(", ")
    )
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// CPU ticks (user + system) of a process and its threads.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ut: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let st: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ut + st
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let after = stat.rsplit(')').next().unwrap_or("");
            let ppid: u32 = after
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if ppid == pid {
                out.push(p);
            }
        }
    }
    out
}

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn pids(&self) -> Vec<u32> {
        children_of(self.child.id())
    }
    fn ticks(&self) -> u64 {
        self.pids().into_iter().map(cpu_ticks).sum()
    }
}

impl Drop for Server {
    /// SIGTERM to the server and its workers (nginx leaves orphaned workers on SIGKILL), a short
    /// wait, then SIGKILL for anything left.
    fn drop(&mut self) {
        let pids = self.pids();
        for p in &pids {
            // SAFETY: kill(2) on processes this bench started.
            unsafe { libc::kill(*p as i32, libc::SIGTERM) };
        }
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for p in &pids {
            unsafe { libc::kill(*p as i32, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

fn pinned(core: &str, program: &str) -> Command {
    let mut c = Command::new("taskset");
    c.args(["-c", core, program]);
    c
}

fn wait_port(port: u16, what: &str) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} did not start listening on {port}")
}

/// nginx with `conf_http` inside its `http` block; `access_log` is off unless `conf_http` sets it.
fn start_nginx(dir: &Path, name: &str, conf_http: &str) -> Result<Child> {
    let conf = dir.join(format!("{name}.conf"));
    let access = if conf_http.contains("access_log") {
        ""
    } else {
        " access_log off;\n"
    };
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\ndaemon off;\npid {d}/{name}.pid;\nerror_log {d}/{name}.err warn;\n\
             events {{ worker_connections 8192; }}\nhttp {{\n{access} keepalive_requests 10000000;\n{conf_http}\n}}\n",
            d = dir.display()
        ),
    )?;
    pinned("1", "nginx")
        .args([
            "-p",
            &dir.display().to_string(),
            "-c",
            &conf.display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx")
}

#[derive(Debug, Clone, Default)]
struct WrkResult {
    rps: f64,
    requests: u64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_req: f64,
}

fn parse_latency_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v,
        "ms" => v * 1000.0,
        "s" => v * 1_000_000.0,
        _ => return None,
    })
}

fn wrk(
    port: u16,
    conns: u32,
    secs: u32,
    target_header: &str,
    server: Option<&Server>,
) -> Result<WrkResult> {
    let before = server.map(|s| s.ticks()).unwrap_or(0);
    let out = pinned("0", "wrk")
        .args([
            "-t1",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
            "-H",
        ])
        .arg(format!("X-Iterate-Proxy-Target-Host: {target_header}"))
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .context("running wrk")?;
    let after = server.map(|s| s.ticks()).unwrap_or(0);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut r = WrkResult::default();
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("50%") {
            r.p50_us = parse_latency_us(v).unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("99%") {
            r.p99_us = parse_latency_us(v).unwrap_or(0.0);
        } else if l.contains(" requests in ") {
            r.requests = l
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
        if l.starts_with("Non-2xx") || l.starts_with("Socket errors") {
            bail!("wrk against port {port} reported errors: {l}");
        }
    }
    if r.requests == 0 {
        bail!("wrk produced no result for port {port}:\n{text}");
    }
    let tick_us = 1_000_000.0 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    r.cpu_us_per_req = (after.saturating_sub(before)) as f64 * tick_us / r.requests as f64;
    Ok(r)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

fn stat(mut v: Vec<f64>) -> Stat {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Stat {
        median: median(&mut v),
        min,
        max,
    }
}

pub fn run(opts: Opts) -> Result<()> {
    ensure_tools()?;
    // SAFETY: pins this process (the WebSocket/streaming clients) to core 0.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "project-ingress-proxy",
            "-p",
            "xtask",
        ])
        .status()?;
    if !st.success() {
        bail!("release build failed");
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let proxy_bin = root.join("target/release/project-ingress-proxy");
    let xtask_bin = root.join("target/release/xtask");
    let out_dir = root.join("target/bench");
    let dir = out_dir.join("run");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;

    let (rounds, secs) = if opts.quick { (1, 2) } else { (5, 5) };
    println!(
        "bench: {} mode, {rounds} round(s) of {secs}s per target; servers pinned to core 1, wrk and bench clients to core 0",
        if opts.quick { "quick" } else { "full" }
    );

    // The shared upstream: nginx returning a 2-byte body.
    let up_port = free_port()?;
    let upstream = Server {
        child: start_nginx(
            &dir,
            "upstream",
            &format!(
                "server {{ listen 127.0.0.1:{up_port}; location / {{ return 200 \"ok\"; }} }}"
            ),
        )?,
        port: up_port,
    };
    wait_port(up_port, "upstream nginx")?;

    // Ours with the access log off (as nginx's `access_log off`), ours with its buffered access
    // log on (to a file, as nginx's `buffer=64k flush=1s` below), and optionally a baseline build.
    let start_ours = |bin: &Path, log: bool| -> Result<Server> {
        let port = free_port()?;
        let mut cmd = pinned("1", &bin.display().to_string());
        cmd.args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--worker-threads",
            "1",
        ]);
        if log {
            let file = std::fs::File::create(dir.join(format!("ours-access-{port}.log")))?;
            cmd.args(["--log-format", "json"])
                .args(["--access-log-buffer", "65536", "--access-log-flush", "1s"])
                .env("RUST_LOG", "info")
                .stderr(Stdio::from(file));
        } else {
            cmd.env("RUST_LOG", "warn").stderr(Stdio::null());
        }
        let server = Server {
            child: cmd.spawn()?,
            port,
        };
        wait_port(port, "project-ingress-proxy")?;
        Ok(server)
    };
    let ours = start_ours(&proxy_bin, false)?;
    let ours_idle_kib = status_kib(ours.child.id(), "VmRSS:");
    let ours_log = start_ours(&proxy_bin, true)?;
    let baseline = match &opts.baseline {
        Some(bin) => Some(start_ours(bin, false)?),
        None => None,
    };

    let ng_port = free_port()?;
    let nginx = Server {
        child: start_nginx(
            &dir,
            "proxy-nginx",
            &format!(
                "upstream app {{ server 127.0.0.1:{up_port}; keepalive 32; }}\n\
                 server {{ listen 127.0.0.1:{ng_port}; location / {{ proxy_pass http://app; proxy_http_version 1.1; \
                 proxy_set_header Connection \"\"; proxy_set_header Host localhost; }} }}"
            ),
        )?,
        port: ng_port,
    };
    wait_port(ng_port, "nginx proxy")?;
    let ngl_port = free_port()?;
    let nginx_log = Server {
        child: start_nginx(
            &dir,
            "proxy-nginx-log",
            &format!(
                "access_log {d}/nginx-access.log combined buffer=64k flush=1s;\n\
                 upstream app {{ server 127.0.0.1:{up_port}; keepalive 32; }}\n\
                 server {{ listen 127.0.0.1:{ngl_port}; location / {{ proxy_pass http://app; proxy_http_version 1.1; \
                 proxy_set_header Connection \"\"; proxy_set_header Host localhost; }} }}",
                d = dir.display()
            ),
        )?,
        port: ngl_port,
    };
    wait_port(ngl_port, "nginx proxy with an access log")?;

    let ha_port = free_port()?;
    let ha_cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &ha_cfg,
        format!(
            "global\n  nbthread 1\n  maxconn 8192\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend f\n  bind 127.0.0.1:{ha_port}\n  default_backend b\nbackend b\n  server s1 127.0.0.1:{up_port}\n"
        ),
    )?;
    let haproxy = Server {
        child: pinned("1", "haproxy")
            .args(["-db", "-f", &ha_cfg.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
        port: ha_port,
    };
    wait_port(ha_port, "haproxy")?;

    let target = format!("localhost:{up_port}");
    // `+log`: the access log on, buffered the same way for both.
    let mut targets: Vec<(&str, u16, Option<&Server>)> = vec![
        ("direct", upstream.port, None),
        ("ours", ours.port, Some(&ours)),
        ("ours+log", ours_log.port, Some(&ours_log)),
        ("nginx", nginx.port, Some(&nginx)),
        ("nginx+log", nginx_log.port, Some(&nginx_log)),
        ("haproxy", haproxy.port, Some(&haproxy)),
    ];
    if let Some(b) = &baseline {
        targets.insert(2, ("baseline", b.port, Some(b)));
    }
    // Warm every path once.
    let runs = rounds * 2 * targets.len();
    println!(
        "bench: warming up, then {runs} wrk runs of {secs}s (about {} s)",
        runs as u64 * u64::from(secs)
    );
    for (_, port, _) in &targets {
        wrk(*port, 4, 1, &target, None)?;
    }
    let mut results: BTreeMap<(&str, u32), Vec<WrkResult>> = BTreeMap::new();
    let mut run = 0;
    for round in 0..rounds {
        for conns in [32u32, 1] {
            for (name, port, server) in &targets {
                let r = wrk(*port, conns, secs, &target, *server)?;
                run += 1;
                println!(
                    "  [{run:>2}/{runs}] round {} c={conns:<2} {name:<8} {:>9.0} req/s  p50 {:>7.1} µs  p99 {:>7.1} µs  cpu {:>5.1} µs/req",
                    round + 1,
                    r.rps,
                    r.p50_us,
                    r.p99_us,
                    r.cpu_us_per_req
                );
                results.entry((name, conns)).or_default().push(r);
            }
        }
    }
    let ours_after_kib = status_kib(ours.child.id(), "VmRSS:");
    let ours_peak_kib = status_kib(ours.child.id(), "VmHWM:");
    let target_names: Vec<&str> = targets.iter().map(|t| t.0).collect();
    drop(nginx);
    drop(nginx_log);
    drop(ours_log);
    drop(baseline);
    drop(haproxy);
    drop(upstream);

    // Proxy-only figures against the bench upstream (counts its accepted connections).
    println!("bench: ours only: memory, 1,000 WebSockets, 1 GiB each way, connection reuse");
    let extra = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(proxy_only(
            &xtask_bin,
            ours.port,
            ours.child.id(),
            opts.quick,
        ))?;
    drop(ours);

    println!("bench: micro-benchmarks (criterion)");
    let micro = micro_benchmarks(&cargo)?;

    // Report.
    let mut md = String::new();
    let _ = writeln!(md, "# project-ingress-proxy benchmark\n");
    let _ = writeln!(
        md,
        "{} mode, {rounds} interleaved round(s) × {secs}s per target and connection count; wrk pinned to core 0, \
         upstream and proxies to core 1 (1 worker each: nginx `worker_processes 1`, HAProxy `nbthread 1`, ours \
         `--worker-threads 1`); upstream: nginx `return 200 \"ok\"`. Median (min–max).\n",
        if opts.quick { "Quick" } else { "Full" }
    );
    let direct32 = stat(results[&("direct", 32)].iter().map(|r| r.rps).collect()).median;
    let direct1_p50 = stat(results[&("direct", 1)].iter().map(|r| r.p50_us).collect()).median;
    let _ = writeln!(
        md,
        "| target | conns | req/s | × direct | p50 µs | p99 µs | p50 added over direct µs | CPU µs/req |"
    );
    let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut json_rows = Vec::new();
    for conns in [32u32, 1] {
        let direct_rps = stat(results[&("direct", conns)].iter().map(|r| r.rps).collect()).median;
        let direct_p50 = stat(
            results[&("direct", conns)]
                .iter()
                .map(|r| r.p50_us)
                .collect(),
        )
        .median;
        for name in &target_names {
            let rs = &results[&(*name, conns)];
            let rps = stat(rs.iter().map(|r| r.rps).collect());
            let p50 = stat(rs.iter().map(|r| r.p50_us).collect());
            let p99 = stat(rs.iter().map(|r| r.p99_us).collect());
            let cpu = stat(rs.iter().map(|r| r.cpu_us_per_req).collect());
            let cpu_s = if *name == "direct" {
                "-".to_string()
            } else {
                format!("{:.1} ({:.1}–{:.1})", cpu.median, cpu.min, cpu.max)
            };
            let _ = writeln!(
                md,
                "| {name} | {conns} | {:.0} ({:.0}–{:.0}) | {:.2} | {:.1} ({:.1}–{:.1}) | {:.1} ({:.1}–{:.1}) | {:+.1} | {cpu_s} |",
                rps.median,
                rps.min,
                rps.max,
                rps.median / direct_rps,
                p50.median,
                p50.min,
                p50.max,
                p99.median,
                p99.min,
                p99.max,
                p50.median - direct_p50,
            );
            json_rows.push(json!({"target": name, "conns": conns, "rps": rps.median, "rps_min": rps.min, "rps_max": rps.max,
                "ratio_to_direct": rps.median / direct_rps, "p50_us": p50.median, "p99_us": p99.median, "cpu_us_per_req": cpu.median}));
        }
    }
    let med = |name: &str, conns: u32, f: fn(&WrkResult) -> f64| {
        stat(results[&(name, conns)].iter().map(f).collect()).median
    };
    let ours32 = med("ours", 32, |r| r.rps);
    let _ = writeln!(md);
    let _ = writeln!(md, "## Goals (ratios in this run, like for like)\n");
    let goal = |ok: bool| if ok { "met" } else { "NOT met" };
    let _ = writeln!(md, "| goal | measured | |\n| --- | --- | --- |");
    // Each goal twice: both proxies without an access log, and both with one (buffered alike).
    for (o, n, what) in [
        ("ours", "nginx", "log off"),
        ("ours+log", "nginx+log", "log on, buffered 64 KiB / 1 s"),
    ] {
        let (o_rps, n_rps) = (med(o, 32, |r| r.rps), med(n, 32, |r| r.rps));
        let _ = writeln!(
            md,
            "| 32 conns, {what}: throughput ≥ 1.3× nginx | {o} {:.2}× direct, {n} {:.2}× direct, ratio {:.2} | {} |",
            o_rps / direct32,
            n_rps / direct32,
            o_rps / n_rps,
            goal(o_rps >= 1.3 * n_rps)
        );
        let (o_cpu, n_cpu) = (
            med(o, 32, |r| r.cpu_us_per_req),
            med(n, 32, |r| r.cpu_us_per_req),
        );
        let _ = writeln!(
            md,
            "| 32 conns, {what}: CPU/request ≤ 0.8× nginx | {o} {o_cpu:.1} µs, {n} {n_cpu:.1} µs, ratio {:.2} | {} |",
            o_cpu / n_cpu,
            goal(o_cpu <= 0.8 * n_cpu)
        );
        let (o_add, n_add) = (
            med(o, 1, |r| r.p50_us) - direct1_p50,
            med(n, 1, |r| r.p50_us) - direct1_p50,
        );
        let _ = writeln!(
            md,
            "| 1 conn, {what}: added p50 ≤ 0.8× nginx's | {o} {o_add:+.1} µs, {n} {n_add:+.1} µs, ratio {:.2} | {} |",
            o_add / n_add,
            goal(o_add <= 0.8 * n_add)
        );
    }
    if opts.baseline.is_some() {
        let _ = writeln!(
            md,
            "| ours against the baseline build (same run) | throughput {:.2}×, CPU/request {:.2}×, added p50 at 1 conn {:+.1} µs vs {:+.1} µs | - |",
            ours32 / med("baseline", 32, |r| r.rps),
            med("ours", 32, |r| r.cpu_us_per_req) / med("baseline", 32, |r| r.cpu_us_per_req),
            med("ours", 1, |r| r.p50_us) - direct1_p50,
            med("baseline", 1, |r| r.p50_us) - direct1_p50,
        );
    }
    let _ = writeln!(
        md,
        "| RSS after load < 15 MiB | idle {} KiB, after load {} KiB, peak {} KiB | {} |",
        ours_idle_kib,
        ours_after_kib,
        ours_peak_kib,
        goal(ours_after_kib < 15 * 1024)
    );
    let _ = writeln!(
        md,
        "| 1,000 idle WebSockets < 40 MiB total | {} KiB total ({:.1} KiB/connection), {:.0} messages/s | {} |",
        extra.ws_total_kib,
        extra.ws_per_conn_kib,
        extra.ws_msgs_per_s,
        goal(extra.ws_total_kib < 40 * 1024)
    );
    let _ = writeln!(
        md,
        "| ≥ 10× the Node proxy (1.5% of direct) | {:.1}% of direct | {} |",
        100.0 * ours32 / direct32,
        goal(ours32 / direct32 >= 0.15)
    );
    let _ = writeln!(md, "\n## Streaming and connection reuse (ours)\n");
    let _ = writeln!(md, "| measure | value |\n| --- | --- |");
    let _ = writeln!(
        md,
        "| download {} MiB | {:.0} MiB/s |",
        extra.stream_mib, extra.down_mib_s
    );
    let _ = writeln!(
        md,
        "| upload {} MiB | {:.0} MiB/s |",
        extra.stream_mib, extra.up_mib_s
    );
    let _ = writeln!(
        md,
        "| proxy peak RSS through both streams (before the WebSocket test) | {} KiB |",
        extra.stream_peak_kib
    );
    let _ = writeln!(
        md,
        "| new upstream connections per 10,000 keep-alive requests | {} |",
        extra.new_upstream_conns
    );
    let _ = writeln!(md, "\n## Micro-benchmarks (criterion)\n\n```\n{micro}```");
    std::fs::write(out_dir.join("results.md"), &md)?;
    std::fs::write(
        out_dir.join("results.json"),
        serde_json::to_string_pretty(&json!({
            "mode": if opts.quick { "quick" } else { "full" }, "rounds": rounds, "seconds": secs,
            "http": json_rows,
            "rss_kib": {"idle": ours_idle_kib, "after_load": ours_after_kib, "peak": ours_peak_kib, "peak_through_streaming": extra.stream_peak_kib},
            "websocket": {"connections": extra.ws_conns, "total_kib": extra.ws_total_kib, "per_conn_kib": extra.ws_per_conn_kib, "messages_per_s": extra.ws_msgs_per_s},
            "streaming": {"mib": extra.stream_mib, "download_mib_s": extra.down_mib_s, "upload_mib_s": extra.up_mib_s},
            "new_upstream_connections_per_10k": extra.new_upstream_conns,
            "micro": micro,
        }))?,
    )?;
    println!("\n{md}");
    println!(
        "written: {} and results.json",
        out_dir.join("results.md").display()
    );
    Ok(())
}

struct Extra {
    ws_conns: usize,
    ws_total_kib: u64,
    ws_per_conn_kib: f64,
    ws_msgs_per_s: f64,
    stream_mib: u64,
    stream_peak_kib: u64,
    down_mib_s: f64,
    up_mib_s: f64,
    new_upstream_conns: u64,
}

async fn proxy_only(
    xtask_bin: &Path,
    proxy_port: u16,
    proxy_pid: u32,
    quick: bool,
) -> Result<Extra> {
    use futures_util::{SinkExt, StreamExt};
    use http_body_util::BodyExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let up_port = free_port()?;
    let _up = Server {
        child: pinned("1", &xtask_bin.display().to_string())
            .args(["bench-upstream", "--port", &up_port.to_string()])
            .spawn()?,
        port: up_port,
    };
    wait_port(up_port, "bench upstream")?;
    let proxy: SocketAddr = ([127, 0, 0, 1], proxy_port).into();
    let target = format!("localhost:{up_port}");

    // Connection reuse: after a warm-up of 400 requests (the pool fills), 10,000 requests over 8
    // keep-alive client connections; count the upstream connections opened during those.
    let mut accepts_before = 0;
    for (phase, per_conn) in [("warm-up", 50), ("measured", 1250)] {
        if phase == "measured" {
            accepts_before = upstream::accepted(up_port).await?;
        }
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let target = target.clone();
            tasks.push(tokio::spawn(async move {
                let s = tokio::net::TcpStream::connect(proxy).await?;
                let (mut tx, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s)).await?;
                tokio::spawn(conn);
                for _ in 0..per_conn {
                    let req = http::Request::get("/small")
                        .header("host", "bench")
                        .header("x-iterate-proxy-target-host", target.as_str())
                        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
                    let resp = tx.send_request(req).await?;
                    resp.into_body().collect().await?;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
    }
    // The first `accepted` call's own connection is counted by the second.
    let new_upstream_conns = upstream::accepted(up_port)
        .await?
        .saturating_sub(accepts_before + 1);

    // Streaming 1 GiB each way (256 MiB in quick mode).
    let stream_mib: u64 = if quick { 256 } else { 1024 };
    let bytes = stream_mib * 1024 * 1024;
    let t = Instant::now();
    let mut tx = connect(proxy).await?;
    let resp = tx
        .send_request(
            http::Request::get(format!("/download?bytes={bytes}"))
                .header("host", "bench")
                .header("x-iterate-proxy-target-host", target.as_str())
                .body(http_body_util::Empty::<bytes::Bytes>::new())?,
        )
        .await?;
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(f) = body.frame().await {
        got += f?.data_ref().map(|d| d.len() as u64).unwrap_or(0);
    }
    if got != bytes {
        bail!("download through the proxy: {got} of {bytes} bytes");
    }
    let down_mib_s = stream_mib as f64 / t.elapsed().as_secs_f64();
    let chunk = bytes::Bytes::from(vec![0x5au8; 256 * 1024]);
    let (btx, mut brx) = tokio::sync::mpsc::channel::<
        Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>,
    >(4);
    tokio::spawn(async move {
        let mut sent = 0u64;
        while sent < bytes {
            if btx
                .send(Ok(hyper::body::Frame::data(chunk.clone())))
                .await
                .is_err()
            {
                return;
            }
            sent += chunk.len() as u64;
        }
    });
    let t = Instant::now();
    let mut tx = connect(proxy).await?;
    let resp = tx
        .send_request(
            http::Request::post("/upload")
                .header("host", "bench")
                .header("x-iterate-proxy-target-host", target.as_str())
                .body(http_body_util::StreamBody::new(
                    futures_util::stream::poll_fn(move |cx| brx.poll_recv(cx)),
                ))?,
        )
        .await?;
    let text = String::from_utf8_lossy(&resp.into_body().collect().await?.to_bytes()).into_owned();
    if text.trim() != bytes.to_string() {
        bail!("upload through the proxy: upstream counted {text:?}, sent {bytes}");
    }
    let up_mib_s = stream_mib as f64 / t.elapsed().as_secs_f64();
    // Peak resident memory so far: the streams are the largest bodies the proxy has carried.
    let stream_peak_kib = status_kib(proxy_pid, "VmHWM:");

    // WebSockets: 1,000 open at once, idle, then all echoing.
    let ws_conns = 1000usize;
    let rss_before = status_kib(proxy_pid, "VmRSS:");
    let mut sockets = Vec::with_capacity(ws_conns);
    for _ in 0..ws_conns {
        let mut req = format!("ws://{proxy}/ws").into_client_request()?;
        req.headers_mut()
            .insert("x-iterate-proxy-target-host", target.parse()?);
        let s = tokio::net::TcpStream::connect(proxy).await?;
        let (ws, _) = tokio_tungstenite::client_async(req, s).await?;
        sockets.push(ws);
    }
    let rss_open = status_kib(proxy_pid, "VmRSS:");
    let ws_total_kib = rss_open;
    let ws_per_conn_kib = (rss_open.saturating_sub(rss_before)) as f64 / ws_conns as f64;
    let count = Arc::new(AtomicU64::new(0));
    let dur = Duration::from_secs(if quick { 2 } else { 5 });
    let end = Instant::now() + dur;
    let mut handles = Vec::new();
    for mut ws in sockets {
        let count = count.clone();
        handles.push(tokio::spawn(async move {
            while Instant::now() < end {
                if ws.send(Message::Text("ping".into())).await.is_err() {
                    break;
                }
                match ws.next().await {
                    Some(Ok(_)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
            let _ = ws.close(None).await;
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let ws_msgs_per_s = count.load(Ordering::Relaxed) as f64 / dur.as_secs_f64();
    Ok(Extra {
        ws_conns,
        ws_total_kib,
        ws_per_conn_kib,
        ws_msgs_per_s,
        stream_mib,
        stream_peak_kib,
        down_mib_s,
        up_mib_s,
        new_upstream_conns,
    })
}

/// An HTTP/1.1 client connection to `addr`.
async fn connect<B>(addr: SocketAddr) -> Result<hyper::client::conn::http1::SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let s = tokio::net::TcpStream::connect(addr).await?;
    let (tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s)).await?;
    tokio::spawn(conn);
    Ok(tx)
}

fn micro_benchmarks(cargo: &str) -> Result<String> {
    let out = Command::new(cargo)
        .args([
            "bench",
            "--quiet",
            "-p",
            "project-ingress-proxy",
            "--bench",
            "parse",
            "--",
            "--warm-up-time",
            "1",
            "--measurement-time",
            "2",
        ])
        .output()
        .context("running cargo bench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut s = String::new();
    let mut name = String::new();
    for line in text.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() && !line.contains("time:") {
            name = line.trim().to_string();
        }
        if let Some(i) = line.find("time:") {
            let head = line[..i].trim();
            let n = if head.is_empty() { name.as_str() } else { head };
            let _ = writeln!(s, "{n:<40} {}", line[i..].trim());
        }
    }
    if s.is_empty() {
        bail!(
            "cargo bench printed no timings:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(s)
}
