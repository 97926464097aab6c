//! The diagram the README shows, `docs/diagrams/opencode_on_custom_port.svg`, is what the command
//! the README gives for it writes today (run that command to regenerate it when this fails).

use std::path::Path;
use std::process::Command;

const FILE: &str = "docs/diagrams/opencode_on_custom_port.svg";
const COMMAND: &str = "cargo run -q -p ingress-sim -- trace --world default 'https://4096__misha.iterate.town/session?x=1' -H 'Cookie: sid=1' --format svg --no-times -o docs/diagrams/opencode_on_custom_port.svg";

/// The words of a shell command line with single quotes only.
fn words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

#[test]
fn the_readme_diagram_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains(COMMAND),
        "README.md should give the command: {COMMAND}"
    );
    assert!(
        readme.contains(&format!("]({FILE})")),
        "README.md should show {FILE}"
    );
    let args = words(COMMAND);
    let sep = args.iter().position(|a| a == "--").unwrap();
    let out = std::env::temp_dir().join(format!("readme-diagram-{}.svg", std::process::id()));
    let mut args: Vec<String> = args[sep + 1..].to_vec();
    assert_eq!(args.last().map(String::as_str), Some(FILE));
    *args.last_mut().unwrap() = out.display().to_string();
    let st = Command::new(env!("CARGO_BIN_EXE_ingress-sim"))
        .args(&args)
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(st.success());
    let fresh = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let committed = std::fs::read_to_string(root.join(FILE)).unwrap_or_default();
    assert!(
        fresh == committed,
        "{FILE} is not what the trace draws today; regenerate it: {COMMAND}"
    );
    assert!(fresh.contains("data-participant=\"app_mach_123_4096\""));
}
