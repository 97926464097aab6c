//! The router's steps, shared by the generations. Each is a function that records its decision
//! in the router's trace event and refuses with a typed [`crate::model::Refusal`].

pub mod authz;
pub mod bridge;
pub mod canonical;
pub mod forward;
pub mod host;
pub mod hostname;
pub mod matchers;
pub mod resolve;
pub mod session;
pub mod target;
pub mod transport;
