//! The full handler's framing guard: the bytes hyper's server reads pass through a strict framer
//! of our own first, so that where a request ends is decided the same way as on the fast path
//! before hyper sees it.
//!
//! hyper is lenient where the fast path is strict: its chunked decoder takes a bare LF inside a
//! trailer line as part of the line, so `0\r\nX-T: 1\n\r\n` followed by a pipelined request reads
//! that request as trailer fields — it is neither answered nor refused. The guard tracks each
//! request's framing with the same rules and the same chunked scanner as the fast path
//! (`chunked.rs`, which refuses a bare LF anywhere), and:
//!
//! - a body that is not valid chunked encoding: the bytes from the error on are withheld and hyper's
//!   next read fails, so the upload is cut (the app never sees it end) and the client gets `400
//!   invalid_request` and a closed connection;
//! - a head whose framing it cannot decide (hyper or the handler will refuse it: unparseable, too
//!   large, `CONNECT`, a `Transfer-Encoding` that does not end in `chunked`, a bad
//!   `Content-Length`): the head passes and nothing after it; the connection's [`EndFlag`] is set,
//!   so the handler's answer says `connection: close` and hyper closes after it;
//! - a request that asks for an upgrade (by the guard's own reading of the bytes): after it (and its
//!   body) the bytes pass unexamined, as they belong to the tunnel, and the [`EndFlag`] is set, so
//!   every answer but a `101` closes the connection: no further request is ever read past the
//!   guard, whatever the handler made of the request's fields.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

use crate::chunked::ChunkedScanner;

/// Header fields parsed per head on the stack; a larger `--max-request-headers` is parsed with a
/// heap buffer of that size (so the guard never refuses a head hyper accepts).
const MAX_HEADERS: usize = 128;

#[derive(Debug)]
enum State {
    /// Reading a request head; its bytes so far are in `head`.
    Head,
    /// Body bytes still to come of a `Content-Length` body.
    Length(u64),
    Chunked(ChunkedScanner),
    /// Past an upgrade request: tunnel bytes (or nothing: the connection closes).
    Tunnel,
    /// Past a head the guard cannot frame: nothing more reaches hyper, and the connection ends
    /// after the answer.
    End,
    /// The body is not valid: hyper's next read fails.
    Broken,
}

/// Set when the guard has stopped passing requests: every answer produced from then on closes
/// the connection.
pub(crate) type EndFlag = std::sync::Arc<std::sync::atomic::AtomicBool>;

pub(crate) struct FramingGuard<R> {
    inner: R,
    ends: EndFlag,
    state: State,
    /// Whether the message being read asked for an upgrade (the tunnel starts after its body).
    upgrade: bool,
    head: Vec<u8>,
    /// Longest head accepted (hyper refuses longer ones).
    head_limit: usize,
    /// Most header fields hyper accepts.
    max_headers: usize,
}

impl<R> FramingGuard<R> {
    pub(crate) fn new(inner: R, head_limit: usize, max_headers: usize, ends: EndFlag) -> Self {
        FramingGuard {
            inner,
            ends,
            state: State::Head,
            upgrade: false,
            head: Vec::new(),
            head_limit,
            max_headers,
        }
    }

    /// The state after a message ends.
    fn after_message(&self) -> State {
        if self.upgrade {
            State::Tunnel
        } else {
            State::Head
        }
    }

