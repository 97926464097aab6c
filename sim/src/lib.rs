//! `ingress-sim`: the ingress chain of the platform, simulated on loopback.
//!
//! client → [`edge`] (worker routes) → [`router`] (OS router, V0) → provider transport
//! ([`providers`]: Docker Engine API + host port, Fly edge, Daytona preview proxy) → [`machine`]
//! (the real `project-ingress-proxy`) → [`apps`] on the machine's localhost. Every hop records what
//! it received and decided in the [`trace`].

pub mod apps;
pub mod browser;
pub mod client;
pub mod control_plane;
pub mod db;
pub mod diagram;
pub mod edge;
pub mod exec;
pub mod fixture_file;
pub mod machine;
pub mod model;
pub mod net;
pub mod outcome;
pub mod platform;
pub mod providers;
pub mod render;
pub mod route_pattern;
pub mod router;
pub mod runtime;
pub mod scenario;
pub mod standalone;
pub mod tls;
pub mod trace;
pub mod worker;
pub mod world;

pub use model::Fault;
pub use runtime::{Addrs, World};
pub use trace::{Event, Redactor, TraceStore};
pub use world::WorldSpec;
