//! `cargo xtask <task>`: the project's developer commands.
//!
//! - `e2e [FILTER…] [--list] [--accept] [--junit PATH] [--backend in-process]`: every end-to-end
//!   scenario through the simulated chain, compared with reviewed snapshots.
//! - `dist`: the static release binary a machine image ships (path, size, `--version`).
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
    /// Benchmark the proxy against direct, nginx and HAProxy (a few minutes; `--quick`: under one).
    Bench {
        #[arg(long)]
        quick: bool,
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

/// Static release build: glibc with `crt-static` (this toolchain has no musl target installed).
fn dist() -> Result<()> {
    let target = "x86_64-unknown-linux-gnu";
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target_dir = root.join("target/dist");
    let st = cargo()
        .args([
            "build",
            "--release",
            "--package",
            "project-ingress-proxy",
            "--target",
            target,
            "--target-dir",
        ])
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .status()?;
    if !st.success() {
        anyhow::bail!("static build failed");
    }
    let bin = target_dir
        .join(target)
        .join("release/project-ingress-proxy");
    let bytes = std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
    if has_interpreter(&bytes) {
        anyhow::bail!(
            "{} is dynamically linked (it has an ELF interpreter)",
            bin.display()
        );
    }
    let version = Command::new(&bin).arg("--version").output()?;
    println!("path:    {}", bin.canonicalize()?.display());
    println!(
        "size:    {} bytes ({:.1} MiB)",
        bytes.len(),
        bytes.len() as f64 / 1048576.0
    );
    println!("linking: static (no ELF interpreter)");
    println!(
        "version: {}",
        String::from_utf8_lossy(&version.stdout).trim()
    );
    Ok(())
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
            let mut cmd = cargo();
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
        Task::Bench { quick } => {
            bench::run(bench::Opts { quick })?;
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
