//! `cargo xtask <task>`: the project's developer commands.
//!
//! - `e2e [FILTER…] [--list] [--accept] [--junit PATH] [--backend in-process]`: every end-to-end
//!   scenario through the simulated chain, compared with reviewed snapshots.
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
