//! Upstream HTTP/1.1 connections driven by the task of the client connection they serve.
//!
//! A pooled client in the usual shape runs every upstream connection in a task of its own and
//! talks to it through channels, so each request crosses tasks several times (request out,
//! response head back, every body chunk back). Here the client connection's task polls the
//! upstream connection itself: while waiting for the response head, and then from inside the
//! response body. A client connection keeps the upstream connection it used last (keep-alive on
//! both sides pairs them up); when the client connection ends, its upstream connection goes to a
//! shared idle pool per port, from which new client connections take one before dialling.
//!
//! Idle connections are not polled. Before one is reused it is polled once: an app that closed it
//! (Node closes idle connections after 5 s) is seen then and the connection dropped. Connections
//! idle longer than the pool's idle timeout are never reused. The one race left — the app closing
//! just as the request is written — is the caller's safe retry.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::upstream_body::UpstreamBody;

type Io = TokioIo<TcpStream>;

/// One upstream connection.
pub(crate) struct Conn {
    port: u16,
    pub(crate) addr: SocketAddr,
    sender: http1::SendRequest<UpstreamBody>,
    conn: http1::Connection<Io, UpstreamBody>,
    idle_since: Instant,
}

impl Conn {
    /// Wraps a connected stream.
    pub(crate) async fn handshake(
        stream: TcpStream,
        addr: SocketAddr,
        port: u16,
        builder: &http1::Builder,
    ) -> hyper::Result<Box<Conn>> {
        let (sender, conn) = builder.handshake(TokioIo::new(stream)).await?;
        Ok(Box::new(Conn {
            port,
            addr,
            sender,
            conn,
            idle_since: Instant::now(),
        }))
    }

    /// Polls the connection once, without waiting: true if it can take a new request now.
    fn ready(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(&mut self.conn).poll_without_shutdown(&mut cx) {
            Poll::Pending => self.sender.is_ready(),
            Poll::Ready(_) => false,
        }
    }

    /// Sends a request and drives the connection until the response head arrives.
    pub(crate) async fn send(
        mut self: Box<Self>,
        req: Request<UpstreamBody>,
    ) -> (Option<Box<Conn>>, hyper::Result<Response<Incoming>>) {
        let mut fut = std::pin::pin!(self.sender.send_request(req));
        let mut open = true;
        let res = std::future::poll_fn(|cx| {
            // The connection first: it writes the request and parses the response, which the
            // response future then has at once (the other order costs a wake per exchange).
            if open
                && Pin::new(&mut self.conn)
                    .poll_without_shutdown(cx)
                    .is_ready()
            {
                // The connection ended: the response future resolves (with its error) now.
                open = false;
            }
            fut.as_mut().poll(cx)
        })
        .await;
        (open.then_some(self), res)
    }
}

/// Idle upstream connections per port, shared by all client connections.
pub(crate) struct Pool {
    // Boxed so that a connection moves between the pool, a client connection's slot and a
    // response body as a pointer, never as the whole (large) connection state.
    #[allow(clippy::vec_box)]
    idle: Mutex<HashMap<u16, Vec<Box<Conn>>>>,
    max_per_port: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub(crate) fn new(max_per_port: usize, idle_timeout: Duration) -> Pool {
        Pool {
            idle: Mutex::new(HashMap::new()),
            max_per_port,
            idle_timeout,
        }
    }

    fn fresh(&self, c: &mut Conn) -> bool {
        c.idle_since.elapsed() < self.idle_timeout && c.ready()
    }

    /// The most recently used idle connection to `port` that is still usable.
    fn take(&self, port: u16) -> Option<Box<Conn>> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(&port)?;
        while let Some(mut c) = list.pop() {
            if self.fresh(&mut c) {
                return Some(c);
            }
        }
        None
    }

    /// Closes idle connections that have expired.
    pub(crate) fn sweep(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            let timeout = self.idle_timeout;
            idle.retain(|_, list| {
                list.retain(|c| c.idle_since.elapsed() < timeout);
                !list.is_empty()
            });
        }
    }

    /// Adds an idle connection (its idle time counts from when its last exchange ended).
    fn put(&self, mut c: Box<Conn>) {
        if !self.fresh(&mut c) {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            let timeout = self.idle_timeout;
            // Drop what has expired anywhere (the pool is small; this keeps it bounded in time).
            for list in idle.values_mut() {
                list.retain(|c| c.idle_since.elapsed() < timeout);
            }
            let list = idle.entry(c.port).or_default();
            if list.len() < self.max_per_port {
                list.push(c);
            }
        }
    }
}

/// The upstream connection a client connection holds between its requests.
pub(crate) struct Affinity {
    slot: Mutex<Option<Box<Conn>>>,
    pool: Arc<Pool>,
}

impl Affinity {
    pub(crate) fn new(pool: Arc<Pool>) -> Affinity {
        Affinity {
            slot: Mutex::new(None),
            pool,
        }
    }

    /// A usable idle connection to `port`: this client connection's own, else one from the pool.
    pub(crate) fn take(&self, port: u16) -> Option<Box<Conn>> {
        let own = self.slot.lock().ok().and_then(|mut s| s.take());
        if let Some(mut c) = own {
            if c.port == port && self.pool.fresh(&mut c) {
                return Some(c);
            }
            // Another port's connection goes to the pool; an expired or closed one is dropped.
            self.pool.put(c);
        }
        self.pool.take(port)
    }

    /// Keeps a connection whose exchange finished for this client connection's next request.
    fn keep(&self, mut c: Box<Conn>) {
        c.idle_since = Instant::now();
        let old = self.slot.lock().ok().and_then(|mut s| s.replace(c));
        if let Some(old) = old {
            self.pool.put(old);
        }
    }
}

impl Drop for Affinity {
    fn drop(&mut self) {
        if let Some(c) = self.slot.get_mut().ok().and_then(|s| s.take()) {
            self.pool.put(c);
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that drives its upstream connection, and hands the connection back to the
    /// client connection once the body has been read to its end.
    pub(crate) struct Driven {
        #[pin]
        body: Incoming,
        conn: Option<Box<Conn>>,
        home: Arc<Affinity>,
        // An error held back for one poll, so that the data before it is flushed first.
        failed: Option<hyper::Error>,
    }

    impl PinnedDrop for Driven {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(c) = this.conn.take() {
                // Only a connection whose response was read to the end can carry another request.
                if this.body.is_end_stream() {
                    this.home.keep(c);
                }
            }
        }
    }
}

impl Driven {
    pub(crate) fn new(body: Incoming, conn: Option<Box<Conn>>, home: Arc<Affinity>) -> Driven {
        Driven {
            body,
            conn,
            home,
            failed: None,
        }
    }
}

impl Body for Driven {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        if let Some(c) = this.conn.as_mut()
            && Pin::new(&mut c.conn).poll_without_shutdown(cx).is_ready()
        {
            // Closed (or errored): it cannot be reused; the body ends or fails on its own.
            *this.conn = None;
        }
        match this.body.poll_frame(cx) {
            Poll::Ready(None) => {
                if let Some(c) = this.conn.take() {
                    this.home.keep(c);
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // The app's connection failed mid-body. The server writes what it was given only
                // when the body next says Pending: hold the error back once so the bytes that did
                // arrive reach the client before its connection is cut.
                *this.conn = None;
                *this.failed = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
