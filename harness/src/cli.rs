//! The command line shared by `cargo xtask e2e` and `cargo test -p harness --test e2e`.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

use crate::{
    Backend, Layout, check_snapshots, discover, expected_snapshots, filter, orphan_snapshots,
    run_all, tidy_snapshots,
};

/// Run the end-to-end scenarios under fixtures/scenarios and compare each step's hop trace with
/// its reviewed snapshot under fixtures/snapshots.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask e2e", bin_name = "cargo xtask e2e")]
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
    /// Write a static HTML report (DIR/index.html plus its assets and one SVG per step): the
    /// summary, then every scenario, failures first, with its diagrams and snapshot diffs.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
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

/// Runs the CLI; returns the process exit code.
pub fn main_with_args(args: Vec<String>) -> i32 {
    let args = match Args::try_parse_from(args) {
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
    let all_found = all.clone();
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
        // A closed pipe (`--list | head`) ends the listing quietly.
        let mut out = std::io::stdout().lock();
        for f in &found {
            let desc = sim::scenario::Scenario::load(&f.path)
                .map(|s| s.description)
                .unwrap_or_else(|e| format!("<{e}>"));
            if writeln!(out, "{:<48} {desc}", f.id).is_err() {
                return 0;
            }
        }
        let _ = writeln!(out, "{}", count(found.len(), "scenario"));
        return 0;
    }
    if found.is_empty() {
        eprintln!(
            "e2e: no scenario id contains {}",
            args.filters
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        );
        return 1;
    }
    if args.accept && args.backend == Backend::Docker {
        eprintln!(
            "e2e: --accept works in-process only: the docker backend compares with the same snapshots, and a difference is a bug to fix, not a second snapshot"
        );
        return 2;
    }
    crate::quiet_insta_hints();
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
    let mut orphans: Vec<PathBuf> = Vec::new();
    if unfiltered && args.backend == Backend::InProcess {
        // Snapshots the scenario files call for (a scenario that does not load has failed above,
        // and its snapshots are then not judged, so `--accept` cannot delete them).
        match expected_snapshots(&layout, &all_found) {
            Ok(produced) => {
                for o in orphan_snapshots(&layout, &produced) {
                    if args.accept {
                        let _ = std::fs::remove_file(&o);
                        println!("removed orphan snapshot {}", o.display());
                    } else {
                        println!(
                            "FAIL orphan snapshot (no scenario step produces it): {}",
                            o.display()
                        );
                        orphans.push(o);
                    }
                }
            }
            Err(e) => println!("orphan snapshots not checked: {e}"),
        }
    }
    if args.accept && args.backend == Backend::InProcess {
        let ran: BTreeSet<PathBuf> = runs
            .iter()
            .flat_map(|r| {
                let dir = crate::snapshot_dir(&layout, &r.found);
                r.steps
                    .iter()
                    .map(move |s| dir.join(format!("{}.snap", s.snapshot_name)))
            })
            .collect();
        for p in tidy_snapshots(&layout, (!unfiltered).then_some(&ran)) {
            println!("removed {}", p.display());
        }
    }
    let orphans_found = orphans.len();
    failed += orphans_found;
    let elapsed = started.elapsed();
    if let Some(path) = &args.junit {
        let refs: Vec<_> = results.iter().map(|(r, f)| (*r, f.clone())).collect();
        let xml = match crate::junit::render(&refs, orphans_found, elapsed) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("e2e: cannot render the JUnit report: {e}");
                return 2;
            }
        };
        if let Err(e) = std::fs::write(path, xml) {
            eprintln!("e2e: cannot write {}: {e}", path.display());
            return 2;
        }
        println!("junit report: {}", path.display());
    }
    if let Some(dir) = &args.report {
        let refs: Vec<_> = results.iter().map(|(r, f)| (*r, f.clone())).collect();
        let report = crate::report::Run {
            layout: &layout,
            results: &refs,
            orphans: &orphans,
            elapsed,
            backend: args.backend,
            jobs: args.jobs,
        };
        match crate::report::write(dir, &report) {
            Ok(index) => println!("report: {}", index.display()),
            Err(e) => {
                eprintln!("e2e: cannot write the report in {}: {e}", dir.display());
                return 2;
            }
        }
    }
    println!(
        "wall time: {:.2}s ({}, {})",
        elapsed.as_secs_f64(),
        count(runs.len(), "scenario"),
        count(args.jobs, "job")
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

/// `1 scenario`, `2 scenarios`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_are_pluralised() {
        assert_eq!(count(1, "scenario"), "1 scenario");
        assert_eq!(count(0, "scenario"), "0 scenarios");
        assert_eq!(count(8, "job"), "8 jobs");
    }
}
