//! When a request may be sent again, on both paths: only an idempotent request without a body
//! (RFC 9110 §9.2.2), and only when the connection it went out on provably died under it before
//! any answer (a pooled connection the app closed, as Node does after 5 s idle) rather than
//! because the app is down.

/// Idempotent methods (RFC 9110 §9.2.2): only these may be sent again after a dead connection.
pub(crate) fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// The I/O errors that mean a connection died under a request (the fast path's reading of
/// "stale"; [`stale_connection`] finds the same kinds inside hyper-util's errors).
pub(crate) fn stale_io(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof
    )
}

/// Whether a failed upstream request provably did not get an answer because the connection
/// died under it (a pooled connection the app closed, as Node does after 5 s idle) rather than
/// because the app is down: only then may a body-less idempotent request be sent again.
pub(crate) fn stale_connection(e: &hyper_util::client::legacy::Error) -> bool {
    if e.is_connect() {
        return false;
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled())
        {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && stale_io(io)
        {
            return true;
        }
        src = s.source();
    }
    false
}
