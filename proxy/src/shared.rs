//! State shared by all connections of one `serve`: the configuration, the upstream clients (the
//! fast path's pool and hyper-util's client), open tunnels, the shutdown flag, request ids.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use http::Request;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;

use crate::config::ProxyConfig;
use crate::localhost::LocalConnector;
use crate::tunnel::Tunnels;
use crate::upstream_body::UpstreamBody;

/// State shared by all connections of one `serve`.
pub(crate) struct Shared {
    pub(crate) cfg: ProxyConfig,
    pub(crate) self_port: u16,
    pub(crate) client: Client<LocalConnector, UpstreamBody>,
    pub(crate) tunnels: Tunnels,
    /// Idle upstream connections of the fast path.
    pub(crate) pool: crate::pool::Pool,
    /// Set when the graceful shutdown starts: connections close after their current response.
    pub(crate) stopping: AtomicBool,
    next_id: AtomicU64,
    id_prefix: String,
}

impl Shared {
    pub(crate) fn new(
        cfg: ProxyConfig,
        self_port: u16,
        client: Client<LocalConnector, UpstreamBody>,
    ) -> Shared {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
            .unwrap_or(0);
        let pool = crate::pool::Pool::new(
            cfg.limits.pool_max_idle_per_port,
            cfg.limits.pool_idle_timeout,
        );
        Shared {
            cfg,
            self_port,
            client,
            tunnels: Tunnels::default(),
            pool,
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            id_prefix: format!("{:08x}{:04x}", nanos, std::process::id() & 0xffff),
        }
    }

    pub(crate) fn request_id(&self, req: &Request<Incoming>) -> String {
        self.request_id_from(
            req.headers()
                .get(&self.cfg.request_id_header)
                .map(|v| v.as_bytes()),
        )
    }

    /// The client's request id when it sent a usable one, else a fresh one.
    pub(crate) fn request_id_from(&self, presented: Option<&[u8]>) -> String {
        if let Some(v) = presented
            && !v.is_empty()
            && v.len() <= 128
            // What `HeaderValue::to_str` accepts: visible ASCII, space and tab.
            && v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
            && let Ok(s) = std::str::from_utf8(v)
        {
            return s.to_string();
        }
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.id_prefix)
    }
}
