//! The fast path: plain HTTP/1.1 requests forwarded at the byte level, as nginx does.
//!
//! A client connection starts here. Each request head is parsed with `httparse` in place; when it
//! is an ordinary request this module understands completely — HTTP/1.1, origin-form target, one
//! `Host`, a valid target header (and secret, when one is set), no `Transfer-Encoding`, no
//! `Expect`, no upgrade, and either no body or a body already read in full — the head is rewritten
//! straight into the upstream request (hop-by-hop headers out, `Host: localhost:<port>` and
//! `X-Iterate-Proxy-Via` in, exactly as [`crate::rewrite_request_headers`] does), sent on a pooled
//! loopback connection, and the app's response is passed back with its framing checked:
//! `Content-Length` and chunked bodies byte for byte, close-delimited ones re-chunked.
//!
//! Anything else — `/health`, refusals, upgrades, `Expect: 100-continue`, chunked or large
//! uploads, HTTP/1.0, heads httparse rejects or that exceed a limit — is handed, with the bytes
//! already read, to the hyper-based handler for the rest of the connection ([`Next::Hyper`]).
//! That handler stays the reference behaviour; this path only makes the common case cheap.
//!
//! Memory per connection is bounded: the client read buffer never holds more than one request
//! head (plus what arrived with it), the upstream buffer at most one response head, and bodies are
//! copied through one buffer of [`RELAY_READ`] bytes that is given back when the body ends. An idle
//! keep-alive connection holds about [`HEAD_READ`] + [`FIRST_READ`] bytes of buffers.

use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::access_log::{AccessLog, RequestRecord};
use crate::chunked::ChunkedScanner;
use crate::config::ProxyConfig;
use crate::config::{SECRET_HEADER, TARGET_HOST_HEADER, VIA_HEADER};
use crate::handler::{Shared, is_idempotent};
use crate::hop_headers::{is_hop_by_hop, never_nominated};
use crate::host::valid_host;
use crate::localhost::connect_local;
use crate::responses::{ProxyError, error_body};
use crate::target_host::{TargetForm, parse_target_host_bytes};

/// Request header fields parsed on the stack; a request with more goes to hyper (which applies
/// the configured limit itself).
const REQ_HEADERS: usize = 128;
/// Most header fields accepted in an app's response head (the same limit as the hyper client).
pub(crate) const RESP_HEADERS: usize = 200;
/// Room kept for reading a request head (more is reserved as a longer head arrives).
const HEAD_READ: usize = 4 * 1024;
/// Read size for the first read of a response head (and its first body bytes).
const FIRST_READ: usize = 8 * 1024;
/// Buffer for streaming a request body that did not arrive with its head.
const BODY_CHUNK: usize = 16 * 1024;
/// Read size while a body is being relayed (held only while it is: see `relay_body`).
const RELAY_READ: usize = 64 * 1024;
/// Most `Connection` tokens naming other headers that are honoured in place; a message naming
/// more goes to hyper (requests) or is refused (responses).
const MAX_NAMED: usize = 8;

/// The longest and the most a lingering close reads before closing.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// What the connection does after the fast path returns.
pub(crate) enum Next {
    /// Close the client connection.
    Close,
    /// Serve the rest of the connection with hyper, starting with the bytes not yet consumed.
    Hyper(Vec<u8>),
}

/// A shutdown signal that may be polled again after it fired.
pub(crate) struct Stop {
    fut: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Stop {
    pub(crate) fn new(mut rx: tokio::sync::watch::Receiver<bool>) -> Stop {
        Stop {
            fut: Some(Box::pin(async move {
                let _ = rx.wait_for(|s| *s).await;
            })),
        }
    }
}

impl Future for Stop {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(fut) = self.fut.as_mut() else {
            return Poll::Ready(());
        };
        match fut.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.fut = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// One timer per connection for every deadline it waits on (head read, upstream head).
///
/// Arming a tokio timer costs a lock and a wheel insertion; re-arming it for every request was a
/// measurable share of the per-request cost. The deadlines here only move forward, so the timer
/// stays armed at the earliest one and, when it fires before the deadline now wanted, is moved
/// once: about one re-arm per timeout period per connection instead of one per request.
pub(crate) struct Deadline {
    sleep: Pin<Box<Sleep>>,
    armed: Instant,
}

impl Deadline {
    pub(crate) fn new(at: Instant) -> Deadline {
        Deadline {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            armed: at,
        }
    }

