//! The `ingress-sim` binary: `trace` (human and JSON), `scenario new`, `up`, and bad input.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ingress-sim");

fn world() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/worlds/default.toml")
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn snap_settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s
}

#[test]
fn trace_human_format() {
    let w = world();
    let (code, out, err) = run(&[
        "trace",
        "--world",
        w.to_str().unwrap(),
        "https://4096__mach_123.machines.iterate.town/session?x=1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains('\x1b'), "no colour when piped");
    snap_settings().bind(|| insta::assert_snapshot!("trace_human_ok", out));
}

#[test]
fn trace_human_format_names_the_refusing_hop() {
    let w = world();
    let (code, out, _) = run(&[
        "trace",
        "--world",
        w.to_str().unwrap(),
        "https://nomap.iterate.town/",
    ]);
    assert_eq!(
        code, 0,
        "a refusal is a result to show, not a failure of the tool"
    );
    assert!(
        out.ends_with("refused by router: 502 proxy_error (No host port mapped for 8080)\n"),
        "{out}"
    );
    snap_settings().bind(|| insta::assert_snapshot!("trace_human_refused", out));
    let (_, out, _) = run(&[
        "trace",
        "--world",
        w.to_str().unwrap(),
        "https://nowhere.example.org/",
    ]);
    assert!(
        out.ends_with("refused by edge: TLS handshake for SNI nowhere.example.org: no certificate covers nowhere.example.org (not in the world's zones: iterate.town, iterate.app, iterate.com) → fatal alert handshake_failure\n"),
        "{out}"
    );
    let (_, out, _) = run(&[
        "trace",
        "--world",
        w.to_str().unwrap(),
        "https://iterate.app/",
    ]);
    assert!(
        out.ends_with("refused by edge: edge_no_route (no worker route matches)\n"),
        "{out}"
    );
    let (_, out, _) = run(&[
        "trace",
        "--world",
        w.to_str().unwrap(),
        "https://9999__misha.iterate.town/",
    ]);
    assert!(
        out.ends_with("refused by machine proxy (mach_123): 502 proxy_error\n"),
        "{out}"
    );
}

/// The human trace shows body sizes: what the machine proxy took and gave, what the app got,
/// and the response's.
#[test]
fn trace_human_shows_body_sizes() {
    let w = world();
    let (code, out, err) = run(&[
        "trace",
        "--world",
        w.to_str().unwrap(),
        "-d",
        "hello",
        "https://4096__mach_123.machines.iterate.town/upload",
    ]);
    assert_eq!(code, 0, "{err}");
    let line = |hop: &str| {
        let lines: Vec<&str> = out.lines().collect();
        let i = lines
            .iter()
            .position(|l| l.starts_with(&format!("  {hop}")))
            .unwrap_or_else(|| panic!("no {hop} line: {out}"));
        (lines[i], lines.get(i + 1).copied().unwrap_or(""))
    };
    let (_, machine_sizes) = line("machine ");
    assert!(
        machine_sizes.trim_start().starts_with("5 bytes in, ")
            && machine_sizes.ends_with(" bytes out"),
        "{out}"
    );
    let (app, _) = line("app ");
    assert!(app.ends_with("got POST /upload, body 5 bytes"), "{out}");
    let (response, _) = line("response ");
    let out_bytes = machine_sizes.trim().trim_start_matches("5 bytes in, ");
    assert!(
        response.ends_with(&format!("({})", out_bytes.trim_end_matches(" out"))),
        "the response's size is what the machine proxy sent: {out}"
    );
}

#[test]
fn trace_json_format() {
    let w = world();
    let (code, out, err) = run(&[
        "trace",
        "--json",
        "--world",
        w.to_str().unwrap(),
        "-X",
        "POST",
        "-H",
        "Content-Type: text/plain",
        "--data",
        "hi",
        "https://my-proj.iterate.app/api",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["response"]["status"], 200);
    assert_eq!(v["hops"][0]["hop"], "edge");
    snap_settings().bind(|| insta::assert_yaml_snapshot!("trace_json", v));
}

#[test]
fn bad_input_is_a_clear_error() {
    let w = world();
    let (code, _, err) = run(&[
        "trace",
        "--world",
        "/no/such/world.toml",
        "https://x.iterate.town/",
    ]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "ingress-sim: /no/such/world.toml: cannot read world file: No such file or directory (os error 2)"
    );
    let (code, _, err) = run(&["trace", "--world", w.to_str().unwrap(), "not a url"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot use URL \"not a url\""), "{err}");
    let (code, _, err) = run(&[
        "trace",
        "--world",
        w.to_str().unwrap(),
        "-H",
        "nocolon",
        "https://misha.iterate.town/",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("expected `Name: value`"), "{err}");
    let (code, _, err) = run(&[
        "trace",
        "--world",
        w.to_str().unwrap(),
        "--fault",
        "{\"fault\":\"nope\"}",
        "https://misha.iterate.town/",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("--fault"), "{err}");
    let bad = std::env::temp_dir().join(format!("bad-world-{}.toml", std::process::id()));
    std::fs::write(&bad, "name = \"x\"\n[env]\nOS_WORKER_ROUTES = 1\n").unwrap();
    let (code, _, err) = run(&[
        "trace",
        "--world",
        bad.to_str().unwrap(),
        "https://x.iterate.town/",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{}:3:", bad.display())), "{err}");
    let _ = std::fs::remove_file(bad);
}

/// `ingress-sim scenario new NAME --world default --dir DIR URL`.
fn scenario_new(dir: &Path, name: &str, url: &str) -> (i32, String, String) {
    let w = world();
    run(&[
        "scenario",
        "new",
        name,
        "--world",
        w.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
        url,
    ])
}

#[test]
fn scenario_new_writes_a_loadable_scenario_with_the_observed_outcome() {
    let dir = std::env::temp_dir().join(format!("scen-{}", std::process::id()));
    let w = world();
    let (code, out, err) = run(&[
        "scenario",
        "new",
        "regressions/nomap",
        "--world",
        w.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
        "--description",
        "container without 8080",
        "https://nomap.iterate.town/x",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("wrote "), "{out}");
    let path = dir.join("regressions/nomap.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let s = sim::scenario::Scenario::load(&path).unwrap();
    assert_eq!(s.description, "container without 8080");
    assert_eq!(
        s.world, "default",
        "a world under fixtures/worlds is referenced by name"
    );
    assert_eq!(s.steps[0].url, "https://nomap.iterate.town/x");
    assert_eq!(s.steps[0].expect.status, Some(502));
    assert_eq!(s.steps[0].expect.error.as_deref(), Some("proxy_error"));
    // A second write without --force is refused; with it, allowed.
    let (code, _, err) = scenario_new(&dir, "regressions/nomap", "https://nomap.iterate.town/x");
    assert_eq!(code, 1);
    assert!(err.contains("exists"), "{err}");
    // A success records the app that answered.
    let (code, _, err) = scenario_new(&dir, "ok_case", "https://4096__misha.iterate.town/");
    assert_eq!(code, 0, "{err}");
    let s = sim::scenario::Scenario::load(&dir.join("ok_case.toml")).unwrap();
    assert_eq!(s.steps[0].expect.app.as_deref(), Some("mach_123:4096"));
    // Names cannot escape the scenarios directory.
    let (code, _, _) = scenario_new(&dir, "../escape", "https://misha.iterate.town/");
    assert_eq!(code, 1);
    snap_settings().bind(|| insta::assert_snapshot!("scenario_new_file", text));
    let _ = std::fs::remove_dir_all(dir);
}

/// `ingress-sim up --world WORLD` with its stdout piped.
fn spawn_up(world: &str) -> (std::process::Child, std::process::ChildStdout) {
    let mut child = Command::new(BIN)
        .args(["up", "--world", world])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    (child, stdout)
}

#[tokio::test]
async fn up_serves_until_ctrl_c() {
    let w = world();
    let (mut child, stdout) = spawn_up(w.to_str().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = tx.send(first);
        }
        for _ in lines {}
    });
    let first = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("no first line");
    let addr: std::net::SocketAddr = first
        .strip_prefix("edge: http://")
        .unwrap_or_else(|| panic!("first line was {first:?}"))
        .parse()
        .unwrap();
    let resp = sim::client::send(
        addr,
        "GET",
        "https://4096__mach_123.machines.iterate.town/x",
        &[],
        bytes::Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    signal_and_expect_clean_exit(
        &mut child,
        libc::SIGINT,
        "ingress-sim up did not stop on Ctrl-C",
    )
    .await;
}

#[test]
fn trace_options_direct_fault_and_websocket() {
    let w = world();
    let w = w.to_str().unwrap();
    // Straight to a machine's :8080 with a header of our own.
    let (code, out, err) = run(&[
        "trace",
        "--world",
        w,
        "--direct",
        "mach_123",
        "-H",
        "x-iterate-proxy-target-host: localhost:4096",
        "http://127.0.0.1:8080/direct",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(via direct mach_123:8080)"), "{out}");
    assert!(
        out.contains(
            "machine   mach_123 GET /direct: target localhost:4096 → port 4096 (local_host_port)"
        ),
        "{out}"
    );
    assert!(out.ends_with("reached the app\n"), "{out}");
    // A fault switched on first.
    let (code, out, err) = run(&[
        "trace",
        "--world",
        w,
        "--fault",
        r#"{"fault":"app_down","machine":"mach_123","port":3000}"#,
        "https://misha.iterate.town/",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("fault     {\"fault\":\"app_down\""), "{out}");
    assert!(
        out.ends_with("refused by machine proxy (mach_123): 502 proxy_error\n"),
        "{out}"
    );
    // A WebSocket exchange.
    let (code, out, err) = run(&[
        "trace",
        "--world",
        w,
        "--ws-send",
        "hi",
        "--ws-send",
        "bin:00ff",
        "wss://3001__misha.iterate.town/ws",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(r#"received ["echo:hi", "bin:00ff"], close 1000"#),
        "{out}"
    );
    // An unknown machine for --direct is bad input.
    let (code, _, err) = run(&[
        "trace",
        "--world",
        w,
        "--direct",
        "mach_nope",
        "http://127.0.0.1:8080/",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("--direct: no machine \"mach_nope\""), "{err}");
    // So is a fault aimed at a machine the world does not have, before the world starts.
    refused_before_running(
        &[
            "--fault",
            r#"{"fault":"app_down","machine":"mach_12","port":3000}"#,
            "https://misha.iterate.town/",
        ],
        "--fault: no machine \"mach_12\" in world \"default\"; did you mean \"mach_123\"?",
    );
}

#[test]
fn up_listens_where_asked() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let w = world();
    let mut child = Command::new(BIN)
        .args([
            "up",
            "--world",
            w.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(first.trim(), format!("edge: http://127.0.0.1:{port}"));
}

/// Sends `sig` to the child and waits (10 s at most) for it to exit 0.
async fn signal_and_expect_clean_exit(child: &mut std::process::Child, sig: i32, what: &str) {
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < end, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(status.success(), "{status:?}");
}

/// The proxy binary from the same target directory (built on demand for `cargo test -p ingress-sim`).
fn proxy_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let bin = dir.join("project-ingress-proxy");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-q", "-p", "project-ingress-proxy"])
            .status()
            .unwrap();
        assert!(
            st.success(),
            "building project-ingress-proxy for the machine test"
        );
    }
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `ingress-sim machine`: one machine on its own (a container's entrypoint): apps on their real
/// ports, the shipped proxy binary in front, hop events as JSON lines, SIGTERM drains and exits 0.
#[tokio::test]
async fn machine_runs_apps_behind_the_shipped_proxy() {
    let (app_port, proxy_port, control_port) = (free_port(), free_port(), free_port());
    let spec = format!(
        r#"{{"id":"mach_x","project":"p","state":"active","provider":"docker","apps":[{{"port":{app_port},"kind":"echo"}}]}}"#
    );
    let mut child = Command::new(BIN)
        .args([
            "machine",
            "--spec-json",
            &spec,
            "--listen",
            &format!("127.0.0.1:{proxy_port}"),
            "--control",
            &format!("127.0.0.1:{control_port}"),
        ])
        .arg("--proxy")
        .arg(proxy_binary())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("no ready line");
    let v: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(v["apps"][0], app_port);
    // The proxy child takes a moment to bind: poll its health with a deadline.
    let proxy: std::net::SocketAddr = ([127, 0, 0, 1], proxy_port).into();
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) =
            sim::client::send(proxy, "GET", "http://m/health", &[], bytes::Bytes::new()).await
            && r.status() == 200
        {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "the machine's proxy never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let headers = vec![
        (
            "x-iterate-proxy-target-host".to_string(),
            format!("localhost:{app_port}"),
        ),
        ("x-sim-trace-id".to_string(), "t42".to_string()),
    ];
    let resp = sim::client::send(
        proxy,
        "GET",
        "http://m/hello?x=1",
        &headers,
        bytes::Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    // The app's hop event, as a JSON line keyed by the trace id.
    let line = loop {
        let l = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("no hop event line");
        if l.contains("\"t42\"") {
            break l;
        }
    };
    let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ev["event"]["hop"], "app");
    assert_eq!(ev["event"]["path_and_query"], "/hello?x=1");
    // Then the proxy's access line, turned into the machine hop's event.
    let next_event = |id: &str| loop {
        let l = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("no hop event line");
        if l.contains(&format!("\"{id}\"")) {
            break serde_json::from_str::<serde_json::Value>(&l).unwrap();
        }
    };
    let ev = next_event("t42");
    assert_eq!(ev["event"]["hop"], "machine", "{ev}");
    assert_eq!(ev["event"]["machine"], "mach_x");
    assert_eq!(ev["event"]["target_port"], app_port);
    assert_eq!(ev["event"]["target_form"], "local_host_port");
    assert_eq!(
        ev["event"]["upstream"],
        format!("127.0.0.1:{app_port}").as_str()
    );
    assert_eq!(ev["event"]["status"], 200);
    // The control port: a fault for this machine's app, then the app is refused.
    let control: std::net::SocketAddr = ([127, 0, 0, 1], control_port).into();
    let fault = format!(r#"{{"fault":"app_down","machine":"mach_x","port":{app_port}}}"#);
    let r = sim::client::send(control, "POST", "http://c/fault", &[], fault.into())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let other = r#"{"fault":"app_down","machine":"mach_other","port":1}"#;
    let r = sim::client::send(control, "POST", "http://c/fault", &[], other.into())
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a fault for another machine is refused");
    let r = sim::client::send(
        control,
        "POST",
        "http://c/release/1",
        &[],
        bytes::Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404, "no app on port 1");
    let headers = vec![
        headers[0].clone(),
        ("x-sim-trace-id".to_string(), "t43".to_string()),
    ];
    let resp = sim::client::send(proxy, "GET", "http://m/down", &headers, bytes::Bytes::new())
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let ev = next_event("t43");
    assert_eq!(ev["event"]["hop"], "machine", "{ev}");
    assert_eq!(ev["event"]["status"], 502);
    assert_eq!(ev["event"]["error"], "proxy_error");
    signal_and_expect_clean_exit(&mut child, libc::SIGTERM, "machine did not stop on SIGTERM")
        .await;
}

/// The app hop of a `trace --json` run: (method, headers, body bytes).
fn app_hop(args: &[&str]) -> (String, Vec<String>, u64) {
    let mut all = vec!["trace", "--json", "--world", "default"];
    all.extend_from_slice(args);
    let (code, out, err) = run(&all);
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let app = doc["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hop"] == "app")
        .unwrap_or_else(|| panic!("no app hop: {out}"))
        .clone();
    (
        app["method"].as_str().unwrap().to_string(),
        app["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap().to_string())
            .collect(),
        app["body_bytes"].as_u64().unwrap(),
    )
}

/// `--world` takes a name (fixtures/worlds/<name>.toml) as scenario files do, or a path; a
/// misspelt name gets a suggestion.
#[test]
fn world_by_name_or_path() {
    let path = world();
    for w in ["default", path.to_str().unwrap()] {
        let (code, out, err) = run(&["trace", "--world", w, "https://misha.iterate.town/"]);
        assert_eq!(code, 0, "{w}: {err}");
        assert!(out.ends_with("reached the app\n"), "{w}: {out}");
    }
    let (code, _, err) = run(&["trace", "--world", "defualt", "https://misha.iterate.town/"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--world defualt: no defualt.toml in ")
            && err.contains("did you mean default?"),
        "{err}"
    );
}

/// The curl-named flags do what curl does.
#[test]
fn curl_flags_behave_as_curl() {
    let url = "https://misha.iterate.town/p";
    // No -d: GET, no body, no content type.
    let (m, h, n) = app_hop(&[url]);
    assert_eq!((m.as_str(), n), ("GET", 0));
    assert!(!h.iter().any(|h| h.starts_with("content-type")), "{h:?}");
    // -d without -X: POST, form content type.
    let (m, h, n) = app_hop(&["-d", "a=1", url]);
    assert_eq!((m.as_str(), n), ("POST", 3));
    assert!(
        h.contains(&"content-type: application/x-www-form-urlencoded".to_string()),
        "{h:?}"
    );
    // -d @file reads the file without CR and LF; repeated -d parts are joined with `&`.
    let file = std::env::temp_dir().join(format!("curl-body-{}.txt", std::process::id()));
    std::fs::write(&file, "x=1\r\ny=2\n").unwrap();
    let at = format!("@{}", file.display());
    let (m, _, n) = app_hop(&["-d", &at, "-d", "z=3", url]);
    assert_eq!((m.as_str(), n), ("POST", "x=1y=2&z=3".len() as u64));
    let _ = std::fs::remove_file(&file);
    // -X wins over -d's POST; -H content type wins over the default.
    let (m, h, _) = app_hop(&[
        "-X",
        "PUT",
        "-d",
        "{}",
        "-H",
        "Content-Type: application/json",
        url,
    ]);
    assert_eq!(m, "PUT");
    assert!(
        h.contains(&"content-type: application/json".to_string()),
        "{h:?}"
    );
    assert!(
        !h.iter().any(|h| h.contains("x-www-form-urlencoded")),
        "{h:?}"
    );
    // `-H 'Name:'` sends no such header; `-H 'Name;'` sends it empty.
    let (_, h, _) = app_hop(&["-H", "X-Gone:", "-H", "X-Empty;", url]);
    assert!(!h.iter().any(|h| h.starts_with("x-gone")), "{h:?}");
    assert!(h.contains(&"x-empty: ".to_string()), "{h:?}");
    // A missing file is an error before anything runs.
    refused_before_running(&["-d", "@/no/such/file", url], "-d @/no/such/file");
}

/// `trace --world default ARGS` exits 1 with `msg` on stderr and nothing on stdout.
fn refused_before_running(args: &[&str], msg: &str) {
    let mut all = vec!["trace", "--world", "default"];
    all.extend_from_slice(args);
    let (code, out, err) = run(&all);
    assert_eq!(code, 1, "{args:?}: {err}");
    assert!(err.contains(msg), "{err}");
    assert!(out.is_empty(), "{out}");
}

/// Flags that cannot go together are refused by the parser, before any world starts.
#[test]
fn conflicting_flags_are_refused_up_front() {
    let wss = "wss://3001__misha.iterate.town/ws";
    for args in [["-d", "x"], ["-X", "POST"]] {
        let mut all = vec!["trace", "--world", "default", "--ws-send", "hi", wss];
        all.extend_from_slice(&args);
        let (code, out, err) = run(&all);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("cannot be used with"), "{err}");
        assert!(out.is_empty(), "{out}");
    }
    // A ws:// URL is a WebSocket too: -d with it is refused before the world starts.
    let ws = "ws://3001__misha.iterate.town/ws";
    refused_before_running(&["-d", "x", ws], "takes no -d or -X");
}

/// `scenario new --world <a file outside the repository>` is refused: the scenario would point
/// out of the repository.
#[test]
fn scenario_new_refuses_a_world_outside_the_repository() {
    let base = std::env::temp_dir().join(format!("scen-out-{}", std::process::id()));
    let repo = base.join("repo");
    std::fs::create_dir_all(repo.join("fixtures/scenarios")).unwrap();
    std::fs::create_dir_all(base.join("elsewhere")).unwrap();
    let outside = base.join("elsewhere/mine.toml");
    std::fs::copy(world(), &outside).unwrap();
    let out = Command::new(BIN)
        .current_dir(&repo)
        .env("NO_COLOR", "1")
        .args(["scenario", "new", "regressions/x", "--world"])
        .arg(&outside)
        .arg("https://misha.iterate.town/")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the world is outside the repository") && err.contains("copy it to"),
        "{err}"
    );
    assert!(!repo.join("fixtures/scenarios/regressions/x.toml").exists());
    // Inside the repository it is referenced relative to the scenario.
    std::fs::create_dir_all(repo.join("fixtures/other")).unwrap();
    std::fs::copy(world(), repo.join("fixtures/other/mine.toml")).unwrap();
    let out = Command::new(BIN)
        .current_dir(&repo)
        .env("NO_COLOR", "1")
        .args([
            "scenario",
            "new",
            "regressions/x",
            "--world",
            "fixtures/other/mine.toml",
            "https://misha.iterate.town/",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s =
        sim::scenario::Scenario::load(&repo.join("fixtures/scenarios/regressions/x.toml")).unwrap();
    assert_eq!(s.world, "../../other/mine.toml");
    let _ = std::fs::remove_dir_all(base);
}

/// Every example `up` prints works as printed: the curl lines against the running world (where
/// curl is installed), the trace line with this build's binary in place of `cargo run … --`.
#[tokio::test]
async fn up_examples_work_as_printed() {
    let (mut child, stdout) = spawn_up("default");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line.starts_with("(Ctrl-C");
            out.push(line);
            if done {
                let _ = tx.send(out);
                return;
            }
        }
    });
    let lines = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("up printed no examples");
    let examples: Vec<String> = lines
        .iter()
        .skip_while(|l| *l != "try:")
        .skip(1)
        .filter(|l| l.starts_with("  "))
        .map(|l| l.trim().split("   # ").next().unwrap().to_string())
        .collect();
    assert!(examples.len() >= 5, "{lines:#?}");
    assert!(
        !examples
            .iter()
            .any(|e| e.starts_with("ingress-sim") || e.contains("websocat")),
        "{examples:#?}"
    );
    let have_curl = Command::new("curl").arg("--version").output().is_ok();
    for e in &examples {
        if let Some(rest) = e.strip_prefix("cargo run -q -p ingress-sim -- ") {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("'{BIN}' {rest}"))
                .env("NO_COLOR", "1")
                .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
                .output()
                .unwrap();
            assert!(out.status.success(), "{e}: {out:?}");
            assert!(
                String::from_utf8_lossy(&out.stdout).ends_with("reached the app\n"),
                "{e}: {out:?}"
            );
        } else if e.starts_with("curl ") {
            if !have_curl {
                eprintln!("skipped (curl is not installed): {e}");
                continue;
            }
            let out = Command::new("sh").arg("-c").arg(e).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            if e.contains("Upgrade: websocket") {
                // The tunnel stays open after the 101; curl's --max-time ends it (exit 28).
                assert!(text.starts_with("HTTP/1.1 101"), "{e}: {out:?}");
            } else {
                assert!(out.status.success(), "{e}: {out:?}");
                assert!(text.contains("\"app\""), "{e}: {text}");
            }
        } else {
            panic!("an example this test does not know how to run: {e}");
        }
    }
    signal_and_expect_clean_exit(&mut child, libc::SIGINT, "ingress-sim up did not stop").await;
}
