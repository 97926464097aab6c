//! The command line shared by `cargo xtask e2e` and `cargo test -p harness --test e2e`.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

use crate::{Backend, Layout, check_snapshots, discover, filter, run_all};

/// Run the end-to-end scenarios under fixtures/scenarios and compare each step's hop trace with
/// its reviewed snapshot under fixtures/snapshots.
#[derive(Debug, Parser)]
#[command(name = "e2e")]
pub struct Args {
    /// Run only scenarios whose id (path under fixtures/scenarios, without .toml) contains one of
    /// these strings.
    pub filters: Vec<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Write new and changed snapshots instead of failing on them (review the diff before you
    /// commit), and remove snapshots no scenario produces.
    #[arg(long)]
    pub accept: bool,
    /// Write a JUnit XML report to PATH.
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
    /// How worlds run.
    #[arg(long, value_enum, default_value = "in-process")]
    pub backend: Backend,
    /// Scenarios run at the same time.
    #[arg(long, default_value_t = 8)]
    pub jobs: usize,
    /// Run only the scenarios that list this router generation in `generations`, under it.
    #[arg(long, value_name = "GENERATION")]
    pub router: Option<sim::model::Generation>,
    /// Use another fixtures tree (its `worlds/`, `scenarios/`, `snapshots/`); for the harness's
    /// own tests.
    #[arg(long, hide = true, value_name = "DIR")]
    pub fixtures: Option<std::path::PathBuf>,
}

/// Drops the flags `cargo test` hands to every test binary (libtest's), which mean nothing here.
fn strip_libtest_flags(args: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.into_iter();
    if let Some(first) = it.next() {
        out.push(first);
    }
    let with_value = [
        "--test-threads",
        "--format",
        "--color",
        "-Z",
        "--logfile",
        "--skip",
    ];
    let bare = [
        "--quiet",
        "-q",
        "--nocapture",
        "--show-output",
        "--exact",
        "--ignored",
        "--include-ignored",
        "--bench",
        "--test",
    ];
    while let Some(a) = it.next() {
        if bare.contains(&a.as_str()) || with_value.iter().any(|w| a.starts_with(&format!("{w}=")))
        {
            continue;
        }
        if with_value.contains(&a.as_str()) {
            it.next();
            continue;
        }
        out.push(a);
    }
    out
}

/// Runs the CLI; returns the process exit code.
pub fn main_with_args(args: Vec<String>) -> i32 {
    let args = match Args::try_parse_from(strip_libtest_flags(args)) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let layout = match &args.fixtures {
        Some(dir) => Layout::with_fixtures(dir.clone()),
        None => Layout::from_manifest(),
    };
    let all = match discover(&layout) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("e2e: cannot read {}: {e}", layout.scenarios().display());
            return 2;
        }
    };
    let unfiltered = args.filters.is_empty() && args.router.is_none();
    let mut found = filter(all, &args.filters);
    if let Some(g) = args.router {
        let before = found.len();
        found.retain(|f| crate::generation(f) == Some(g));
        println!(
            "--router {g}: {} scenario runs list {g} ({} others do not)",
            found.len(),
            before - found.len()
        );
    }
    if args.list {
        for f in &found {
            let desc = sim::scenario::Scenario::load(&f.path)
                .map(|s| s.description)
                .unwrap_or_else(|e| format!("<{e}>"));
            println!("{:<48} {desc}", f.id);
        }
        println!("{} scenarios", found.len());
        return 0;
    }
    if found.is_empty() {
        eprintln!("e2e: no scenario matches {:?}", args.filters);
        return 1;
    }
    if args.accept && args.backend == Backend::Docker {
        eprintln!(
            "e2e: --accept works in-process only: the docker backend compares with the same snapshots, and a difference is a bug to fix, not a second snapshot"
        );
        return 2;
    }
    if args.accept {
        // SAFETY: set before any other thread exists (the runtime is built below).
        unsafe { std::env::set_var("INSTA_UPDATE", "always") };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("e2e: cannot start tokio: {e}");
            return 2;
        }
    };
    let started = Instant::now();
    let runs = runtime.block_on(run_all(&layout, found, args.backend, args.jobs));
    let mut results = Vec::new();
    let (mut passed, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    let mut produced = BTreeSet::new();
    let stdout = std::io::stdout();
    for run in &runs {
        if let Some(why) = &run.skipped {
            skipped += 1;
            let _ = writeln!(stdout.lock(), "skip {:<52} {why}", run.found.id);
            results.push((run, vec![]));
            continue;
        }
        let mut fails = run.failures.clone();
        fails.extend(check_snapshots(&layout, run));
        for s in &run.steps {
            produced.insert(
                crate::snapshot_dir(&layout, &run.found).join(format!("{}.snap", s.snapshot_name)),
            );
        }
        let mut out = stdout.lock();
        let status = if fails.is_empty() { "ok  " } else { "FAIL" };
        let _ = writeln!(
            out,
            "{status} {:<52} {:>2} step{} {:>6.0?}",
            run.found.id,
            run.steps.len(),
            if run.steps.len() == 1 { " " } else { "s" },
            run.duration
        );
        for f in &fails {
            let _ = writeln!(out, "       - {f}");
        }
        if fails.is_empty() {
            passed += 1;
        } else {
            failed += 1;
        }
        results.push((run, fails));
    }
    if unfiltered && args.backend == Backend::InProcess {
        let orphans = orphan_snapshots(&layout, &produced);
        for o in &orphans {
            if args.accept {
                let _ = std::fs::remove_file(o);
                println!("removed orphan snapshot {}", o.display());
            } else {
                println!(
                    "FAIL orphan snapshot (no scenario step produces it): {}",
                    o.display()
                );
            }
        }
        if !args.accept && !orphans.is_empty() {
            failed += orphans.len();
        }
    }
    let elapsed = started.elapsed();
    if let Some(path) = &args.junit {
        let refs: Vec<_> = results.iter().map(|(r, f)| (*r, f.clone())).collect();
        if let Err(e) = std::fs::write(path, crate::junit::render(&refs, elapsed.as_secs_f64())) {
            eprintln!("e2e: cannot write {}: {e}", path.display());
            return 2;
        }
        println!("junit report: {}", path.display());
    }
    println!(
        "wall time: {:.2}s ({} scenarios, {} jobs)",
        elapsed.as_secs_f64(),
        runs.len(),
        args.jobs
    );
    if let Some((n, median, max)) = crate::docker::start_times() {
        println!(
            "containers: {n} started, start to healthy median {:.0} ms, max {:.0} ms",
            median.as_secs_f64() * 1000.0,
            max.as_secs_f64() * 1000.0
        );
    }
    if skipped > 0 {
        println!("e2e: {passed} passed, {failed} failed, {skipped} skipped");
    } else {
        println!("e2e: {passed} passed, {failed} failed");
    }
    if failed > 0 { 1 } else { 0 }
}

fn orphan_snapshots(layout: &Layout, produced: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![layout.snapshots()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "snap") && !produced.contains(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_flags_are_ignored() {
        let a = strip_libtest_flags(
            [
                "bin",
                "--quiet",
                "--test-threads",
                "2",
                "--format=terse",
                "websocket",
                "--nocapture",
            ]
            .map(String::from)
            .to_vec(),
        );
        assert_eq!(a, vec!["bin", "websocket"]);
    }
}
