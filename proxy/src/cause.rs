//! Why an exchange with the app failed, as a short stable word for the access log's `cause` field
//! (the refusal's `error` code says what the client got; `cause` says why). The same words on
//! both paths.

use std::io;

pub const CONNECT_REFUSED: &str = "connect_refused";
pub const CONNECT_TIMEOUT: &str = "connect_timeout";
pub const CONNECT_FAILED: &str = "connect_failed";
/// The connection was reset (or the app stopped reading) before a response head.
pub const RESET: &str = "reset";
/// The app closed the connection before a response head.
pub const CLOSED: &str = "closed_before_head";
pub const INVALID_HEAD: &str = "invalid_response_head";
pub const HEAD_TOO_LARGE: &str = "response_head_too_large";
/// A `101` to a request that asked for no upgrade.
pub const UNREQUESTED_101: &str = "unrequested_101";
pub const HEAD_TIMEOUT: &str = "head_timeout";
/// A pooled connection died under a request that may not be sent again.
pub const STALE: &str = "stale_connection";
pub const UPSTREAM_FAILED: &str = "upstream_failed";

/// The cause for a failed connect.
pub fn of_connect(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => CONNECT_REFUSED,
        io::ErrorKind::TimedOut => CONNECT_TIMEOUT,
        _ => CONNECT_FAILED,
    }
}

/// The cause for an I/O error on an open connection.
pub fn of_io(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => RESET,
        io::ErrorKind::UnexpectedEof => CLOSED,
        _ => UPSTREAM_FAILED,
    }
}

/// The cause inside hyper-util's client error (the full handler's path).
pub(crate) fn of_client_error(e: &hyper_util::client::legacy::Error) -> &'static str {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return if e.is_connect() {
                of_connect(io)
            } else {
                of_io(io)
            };
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_parse_too_large() {
                return HEAD_TOO_LARGE;
            }
            if h.is_parse() || h.is_parse_status() {
                return INVALID_HEAD;
            }
            if h.is_incomplete_message() {
                return CLOSED;
            }
        }
        src = s.source();
    }
    if e.is_connect() {
        CONNECT_FAILED
    } else {
        UPSTREAM_FAILED
    }
}
