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

/// One-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, column)
}
