//! `cargo xtask e2e` runs this binary.
fn main() {
    // Output piped into a reader that stops early (`| head`) ends the run quietly, as other
    // command-line tools do, instead of a panic at the next print.
    // SAFETY: restores the default disposition of SIGPIPE before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    std::process::exit(harness::cli::main_with_args(std::env::args().collect()));
}