    /// Runs `fut` to completion, or returns `None` once the deadline in `at` has passed. `fut` may
    /// move the deadline later while it runs (progress on a request body does): it is read again
    /// only when the timer fires, so moving it costs nothing.
    pub(crate) async fn run<F: Future>(
        &mut self,
        at: &MovingDeadline,
        fut: F,
    ) -> Option<F::Output> {
        if at.get() < self.armed {
            self.sleep.as_mut().reset(at.get());
            self.armed = at.get();
        }
        let mut fut = std::pin::pin!(fut);
        poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            loop {
                match self.sleep.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) if self.armed >= at.get() => return Poll::Ready(None),
                    Poll::Ready(()) => {
                        self.sleep.as_mut().reset(at.get());
                        self.armed = at.get();
                    }
                }
            }
        })
        .await
    }
}

/// A deadline that the future a [`Deadline`] waits on may move later (an atomic only so that the
/// futures holding it stay `Send`: one task uses it).
pub(crate) struct MovingDeadline {
    base: Instant,
    /// Nanoseconds after `base`.
    after: std::sync::atomic::AtomicU64,
}

impl MovingDeadline {
    pub(crate) fn new(at: Instant) -> MovingDeadline {
        MovingDeadline {
            base: at,
            after: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn get(&self) -> Instant {
        self.base + std::time::Duration::from_nanos(self.after.load(Ordering::Relaxed))
    }

    fn set(&self, at: Instant) {
        let after = at.saturating_duration_since(self.base).as_nanos();
        self.after
            .store(u64::try_from(after).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// What a message's hop-by-hop fields say (RFC 9110 §7.6.1), and the copy of its other fields.
/// The byte-level twin of [`crate::hop_headers::strip_hop_by_hop`] (the parity property in
/// `tests/properties.rs` holds them to the same result).
struct Hop<'a> {
    /// Fields named by `Connection` (besides `close`, `keep-alive` and `upgrade`).
    named: [&'a [u8]; MAX_NAMED],
    n_named: usize,
    /// `Connection: close`.
    close: bool,
    /// `Connection: upgrade`.
    upgrade: bool,
    /// Every `TE` value is `trailers` (then a single `te: trailers` is kept).
    te_trailers_only: bool,
}

impl<'a> Hop<'a> {
    fn new() -> Self {
        Hop {
            named: [b""; MAX_NAMED],
            n_named: 0,
            close: false,
            upgrade: false,
            te_trailers_only: true,
        }
    }

    /// Takes note of a `Connection` or `TE` field (any other is ignored). `false` when `Connection`
    /// names more fields than [`MAX_NAMED`].
    fn note(&mut self, name: &[u8], value: &'a [u8]) -> bool {
        if is(name, "te") {
            self.te_trailers_only &= tokens(value).all(|t| t.eq_ignore_ascii_case(b"trailers"));
        } else if is(name, "connection") {
            for t in tokens(value) {
                if t.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    self.upgrade = true;
                } else if !t.is_empty()
                    && !t.eq_ignore_ascii_case(b"keep-alive")
                    // Framing is decided first: a nomination of a framing field is ignored.
                    && !never_nominated(t)
                {
                    if self.n_named == MAX_NAMED {
                        return false;
                    }
                    self.named[self.n_named] = t;
                    self.n_named += 1;
                }
            }
        }
        true
    }

    /// Writes `name: value` lines for the end-to-end fields of `headers`. `own` sees each field
    /// first and returns `true` when it has dealt with it (written its own line, or dropped it).
    fn copy_end_to_end(
        &self,
        headers: &[httparse::Header<'_>],
        out: &mut Vec<u8>,
        mut own: impl FnMut(&[u8], &mut Vec<u8>) -> bool,
    ) {
        let named = &self.named[..self.n_named];
        let mut te_written = false;
        for h in headers {
            let name = h.name.as_bytes();
            if own(name, out) || named.iter().any(|t| t.eq_ignore_ascii_case(name)) {
                continue;
            }
            if is(name, "te") {
                if self.te_trailers_only && !te_written {
                    out.extend_from_slice(b"te: trailers\r\n");
                    te_written = true;
                }
                continue;
            }
            if is_hop_by_hop(name) {
                continue;
            }
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// A request the fast path forwards.
struct Plan {
    port: u16,
    /// Bytes of the client's request (head and body) in the read buffer.
    consumed: usize,
    /// Body bytes still to come from the client.
    body_pending: u64,
    /// Idempotent and without a body: may be sent again on a fresh connection when a pooled one
    /// turns out to be dead before answering.
    retryable: bool,
    head_method: bool,
    /// The client asked to close after this response.
    close: bool,
    log: Option<Box<RequestRecord>>,
}

enum Parsed {
    Forward(Plan),
    /// The head is not complete yet.
    Partial,
    /// Not for the fast path.
    Hyper,
}

/// How an app's response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the app closes; re-chunked for the client.
    Close,
}

struct RespHead {
    status: u16,
    framing: Framing,
    /// HTTP/1.1 without `Connection: close`: the connection may be reused after the body.
    persistent: bool,
    /// Length of the head in the upstream buffer.
    len: usize,
}

enum Exchange {
    /// A pooled connection died before any byte of an answer: the request may not have been seen.
    Stale,
    /// The app could not be reached or answered badly (with the address, once connected).
    Failed(Option<SocketAddr>),
    /// The client went away while its body was being streamed.
    ClientGone,
}

pub(crate) struct FastConn {
    shared: Arc<Shared>,
    client: TcpStream,
    /// Bytes read from the client; `cpos..` not yet consumed.
    cbuf: Vec<u8>,
    cpos: usize,
    /// The upstream request being sent.
    req: Vec<u8>,
    /// Bytes read from the app.
    ubuf: Vec<u8>,
    /// The response head (and first body bytes) being written to the client.
    out: Vec<u8>,
    deadline: Deadline,
    /// The connection ends with part of a request body unread: close it lingering.
    linger: bool,
}

fn is(name: &[u8], lower: &str) -> bool {
    name.len() == lower.len() && name.eq_ignore_ascii_case(lower.as_bytes())
}

/// Characters http's URI parser and every app accept as they are in an origin-form target. A
/// target with anything else goes to hyper, which decides.
fn uri_byte_ok(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')'
        | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@' | b'/' | b'?' | b'%')
}

fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(|t| t.trim_ascii())
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn stale_kind(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof
    )
}

impl FastConn {
    pub(crate) fn new(client: TcpStream, shared: Arc<Shared>) -> FastConn {
        let deadline = Deadline::new(Instant::now() + shared.cfg.limits.header_read_timeout);
        FastConn {
            shared,
            client,
            cbuf: Vec::new(),
            cpos: 0,
            req: Vec::new(),
            ubuf: Vec::new(),
            out: Vec::new(),
            deadline,
            linger: false,
        }
    }

    /// Ends the client connection's write side (the stream is closed when dropped). When the
    /// client may still be sending a request body the proxy did not read, the rest is read and
    /// discarded for a while first (nginx's lingering close): closing a socket with unread data
    /// sends a reset, which can destroy the answer before the client has read it.
    pub(crate) async fn shutdown(&mut self) {
        let _ = self.client.shutdown().await;
        if self.linger {
            let mut sink = [0u8; 4096];
            let mut left = LINGER_BYTES;
            let _ = tokio::time::timeout(LINGER_TIME, async {
                while left > 0 {
                    match self.client.read(&mut sink).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => left = left.saturating_sub(n),
                    }
                }
            })
            .await;
        }
    }

    /// The client stream, for hyper to continue with.
    pub(crate) fn into_stream(self) -> TcpStream {
        self.client
    }

    /// Serves requests until the connection should close or go to hyper.
    pub(crate) async fn run(&mut self, stop: &mut Stop) -> Next {
        loop {
            let wait_start = Instant::now();
            let plan = loop {
                if self.cpos < self.cbuf.len() {
                    match self.parse() {
                        Parsed::Forward(plan) => break plan,
                        Parsed::Hyper => return self.handover(),
                        Parsed::Partial => {
                            if self.cbuf.len() - self.cpos
                                >= self.shared.cfg.limits.max_request_head_bytes
                            {
                                return self.handover();
                            }
                        }
                    }
                }
                if self.cpos == self.cbuf.len() {
                    self.cbuf.clear();
                    self.cpos = 0;
                } else if self.cpos > 0 {
                    self.cbuf.drain(..self.cpos);
                    self.cpos = 0;
                }
                if self.cbuf.capacity() - self.cbuf.len() < 1024 {
                    self.cbuf.reserve(HEAD_READ);
                }
                let idle = self.cbuf.is_empty();
                let at = wait_start + self.shared.cfg.limits.header_read_timeout;
                let FastConn {
                    client,
                    cbuf,
                    deadline,
                    ..
                } = self;
                let read = deadline
                    .run(&MovingDeadline::new(at), async {
                        tokio::select! {
                            biased;
                            _ = &mut *stop, if idle => None,
                            r = client.read_buf(cbuf) => Some(r),
                        }
                    })
                    .await;
                match read {
                    Some(Some(Ok(n))) if n > 0 => {}
                    // Timed out, stopping while idle, closed, or failed.
                    _ => return Next::Close,
                }
            };
            if !self.forward(plan).await || self.shared.stopping.load(Ordering::Relaxed) {
                return Next::Close;
            }
        }
    }

    fn handover(&mut self) -> Next {
        let rest = self.cbuf.split_off(self.cpos);
        Next::Hyper(rest)
    }

    /// Parses the head at `cpos` and, for a fast-path request, writes the upstream request.
    fn parse(&mut self) -> Parsed {
        let shared = &*self.shared;
        let p = match plan_request(
            &shared.cfg,
            shared.self_port,
            &self.cbuf[self.cpos..],
            &mut self.req,
        ) {
            HeadPlan::Forward(p) => p,
            HeadPlan::Partial => return Parsed::Partial,
            HeadPlan::FullHandler => return Parsed::Hyper,
        };
        let log = shared.cfg.access_log.enabled().then(|| {
            Box::new(RequestRecord {
                target_port: Some(p.port),
                target_form: Some(p.form.as_str()),
                bytes_in: p.body_len,
                ..RequestRecord::new(
                    shared.request_id_from(p.request_id),
                    p.method,
                    p.path,
                    p.target_header,
                )
            })
        });
        Parsed::Forward(Plan {
            port: p.port,
            consumed: p.consumed,
            body_pending: p.body_pending,
            retryable: p.body_len == 0 && is_idempotent(p.method),
            head_method: p.method == "HEAD",
            close: p.close,
            log,
        })
    }

    /// Forwards one planned request and its response. Returns whether the client connection
    /// stays open.
    async fn forward(&mut self, mut plan: Plan) -> bool {
        let started = std::time::Instant::now();
        self.cpos += plan.consumed;
        let shared = self.shared.clone();
        let limits = &shared.cfg.limits;
        // The app has `upstream_head_timeout` to answer from the last byte of the request sent to
        // it: a streamed body moves this deadline on as it goes.
        let at = MovingDeadline::new(Instant::from_std(started) + limits.upstream_head_timeout);
        let close = plan.close || shared.stopping.load(Ordering::Relaxed);
        let streaming = plan.body_pending > 0;
        let mut fresh = false;
        let outcome = loop {
            let FastConn {
                client,
                cbuf,
                req,
                ubuf,
                out,
                deadline,
                ..
            } = self;
            let attempt = exchange(
                &shared,
                Attempt {
                    port: plan.port,
                    fresh,
                    head_method: plan.head_method,
                    close,
                },
                req,
                ubuf,
                out,
                &*client,
                plan.body_pending,
                &at,
            );
            let head_cap = limits.max_request_head_bytes;
            let watched = async {
                tokio::select! {
                    biased;
                    r = attempt => Some(r),
                    // While a body streams, the exchange itself notices the client leaving.
                    () = client_gone(client, cbuf, head_cap), if !streaming => None,
                }
            };
            match deadline.run(&at, watched).await {
                None => break Err((ProxyError::UpstreamTimeout, None)),
                Some(None) | Some(Some(Err(Exchange::ClientGone))) => {
                    // The client left before the answer: drop the upstream request, as hyper
                    // does when it cancels a handler, and log nothing.
                    tracing::debug!("client closed before the response head");
                    return false;
                }
                Some(Some(r)) => match r {
                    Ok(v) => break Ok(v),
                    Err(Exchange::Stale) if plan.retryable && !fresh => {
                        tracing::debug!("stale upstream connection; retrying once");
                        fresh = true;
                    }
                    Err(Exchange::Stale) => break Err((ProxyError::ProxyError, None)),
                    Err(Exchange::Failed(addr)) => break Err((ProxyError::ProxyError, addr)),
                    Err(Exchange::ClientGone) => return false,
                },
            }
        };
        let (up, addr, head, unsent) = match outcome {
            Ok(v) => v,
            Err((e, addr)) => {
                if let Some(log) = plan.log.as_mut() {
                    log.upstream_addr = addr;
                }
                // Part of the body may still be on its way from the client: never read it as the
                // next request. The answer says `connection: close`, and the connection closes
                // after a lingering read.
                self.linger |= streaming;
                return self.refuse(e, plan, started, close || streaming).await;
            }
        };
        let framing = head.framing;
        if let Some(log) = plan.log.as_mut() {
            log.upstream_addr = Some(addr);
            log.status = head.status;
            log.head_duration = started.elapsed();
            log.bytes_in -= unsent;
        }
        // An app that answered before taking the whole body: neither connection is in a known
        // state afterwards (the rest of the body is still on its way), so both close.
        let whole_body_sent = unsent == 0;
        self.linger |= !whole_body_sent;
        let body = self.relay_body(
            framing,
            head.len,
            up,
            plan.log.as_deref_mut(),
            started,
            &*shared.cfg.access_log,
        );
        match body.await {
            Some((up, clean_end)) => {
                if head.persistent && clean_end && framing != Framing::Close && whole_body_sent {
                    shared.pool.checkin(plan.port, up, addr);
                }
                !close && whole_body_sent
            }
            None => false,
        }
    }

    /// Copies the response body (its first bytes are in `ubuf` after the head) to the client.
    /// Returns the upstream connection and whether the message ended cleanly with nothing after
    /// it, or `None` when the client connection must close (client gone, app cut the body).
    async fn relay_body(
        &mut self,
        framing: Framing,
        head_len: usize,
        mut up: TcpStream,
        mut log: Option<&mut RequestRecord>,
        started: std::time::Instant,
        sink: &dyn AccessLog,
    ) -> Option<(TcpStream, bool)> {
        let finish = |log: &mut Option<&mut RequestRecord>, completed: bool, bytes: u64| {
            if let Some(r) = log.take() {
                r.bytes_out = bytes;
                r.completed = completed;
                r.duration = started.elapsed();
                sink.record(r);
            }
        };
        let mut bytes: u64 = 0;
        let mut first = true;
        let mut pos = head_len;
        let mut chunked = ChunkedScanner::new();
        let mut remaining = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        loop {
            // The body bytes now in `ubuf[pos..]`: decide how many belong to the message.
            let avail = &self.ubuf[pos..];
            let (take, done, extra) = match framing {
                Framing::None => (0, true, !avail.is_empty()),
                Framing::Length(_) => {
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(avail.len());
                    remaining -= take as u64;
                    (take, remaining == 0, avail.len() > take)
                }
                Framing::Chunked => match chunked.scan(avail) {
                    Ok(n) => (n, chunked.is_done(), avail.len() > n),
                    Err(_) => {
                        tracing::debug!("invalid chunked body from the app");
                        finish(&mut log, false, chunked.data_bytes);
                        if first {
                            // The head still goes out; the cut body tells the client it failed.
                            let _ = self.write_out().await;
                        }
                        return None;
                    }
                },
                Framing::Close => (avail.len(), false, false),
            };
            bytes = match framing {
                Framing::Chunked => chunked.data_bytes,
                _ => bytes + take as u64,
            };
            if done {
                finish(&mut log, true, bytes);
            }
            // Write what belongs to the message: with the head in one write on the first round,
            // straight from the read buffer after that.
            let data = &self.ubuf[pos..pos + take];
            let written = if framing == Framing::Close && take > 0 {
                if !first {
                    self.out.clear();
                }
                self.out
                    .extend_from_slice(format!("{take:x}\r\n").as_bytes());
                self.out.extend_from_slice(data);
                self.out.extend_from_slice(b"\r\n");
                self.write_out().await
            } else if first {
                self.out.extend_from_slice(data);
                self.write_out().await
            } else {
                self.client.write_all(data).await.is_ok()
            };
            if !written {
                finish(&mut log, false, bytes);
                return None;
            }
            first = false;
            if done {
                if self.ubuf.capacity() > 2 * FIRST_READ {
                    // A long body was relayed in large reads; an idle connection keeps less.
                    self.ubuf = Vec::with_capacity(FIRST_READ);
                }
                return Some((up, !extra));
            }
            // Read more of the body.
            self.ubuf.clear();
            pos = 0;
            self.ubuf.reserve(RELAY_READ);
            match up.read_buf(&mut self.ubuf).await {
                Ok(0) if framing == Framing::Close => {
                    finish(&mut log, true, bytes);
                    self.out.clear();
                    self.out.extend_from_slice(b"0\r\n\r\n");
                    return self.write_out().await.then_some((up, false));
                }
                Ok(n) if n > 0 => {}
                _ => {
                    // The app cut the body short: the client must see an incomplete message.
                    finish(&mut log, false, bytes);
                    return None;
                }
            }
        }
    }

    async fn write_out(&mut self) -> bool {
        self.client.write_all(&self.out).await.is_ok()
    }

    /// Answers with the proxy's JSON error (as `json_error` does) and logs the refusal.
    async fn refuse(
        &mut self,
        err: ProxyError,
        mut plan: Plan,
        started: std::time::Instant,
        close: bool,
    ) -> bool {
        let code = err.code();
        let status = err.status();
        let body = error_body(err);
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        push_u64(out, u64::from(status.as_u16()));
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
        push_u64(out, body.len() as u64);
        out.extend_from_slice(b"\r\ndate: ");
        crate::date::push(out);
        out.extend_from_slice(b"\r\n");
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let head_len = out.len();
        if !plan.head_method {
            out.extend_from_slice(body.as_bytes());
        }
        if let Some(mut log) = plan.log.take() {
            log.bytes_out = (out.len() - head_len) as u64;
            log.status = status.as_u16();
            log.error = Some(code);
            log.head_duration = started.elapsed();
            log.duration = log.head_duration;
            log.completed = true;
            self.shared.cfg.access_log.record(&log);
        }
        self.write_out().await && !close
    }
}

/// A request head the fast path forwards, as [`plan_request`] read it.
#[derive(Debug)]
pub struct PlannedRequest<'a> {
    pub port: u16,
    pub form: TargetForm,
    /// Bytes of the request (head and body) in the buffer.
    pub consumed: usize,
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    pub target_header: Option<&'a [u8]>,
    pub request_id: Option<&'a [u8]>,
    pub body_len: u64,
    /// Body bytes not yet in the buffer: streamed from the client after the head.
    pub body_pending: u64,
    /// The client asked to close after the response.
    pub close: bool,
}

/// What the fast path makes of the bytes at the start of a client buffer.
#[derive(Debug)]
pub enum HeadPlan<'a> {
    /// Forward it: the upstream request (head and body) has been written.
    Forward(PlannedRequest<'a>),
    /// The head is not complete yet.
    Partial,
    /// Not a request the fast path handles: the full handler decides (and may refuse).
    FullHandler,
}

/// The fast path's request rewrite: parses the request head at the start of `buf` and, when the
/// fast path handles it, writes into `out` what [`crate::rewrite_request_headers`] would send, in
/// the client's order and spelling.
pub fn plan_request<'a>(
    cfg: &ProxyConfig,
    self_port: u16,
    buf: &'a [u8],
    out: &mut Vec<u8>,
) -> HeadPlan<'a> {
    let limits = &cfg.limits;
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; REQ_HEADERS];
    let n_headers = limits.max_request_headers.min(REQ_HEADERS);
    let mut head = httparse::Request::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut head,
        buf,
        &mut storage[..n_headers],
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return HeadPlan::Partial,
        Err(_) => return HeadPlan::FullHandler,
    };
    let (Some(method), Some(target_uri), Some(1)) = (head.method, head.path, head.version) else {
        return HeadPlan::FullHandler;
    };
    if head_len > limits.max_request_head_bytes
        || method == "CONNECT"
        || !target_uri.starts_with('/')
        || !target_uri.bytes().all(uri_byte_ok)
    {
        return HeadPlan::FullHandler;
    }
    let path = target_uri.split('?').next().unwrap_or(target_uri);
    if path == "/health" {
        return HeadPlan::FullHandler;
    }

