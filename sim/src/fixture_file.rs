//! Reading TOML fixture files (worlds, scenarios) with errors that name the file, the line and
//! column, and the field.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("{path}: cannot read {what}: {error}")]
    Read {
        path: PathBuf,
        what: &'static str,
        error: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl FixtureError {
    /// A semantic error found after parsing: `message` starts with a field path such as
    /// `steps[1].expect.app: …` (indices from 0, as the code counts); the error names the line of
    /// that field in `text` where it can be found, and adds the path counting from 1
    /// (`(step 2, expect, app)`).
    pub fn invalid(text: &str, path: &Path, message: &str) -> FixtureError {
        let (field, rest) = match message.split_once(": ") {
            Some((f, r)) if is_field_path(f) => (f, Some(r)),
            _ => (message, None),
        };
        let Some(rest) = rest else {
            return FixtureError::Invalid {
                path: path.to_path_buf(),
                message: message.to_string(),
            };
        };
        // The path stays as written (tests and habits match on it); an indexed one is followed by
        // its reading counting from 1.
        let message = if field.contains('[') {
            format!("{field}: {rest} ({})", one_based(field))
        } else {
            format!("{field}: {rest}")
        };
        match locate(text, field) {
            Some(line) => FixtureError::Parse {
                path: path.to_path_buf(),
                line,
                column: 1,
                message,
            },
            None => FixtureError::Invalid {
                path: path.to_path_buf(),
                message,
            },
        }
    }
}

fn is_field_path(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.[]".contains(c))
}

/// `machines[2].apps[0].port` → `machine 3, app 1, port`.
fn one_based(field: &str) -> String {
    field
        .split('.')
        .map(|seg| match seg.split_once('[') {
            Some((name, idx)) => {
                let n: usize = idx.trim_end_matches(']').parse().unwrap_or(0);
                format!("{} {}", name.strip_suffix('s').unwrap_or(name), n + 1)
            }
            None => seg.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The one-based line where a field path is written, following `[[array]]` headers for indexed
/// segments and `key =` lines for the last; the deepest part found when the rest is written
/// inline. `None` when not even the first part is found.
pub fn locate(text: &str, field: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let (mut from, mut to) = (0usize, lines.len());
    let mut prefix = String::new();
    let mut found = None;
    for seg in field.split('.') {
        match seg.split_once('[') {
            Some((name, idx)) => {
                let n: usize = idx.trim_end_matches(']').parse().ok()?;
                let table = format!("{prefix}{name}");
                let header = format!("[[{table}]]");
                let Some(at) = (from..to).filter(|&i| lines[i].trim() == header).nth(n) else {
                    // Written inline (`steps = [{ … }]`): the key's line at best.
                    return (from..to)
                        .find(|&i| is_key_line(lines[i], name))
                        .map(|i| i + 1)
                        .or(found);
                };
                found = Some(at + 1);
                let inside = [format!("[[{table}."), format!("[{table}.")];
                let end = (at + 1..to)
                    .find(|&i| {
                        let l = lines[i].trim_start();
                        l.starts_with('[') && !inside.iter().any(|p| l.starts_with(p.as_str()))
                    })
                    .unwrap_or(to);
                (from, to) = (at + 1, end);
                prefix = format!("{table}.");
            }
            None => {
                return (from..to)
                    .find(|&i| is_key_line(lines[i], seg))
                    .map(|i| i + 1)
                    .or(found);
            }
        }
    }
    found
}

fn is_key_line(line: &str, key: &str) -> bool {
    line.trim_start()
        .strip_prefix(key)
        .is_some_and(|r| r.trim_start().starts_with('='))
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d > 0 && *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Reads a fixture file; `what` names it in the error ("world file", "scenario").
pub fn read(path: &Path, what: &'static str) -> Result<String, FixtureError> {
    std::fs::read_to_string(path).map_err(|error| FixtureError::Read {
        path: path.to_path_buf(),
        what,
        error,
    })
}

/// Parses TOML into `T` and validates it; `path` is used in messages only.
pub fn parse<T: DeserializeOwned>(
    text: &str,
    path: &Path,
    validate: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, FixtureError> {
    let value: T = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
        FixtureError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().to_string(),
        }
    })?;
    validate(&value).map_err(|message| FixtureError::Invalid {
        path: path.to_path_buf(),
        message,
    })?;
    Ok(value)
}

/// As [`parse`], with a semantic error located on its line and counted from 1 as well
/// ([`FixtureError::invalid`]).
pub fn parse_located<T: DeserializeOwned>(
    text: &str,
    path: &Path,
    validate: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, FixtureError> {
    parse(text, path, validate).map_err(|e| match e {
        FixtureError::Invalid { message, .. } => FixtureError::invalid(text, path, &message),
        other => other,
    })
}

/// One-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "name = \"w\"\n[[machines]]\nid = \"mach_1\"\n[[machines.apps]]\nport = 1\n[[machines.apps]]\nport = 8080\n[[machines]]\nid = \"x\"\n[[faults]]\nfault = \"app_down\"\nmachine = \"mach_9\"\n";

    #[test]
    fn semantic_errors_name_the_line_and_count_from_one() {
        let e = FixtureError::invalid(
            TEXT,
            Path::new("w.toml"),
            "machines[0].apps[1].port: 8080 is taken",
        );
        assert_eq!(
            e.to_string(),
            "w.toml:7:1: machines[0].apps[1].port: 8080 is taken (machine 1, app 2, port)"
        );
        let e = FixtureError::invalid(TEXT, Path::new("w.toml"), "machines[1].id: bad");
        assert_eq!(
            e.to_string(),
            "w.toml:9:1: machines[1].id: bad (machine 2, id)"
        );
        let e = FixtureError::invalid(TEXT, Path::new("w.toml"), "faults[0].machine: unknown");
        assert_eq!(
            e.to_string(),
            "w.toml:12:1: faults[0].machine: unknown (fault 1, machine)"
        );
        // Written inline: the key's line.
        let e = FixtureError::invalid(
            "a = 1\nsteps = [{ url = \"x\" }]\n",
            Path::new("s.toml"),
            "steps[0].url: bad",
        );
        assert_eq!(e.to_string(), "s.toml:2:1: steps[0].url: bad (step 1, url)");
        // Not a field path: as it was.
        let e = FixtureError::invalid(TEXT, Path::new("w.toml"), "something else");
        assert_eq!(e.to_string(), "w.toml: something else");
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("mach_12", ["mach_123", "mach_other"]),
            Some("mach_123")
        );
        assert_eq!(
            did_you_mean("defualt", ["default", "containers"]),
            Some("default")
        );
        assert_eq!(did_you_mean("zzz", ["default", "containers"]), None);
        assert_eq!(did_you_mean("default", ["default"]), None);
    }
}
