//! A throwaway fixtures tree for tests of the e2e runner.

use std::path::{Path, PathBuf};

/// A fresh folder under the temp dir, named for this process, `prefix` and the time.
pub fn scratch(prefix: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fixtures tree holding the repository's default world and these `(path under scenarios/,
/// TOML)` scenarios.
pub fn fixtures_tree(prefix: &str, scenarios: &[(&str, &str)]) -> PathBuf {
    let dir = scratch(prefix);
    std::fs::create_dir_all(dir.join("worlds")).unwrap();
    let world = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/worlds/default.toml"),
    )
    .unwrap();
    std::fs::write(dir.join("worlds/default.toml"), world).unwrap();
    for (path, toml) in scenarios {
        let file = dir.join("scenarios").join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, toml).unwrap();
    }
    dir
}
