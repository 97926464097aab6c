//! The chain's invariants (docs/trace.md): a trace whose hops disagree is reported, in the trace
//! document, in the human trace and by `trace`'s exit status. The disagreement is real, not
//! faked: two Fly machines of different projects share one Fly app name (a mis-wired platform
//! record), so the router chooses one machine and the Fly edge delivers to the other.

use std::path::{Path, PathBuf};
use std::process::Command;

use sim::exec::run_step;
use sim::render::{Style, render};
use sim::scenario::Scenario;
use sim::{World, WorldSpec};

/// `mach_b` is listed first, so the Fly edge's app `prd-shared` is `mach_b`; project `a`'s only
/// machine, `mach_a`, names the same app.
const MISWIRED: &str = r#"
name = "miswired"
router = "v0"
[env]
OS_WORKER_ROUTES = "*.iterate.town/*"
PROJECT_INGRESS_PROXY_HOST_MATCHERS = "*.iterate.town"
[[projects]]
slug = "a"
[[projects]]
slug = "b"
[[machines]]
id = "mach_b"
project = "b"
state = "active"
provider = "fly"
external_id = "prd-shared"
apps = [{ port = 3000, kind = "echo" }]
[[machines]]
id = "mach_a"
project = "a"
state = "active"
provider = "fly"
external_id = "prd-shared"
apps = [{ port = 3000, kind = "echo" }]
"#;

fn step(url: &str) -> sim::scenario::Step {
    let text = format!("description = \"x\"\nworld = \"miswired\"\n[[steps]]\nurl = \"{url}\"\n");
    Scenario::parse(&text, Path::new("inline.toml"))
        .unwrap()
        .steps
        .remove(0)
}

#[tokio::test]
async fn a_machine_the_router_did_not_choose_is_reported() {
    let spec = WorldSpec::parse(MISWIRED, Path::new("miswired.toml")).unwrap();
    let world = World::start(spec).await.unwrap();

    let doc = run_step(&world, &step("https://a.iterate.town/")).await;
    // The request did reach an app and got a 200: without the check this reads as success.
    assert_eq!(doc.response.as_ref().map(|r| r.status), Some(200));
    assert_eq!(doc.outcome.reached.as_deref(), Some("app mach_b:3000"));
    assert_eq!(
        doc.invariant_violations,
        ["the router chose machine mach_a, but the request reached machine mach_b"],
        "{:#?}",
        doc.hops
    );
    // In the trace document (JSON, snapshots) and prominently at the end of the human trace.
    let json = doc.redacted(&world);
    assert_eq!(
        json["invariant_violations"][0],
        "the router chose machine mach_a, but the request reached machine mach_b"
    );
    let text = render(&doc, Style { color: false });
    assert!(
        text.ends_with(
            "CHAIN INVARIANT VIOLATED (1): the hops disagree\n  ✗ the router chose machine mach_a, but the request reached machine mach_b\n"
        ),
        "{text}"
    );

    // Project b's own request agrees with itself: nothing reported, and the field is absent.
    let ok = run_step(&world, &step("https://b.iterate.town/")).await;
    assert!(
        ok.invariant_violations.is_empty(),
        "{:?}",
        ok.invariant_violations
    );
    assert!(ok.redacted(&world).get("invariant_violations").is_none());
    world.shutdown().await;
}

#[test]
fn trace_exits_non_zero_on_a_violation() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("invariants");
    std::fs::create_dir_all(&dir).unwrap();
    let world = dir.join("miswired.toml");
    std::fs::write(&world, MISWIRED).unwrap();
    let run = |url: &str| {
        Command::new(env!("CARGO_BIN_EXE_ingress-sim"))
            .args(["trace", "--world", world.to_str().unwrap(), url])
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let bad = run("https://a.iterate.town/");
    let (out, err) = (
        String::from_utf8_lossy(&bad.stdout),
        String::from_utf8_lossy(&bad.stderr),
    );
    assert_eq!(bad.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("CHAIN INVARIANT VIOLATED"), "{out}");
    assert!(
        err.contains("the trace breaks 1 chain invariant(s): the router chose machine mach_a"),
        "{err}"
    );
    let good = run("https://b.iterate.town/");
    assert_eq!(good.status.code(), Some(0));
}
