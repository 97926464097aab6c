//! What a public hostname means to the OS router: a project or a machine, and a port.

use serde::Serialize;

pub const DEFAULT_PORT: u16 = 3000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Machine,
    Project,
}

impl TargetKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            TargetKind::Machine => "machine",
            TargetKind::Project => "project",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParsedTarget {
    pub kind: TargetKind,
    /// The machine id or the project slug.
    pub id: String,
    pub target_port: u16,
    pub port_explicit: bool,
    pub root_domain: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum ParseError {
    #[error("invalid_hostname")]
    InvalidHostname,
    #[error("invalid_port")]
    InvalidPort,
    #[error("invalid_project_slug")]
    InvalidProjectSlug,
}

/// Host extraction, V0: the URL's hostname (the `Host` the edge received), lowercased, without
/// port; `[v6]:port` → the inside of the brackets.
pub fn request_hostname(host_header: &str) -> String {
    let first = host_header.split(',').next().unwrap_or("").trim();
    let host = if let Some(rest) = first.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else if first.matches(':').count() == 1 {
        first.split(':').next().unwrap_or("")
    } else {
        first
    };
    host.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_extraction() {
        assert_eq!(
            request_hostname("Misha.Iterate.Town:443"),
            "misha.iterate.town"
        );
        assert_eq!(request_hostname("[::1]:8080"), "::1");
        assert_eq!(request_hostname("a.b, c.d"), "a.b");
        assert_eq!(request_hostname(""), "");
    }
}
