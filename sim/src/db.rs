//! The platform database as a hop (V4+, docs/behaviour.md §3.11): every query a generation issues
//! goes through [`Database::query`], which records a `db` event (the query's name as the
//! reference names the function that issues it, its SQL, parameters, the rows returned, the slot
//! it held and for how long, or its error).
//!
//! It is embedded: the rows are the platform's records (`crate::platform`), and a query is a
//! Rust function over them that follows Postgres's semantics where the real query depends on
//! them (`=` and `LIKE` are case-sensitive; `LIKE`'s `%` and `_` are wildcards, see [`like`]).
//!
//! Connection slots are Postgres's: `max_connections` (default 100), of which
//! `superuser_reserved_connections` (default 3) are kept for superusers, so an application role
//! gets `max_connections - reserved`. The Workers runtime opens a connection per request (no
//! pool shared between requests); a query holds a slot for its duration (`[db] latency_ms`, or
//! the `db_latency` fault). With no slot free the query fails with Postgres's own
//! `remaining connection slots are reserved for superuser connections`; with the database down
//! (`db_down`) with node-postgres's `connect ECONNREFUSED 127.0.0.1:5432`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::DbFault;
use crate::platform::Platform;
use crate::trace::{DbEvent, Event, TraceStore};

/// Postgres's error when only superuser slots are left.
pub const SLOTS_EXHAUSTED: &str =
    "remaining connection slots are reserved for superuser connections";
/// node-postgres's error when nothing listens.
pub const DOWN: &str = "connect ECONNREFUSED 127.0.0.1:5432";

/// The world's `[db]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbSpec {
    #[serde(default = "DbSpec::default_max")]
    pub max_connections: u32,
    #[serde(default = "DbSpec::default_reserved")]
    pub superuser_reserved_connections: u32,
    /// How long every query takes (and holds its slot).
    #[serde(default)]
    pub latency_ms: u64,
}

impl DbSpec {
    fn default_max() -> u32 {
        100
    }
    fn default_reserved() -> u32 {
        3
    }
}

impl Default for DbSpec {
    fn default() -> Self {
        DbSpec {
            max_connections: Self::default_max(),
            superuser_reserved_connections: Self::default_reserved(),
            latency_ms: 0,
        }
    }
}

/// Why a query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    #[error("{SLOTS_EXHAUSTED}")]
    SlotsExhausted,
    #[error("{DOWN}")]
    Down,
}

/// What the database has done since it started (or since [`Database::reset_high_water`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DbStats {
    /// Queries run, by name.
    pub queries: BTreeMap<String, u64>,
    /// Queries that failed, by error.
    pub failures: BTreeMap<String, u64>,
    /// The most slots in use at once.
    pub slots_high_water: u32,
}

struct State {
    spec: DbSpec,
    down: bool,
    in_use: u32,
    stats: DbStats,
}

/// The platform database.
pub struct Database {
    platform: Arc<Platform>,
    trace: Arc<TraceStore>,
    state: Mutex<State>,
}

/// A query: its name, the function that issues it, its SQL and parameters.
pub struct Query<'a> {
    pub name: &'a str,
    pub caller: &'a str,
    pub sql: &'a str,
    pub params: Vec<String>,
}

/// Gives the slot back however the query ends (a cancelled request included).
struct Slot<'a>(&'a Database);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state();
        s.in_use = s.in_use.saturating_sub(1);
    }
}

