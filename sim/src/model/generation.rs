//! Which generation of the OS router a world models (the world file's `router`).

use serde::{Deserialize, Serialize};

/// A generation of the OS router (docs/behaviour.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum Generation {
    /// "step 0": matchers, `.machines.` form, no auth.
    #[default]
    V0,
}

impl Generation {
    /// Every generation modelled, oldest first.
    pub const KNOWN: [Generation; 1] = [Generation::V0];

    pub fn as_str(self) -> &'static str {
        match self {
            Generation::V0 => "v0",
        }
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