    let rid_name = cfg.request_id_header.as_str();
    let mut host: Option<&[u8]> = None;
    let mut hosts = 0;
    let mut target: Option<&[u8]> = None;
    let mut targets = 0;
    let mut secret: Option<&[u8]> = None;
    let mut rid: Option<&[u8]> = None;
    let mut body_len: Option<u64> = None;
    let mut hop = Hop::new();
    for h in head.headers.iter() {
        let name = h.name.as_bytes();
        if is(name, "host") {
            hosts += 1;
            host = Some(h.value);
        } else if is(name, "content-length") {
            if body_len.is_some() {
                return HeadPlan::FullHandler;
            }
            match parse_decimal(h.value) {
                Some(n) => body_len = Some(n),
                None => return HeadPlan::FullHandler,
            }
        } else if is(name, "transfer-encoding")
            || is(name, "expect")
            || is(name, "upgrade")
            // More `Connection`-named fields than honoured in place.
            || !hop.note(name, h.value)
        {
            return HeadPlan::FullHandler;
        } else if is(name, TARGET_HOST_HEADER.as_str()) {
            targets += 1;
            target = Some(h.value);
        } else if is(name, SECRET_HEADER.as_str()) {
            secret = secret.or(Some(h.value));
        }
        if is(name, rid_name) {
            rid = rid.or(Some(h.value));
        }
    }
    // One valid Host and at most one target header, or the full handler refuses (400).
    let Some(host) = host.filter(|h| hosts == 1 && !hop.upgrade && valid_host(h)) else {
        return HeadPlan::FullHandler;
    };
    if targets > 1 {
        return HeadPlan::FullHandler;
    }
    if let Some(s) = &cfg.secret
        && !secret.is_some_and(|p| s.matches(p))
    {
        return HeadPlan::FullHandler;
    }
    let Ok(tgt) = parse_target_host_bytes(target) else {
        return HeadPlan::FullHandler;
    };
    if tgt.port == self_port {
        return HeadPlan::FullHandler;
    }
    let body_len = body_len.unwrap_or(0);
    let Ok(body) = usize::try_from(body_len) else {
        return HeadPlan::FullHandler;
    };
    // What of the body arrived with the head goes out with it; the rest is streamed.
    let in_buf = body.min(buf.len() - head_len);

