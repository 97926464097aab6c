//! The router's steps, shared by the generations. Each is a function that records its decision
//! in the router's trace event and refuses with a typed [`crate::model::Refusal`].

pub mod authz;
pub mod bridge;
pub mod canonical;
pub mod custom_domain;
pub mod forward;
pub mod host;
pub mod hostname;
pub mod lookup;
pub mod matchers;
pub mod resolution;
pub mod resolve;
pub mod session;
pub mod target;
pub mod transport;
