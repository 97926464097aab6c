//! The fast path: plain HTTP/1.1 requests forwarded at the byte level, as nginx does.
//!
//! A client connection starts here. Each request head is parsed with `httparse` in place; when it
//! is an ordinary request this module understands completely — HTTP/1.1, origin-form target, one
//! `Host`, a valid target header (and secret, when one is set), no `Transfer-Encoding`, no
//! `Expect`, no upgrade, and no body or a `Content-Length` one (streamed when it arrives after its
//! head) — the head is rewritten
//! straight into the upstream request (hop-by-hop headers out, `Host: localhost:<port>` and
//! `X-Iterate-Proxy-Via` in, exactly as [`crate::rewrite_request_headers`] does), sent on a pooled
//! loopback connection, and the app's response is passed back with its framing checked:
//! `Content-Length` and chunked bodies byte for byte, close-delimited ones re-chunked, interim
//! (1xx) responses passed on. A message's framing is decided before any hop-by-hop removal.
//!
//! Anything else — `/health`, refusals, upgrades, `Expect: 100-continue`, chunked uploads,
//! HTTP/1.0, heads httparse rejects or that exceed a limit — is handed, with the bytes
//! already read, to the hyper-based handler for the rest of the connection ([`Next::Hyper`]).
//! That handler stays the reference behaviour; this path only makes the common case cheap.
//!
//! Memory per connection is bounded: the client read buffer never holds more than one request
//! head (plus what arrived with it), the upstream buffer at most one response head, and bodies are
//! copied through one buffer of [`RELAY_READ`] bytes that is given back when the body ends. An idle
//! keep-alive connection holds about [`HEAD_READ`] + [`FIRST_READ`] bytes of buffers.
//!
//! The pieces, along the lines hyper's h1 module draws: [`plan`] (the request head and its
//! rewrite), [`hop`] (hop-by-hop fields in bytes), [`exchange`] (one request/response with the
//! app, on a pooled connection), [`upload`] (a request body streamed after its head),
//! [`response`] (the app's response head), [`relay`] (the response body), [`timer`] (the
//! connection's one timer and the shutdown signal), [`bytes`] (small byte helpers). This file is
//! the connection's driver.

mod bytes;
mod exchange;
mod hop;
mod plan;
mod relay;
mod response;
mod timer;
mod upload;

pub use plan::{HeadPlan, PlannedRequest, plan_request};
pub(crate) use response::RESP_HEADERS;
pub(crate) use timer::Stop;

use bytes::push_u64;
use exchange::{Attempt, Exchange, client_gone, exchange};
use response::{Framing, status_line};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use timer::{Deadline, MovingDeadline};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::access_log::RequestRecord;
use crate::cause;
use crate::responses::{ProxyError, error_body};
use crate::retry::is_idempotent;
use crate::shared::Shared;

/// Room kept for reading a request head (more is reserved as a longer head arrives).
const HEAD_READ: usize = 4 * 1024;

/// Read size for the first read of a response head (and its first body bytes).
const FIRST_READ: usize = 8 * 1024;

/// Read size while a body is being relayed (held only while it is: see `relay_body`).
const RELAY_READ: usize = 64 * 1024;

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
                None => break Err((ProxyError::UpstreamTimeout, None, cause::HEAD_TIMEOUT)),
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
                    Err(Exchange::Stale) => {
                        break Err((ProxyError::ProxyError, None, cause::STALE));
                    }
                    Err(Exchange::Failed(addr, why)) => {
                        break Err((ProxyError::ProxyError, addr, why));
                    }
                    Err(Exchange::ClientGone) => return false,
                },
            }
        };
        let (up, addr, head, unsent) = match outcome {
            Ok(v) => v,
            Err((e, addr, why)) => {
                if let Some(log) = plan.log.as_mut() {
                    log.upstream_addr = addr;
                    log.cause = Some(why);
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
        status_line(out, status.as_u16(), None);
        out.extend_from_slice(b"content-type: application/json\r\ncontent-length: ");
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
