//! The e2e report and a diagram, opened in a real browser (headless Chromium, Debian's `chromium`;
//! `bash .ci/install-browser` installs it, as CI does). A throwaway fixtures tree gets two
//! scenarios, one passing and one whose snapshot was changed, and `e2e --report` writes the
//! report; Chromium loads `index.html` and one diagram's SVG from `file://`, takes screenshots
//! (kept under `target/browser-check/`) and dumps the DOM it rendered, which must hold the
//! scenario ids, the diagrams' participants and the marks of the stylesheet and script having
//! taken effect. Where Chromium cannot be had the test says why and passes, unless
//! `INGRESS_REQUIRE_BROWSER=1` (set by `.ci/run`), where that is a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::scratch;

const BIN: &str = env!("CARGO_BIN_EXE_e2e");
/// Chromium's start and render are well under this; it is a hang bound, not a wait.
const BROWSER_DEADLINE: Duration = Duration::from_secs(90);

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
}

fn fixtures() -> PathBuf {
    common::fixtures_tree(
        "browser-check",
        &[
            (
                "demo/ok_port.toml",
                "description = \"the 4096 prefix reaches the app on 4096\"\nworld = \"default\"\n[[steps]]\nurl = \"https://4096__misha.iterate.town/session\"\nexpect = { status = 200 }\n",
            ),
            (
                "demo/unknown_machine.toml",
                "description = \"an unknown machine is refused by the router\"\nworld = \"default\"\n[[steps]]\nurl = \"https://mach_nope.machines.iterate.town/\"\nexpect = { status = 404, error = \"machine_not_found\" }\n",
            ),
        ],
    )
}

fn e2e(fixtures: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("--fixtures")
        .arg(fixtures)
        .args(args)
        .env("CI", "true")
        .env_remove("INSTA_UPDATE")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Runs Chromium headless on `url` with `args`; its stdout, or why it failed.
fn run_browser(
    browser: &Path,
    profile: &Path,
    args: &[String],
    url: &str,
) -> Result<String, String> {
    let child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--allow-file-access-from-files",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", browser.display()))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(BROWSER_DEADLINE) {
        Ok(Ok(out)) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Ok(Ok(out)) => Err(format!(
            "{} exited with {}: {}",
            browser.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => {
            // SAFETY: the pid is our own child's, which has not been reaped (wait is pending).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            Err(format!(
                "{} did not finish within {BROWSER_DEADLINE:?}",
                browser.display()
            ))
        }
    }
}

/// `href="…"` and `src="…"` values of a page that name local files.
fn local_refs(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["href=\"", "src=\""] {
        let mut rest = html;
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            let v = &rest[..rest.find('"').unwrap_or(0)];
            if !v.starts_with('#') && !v.contains("://") {
                out.push(v.to_string());
            }
        }
    }
    out
}

/// A screenshot of `url` at `size` (`W,H`) into `png`, checked to be a PNG of some substance.
fn screenshot(browser: &Path, profile: &Path, url: &str, png: &Path, size: &str) {
    let _ = std::fs::remove_file(png);
    run_browser(
        browser,
        profile,
        &[
            format!("--screenshot={}", png.display()),
            format!("--window-size={size}"),
        ],
        url,
    )
    .unwrap();
    assert!(is_png(png), "no screenshot at {}", png.display());
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.len() > 10_000 && b.starts_with(b"\x89PNG\r\n\x1a\n"))
}

