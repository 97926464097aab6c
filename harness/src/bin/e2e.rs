//! `cargo xtask e2e` runs this binary.
fn main() {
    std::process::exit(harness::cli::main_with_args(std::env::args().collect()));
}
