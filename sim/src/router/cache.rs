//! V6's per-isolate resolution cache (docs/behaviour.md §3.8). The reference gives only its test
//! contract (one request, then 100 concurrent identical ones → one project/membership query and
//! one machine query; `starting` machines never cached); the key and TTL are unknown. Our
//! reading, chosen to satisfy that contract:
//!
//! - key: the target and the user (`project:misha|alice`, `machine:mach_1|alice`), so a
//!   membership is never shared between users;
//! - value: the resolved machine (id and state), the project's `defaultPort`, and the
//!   authorization decision; refusals and database errors are not stored;
//! - TTL: [`TTL_S`] seconds of the world's clock (the `clock` fault moves it);
//! - the cache holds the lookup in flight (a JS promise cache), so concurrent misses for one key
//!   share its queries; a lookup that fails, or finds a `starting` machine, stores nothing and the
//!   next waiter looks up again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::Stop;
use crate::model::MachineState;

/// How long an entry lives, in seconds of the world's clock (our reading: the 30 s of the later
/// route cache, docs/catalogue.md F7).
pub const TTL_S: u64 = 30;

/// A resolution as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    pub machine_id: String,
    pub state: MachineState,
    pub default_port: Option<u16>,
    pub authorization: Option<String>,
    /// The world's clock when it was stored (Unix seconds).
    pub stored_at: u64,
}

/// How the cache answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Looked up now, and stored.
    Stored,
    /// Looked up now, not stored (a `starting` machine).
    NotStored,
    /// From the cache.
    Hit,
    /// From another request's lookup, in flight when this one asked.
    Waited,
}

/// Why a lookup stored nothing.
pub enum Miss {
    Stop(Stop),
    /// Resolved, but not to be stored.
    Uncacheable(Cached),
}

struct Entry {
    cell: OnceCell<Cached>,
}

/// One isolate's cache.
#[derive(Default)]
pub struct ResolutionCache {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

impl ResolutionCache {
    fn entry(&self, key: &str, now: u64) -> Arc<Entry> {
        let mut m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = || {
            Arc::new(Entry {
                cell: OnceCell::new(),
            })
        };
        let e = m.entry(key.to_string()).or_insert_with(fresh);
        if e.cell.get().is_some_and(|c| now >= c.stored_at + TTL_S) {
            *e = fresh();
        }
        e.clone()
    }

    /// The entry for `key` at the world's time `now`, looked up with `init` when there is none
    /// (or it expired); concurrent callers wait for one lookup.
    pub async fn get_or_lookup<F, Fut>(
        &self,
        key: &str,
        now: u64,
        init: F,
    ) -> Result<(Cached, How), Stop>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Cached, Miss>>,
    {
        let entry = self.entry(key, now);
        if let Some(c) = entry.cell.get() {
            return Ok((c.clone(), How::Hit));
        }
        let ran = AtomicBool::new(false);
        let got = entry
            .cell
            .get_or_try_init(|| {
                ran.store(true, Ordering::SeqCst);
                init()
            })
            .await;
        match got {
            Ok(c) if ran.load(Ordering::SeqCst) => Ok((c.clone(), How::Stored)),
            Ok(c) => Ok((c.clone(), How::Waited)),
            Err(Miss::Stop(s)) => Err(s),
            Err(Miss::Uncacheable(c)) => Ok((c, How::NotStored)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(now: u64) -> Cached {
        Cached {
            machine_id: "mach_1".into(),
            state: MachineState::Active,
            default_port: None,
            authorization: None,
            stored_at: now,
        }
    }

    #[tokio::test]
    async fn stores_hits_and_expires_by_the_world_clock() {
        let c = ResolutionCache::default();
        let (_, how) = c
            .get_or_lookup("k", 100, || async { Ok(cached(100)) })
            .await
            .ok()
            .unwrap();
        assert_eq!(how, How::Stored);
        let (_, how) = c
            .get_or_lookup("k", 100 + TTL_S - 1, || async { panic!("cached") })
            .await
            .ok()
            .unwrap();
        assert_eq!(how, How::Hit);
        let (got, how) = c
            .get_or_lookup("k", 100 + TTL_S, || async { Ok(cached(100 + TTL_S)) })
            .await
            .ok()
            .unwrap();
        assert_eq!((how, got.stored_at), (How::Stored, 100 + TTL_S));
        // Uncacheable results are never stored.
        let starting = || async {
            Err(Miss::Uncacheable(Cached {
                state: MachineState::Starting,
                ..cached(0)
            }))
        };
        for _ in 0..2 {
            let (_, how) = c.get_or_lookup("s", 0, starting).await.ok().unwrap();
            assert_eq!(how, How::NotStored);
        }
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_lookup() {
        let c = Arc::new(ResolutionCache::default());
        let lookups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (c, lookups, mut rx) = (c.clone(), lookups.clone(), rx.clone());
            tasks.push(tokio::spawn(async move {
                c.get_or_lookup("k", 0, || async move {
                    lookups.fetch_add(1, Ordering::SeqCst);
                    // Held open until every task has asked.
                    let _ = rx.wait_for(|v| *v).await;
                    Ok(cached(0))
                })
                .await
                .ok()
                .map(|(_, how)| how)
            }));
        }
        // Every task is either the lookup or waiting on it once the lookup has started.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while lookups.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        tx.send_replace(true);
        let mut hows = Vec::new();
        for t in tasks {
            hows.push(t.await.unwrap().unwrap());
        }
        assert_eq!(lookups.load(Ordering::SeqCst), 1);
        assert_eq!(hows.iter().filter(|h| **h == How::Stored).count(), 1);
    }
}
