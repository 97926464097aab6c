//! The repository explains itself and its claims hold:
//!
//! - nothing cites the behaviour notes kept outside the repository (only `docs/provenance.md`
//!   names them), and every bug/observation/follow-up id cited is defined in `docs/catalogue.md`;
//! - `cargo insta review` finds the e2e runner's pending snapshots (README's review flow);
//! - the toolchain floor (`rust-version`) is stated once, inherited, above what the code and every
//!   locked dependency need, and is the one clippy's `incompatible_msrv` lint checks against.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every file of the repository (not `target/`, not `.git/`), relative to the root.
fn files() -> Vec<PathBuf> {
    let root = root();
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(&root).unwrap().to_path_buf();
            if rel == Path::new("target") || rel == Path::new(".git") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

fn read(rel: &Path) -> Option<String> {
    std::fs::read_to_string(root().join(rel)).ok()
}

/// Files owned by other work in progress that still cite the outside notes by section number
/// (the word "reference" and a section sign); each line to change is listed in the hand-over. A file leaves this list when
/// it no longer cites them (the test says so).
const PENDING_CITATIONS: &[&str] = &[];

#[test]
fn nothing_cites_notes_outside_the_repository() {
    // Built from pieces so that this file does not match itself.
    let paths = [concat!("..", "/shared"), concat!("shared", "/reference")];
    let section = concat!("reference ", "§");
    let mut bad = Vec::new();
    let mut still_pending = BTreeSet::new();
    for rel in files() {
        let Some(text) = read(&rel) else { continue };
        let name = rel.to_string_lossy().into_owned();
        if name != "docs/provenance.md" {
            for p in paths {
                if text.contains(p) {
                    bad.push(format!("{name}: names `{p}`"));
                }
            }
        }
        if text.to_lowercase().contains(section) {
            if PENDING_CITATIONS.contains(&name.as_str()) {
                still_pending.insert(name);
            } else {
                bad.push(format!(
                    "{name}: cites `{section}…`; cite docs/behaviour.md §… instead"
                ));
            }
        }
    }
    for p in PENDING_CITATIONS {
        if !still_pending.contains(*p) {
            bad.push(format!(
                "{p} no longer cites the outside notes: remove it from PENDING_CITATIONS"
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// `B7`, `O11`, `F1`…: a capital B, O or F and one or two digits, standing alone as a word.
fn cited_ids(text: &str) -> BTreeSet<String> {
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = BTreeSet::new();
    for i in 0..b.len() {
        if !matches!(b[i], b'B' | b'O' | b'F') || (i > 0 && word(b[i - 1])) {
            continue;
        }
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        let end = i + 1 + digits;
        if (1..=2).contains(&digits) && (end == b.len() || !word(b[end])) {
            out.insert(text[i..end].to_string());
        }
    }
    out
}

#[test]
fn every_cited_id_is_in_the_catalogue() {
    let catalogue = read(Path::new("docs/catalogue.md")).expect("docs/catalogue.md");
    let defined: BTreeSet<String> = catalogue
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|s| s.trim().to_string())
        .collect();
    // The catalogue covers the whole series the source defines.
    for (prefix, n) in [("B", 10), ("O", 11), ("F", 8)] {
        for i in 1..=n {
            assert!(
                defined.contains(&format!("{prefix}{i}")),
                "docs/catalogue.md has no `### {prefix}{i}`"
            );
        }
    }
    let mut missing = Vec::new();
    let mut seen = 0;
    for rel in files() {
        let name = rel.to_string_lossy();
        let cites = name == "README.md"
            || name.starts_with("docs/")
            || ((name.starts_with("fixtures/scenarios/") || name.starts_with("fixtures/worlds/"))
                && name.ends_with(".toml"))
            || (name.ends_with(".rs") && !name.starts_with("harness/tests/repo.rs"));
        if !cites {
            continue;
        }
        let Some(text) = read(&rel) else { continue };
        for id in cited_ids(&text) {
            seen += 1;
            if !defined.contains(&id) {
                missing.push(format!("{name}: {id}"));
            }
        }
    }
    assert!(
        seen > 10,
        "the scan found almost no ids ({seen}): is it looking?"
    );
    assert!(
        missing.is_empty(),
        "ids cited but not defined in docs/catalogue.md:\n{}",
        missing.join("\n")
    );
}

#[test]
fn id_scanner() {
    assert_eq!(
        cited_ids("bug B7, (O4) and F1; not B, B123, xB1, B1x, 0xB1 or OB1"),
        ["B7", "F1", "O4"].map(String::from).into()
    );
}

fn cargo_metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root())
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The workspace's own package ids.
fn members(meta: &serde_json::Value) -> BTreeSet<&str> {
    meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect()
}

/// cargo-insta looks for pending `.snap.new` files under every workspace package's folder and
/// every target's source folder (its `find_snapshot_roots`); fixtures/snapshots is outside every
/// package, so a target must have its source in fixtures/ for `cargo insta review` to find them.
#[test]
fn cargo_insta_review_finds_the_pending_snapshots() {
    let meta = cargo_metadata();
    let fixtures = root().join("fixtures").canonicalize().unwrap();
    let members = members(&meta);
    let mut roots = Vec::new();
    for p in meta["packages"].as_array().unwrap() {
        if !members.contains(p["id"].as_str().unwrap()) {
            continue;
        }
        roots.push(PathBuf::from(p["manifest_path"].as_str().unwrap()));
        for t in p["targets"].as_array().unwrap() {
            roots.push(PathBuf::from(t["src_path"].as_str().unwrap()));
        }
    }
    let found = roots.iter().any(|r| {
        r.parent()
            .and_then(|d| d.canonicalize().ok())
            .is_some_and(|d| fixtures.starts_with(&d) && d.starts_with(root()))
    });
    assert!(
        found,
        "no workspace target has its source in fixtures/: `cargo insta review` would find nothing"
    );
}

fn version(v: &str) -> (u32, u32) {
    let mut it = v.split('.').map(|x| x.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Packages that do not inherit `rust-version` yet (their manifests are being changed elsewhere);
/// clippy.toml's `msrv` covers them for the lint meanwhile.
const PENDING_RUST_VERSION: &[&str] = &[];

#[test]
fn toolchain_floor_is_true_and_checked() {
    let manifest: toml::Table = toml::from_str(&read(Path::new("Cargo.toml")).unwrap()).unwrap();
    let floor = manifest["workspace"]["package"]["rust-version"]
        .as_str()
        .expect("workspace.package.rust-version")
        .to_string();
    let edition = manifest["workspace"]["package"]["edition"]
        .as_str()
        .unwrap();

    // clippy's incompatible_msrv lint (on by default, an error under CI's -D warnings) reads
    // this; it must agree with Cargo.toml.
    let clippy: toml::Table = toml::from_str(&read(Path::new("clippy.toml")).unwrap()).unwrap();
    assert_eq!(clippy["msrv"].as_str(), Some(floor.as_str()), "clippy.toml");

    // README states it.
    let readme = read(Path::new("README.md")).unwrap();
    assert!(
        readme.contains(&format!("Rust toolchain ({floor} or newer")),
        "README must state the floor {floor}"
    );

    // Language features the lint does not see: edition 2024 needs 1.85, let-chains 1.88.
    let mut needed = (1, 0);
    if edition == "2024" {
        needed = needed.max((1, 85));
    }
    let let_chain = files().into_iter().find(|rel| {
        rel.extension().is_some_and(|e| e == "rs")
            && read(rel).is_some_and(|t| {
                t.lines()
                    .any(|l| l.trim_start().starts_with("&& let ") || l.contains(" && let "))
            })
    });
    if let_chain.is_some() {
        needed = needed.max((1, 88));
    }
    assert!(
        version(&floor) >= needed,
        "rust-version {floor} is below {}.{} (edition {edition}; let-chains in {let_chain:?})",
        needed.0,
        needed.1
    );

    // Every package inherits it, and no locked dependency needs more.
    let meta = cargo_metadata();
    let members = members(&meta);
    let resolved: BTreeSet<&str> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    let mut bad = Vec::new();
    for p in meta["packages"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let rv = p["rust_version"].as_str();
        let id = p["id"].as_str().unwrap();
        if members.contains(id) {
            match (rv, PENDING_RUST_VERSION.contains(&name)) {
                (Some(v), false) if v == floor => {}
                (None, true) => {}
                (Some(_), true) => bad.push(format!(
                    "{name} now sets rust-version: remove it from PENDING_RUST_VERSION"
                )),
                (v, false) => bad.push(format!(
                    "{name}: rust-version {v:?}; add `rust-version.workspace = true`"
                )),
            }
        } else if resolved.contains(id)
            && let Some(v) = rv
            && version(v) > version(&floor)
        {
            bad.push(format!(
                "dependency {name} {} needs Rust {v}",
                p["version"].as_str().unwrap()
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
