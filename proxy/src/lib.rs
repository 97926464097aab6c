//! `project-ingress-proxy`: the machine-side ingress proxy.
//!
//! Every machine runs it on port 8080. The platform forwards ingress traffic to it with the header
//! `X-Iterate-Proxy-Target-Host`, which names a port on the machine's own loopback; the proxy
//! forwards the request (HTTP, streaming bodies, WebSocket and other upgrades) to
//! `localhost:<port>`. See `README.md` for the contract, and `serve` for the entry point that both
//! the binary and the simulator use.

pub mod access_log;
pub mod buffered_log;
pub mod cause;
mod chunked;
pub mod config;
mod date;
mod fast;
mod guard;
pub use fast::{HeadPlan, PlannedRequest, plan_request};
mod handler;
pub mod hop_headers;
pub mod host;
pub mod localhost;
mod pool;
pub mod responses;
mod retry;
mod server;
mod shared;
pub mod target_host;
mod tunnel;
mod upstream_body;

pub use access_log::{AccessLog, RequestRecord, TracingAccessLog};
pub use config::{Limits, ProxyConfig, Secret};
pub use handler::rewrite_request_headers;
pub use localhost::{Localhost, Loopback};
pub use server::serve;
pub use target_host::{Target, TargetHostError, parse_target_host};