impl Database {
    pub fn new(platform: Arc<Platform>, spec: DbSpec, trace: Arc<TraceStore>) -> Database {
        Database {
            platform,
            trace,
            state: Mutex::new(State {
                spec,
                down: false,
                in_use: 0,
                stats: DbStats::default(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The database's faults.
    pub fn apply(&self, f: DbFault) {
        let mut s = self.state();
        match f {
            DbFault::Slots {
                max_connections,
                reserved,
            } => {
                s.spec.max_connections = max_connections;
                s.spec.superuser_reserved_connections = reserved;
            }
            DbFault::Latency { ms } => s.spec.latency_ms = ms,
            DbFault::Down => s.down = true,
            DbFault::Up => s.down = false,
        }
    }

    pub fn stats(&self) -> DbStats {
        self.state().stats.clone()
    }

    /// Starts counting the high-water mark afresh.
    pub fn reset_high_water(&self) {
        let mut s = self.state();
        s.stats.slots_high_water = s.in_use;
    }

    /// The slots an application role may use.
    /// How long a query holds its slot, in the simulated world.
    pub fn latency_ms(&self) -> u64 {
        self.state().spec.latency_ms
    }

    pub fn usable_slots(&self) -> u32 {
        let s = self.state();
        s.spec
            .max_connections
            .saturating_sub(s.spec.superuser_reserved_connections)
    }

    /// Runs `run` over the platform's records as the query `q`, holding a connection slot for
    /// the query's latency; records the `db` event under `trace_id`. `run` returns its result and
    /// the rows as lines.
    pub async fn query<T>(
        &self,
        q: Query<'_>,
        trace_id: Option<&str>,
        run: impl FnOnce(&Platform) -> (T, Vec<String>),
    ) -> Result<T, DbError> {
        let (slot, latency, slots) = {
            let mut s = self.state();
            let usable = s
                .spec
                .max_connections
                .saturating_sub(s.spec.superuser_reserved_connections);
            let latency = s.spec.latency_ms;
            let failed = if s.down {
                Some(DbError::Down)
            } else if s.in_use >= usable {
                Some(DbError::SlotsExhausted)
            } else {
                None
            };
            let slots = format!(
                "{} of {usable} in use",
                s.in_use + u32::from(failed.is_none())
            );
            if let Some(e) = failed {
                *s.stats.failures.entry(e.to_string()).or_default() += 1;
                drop(s);
                self.record(trace_id, &q, vec![], slots, 0, Some(e.to_string()));
                return Err(e);
            }
            s.in_use += 1;
            s.stats.slots_high_water = s.stats.slots_high_water.max(s.in_use);
            *s.stats.queries.entry(q.name.to_string()).or_default() += 1;
            (Slot(self), latency, slots)
        };
        if latency > 0 {
            // The query's duration in the simulated world, not a synchronisation.
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let (out, rows) = run(&self.platform);
        drop(slot);
        self.record(trace_id, &q, rows, slots, latency, None);
        Ok(out)
    }

    fn record(
        &self,
        trace_id: Option<&str>,
        q: &Query<'_>,
        rows: Vec<String>,
        slots: String,
        took_ms: u64,
        error: Option<String>,
    ) {
        let Some(id) = trace_id else { return };
        self.trace.record(
            id,
            Event::Db(Box::new(DbEvent {
                query: q.name.to_string(),
                caller: q.caller.to_string(),
                sql: q.sql.to_string(),
                params: q.params.clone(),
                rows,
                slots,
                took_ms,
                error,
            })),
        );
    }
}

/// Postgres's `text LIKE pattern` (without `ESCAPE`, so `\` escapes): `%` matches any run of
/// characters, `_` exactly one, everything else itself, case-sensitively.
pub fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let mut p: Vec<(char, bool)> = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    p.push((n, true));
                }
            }
            other => p.push((other, false)),
        }
    }
    // dp[j]: the first i characters of the text match the first j of the pattern.
    let mut dp = vec![false; p.len() + 1];
    dp[0] = true;
    for j in 1..=p.len() {
        dp[j] = dp[j - 1] && p[j - 1] == ('%', false);
    }
    for c in &t {
        let mut next = vec![false; p.len() + 1];
        for j in 1..=p.len() {
            next[j] = match p[j - 1] {
                ('%', false) => next[j - 1] || dp[j],
                ('_', false) => dp[j - 1],
                (pc, _) => dp[j - 1] && pc == *c,
            };
        }
        dp = next;
    }
    dp[p.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_follows_postgres() {
        assert!(like("a.templestein.com", "%.templestein.com"));
        assert!(!like("templestein.com", "%.templestein.com"));
        assert!(
            !like("A.TEMPLESTEIN.COM", "%.templestein.com"),
            "case-sensitive"
        );
        // `_` is a wildcard: a custom domain with an underscore matches more than itself.
        assert!(like("a.myxsite.example", "%.my_site.example"));
        assert!(like("a.my_site.example", "%.my_site.example"));
        assert!(!like("a.mysite.example", "%.my_site.example"));
        assert!(like("a.my_site.example", "%.my\\_site.example"));
        assert!(!like("a.myxsite.example", "%.my\\_site.example"));
        assert!(like("", "%"));
        assert!(like("abc", "a%c"));
        assert!(!like("abc", "a_"));
    }

    fn db(spec: DbSpec) -> Database {
        Database::new(
            Arc::new(Platform::new(vec![], vec![])),
            spec,
            Arc::new(TraceStore::default()),
        )
    }

    fn q() -> Query<'static> {
        Query {
            name: "q",
            caller: "test",
            sql: "SELECT 1",
            params: vec![],
        }
    }

    #[tokio::test]
    async fn slots_run_out_with_postgres_error() {
        let d = Arc::new(db(DbSpec {
            max_connections: 4,
            superuser_reserved_connections: 3,
            latency_ms: 0,
        }));
        assert_eq!(d.usable_slots(), 1);
        // Hold the one slot with a query that waits for a signal.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (held_tx, held_rx) = tokio::sync::oneshot::channel::<()>();
        let d2 = d.clone();
        let holder = tokio::spawn(async move {
            d2.query(q(), None, |_| ((), vec![])).await.unwrap();
            let _ = held_tx.send(());
            let _ = rx.await;
        });
        held_rx.await.unwrap();
        // The slot is free again after the query: the next one runs.
        d.query(q(), None, |_| ((), vec![])).await.unwrap();
        let _ = tx.send(());
        holder.await.unwrap();
        // A query that holds its slot (latency) makes a concurrent one fail.
        d.apply(DbFault::Latency { ms: 200 });
        let slow = d.query(q(), None, |_| ((), vec![]));
        let fast = async {
            // Runs once the slow query holds its slot: poll until it does.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while d.state().in_use == 0 && tokio::time::Instant::now() < deadline {
                tokio::task::yield_now().await;
            }
            d.query(q(), None, |_| ((), vec![])).await
        };
        let (a, b) = tokio::join!(slow, fast);
        assert!(a.is_ok());
        assert_eq!(b.unwrap_err().to_string(), SLOTS_EXHAUSTED);
        let st = d.stats();
        assert_eq!(st.slots_high_water, 1);
        assert_eq!(st.failures.get(SLOTS_EXHAUSTED), Some(&1));
        assert_eq!(st.queries.get("q"), Some(&3));
        d.apply(DbFault::Down);
        assert_eq!(
            d.query(q(), None, |_| ((), vec![])).await.unwrap_err(),
            DbError::Down
        );
        d.apply(DbFault::Up);
        d.apply(DbFault::Latency { ms: 0 });
        assert!(d.query(q(), None, |_| ((), vec![])).await.is_ok());
    }
}