    // The upstream request: what `rewrite_request_headers` produces, written directly.
    let req = out;
    req.clear();
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(target_uri.as_bytes());
    req.extend_from_slice(b" HTTP/1.1\r\n");
    hop.copy_end_to_end(head.headers, req, |name, req| {
        // Host first: the proxy sets its own even when `Connection` names `Host`.
        if is(name, "host") {
            req.extend_from_slice(b"host: localhost:");
            push_u64(req, u64::from(tgt.port));
            req.extend_from_slice(b"\r\n");
            return true;
        }
        is(name, TARGET_HOST_HEADER.as_str())
            || is(name, SECRET_HEADER.as_str())
            || is(name, VIA_HEADER.as_str())
    });
    req.extend_from_slice(VIA_HEADER.as_str().as_bytes());
    req.extend_from_slice(b": ");
    req.extend_from_slice(host);
    req.extend_from_slice(b"\r\n\r\n");
    req.extend_from_slice(&buf[head_len..head_len + in_buf]);

    HeadPlan::Forward(PlannedRequest {
        port: tgt.port,
        form: tgt.form,
        consumed: head_len + in_buf,
        method,
        path,
        target_header: target,
        request_id: rid,
        body_len,
        body_pending: (body - in_buf) as u64,
        close: hop.close,
    })
}

