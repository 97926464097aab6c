//! `cargo xtask <task>`: the project's developer commands.
//!
//! - `e2e [FILTER…] [--list] [--accept] [--junit PATH] [--backend in-process|docker]`: every
//!   end-to-end scenario through the simulated chain, compared with reviewed snapshots; with
//!   `--backend docker` the machine image is built first and Docker machines run as containers.
//! - `dist`: the static release binary a machine image ships (path, size, `--version`).
//! - `image`: a `FROM scratch` machine image (proxy + the simulator's apps), tagged for the commit.
//! - `fuzz [--cases N]`: the proxy's property tests (target parsing, request heads) with a large
//!   budget, in release mode.
//! - `bench [--quick]`: throughput, latency, CPU and memory of the proxy against direct, nginx and
//!   HAProxy, written to `target/bench/results.{md,json}`.
//! - `soak [--requests N] [--seconds S]`: mixed traffic through the release proxy binary, checking
//!   memory and file descriptors do not grow.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

mod bench;
mod upstream;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run the end-to-end scenarios (arguments go to the runner; see `cargo xtask e2e --help`).
    #[command(disable_help_flag = true)]
    E2e {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Property-based fuzzing of the proxy's parsing and request-head path.
    Fuzz {
        /// Cases per property.
        #[arg(long, default_value_t = 20_000)]
        cases: u32,
    },
    /// Build the release, statically linked `project-ingress-proxy` a machine image ships.
    Dist,
    /// Build the `FROM scratch` machine image (static proxy + static ingress-sim apps).
    Image,
    /// Benchmark the proxy against direct, nginx and HAProxy (a few minutes; `--quick`: under one).
    Bench {
        #[arg(long)]
        quick: bool,
        /// Another project-ingress-proxy binary (say, a release build of an earlier commit) run
        /// as the target `baseline`, interleaved with the others, for a before/after in one run.
        #[arg(long, value_name = "BIN")]
        baseline: Option<std::path::PathBuf>,
    },
    /// (used by `bench`) the bench's upstream server.
    #[command(hide = true)]
    BenchUpstream {
        #[arg(long)]
        port: u16,
    },
    /// A bounded soak of the release proxy binary.
    Soak {
        #[arg(long, default_value_t = 1_000_000)]
        requests: u64,
        /// Stop after this many seconds even if fewer requests were sent.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
    },
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

const DIST_TARGET: &str = "x86_64-unknown-linux-gnu";

fn workspace_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Static release build of one binary package: glibc with `crt-static` (this toolchain has no
/// musl target installed). Fails if the result is dynamically linked.
fn static_build(package: &str, bin: &str, profile: &str) -> Result<std::path::PathBuf> {
    let target_dir = workspace_root().join("target/dist");
    let st = cargo()
        .args([
            "build",
            "--profile",
            profile,
            "--package",
            package,
            "--bin",
            bin,
            "--target",
            DIST_TARGET,
            "--target-dir",
        ])
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .status()?;
    if !st.success() {
        anyhow::bail!("static build of {bin} failed");
    }
    let path = target_dir.join(DIST_TARGET).join(profile).join(bin);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    if has_interpreter(&bytes) {
        anyhow::bail!(
            "{} is dynamically linked (it has an ELF interpreter)",
            path.display()
        );
    }
    Ok(path.canonicalize()?)
}

fn dist() -> Result<std::path::PathBuf> {
    let bin = static_build("project-ingress-proxy", "project-ingress-proxy", "release")?;
    let size = std::fs::metadata(&bin)?.len();
    let version = Command::new(&bin).arg("--version").output()?;
    println!("path:    {}", bin.display());
    println!(
        "size:    {} bytes ({:.1} MiB)",
        size,
        size as f64 / 1048576.0
    );
    println!("linking: static (no ELF interpreter)");
    println!(
        "version: {}",
        String::from_utf8_lossy(&version.stdout).trim()
    );
    Ok(bin)
}

/// A `FROM scratch` machine image: the static proxy and the static `ingress-sim` (whose
/// `machine` command runs the apps and the proxy), tagged for the current commit. Nothing is pulled.
fn image() -> Result<String> {
    let t = std::time::Instant::now();
    let step = |n: u32, what: &str| {
        eprintln!(
            "image: [{n}/3] {what} ({:.1} s so far)",
            t.elapsed().as_secs_f64()
        )
    };
    step(
        1,
        "static release build of project-ingress-proxy (cargo shows its progress)",
    );
    let proxy = dist()?;
    step(2, "static build of ingress-sim (profile sim-image)");
    let sim = static_build("ingress-sim", "ingress-sim", "sim-image")?;
    step(3, "docker build of the FROM scratch image");
    let ctx = workspace_root().join("target/image");
    let _ = std::fs::remove_dir_all(&ctx);
    std::fs::create_dir_all(&ctx)?;
    std::fs::copy(&proxy, ctx.join("project-ingress-proxy"))?;
    std::fs::copy(&sim, ctx.join("ingress-sim"))?;
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY project-ingress-proxy /project-ingress-proxy\nCOPY ingress-sim /ingress-sim\n\
         EXPOSE 8080\nENTRYPOINT [\"/ingress-sim\", \"machine\", \"--proxy\", \"/project-ingress-proxy\"]\n",
    )?;
    let rev = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()?;
    let rev = String::from_utf8_lossy(&rev.stdout).trim().to_string();
    let rev = if rev.is_empty() {
        "dev".to_string()
    } else {
        rev
    };
    // A tree with uncommitted changes is not the commit: say so in the tag.
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let tag = if dirty {
        format!("ingress-machine:{rev}-dirty")
    } else {
        format!("ingress-machine:{rev}")
    };
    let st = Command::new("docker")
        .args([
            "build",
            "--quiet",
            "-t",
            &tag,
            "-t",
            "ingress-machine:latest",
        ])
        .arg(&ctx)
        .status()
        .context("running docker (is a Docker engine installed and running?)")?;
    if !st.success() {
        anyhow::bail!("docker build failed");
    }
    // Older builds of this image would pile up on every run: keep only this one and `latest`.
    if let Ok(out) = Command::new("docker")
        .args([
            "image",
            "ls",
            "ingress-machine",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ])
        .output()
    {
        for old in String::from_utf8_lossy(&out.stdout).lines() {
            if old != tag && old != "ingress-machine:latest" && !old.ends_with(":<none>") {
                let _ = Command::new("docker")
                    .args(["image", "rm", "--no-prune", old])
                    .output();
            }
        }
    }
    let size = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Size}}", &tag])
        .output()?;
    let size: u64 = String::from_utf8_lossy(&size.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    println!(
        "image:   {tag} (also ingress-machine:latest), {:.1} MiB, built in {:.1} s",
        size as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    println!(
        "run:     docker run --rm -p 127.0.0.1:0:8080 {tag} --spec-json '<a [[machines]] entry as JSON>'"
    );
    Ok(tag)
}

/// Whether a 64-bit little-endian ELF file has a `PT_INTERP` program header (dynamic linking).
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(|b| u64::from_le_bytes(b) as usize)
    };
    if elf.get(0..4) != Some(b"\x7fELF") {
        return true;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return true;
    };
    (0..phnum).any(|i| u32_at(phoff + i * phentsize) == Some(3))
}