    /// Looks at `bytes` (just read); returns how many of them may reach hyper.
    fn inspect(&mut self, bytes: &[u8]) -> usize {
        let mut i = 0;
        while i < bytes.len() {
            match &mut self.state {
                State::Tunnel => return bytes.len(),
                State::End | State::Broken => return i,
                State::Length(n) => {
                    let take = usize::try_from(*n)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - i);
                    *n -= take as u64;
                    i += take;
                    if *n == 0 {
                        self.state = self.after_message();
                    }
                }
                State::Chunked(scanner) => match scanner.scan(&bytes[i..]) {
                    Ok(k) => {
                        i += k;
                        if scanner.is_done() {
                            self.state = self.after_message();
                        }
                    }
                    Err(_) => {
                        tracing::debug!("invalid chunked request body: cut");
                        self.state = State::Broken;
                        return i;
                    }
                },
                State::Head => {
                    let prior = self.head.len();
                    self.head.extend_from_slice(&bytes[i..]);
                    match self.frame_head() {
                        None => {
                            // Incomplete: all of it passes (hyper enforces the size limit).
                            if self.head.len() > self.head_limit {
                                self.state = State::End;
                            }
                            return bytes.len();
                        }
                        Some((len, state)) => {
                            i += len - prior;
                            self.head.clear();
                            self.state = state;
                            if matches!(self.state, State::Length(0)) {
                                self.state = self.after_message();
                            }
                        }
                    }
                }
            }
        }
        i
    }

    /// Parses the head in `self.head`: `None` while it is incomplete, else its length and the
    /// state for what follows it.
    fn frame_head(&mut self) -> Option<(usize, State)> {
        let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut heap: Vec<MaybeUninit<httparse::Header<'_>>> = Vec::new();
        let headers: &mut [MaybeUninit<httparse::Header<'_>>] = if self.max_headers > MAX_HEADERS {
            heap.resize_with(self.max_headers, MaybeUninit::uninit);
            &mut heap
        } else {
            &mut storage
        };
        let mut req = httparse::Request::new(&mut []);
        let len = match httparse::ParserConfig::default()
            .parse_request_with_uninit_headers(&mut req, &self.head, headers)
        {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return None,
            // hyper refuses it too, and closes.
            Err(_) => return Some((self.head.len(), State::End)),
        };
        if req.method == Some("CONNECT") {
            return Some((len, State::End));
        }
        let mut te: Option<&[u8]> = None;
        let mut length: Option<Option<u64>> = None;
        self.upgrade = false;
        for h in req.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                te = Some(h.value);
            } else if name.eq_ignore_ascii_case(b"content-length") {
                let n = content_length(h.value);
                length = Some(match length {
                    None => n,
                    Some(prev) => prev.filter(|p| Some(*p) == n),
                });
            } else if name.eq_ignore_ascii_case(b"upgrade")
                || (name.eq_ignore_ascii_case(b"connection")
                    && h.value
                        .split(|b| *b == b',')
                        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade")))
            {
                self.upgrade = true;
            }
        }
        if self.upgrade {
            // Set with the head, before the handler answers: the connection ends after the answer
            // unless that answer is a `101`. This is the one place the rule lives (the handler
            // reads the flag, whatever it made of the request's fields).
            self.ends.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let state = match (te, length) {
            (Some(te), _) => {
                let last = te.split(|b| *b == b',').next_back().map(<[u8]>::trim_ascii);
                if last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")) {
                    State::Chunked(ChunkedScanner::new())
                } else {
                    State::End
                }
            }
            (None, Some(Some(n))) => State::Length(n),
            (None, Some(None)) => State::End,
            (None, None) => State::Length(0),
        };
        Some((len, state))
    }
}

/// A `Content-Length` value: digits, or a list of equal ones (as hyper accepts them).
fn content_length(v: &[u8]) -> Option<u64> {
    let mut out = None;
    for part in v.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part
            .iter()
            .fold(0u64, |n, d| n.saturating_mul(10) + u64::from(d - b'0'));
        if out.is_some_and(|o| o != n) {
            return None;
        }
        out = Some(n);
    }
    out
}

impl<R: AsyncRead + Unpin> AsyncRead for FramingGuard<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.state {
            // hyper waits for a next request that never comes; the answer in flight closes.
            State::End => return Poll::Pending,
            State::Broken => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "invalid request framing",
                )));
            }
            _ => {}
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let this = &mut *self;
        let pass = this.inspect(&buf.filled()[before..]);
        buf.set_filled(before + pass);
        if let State::End = this.state {
            this.ends.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if pass == 0 && buf.filled().len() == before {
            // Bytes were read but none may pass: report what stopped them now rather than an
            // empty read, which would look like the end of the stream for `Broken`.
            if let State::Broken = this.state {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "invalid request framing",
                )));
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What passes the guard when `input` arrives in one read, and whether it then fails.
    fn pass(input: &[u8]) -> (String, bool) {
        let mut g = FramingGuard::new((), 32 * 1024, 100, EndFlag::default());
        let n = g.inspect(input);
        (
            String::from_utf8_lossy(&input[..n]).into_owned(),
            matches!(g.state, State::Broken),
        )
    }

    #[test]
    fn framing_is_followed_across_requests() {
        let two = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            pass(two),
            (String::from_utf8_lossy(two).into_owned(), false)
        );
        let chunked = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(!pass(chunked).1);
        assert_eq!(pass(chunked).0.len(), chunked.len());
    }

    #[test]
    fn a_bare_lf_in_trailers_cuts_the_body() {
        let input = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n";
        let (passed, broken) = pass(input);
        assert!(broken);
        assert!(!passed.contains("/next"), "{passed}");
    }

    #[test]
    fn heads_it_cannot_frame_end_the_stream_after_them() {
        for head in [
            &b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n"[..],
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n",
        ] {
            let mut input = head.to_vec();
            input.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
            let (passed, _) = pass(&input);
            assert_eq!(passed.as_bytes(), head);
        }
    }

    #[test]
    fn an_upgrade_request_starts_the_tunnel() {
        let input = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello";
        let mut g = FramingGuard::new((), 32 * 1024, 100, EndFlag::default());
        assert_eq!(g.inspect(input), input.len());
        assert!(matches!(g.state, State::Tunnel));
    }

    #[test]
    fn content_lengths() {
        assert_eq!(content_length(b"5"), Some(5));
        assert_eq!(content_length(b"5, 5"), Some(5));
        assert_eq!(content_length(b"5, 6"), None);
        assert_eq!(content_length(b"+5"), None);
        assert_eq!(content_length(b""), None);
    }
}