/// Resolves when the client closes its connection (or it fails). Bytes it sends meanwhile (a
/// pipelined request) are kept in `cbuf`, up to `cap` bytes, after which it stops reading.
async fn client_gone(client: &TcpStream, cbuf: &mut Vec<u8>, cap: usize) {
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
struct Attempt {
    port: u16,
    /// A new connection, not a pooled one.
    fresh: bool,
    head_method: bool,
    /// The client connection closes after this response.
    close: bool,
}

/// Sends the request in `req` to the app (a pooled connection unless `fresh`), then the `pending`
/// rest of its body from `client`, and reads the response head into `ubuf`, passing interim (1xx)
/// responses on to the client; writes the client's response head into `out`. Progress on the body
/// moves the head deadline in `progress` on.
#[allow(clippy::too_many_arguments)]
async fn exchange(
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
                Exchange::Failed(None)
            })?,
    };
    let failed = Exchange::Failed(Some(addr));
    let lost = |e: Option<&io::Error>| {
        if reused && e.is_none_or(stale_kind) {
            Exchange::Stale
        } else {
            Exchange::Failed(Some(addr))
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
        body.run(pending, ubuf, out)
            .await
            .map_err(|e| e.unwrap_or(Exchange::Failed(Some(addr))))?
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
                    Head::Invalid => return Err(failed),
                    Head::Interim(n) => {
                        write_to(client, out)
                            .await
                            .map_err(|_| Exchange::ClientGone)?;
                        start += n;
                    }
                    Head::Final(head) => {
                        if head.len > limits.max_response_head_bytes {
                            tracing::debug!(port, "response head too large");
                            return Err(failed);
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
                return Err(failed);
            }
            ubuf.reserve(FIRST_READ);
        }
        match up.read_buf(ubuf).await {
            Ok(0) if ubuf.is_empty() => return Err(lost(None)),
            Ok(0) => return Err(failed),
            Ok(_) => {}
            Err(e) if ubuf.is_empty() => return Err(lost(Some(&e))),
            Err(_) => return Err(failed),
        }
    }
}