/// `cargo test --release -p project-ingress-proxy --test NAME -- EXTRA --nocapture` with env vars.
fn proxy_test_release(name: &str, extra: &[&str], env: &[(&str, u64)]) -> Command {
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--release",
        "--package",
        "project-ingress-proxy",
        "--test",
        name,
        "--",
    ])
    .args(extra)
    .arg("--nocapture");
    for (k, v) in env {
        cmd.env(k, v.to_string());
    }
    cmd
}

fn status(mut cmd: Command) -> Result<ExitCode> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    Ok(ExitCode::from(st.code().unwrap_or(1).clamp(0, 255) as u8))
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.task {
        Task::E2e { args } => {
            let docker = args
                .windows(2)
                .any(|w| w[0] == "--backend" && w[1] == "docker")
                || args.iter().any(|a| a == "--backend=docker");
            let mut cmd = cargo();
            if docker {
                // The containers run the image of this tree: build it first (no registry here).
                let tag = image()?;
                cmd.env("INGRESS_MACHINE_IMAGE", tag);
            }
            cmd.args([
                "run",
                "--quiet",
                "--package",
                "harness",
                "--bin",
                "e2e",
                "--",
            ])
            .args(args);
            status(cmd)
        }
        Task::Dist => {
            dist()?;
            Ok(ExitCode::SUCCESS)
        }
        Task::Image => {
            image()?;
            Ok(ExitCode::SUCCESS)
        }
        Task::Bench { quick, baseline } => {
            bench::run(bench::Opts { quick, baseline })?;
            Ok(ExitCode::SUCCESS)
        }
        Task::BenchUpstream { port } => {
            upstream::serve(port)?;
            Ok(ExitCode::SUCCESS)
        }
        Task::Fuzz { cases } => {
            println!("fuzz: {cases} cases per property");
            status(proxy_test_release(
                "properties",
                &[],
                &[("PROPTEST_CASES", u64::from(cases))],
            ))
        }
        Task::Soak { requests, seconds } => status(proxy_test_release(
            "soak",
            &["--ignored"],
            &[("SOAK_REQUESTS", requests), ("SOAK_SECONDS", seconds)],
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::has_interpreter;

    #[test]
    fn detects_dynamic_linking() {
        // This test binary is dynamically linked: it has an interpreter.
        let me = std::fs::read("/proc/self/exe").unwrap();
        assert!(has_interpreter(&me));
        // Not an ELF file at all: treated as "not known static".
        assert!(has_interpreter(b"#!/bin/sh\n"));
        assert!(has_interpreter(b""));
    }
}
