//! The simulator's module graph, read from its sources (every `crate::…` path outside comments):
//! the hops (edge, worker, router, control plane, database, providers, machine, apps) never reach the runtime, which alone builds
//! their contexts; the leaf `model` reaches nothing else in the crate; the top-level modules form
//! no cycle. `cargo test -p ingress-sim --test module_graph -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`router::step::forward`) → the module paths it names.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn module_path(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

fn sources(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).unwrap();
            out.insert(module_path(rel), std::fs::read_to_string(&path).unwrap());
        }
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths a source names after `crate::` (each as its segments; a `{a, b::c}` group gives one
/// path per item).
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = code[from..].find("crate::") {
        let start = from + i;
        from = start + "crate::".len();
        if code[..start].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let rest = &code[from..];
        let mut segs = Vec::new();
        let mut pos = 0;
        loop {
            let len = rest[pos..]
                .find(|c: char| !is_ident(c))
                .unwrap_or(rest.len() - pos);
            if len == 0 {
                break;
            }
            segs.push(rest[pos..pos + len].to_string());
            pos += len;
            if rest[pos..].starts_with("::") {
                pos += 2;
            } else {
                break;
            }
        }
        if rest[pos..].starts_with('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in rest[pos + 1..].chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        item.push(',');
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            for it in item.split(',') {
                let first: String = it.trim().chars().take_while(|c| is_ident(*c)).collect();
                if !first.is_empty() {
                    out.push([segs.clone(), vec![first]].concat());
                }
            }
        } else if !segs.is_empty() {
            out.push(segs);
        }
    }
    out
}

fn graph() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    sources(&root, &root, &mut files);
    let mut g = Graph::new();
    for (module, text) in &files {
        let names = g.entry(module.clone()).or_default();
        for segs in crate_paths(text) {
            // The longest prefix that is a module file.
            if let Some(target) = (1..=segs.len())
                .rev()
                .map(|n| segs[..n].join("::"))
                .find(|p| files.contains_key(p))
                && &target != module
            {
                names.insert(target);
            }
        }
    }
    g
}

fn top(m: &str) -> &str {
    m.split("::").next().unwrap_or(m)
}

/// Top-level module → the top-level modules it names.
fn top_graph(g: &Graph) -> Graph {
    let mut t = Graph::new();
    for (m, names) in g {
        let e = t.entry(top(m).to_string()).or_default();
        e.extend(
            names
                .iter()
                .map(|n| top(n).to_string())
                .filter(|n| n != top(m)),
        );
    }
    t
}

fn within(m: &str, group: &str) -> bool {
    top(m) == group
}

#[test]
fn hops_never_reach_the_runtime() {
    let g = graph();
    let hops = [
        "edge",
        "worker",
        "router",
        "control_plane",
        "providers",
        "machine",
        "apps",
        "platform",
        "db",
    ];
    for (m, names) in &g {
        if hops.iter().any(|h| within(m, h)) {
            let bad: Vec<_> = names.iter().filter(|n| within(n, "runtime")).collect();
            assert!(bad.is_empty(), "hop module {m} names the runtime: {bad:?}");
        }
    }
    // The check sees real imports: the runtime does name the hops.
    assert!(g["runtime"].contains("router"), "{:?}", g["runtime"]);
}

#[test]
fn the_model_is_a_leaf() {
    let g = graph();
    let models: Vec<_> = g.keys().filter(|m| within(m, "model")).collect();
    assert!(models.len() > 1, "model/ has its files: {models:?}");
    for m in models {
        let bad: Vec<_> = g[m].iter().filter(|n| !within(n, "model")).collect();
        assert!(
            bad.is_empty(),
            "{m} names {bad:?}: the model imports nothing of the crate"
        );
    }
}

#[test]
fn top_level_modules_form_no_cycle() {
    let t = top_graph(&graph());
    for (m, names) in &t {
        println!(
            "{m:14} -> {}",
            names.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    // Depth-first search for a back edge.
    fn visit<'a>(
        t: &'a Graph,
        m: &'a str,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| *p == m) {
            let mut cycle: Vec<String> = path[i..].iter().map(|s| s.to_string()).collect();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if !done.insert(m) {
            return None;
        }
        path.push(m);
        for n in t.get(m).into_iter().flatten() {
            if let Some(c) = visit(t, n, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in t.keys() {
        if let Some(c) = visit(&t, m, &mut vec![], &mut done) {
            panic!("module cycle: {}", c.join(" → "));
        }
    }
}

#[test]
fn crate_paths_are_read_as_written() {
    let src = "use crate::a::B;\n// crate::commented\nuse crate::{c::D, e};\nfn f() { crate::g::h(); x_crate::no(); }";
    let got: Vec<String> = crate_paths(src).iter().map(|s| s.join("::")).collect();
    assert_eq!(got, ["a::B", "c", "e", "g::h"]);
}
