//! Which generation of the OS router a world models (the world file's `router`).

use serde::{Deserialize, Serialize};

/// A generation of the OS router (docs/behaviour.md §3).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum Generation {
    /// "step 0": matchers, `.machines.` form, no auth.
    #[default]
    V0,
    /// Session + authorization, `X-Forwarded-Host` trusted, errors with `details`.
    V1,
    /// The canonical host (301 before auth) and the auth bridge.
    V2,
    /// `PROJECT_INGRESS_DOMAIN`, the shared parsing module, `/_/exchange-token`.
    V3,
    /// Custom domains, first cut: every custom-domain project scanned per request, the hostname
    /// sent verbatim as the target (B1, B2, B3, B4).
    V4,
    /// The custom-domain fixes and the project default port.
    V5,
    /// V5 with a per-isolate resolution cache (B6).
    V6,
}

impl Generation {
    /// Every generation modelled, oldest first.
    pub const KNOWN: [Generation; 7] = [
        Generation::V0,
        Generation::V1,
        Generation::V2,
        Generation::V3,
        Generation::V4,
        Generation::V5,
        Generation::V6,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Generation::V0 => "v0",
            Generation::V1 => "v1",
            Generation::V2 => "v2",
            Generation::V3 => "v3",
            Generation::V4 => "v4",
            Generation::V5 => "v5",
            Generation::V6 => "v6",
        }
    }
}

impl std::str::FromStr for Generation {
    type Err = String;

    fn from_str(s: &str) -> Result<Generation, String> {
        Generation::try_from(s.to_string())
    }
}

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Generation {
    type Error = String;

    fn try_from(s: String) -> Result<Generation, String> {
        Generation::KNOWN
            .into_iter()
            .find(|g| g.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Generation::KNOWN.iter().map(|g| g.as_str()).collect();
                format!(
                    "unknown router generation {s:?}: the known ones are {}",
                    known.join(", ")
                )
            })
    }
}