/// Writes all of `buf` to a stream that another future may be reading from at the same time.
async fn write_to(s: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        s.writable().await?;
        match s.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A request body being copied from the client to the app after its head.
struct BodyStream<'a> {
    client: &'a TcpStream,
    up: &'a TcpStream,
    /// The app's head deadline: `head_timeout` after the last body byte it took.
    progress: &'a MovingDeadline,
    head_timeout: std::time::Duration,
    head_limit: usize,
}

impl BodyStream<'_> {
    /// Copies the `pending` rest of the body through one 16 KiB buffer, while watching the app.
    /// Interim responses (`103 Early Hints`, an unprompted `100`) are passed on to the client and
    /// the body goes on; the start of any other response is the app answering early: the copy
    /// stops and returns how many body bytes were not sent (the answer's first bytes are then in
    /// `ubuf`). `Err(None)` is an upstream failure, `Err(Some(ClientGone))` the client leaving.
    async fn run(
        &self,
        mut pending: u64,
        ubuf: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<u64, Option<Exchange>> {
        let (client, up) = (self.client, self.up);
        let mut chunk = vec![0u8; BODY_CHUNK];
        let (mut lo, mut hi) = (0usize, 0usize);
        while pending > 0 || lo < hi {
            tokio::select! {
                biased;
                r = up.readable() => {
                    r.map_err(|_| None)?;
                    ubuf.reserve(FIRST_READ);
                    match up.try_read_buf(ubuf) {
                        // The app gives up before the whole body is sent.
                        Ok(0) => return Err(None),
                        Ok(_) => {
                            if self.pass_interims(ubuf, out).await? || ubuf.len() > self.head_limit {
                                return Ok(pending + (hi - lo) as u64);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return Err(None),
                    }
                }
                r = client.readable(), if lo == hi => {
                    r.map_err(|_| Some(Exchange::ClientGone))?;
                    let want = usize::try_from(pending).unwrap_or(usize::MAX).min(chunk.len());
                    match client.try_read(&mut chunk[..want]) {
                        Ok(0) => return Err(Some(Exchange::ClientGone)),
                        Ok(n) => {
                            (lo, hi) = (0, n);
                            pending -= n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return Err(Some(Exchange::ClientGone)),
                    }
                }
                r = up.writable(), if lo < hi => {
                    r.map_err(|_| None)?;
                    match up.try_write(&chunk[lo..hi]) {
                        Ok(n) => {
                            lo += n;
                            self.progress.set(Instant::now() + self.head_timeout);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return Err(None),
                    }
                }
            }
        }
        Ok(0)
    }

    /// Passes the complete interim responses at the start of `ubuf` on to the client and removes
    /// them; `true` when what follows is the start of a final (or invalid) response.
    async fn pass_interims(
        &self,
        ubuf: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<bool, Option<Exchange>> {
        let mut start = 0;
        let answered = loop {
            match response_head(&ubuf[start..], false, false, out) {
                Head::Interim(n) => {
                    write_to(self.client, out)
                        .await
                        .map_err(|_| Some(Exchange::ClientGone))?;
                    start += n;
                }
                Head::Partial => break false,
                Head::Final(_) | Head::Invalid => break true,
            }
        };
        ubuf.drain(..start);
        Ok(answered)
    }
}

enum Head {
    Partial,
    Invalid,
    /// A 1xx other than 101, of this length: skipped, as the hyper client does.
    Interim(usize),
    Final(RespHead),
}

/// Parses an app's response head and, when it is complete and acceptable, writes the client's
/// head into `out`: the status line, the app's fields without hop-by-hop ones, the framing of the
/// body as sent on, `date` when the app sent none, and `connection: close` when closing.
fn response_head(buf: &[u8], head_method: bool, close_client: bool, out: &mut Vec<u8>) -> Head {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; RESP_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut storage,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Invalid,
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Head::Invalid;
    };
    if status == 101 {
        // Never asked for (upgrades go through hyper).
        return Head::Invalid;
    }
    let mut length: Option<u64> = None;
    let mut te: Option<bool> = None;
    let mut hop = Hop::new();
    let mut has_date = false;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if is(name, "content-length") {
            match parse_decimal(h.value) {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => return Head::Invalid,
            }
        } else if is(name, "transfer-encoding") {
            te = Some(
                tokens(h.value)
                    .last()
                    .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")),
            );
        } else if !hop.note(name, h.value) {
            return Head::Invalid;
        } else if is(name, "date") {
            has_date = true;
        }
    }
    if (100..200).contains(&status) {
        // Passed on as it came, without hop-by-hop and framing fields (a 1xx has no body).
        status_line(out, status, resp.reason);
        hop.copy_end_to_end(resp.headers, out, |name, _| is(name, "content-length"));
        out.extend_from_slice(b"\r\n");
        return Head::Interim(len);
    }
    let framing = if head_method || status == 204 || status == 304 {
        Framing::None
    } else {
        match (te, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::Close,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::Close,
        }
    };
    status_line(out, status, resp.reason);
    // With both, Transfer-Encoding frames the body; the length is wrong and does not go on.
    // A repeated identical length goes on once.
    let mut length_sent = false;
    hop.copy_end_to_end(resp.headers, out, |name, _| {
        is(name, "content-length") && (te.is_some() || std::mem::replace(&mut length_sent, true))
    });
    if matches!(framing, Framing::Chunked | Framing::Close) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        crate::date::push(out);
        out.extend_from_slice(b"\r\n");
    }
    if close_client {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Head::Final(RespHead {
        status,
        framing,
        persistent: version == 1 && !hop.close,
        len,
    })
}

/// Starts `out` with the status line `HTTP/1.1 <status> <reason>`: the app's reason phrase, or the
/// canonical one when it sent none.
fn status_line(out: &mut Vec<u8>, status: u16, reason: Option<&str>) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(status));
    out.push(b' ');
    match reason.filter(|r| !r.is_empty()) {
        Some(r) => out.extend_from_slice(r.as_bytes()),
        None => out.extend_from_slice(
            http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("")
                .as_bytes(),
        ),
    }
    out.extend_from_slice(b"\r\n");
}