#[test]
fn report_and_diagram_render_in_chromium() {
    let Some(browser) = chromium() else {
        let why = "skipped: Chromium is not installed (bash .ci/install-browser installs Debian's chromium)";
        if std::env::var_os("INGRESS_REQUIRE_BROWSER").is_some_and(|v| v == "1") {
            panic!("INGRESS_REQUIRE_BROWSER=1 but {why}");
        }
        println!("{why}");
        return;
    };
    let fx = fixtures();
    // Record both snapshots, then change one: that scenario now fails with a diff.
    let (code, out) = e2e(&fx, &["--accept"]);
    assert_eq!(code, 0, "{out}");
    let snap = fx.join("snapshots/demo/unknown_machine-01.snap");
    let text = std::fs::read_to_string(&snap).unwrap();
    assert!(text.contains("machine_not_found"), "{text}");
    std::fs::write(&snap, text.replace("machine_not_found", "machine_lost")).unwrap();
    let report = scratch("report");
    let (code, out) = e2e(&fx, &["--report", report.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("e2e: 1 passed, 1 failed"), "{out}");
    let index = report.join("index.html");
    assert!(
        out.contains(&format!("report: {}", index.display())),
        "{out}"
    );

    // Every file the page refers to is there.
    let html = std::fs::read_to_string(&index).unwrap();
    let refs = local_refs(&html);
    assert!(refs.iter().any(|r| r == "assets/report.css"), "{refs:?}");
    assert!(refs.iter().any(|r| r.ends_with(".svg")), "{refs:?}");
    for r in &refs {
        assert!(
            report.join(r).is_file(),
            "index.html refers to {r}, which is missing"
        );
    }

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser-check");
    std::fs::create_dir_all(&shots).unwrap();
    let profile = scratch("profile");
    let url = format!("file://{}", index.display());
    let page_png = shots.join("report.png");
    screenshot(&browser, &profile, &url, &page_png, "1400,1600");
    let dom = run_browser(&browser, &profile, &["--dump-dom".into()], &url).unwrap();
    // The stylesheet and the script both took effect (the script marks it).
    assert!(
        dom.contains("data-assets=\"css js\""),
        "assets did not load: {}",
        &dom[..dom.len().min(600)]
    );
    assert!(
        dom.contains("type=\"search\""),
        "the script's search box is missing"
    );
    for id in ["demo/ok_port", "demo/unknown_machine"] {
        assert!(
            dom.contains(&format!("data-id=\"{id}\"")),
            "{id} missing from the DOM"
        );
    }
    assert!(dom.contains("e2e: 1 passed, 1 failed"));
    // Failures first, with the snapshot's diff.
    let failed_at = dom.find("data-id=\"demo/unknown_machine\"").unwrap();
    assert!(failed_at < dom.find("data-id=\"demo/ok_port\"").unwrap());
    let marked = |class: &str, text: &str| {
        dom.split(&format!("<span class=\"{class}\">"))
            .skip(1)
            .any(|s| s.split("</span>").next().is_some_and(|l| l.contains(text)))
    };
    assert!(
        marked("del", "machine_lost"),
        "the reviewed line is not marked removed"
    );
    assert!(
        marked("add", "machine_not_found"),
        "this run's line is not marked added"
    );
    // The diagrams have their participants.
    for p in [
        "client",
        "edge",
        "router_v0",
        "provider_docker",
        "machine_mach_123",
        "app_mach_123_4096",
    ] {
        assert!(
            dom.contains(&format!("data-participant=\"{p}\"")),
            "participant {p} missing"
        );
    }
    assert!(
        dom.contains("404 machine_not_found"),
        "the refusal's arrow is missing"
    );

    // One diagram on its own.
    let svg = report.join("diagrams/demo/ok_port-01.svg");
    let svg_url = format!("file://{}", svg.display());
    let svg_png = shots.join("diagram.png");
    screenshot(&browser, &profile, &svg_url, &svg_png, "1600,800");
    let svg_dom = run_browser(&browser, &profile, &["--dump-dom".into()], &svg_url).unwrap();
    assert!(svg_dom.contains("<svg"), "{svg_dom}");
    for p in ["client", "edge", "router", "provider", "machine", "app"] {
        assert!(
            svg_dom.contains(&format!(">{p}</text>")),
            "participant {p} not drawn in {}",
            svg.display()
        );
    }
    println!(
        "screenshots: {} and {}",
        page_png.display(),
        svg_png.display()
    );
    let _ = std::fs::remove_dir_all(&fx);
    let _ = std::fs::remove_dir_all(&report);
    let _ = std::fs::remove_dir_all(&profile);
}
