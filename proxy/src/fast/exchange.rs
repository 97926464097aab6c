//! One exchange with the app: a pooled (or new) loopback connection, the request, the body streamed
//! after it, interim responses passed on, and the final response head.

use super::FIRST_READ;
use super::response::{Head, RespHead, response_head};
use super::timer::MovingDeadline;
use super::upload::{BodyError, BodyStream, write_to};
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cause;
use crate::localhost::connect_local;
use crate::retry::stale_io;
use crate::shared::Shared;

pub(super) enum Exchange {
    /// A pooled connection died before any byte of an answer: the request may not have been seen.
    Stale,
    /// The app could not be reached or answered badly (with the address, once connected).
    Failed(Option<SocketAddr>, &'static str),
    /// The client went away while its body was being streamed.
    ClientGone,
}

/// Resolves when the client closes its connection (or it fails). Bytes it sends meanwhile (a
/// pipelined request) are kept in `cbuf`, up to `cap` bytes, after which it stops reading.
pub(super) async fn client_gone(client: &TcpStream, cbuf: &mut Vec<u8>, cap: usize) {
    loop {
        if cbuf.len() >= cap {
            return std::future::pending().await;
        }
        if client.readable().await.is_err() {
            return;
        }
        cbuf.reserve(1024);
        match client.try_read_buf(cbuf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// What one attempt at an exchange needs to know.
#[derive(Clone, Copy)]
pub(super) struct Attempt {
    pub(super) port: u16,
    /// A new connection, not a pooled one.
    pub(super) fresh: bool,
    pub(super) head_method: bool,
    /// The client connection closes after this response.
    pub(super) close: bool,
}

/// Sends the request in `req` to the app (a pooled connection unless `fresh`), then the `pending`
/// rest of its body from `client`, and reads the response head into `ubuf`, passing interim (1xx)
/// responses on to the client; writes the client's response head into `out`. Progress on the body
/// moves the head deadline in `progress` on.
#[allow(clippy::too_many_arguments)]
pub(super) async fn exchange(
    shared: &Shared,
    at: Attempt,
    req: &[u8],
    ubuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    client: &TcpStream,
    pending: u64,
    progress: &MovingDeadline,
) -> Result<(TcpStream, SocketAddr, RespHead, u64), Exchange> {
    let limits = &shared.cfg.limits;
    let port = at.port;
    let mut pooled = if at.fresh {
        None
    } else {
        shared.pool.checkout(port)
    };
    // A pooled connection the app has closed (or written to) while idle is not used. The check is
    // on tokio's cached readiness: a syscall only when the reactor saw the socket become readable
    // (reading the last response cleared it, as its final read did not fill the buffer).
    while let Some((s, _)) = &pooled {
        match s.try_read(&mut [0u8; 1]) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            _ => pooled = shared.pool.checkout(port),
        }
    }
    let reused = pooled.is_some();
    let (mut up, addr) = match pooled {
        Some(c) => c,
        None => connect_local(shared.cfg.localhost.as_ref(), port, limits.connect_timeout)
            .await
            .map_err(|e| {
                tracing::debug!(port, error = %e, "upstream connect failed");
                Exchange::Failed(None, cause::of_connect(&e))
            })?,
    };
    let failed = |why| Exchange::Failed(Some(addr), why);
    let lost = |e: Option<&io::Error>| {
        if reused && e.is_none_or(stale_io) {
            Exchange::Stale
        } else {
            failed(e.map_or(cause::CLOSED, cause::of_io))
        }
    };
    if let Err(e) = up.write_all(req).await {
        return Err(lost(Some(&e)));
    }
    ubuf.clear();
    let unsent = if pending > 0 {
        let body = BodyStream {
            client,
            up: &up,
            progress,
            head_timeout: limits.upstream_head_timeout,
            head_limit: limits.max_response_head_bytes,
        };
        body.run(pending, ubuf, out).await.map_err(|e| match e {
            BodyError::Upstream(why) => failed(why),
            BodyError::ClientGone => Exchange::ClientGone,
        })?
    } else {
        0
    };
    let close = at.close || unsent > 0;
    let mut start = 0;
    loop {
        if ubuf.len() > start {
            loop {
                match response_head(&ubuf[start..], at.head_method, close, out) {
                    Head::Partial => break,
                    Head::Invalid(why) => return Err(failed(why)),
                    Head::Interim(n) => {
                        write_to(client, out)
                            .await
                            .map_err(|_| Exchange::ClientGone)?;
                        start += n;
                    }
                    Head::Final(head) => {
                        if head.len > limits.max_response_head_bytes {
                            tracing::debug!(port, "response head too large");
                            return Err(failed(cause::HEAD_TOO_LARGE));
                        }
                        if start > 0 {
                            ubuf.drain(..start);
                        }
                        return Ok((up, addr, head, unsent));
                    }
                }
            }
        }
        if ubuf.capacity() - ubuf.len() < 1024 {
            if ubuf.len() - start > limits.max_response_head_bytes {
                tracing::debug!(port, "response head too large");
                return Err(failed(cause::HEAD_TOO_LARGE));
            }
            ubuf.reserve(FIRST_READ);
        }
        match up.read_buf(ubuf).await {
            Ok(0) if ubuf.is_empty() => return Err(lost(None)),
            Ok(0) => return Err(failed(cause::CLOSED)),
            Ok(_) => {}
            Err(e) if ubuf.is_empty() => return Err(lost(Some(&e))),
            Err(e) => return Err(failed(cause::of_io(&e))),
        }
    }
}
