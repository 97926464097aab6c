//! `cargo xtask <task>`: the project's developer commands.
//!
//! - `e2e [FILTER…] [--list] [--accept] [--junit PATH] [--backend in-process]`: every end-to-end
//!   scenario through the simulated chain, compared with reviewed snapshots.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

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
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
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
    }
}
