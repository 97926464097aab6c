//! A client for public URLs: connects to the world's edge (or any address) and sends the request
//! with `Host` taken from the URL, as a browser behind DNS would. With a [`Dial`] that carries a
//! TLS configuration it speaks TLS first, the URL's host as SNI and as the name the certificate is
//! checked against.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::net::{BoxBody, full};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL {0:?}: expected http(s)://host[:port]/path")]
    Url(String),
    #[error("invalid header {0:?}")]
    Header(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("websocket: {0}")]
    WebSocket(String),
    #[error("upgrade refused: {status} {body}")]
    UpgradeRefused { status: u16, body: String },
}

/// A public URL split into what goes in `Host` and the request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    pub scheme: String,
    pub authority: String,
    pub path_and_query: String,
}

impl PublicUrl {
    pub fn parse(url: &str) -> Result<PublicUrl, ClientError> {
        let uri: Uri = url.parse().map_err(|_| ClientError::Url(url.into()))?;
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| ClientError::Url(url.into()))?;
        if !matches!(scheme, "http" | "https" | "ws" | "wss") {
            return Err(ClientError::Url(url.into()));
        }
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| ClientError::Url(url.into()))?;
        Ok(PublicUrl {
            scheme: scheme.to_string(),
            authority,
            path_and_query: uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into()),
        })
    }
}

fn header_pair(k: &str, v: &str) -> Result<(HeaderName, HeaderValue), ClientError> {
    Ok((
        HeaderName::from_bytes(k.as_bytes()).map_err(|_| ClientError::Header(k.into()))?,
        HeaderValue::from_str(v).map_err(|_| ClientError::Header(format!("{k}: {v}")))?,
    ))
}

/// Where and how a client connects.
#[derive(Clone)]
pub struct Dial {
    pub addr: SocketAddr,
    /// Speak TLS with this configuration (it says which CA is trusted).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Before the TLS handshake, tell this trace store which request id the connection is for
    /// (a refused handshake is recorded under it).
    pub announce: Option<(Arc<crate::trace::TraceStore>, String)>,
}

impl Dial {
    pub fn plain(addr: SocketAddr) -> Dial {
        Dial {
            addr,
            tls: None,
            announce: None,
        }
    }

    /// Connects, and for TLS does the handshake for `host`.
    pub async fn connect(&self, host: &str) -> Result<Conn, ClientError> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| ClientError::Connect(self.addr, e))?;
        let _ = stream.set_nodelay(true);
        let Some(cfg) = &self.tls else {
            return Ok(Conn::Plain(stream));
        };
        if let Some((trace, id)) = &self.announce
            && let Ok(local) = stream.local_addr()
        {
            trace.announce_connection(local, id);
        }
        crate::tls::connect(cfg.clone(), host, stream)
            .await
            .map(|s| Conn::Tls(Box::new(s)))
            .map_err(|e| ClientError::Tls(e.to_string()))
    }
}

/// A client connection, plain or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The host part of an authority (`[::1]:8080` → `[::1]`, `a.b:443` → `a.b`).
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map(|(h, _)| &authority[..=h.len()])
            .unwrap_or(authority);
    }
    authority
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(authority)
}

/// Sends one HTTP request for `url` to `addr` on a fresh connection. A `Host` given overrides the
/// one derived from the URL; a second `Host` given is sent as well (two fields).
pub async fn send(
    addr: SocketAddr,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Bytes,
) -> Result<Response<Incoming>, ClientError> {
    send_via(&Dial::plain(addr), method, url, headers, body).await
}

/// As [`send`], connecting as `dial` says.
pub async fn send_via(
    dial: &Dial,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Bytes,
) -> Result<Response<Incoming>, ClientError> {
    let u = PublicUrl::parse(url)?;
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| ClientError::Header(method.into()))?;
    let mut req: Request<BoxBody> = Request::new(full(body.clone()));
    *req.method_mut() = method;
    *req.uri_mut() = u
        .path_and_query
        .parse()
        .map_err(|_| ClientError::Url(url.into()))?;
    let (k, v) = header_pair("host", &u.authority)?;
    req.headers_mut().insert(k, v);
    let mut host_given = false;
    for (k, v) in headers {
        let (k, v) = header_pair(k, v)?;
        if k == http::header::HOST && !host_given {
            host_given = true;
            req.headers_mut().insert(k, v);
        } else {
            req.headers_mut().append(k, v);
        }
    }
    if !body.is_empty() && !req.headers().contains_key(http::header::CONTENT_LENGTH) {
        req.headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let stream = dial.connect(host_of(&u.authority)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender.send_request(req).await?)
}

pub type WsStream = WebSocketStream<Conn>;

/// An open WebSocket and the `101` that opened it.
pub type WsOpened = (
    WsStream,
    tokio_tungstenite::tungstenite::handshake::client::Response,
);

/// Opens a WebSocket for `url` (ws/wss/http/https) through `addr`. A refused upgrade returns the
/// HTTP status and body as an error message.
pub async fn websocket(
    addr: SocketAddr,
    url: &str,
    headers: &[(String, String)],
) -> Result<WsOpened, ClientError> {
    websocket_via(&Dial::plain(addr), url, headers).await
}

/// As [`websocket`], connecting as `dial` says.
pub async fn websocket_via(
    dial: &Dial,
    url: &str,
    headers: &[(String, String)],
) -> Result<WsOpened, ClientError> {
    let u = PublicUrl::parse(url)?;
    let mut req = format!("ws://{}{}", u.authority, u.path_and_query)
        .into_client_request()
        .map_err(|e| ClientError::WebSocket(e.to_string()))?;
    for (k, v) in headers {
        let (k, v) = header_pair(k, v)?;
        req.headers_mut().insert(k, v);
    }
    let stream = dial.connect(host_of(&u.authority)).await?;
    tokio_tungstenite::client_async(req, stream)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) => ClientError::UpgradeRefused {
                status: resp.status().as_u16(),
                body: decode_maybe_chunked(resp.body().as_deref().unwrap_or_default()),
            },
            other => ClientError::WebSocket(other.to_string()),
        })
}

