//! `cargo test` entry point: the same runner and CLI as `cargo xtask e2e`.
fn main() {
    std::process::exit(harness::cli::main_with_args(std::env::args().collect()));
}
