//! The e2e runner's own behaviour, on a throwaway fixtures tree: listing, filtering, a new
//! snapshot under CI (refused, nothing written) and locally (`.snap.new`), `--accept`, a changed
//! routing outcome (fails with the diff), exit codes, the summary line, and JUnit.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_e2e");

fn fixtures() -> PathBuf {
    common::fixtures_tree(
        "e2e-cli",
        &[
            (
                "demo/ok_port.toml",
                "description = \"4096 prefix\"\nworld = \"default\"\n[[steps]]\nurl = \"https://4096__misha.iterate.town/\"\nexpect = { status = 200 }\n",
            ),
            (
                "demo/no_route.toml",
                "description = \"no route\"\nworld = \"default\"\n[[steps]]\nurl = \"https://iterate.app/\"\nexpect = { status = 404, error = \"edge_no_route\" }\n",
            ),
        ],
    )
}

fn e2e(dir: &Path, args: &[&str], ci: bool) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("--fixtures")
        .arg(dir)
        .args(args)
        .env_remove("INSTA_UPDATE")
        .env_remove("INSTA_FORCE_PASS");
    if ci {
        cmd.env("CI", "true");
    } else {
        cmd.env_remove("CI")
            .env_remove("GITHUB_ACTIONS")
            .env_remove("BUILDKITE")
            .env_remove("TF_BUILD");
        cmd.env("INSTA_UPDATE", "auto");
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn snaps(dir: &Path, ext: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("snapshots/demo"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(ext))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn runner_lifecycle() {
    let dir = fixtures();

    let (code, out) = e2e(&dir, &["--list"], true);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("demo/no_route")
            && out.contains("demo/ok_port")
            && out.contains("2 scenarios"),
        "{out}"
    );

    // New snapshots under CI: fail, nothing written.
    let (code, out) = e2e(&dir, &[], true);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("e2e: 0 passed, 2 failed"), "{out}");
    assert!(
        snaps(&dir, ".snap.new").is_empty() && snaps(&dir, ".snap").is_empty(),
        "CI must not write snapshots"
    );

    // Locally: fail, and `.snap.new` files appear for review.
    let (code, out) = e2e(&dir, &[], false);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        snaps(&dir, ".snap.new"),
        vec!["no_route-01.snap.new", "ok_port-01.snap.new"]
    );

    // --accept records them and leaves no pending file behind; then CI passes.
    let (code, out) = e2e(&dir, &["--accept"], true);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        snaps(&dir, ".snap"),
        vec!["no_route-01.snap", "ok_port-01.snap"]
    );
    assert!(snaps(&dir, ".snap.new").is_empty(), "{out}");
    let (code, out) = e2e(&dir, &[], true);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("e2e: 2 passed, 0 failed"), "{out}");

    // A filter runs only the matching scenario.
    let (code, out) = e2e(&dir, &["ok_port"], true);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("e2e: 1 passed, 0 failed")
            && out.contains("(1 scenario, 8 jobs)")
            && !out.contains("demo/no_route"),
        "{out}"
    );
    let (code, out) = e2e(&dir, &["nothing_has_this_id"], true);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("e2e: no scenario id contains `nothing_has_this_id`"),
        "{out}"
    );

    // A routing change shows up as a failing diff: the same URL now reaches 3000, not 4096.
    std::fs::write(
        dir.join("scenarios/demo/ok_port.toml"),
        "description = \"4096 prefix\"\nworld = \"default\"\n[[steps]]\nurl = \"https://misha.iterate.town/\"\nexpect = { status = 200 }\n",
    )
    .unwrap();
    let junit = dir.join("report.xml");
    let (code, out) = e2e(&dir, &["--junit", junit.to_str().unwrap()], true);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL demo/ok_port"), "{out}");
    assert!(
        out.contains("target_port: 4096") && out.contains("target_port: 3000"),
        "the diff is shown:\n{out}"
    );
    assert!(out.contains("e2e: 1 passed, 1 failed"), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(r#"<testsuite name="e2e" tests="2" skipped="0" errors="0" failures="1""#)
            && xml.contains(r#"name="ok_port""#)
            && xml.contains("<failure"),
        "{xml}"
    );

    // A scenario file with an error names the file, line and field.
    std::fs::write(
        dir.join("scenarios/demo/broken.toml"),
        "description = \"x\"\nworld = \"default\"\n[[steps]]\nulr = \"https://a.b/\"\n",
    )
    .unwrap();
    let (code, out) = e2e(&dir, &["broken"], true);
    assert_eq!(code, 1);
    assert!(
        out.contains("broken.toml:4:1: unknown field `ulr`, expected one of"),
        "{out}"
    );

    // An unfiltered run fails on a snapshot that no scenario produces; --accept removes it, the
    // pending files of scenarios that are gone, and the folders left empty.
    std::fs::remove_file(dir.join("scenarios/demo/broken.toml")).unwrap();
    std::fs::remove_file(dir.join("scenarios/demo/no_route.toml")).unwrap();
    std::fs::create_dir_all(dir.join("snapshots/gone")).unwrap();
    std::fs::write(
        dir.join("snapshots/gone/old-01.snap"),
        "---\nsource: x\n---\n1\n",
    )
    .unwrap();
    std::fs::write(dir.join("snapshots/gone/old-02.snap.new"), "stale").unwrap();
    let (code, out) = e2e(&dir, &[], true);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL orphan snapshot") && out.contains("old-01.snap"),
        "{out}"
    );
    let (code, out) = e2e(&dir, &["--accept"], true);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed orphan snapshot"), "{out}");
    assert_eq!(snaps(&dir, ".snap"), vec!["ok_port-01.snap"]);
    assert!(
        !dir.join("snapshots/gone").exists(),
        "the emptied folder is removed:\n{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `cargo xtask e2e --list | head -1`: the reader goes away after one line; the runner ends
/// without a panic.
#[test]
fn list_into_a_closed_pipe() {
    let dir = fixtures();
    // Enough scenarios that the listing outgrows the pipe's buffer.
    for i in 0..2000 {
        std::fs::write(
            dir.join(format!("scenarios/demo/s{i:04}.toml")),
            "description = \"x\"\nworld = \"default\"\n[[steps]]\nurl = \"https://a.iterate.town/\"\n",
        )
        .unwrap();
    }
    let mut child = Command::new(BIN)
        .arg("--fixtures")
        .arg(&dir)
        .arg("--list")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Usage names the command as it is typed.
#[test]
fn usage_names_cargo_xtask_e2e() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Usage: cargo xtask e2e [OPTIONS]"), "{text}");
}

/// What only the world can tell is checked before anything runs, with the scenario's line and a
/// suggestion: a misspelt world, a fault or `direct` naming a machine the world does not have.
#[test]
fn scenario_errors_against_the_world() {
    let dir = fixtures();
    let write = |name: &str, body: &str| {
        std::fs::write(dir.join(format!("scenarios/demo/{name}.toml")), body).unwrap()
    };
    write(
        "bad_world",
        "description = \"x\"\nworld = \"defualt\"\n[[steps]]\nurl = \"https://a.iterate.town/\"\n",
    );
    write(
        "bad_fault",
        "description = \"x\"\nworld = \"default\"\n[[steps]]\nurl = \"https://misha.iterate.town/\"\n\n[[steps]]\nurl = \"https://misha.iterate.town/\"\nfaults = [{ fault = \"app_down\", machine = \"mach_12\", port = 3000 }]\n",
    );
    write(
        "bad_port",
        "description = \"x\"\nworld = \"default\"\n[[steps]]\nurl = \"https://misha.iterate.town/\"\nfaults = [{ fault = \"app_down\", machine = \"mach_123\", port = 3999 }]\n",
    );
    write(
        "bad_direct",
        "description = \"x\"\nworld = \"default\"\n[[steps]]\nurl = \"http://127.0.0.1:8080/\"\ndirect = \"mach_nope_at_all\"\n",
    );
    let (code, out) = e2e(&dir, &["bad_"], true);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("bad_world.toml:2:1: world: no defualt.toml in ")
            && out.contains("; did you mean default?"),
        "{out}"
    );
    assert!(
        out.contains("bad_fault.toml:8:1: steps[1].faults: no machine \"mach_12\" in world \"default\"; did you mean \"mach_123\"? (step 2, faults)"),
        "{out}"
    );
    assert!(
        out.contains("bad_port.toml:5:1: steps[0].faults: machine mach_123 has no app on port 3999 (its apps: "),
        "{out}"
    );
    assert!(
        out.contains("bad_direct.toml:5:1: steps[0].direct: no machine \"mach_nope_at_all\" in world \"default\"; the world has mach_123, "),
        "{out}"
    );
    // Nothing ran: no snapshot was compared or written.
    assert!(!out.contains("snapshot"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}