/// One server-sent event, as the HTML standard's event-stream parser dispatches it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `id` field, when this event carried one.
    pub id: Option<String>,
    /// The `event` field (the event type), when given.
    pub event: Option<String>,
    /// The data lines, joined with `\n`.
    pub data: String,
    /// The `retry` field, when given as digits.
    pub retry: Option<u64>,
}

impl SseEvent {
    /// One line for traces: `id: 1 | event: tick | data: tick 1` (each data line its own part).
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(id) = &self.id {
            parts.push(format!("id: {id}"));
        }
        if let Some(e) = &self.event {
            parts.push(format!("event: {e}"));
        }
        if let Some(r) = self.retry {
            parts.push(format!("retry: {r}"));
        }
        parts.extend(self.data.split('\n').map(|d| format!("data: {d}")));
        parts.join(" | ")
    }
}

/// An incremental `text/event-stream` parser (HTML Living Standard, "Interpreting an event
/// stream"): lines end with CRLF, LF or CR (also when split across reads); `:` starts a comment;
/// a field's value loses one leading space; `data` lines accumulate; a blank line dispatches an
/// event that has data; a partial event at the end of the stream is dropped; a leading BOM is
/// skipped.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    after_cr: bool,
    started: bool,
    event: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let mut bytes = bytes;
        if !self.started && !bytes.is_empty() {
            self.started = true;
            bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
        }
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(ev) = self.line_done(&line) {
                        out.push(ev);
                    }
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                }
            }
        }
        out
    }

    fn line_done(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            let ev = std::mem::take(&mut self.event);
            return std::mem::take(&mut self.has_data).then_some(ev);
        }
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            return None;
        }
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match name {
            "event" => self.event.event = Some(value.to_string()),
            "data" => {
                if self.has_data {
                    self.event.data.push('\n');
                }
                self.event.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.event.id = Some(value.to_string()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.event.retry = value.parse().ok();
            }
            _ => {}
        }
        None
    }
}

/// tungstenite hands back a refused upgrade's body raw; decode it if it is chunked.
fn decode_maybe_chunked(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw).into_owned();
    let mut out = String::new();
    let mut rest = text.as_str();
    loop {
        let Some((size_line, after)) = rest.split_once("\r\n") else {
            return text;
        };
        let Ok(size) = usize::from_str_radix(size_line.trim(), 16) else {
            return text;
        };
        if size == 0 {
            return out;
        }
        if after.len() < size {
            return text;
        }
        out.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = PublicUrl::parse("https://4096__mach_123.machines.iterate.town/a?b=1").unwrap();
        assert_eq!(u.authority, "4096__mach_123.machines.iterate.town");
        assert_eq!(u.path_and_query, "/a?b=1");
        assert_eq!(PublicUrl::parse("https://x.y").unwrap().path_and_query, "/");
        assert!(PublicUrl::parse("not a url").is_err());
        assert!(PublicUrl::parse("/relative").is_err());
        assert!(PublicUrl::parse("ftp://x/").is_err());
        assert_eq!(host_of("a.b:443"), "a.b");
        assert_eq!(host_of("a.b"), "a.b");
        assert_eq!(host_of("[::1]:8080"), "[::1]");
    }

    fn events(chunks: &[&[u8]]) -> Vec<String> {
        let mut p = SseParser::default();
        chunks
            .iter()
            .flat_map(|c| p.push(c))
            .map(|e| e.summary())
            .collect()
    }

    #[test]
    fn sse_as_the_standard_parses_it() {
        // LF, CRLF and CR line endings all end lines and events.
        for sep in ["\n", "\r\n", "\r"] {
            let text =
                format!("id: 1{sep}event: tick{sep}data: tick 1{sep}{sep}data: two{sep}{sep}");
            assert_eq!(
                events(&[text.as_bytes()]),
                ["id: 1 | event: tick | data: tick 1", "data: two"],
                "{sep:?}"
            );
        }
        // A CRLF split across reads is one line end, not two (which would end the event early).
        assert_eq!(
            events(&[b"data: a\r", b"\ndata: b\r", b"\n\r\n"]),
            ["data: a | data: b"]
        );
        // Multi-line data; comments; one leading space removed; no colon means an empty value;
        // unknown fields ignored; retry only as digits.
        let mut p = SseParser::default();
        let got = p.push(
            b": hello\ndata:x\ndata:  y\ndata\nfoo: bar\nretry: 1500\n\nretry: soon\ndata: z\n\n",
        );
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].data, "x\n y\n");
        assert_eq!(got[0].retry, Some(1500));
        assert_eq!(got[1].retry, None);
        // An event without data is not dispatched; a partial one at the end is not either.
        assert!(events(&[b"event: x\n\n", b"data: half"]).is_empty());
        // A byte-order mark at the start is skipped.
        assert_eq!(events(&["\u{feff}data: a\n\n".as_bytes()]), ["data: a"]);
    }

    #[test]
    fn chunked_refusal_bodies() {
        assert_eq!(
            decode_maybe_chunked(b"5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n"),
            "hello!"
        );
        assert_eq!(
            decode_maybe_chunked(b"{\"error\":\"x\"}"),
            "{\"error\":\"x\"}"
        );
    }
}
