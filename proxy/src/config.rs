//! Proxy configuration: everything `serve` needs. The binary builds it from flags and env; an
//! embedder builds it in code. Defaults are the production values.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use crate::access_log::{AccessLog, TracingAccessLog};
use crate::localhost::{Localhost, Loopback};

/// Header that names the target on the machine (`<port>__host`, `localhost:<port>`, ...).
pub const TARGET_HOST_HEADER: HeaderName = HeaderName::from_static("x-iterate-proxy-target-host");
/// Header set upstream to the inbound `Host`.
pub const VIA_HEADER: HeaderName = HeaderName::from_static("x-iterate-proxy-via");
/// Header carrying the shared secret when one is configured.
pub const SECRET_HEADER: HeaderName = HeaderName::from_static("x-iterate-project-ingress-secret");
/// Default header a request id is read from (a fresh id is generated when it is absent).
pub const DEFAULT_REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The shared secret. Its `Debug` never prints the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from text; surrounding whitespace (a trailing newline in a file) is trimmed.
    /// Returns `None` for an empty secret, which would otherwise accept an empty header.
    pub fn new(value: &str) -> Option<Secret> {
        let v = value.trim();
        if v.is_empty() {
            None
        } else {
            Some(Secret(v.as_bytes().to_vec()))
        }
    }

    /// Constant-time comparison with a presented value (only the length can leak, as with
    /// any constant-time byte compare).
    pub fn matches(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.0.as_slice().ct_eq(presented))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Limits and timeouts. See README "Limits and timeouts".
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time allowed for a client to send a complete request head.
    pub header_read_timeout: Duration,
    /// Time allowed to connect to the app.
    pub connect_timeout: Duration,
    /// Idle pooled upstream connections are closed after this long.
    pub pool_idle_timeout: Duration,
    /// Maximum idle pooled connections kept per upstream port.
    pub pool_max_idle_per_port: usize,
    /// Largest request head accepted, in bytes, from the request line through the blank line.
    /// Larger → `431` and the connection is closed.
    pub max_request_head_bytes: usize,
    /// Most header fields accepted in a request head. More → `431`.
    pub max_request_headers: usize,
    /// Largest response head accepted from an app (read-buffer bound). Larger → `502`.
    pub max_response_head_bytes: usize,
    /// Time the app has to send its response head once the request is sent. Past it → `504`.
    /// Bodies and tunnels have no such timeout: streams may stay quiet as long as they like.
    pub upstream_head_timeout: Duration,
    /// With `Expect: 100-continue`, how long to wait for the app's `100` before sending the body
    /// anyway (apps that ignore `Expect`).
    pub expect_continue_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            // Below Node's 5 s keep-alive timeout so the proxy rarely reuses a connection the app
            // is about to close.
            pool_idle_timeout: Duration::from_secs(4),
            pool_max_idle_per_port: 64,
            max_request_head_bytes: 32 * 1024,
            max_request_headers: 100,
            max_response_head_bytes: 64 * 1024,
            upstream_head_timeout: Duration::from_secs(60),
            expect_continue_timeout: Duration::from_secs(1),
        }
    }
}

/// Everything [`crate::serve`] needs.
#[derive(Clone)]
pub struct ProxyConfig {
    /// When set, non-health requests must present it in `X-Iterate-Project-Ingress-Secret`.
    pub secret: Option<Secret>,
    /// Where `localhost:<port>` is. Production: [`Loopback`].
    pub localhost: Arc<dyn Localhost>,
    /// The port this proxy is reached on *on the machine*; a target equal to it is refused (no
    /// self-loop). `None` means the listener's own port.
    pub self_port: Option<u16>,
    /// How long in-flight requests and tunnels may run after a shutdown signal.
    pub drain_timeout: Duration,
    pub limits: Limits,
    /// Header a request id is taken from for logs.
    pub request_id_header: HeaderName,
    /// Where request records go.
    pub access_log: Arc<dyn AccessLog>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            secret: None,
            localhost: Arc::new(Loopback),
            self_port: None,
            drain_timeout: Duration::from_secs(30),
            limits: Limits::default(),
            request_id_header: DEFAULT_REQUEST_ID_HEADER,
            access_log: Arc::new(TracingAccessLog),
        }
    }
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("secret", &self.secret)
            .field("self_port", &self.self_port)
            .field("drain_timeout", &self.drain_timeout)
            .field("limits", &self.limits)
            .field("request_id_header", &self.request_id_header)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_compare() {
        let s = Secret::new(" hunter2\n").unwrap();
        assert!(s.matches(b"hunter2"));
        assert!(!s.matches(b"hunter3"));
        assert!(!s.matches(b"hunter"));
        assert!(!s.matches(b"hunter22"));
        assert!(!s.matches(b""));
        assert!(Secret::new("  ").is_none());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn long_secret_compare() {
        let long = "x".repeat(1000);
        let s = Secret::new(&long).unwrap();
        assert!(s.matches(long.as_bytes()));
        assert!(!s.matches("x".repeat(999).as_bytes()));
    }
}
