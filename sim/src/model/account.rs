//! The platform's people: users (with a role), organizations, memberships, and sessions a world
//! starts with (so a plain request can carry a known session cookie).

use serde::{Deserialize, Serialize};

use super::Generation;

/// `user.role`: an admin passes every membership check (docs/behaviour.md §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub id: String,
    pub email: String,
    #[serde(default)]
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationSpec {
    /// The organization's id (also its slug).
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipSpec {
    pub user: String,
    pub organization: String,
}

/// A session that exists when the world starts: its token is the session cookie's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    pub token: String,
    pub user: String,
}

/// How the control plane's Better Auth behaves; each default follows the world's router
/// generation (see [`AuthSpec::exchange_for`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    /// How the one-time-token exchange consumes its token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<Exchange>,
    /// `crossSubDomainCookies { domain: <VITE_PUBLIC_URL hostname> }` (O10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_subdomain_cookies: Option<bool>,
    /// Each statement of the exchange takes this long (a database round trip).
    #[serde(default)]
    pub db_latency_ms: u64,
}

/// The exchange endpoint's two versions (B10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exchange {
    /// Find the verification row, delete it, then check its expiry (racy, B10).
    FindDeleteCheck,
    /// One `DELETE … WHERE identifier = $1 AND expires_at >= now RETURNING`.
    DeleteReturning,
}

impl AuthSpec {
    /// Our reading: the matcher-era auth (V1–V2) is the earlier plugin; V3+ the later one.
    pub fn exchange_for(&self, g: Generation) -> Exchange {
        self.exchange.unwrap_or(match g {
            Generation::V0 | Generation::V1 | Generation::V2 => Exchange::FindDeleteCheck,
            Generation::V3 | Generation::V4 | Generation::V5 | Generation::V6 => {
                Exchange::DeleteReturning
            }
        })
    }

    /// Our reading: the earlier auth config (V1–V2) set `crossSubDomainCookies`.
    pub fn cross_subdomain_cookies_for(&self, g: Generation) -> bool {
        self.cross_subdomain_cookies
            .unwrap_or(matches!(g, Generation::V1 | Generation::V2))
    }
}
