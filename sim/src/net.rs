//! The "sim network" and the HTTP client every simulated hop uses.
//!
//! Production hostnames (`<app>.fly.dev`, `8080-<id>.proxy.daytona.works`, the Docker engine) map
//! to loopback addresses here, so the OS router builds the same URLs as production.
//!
//! TLS lives here too: [`serve_https`] terminates TLS with the certificate a [`TlsPolicy`] picks by
//! SNI (or refuses the handshake), and [`SimNetwork::send`] speaks TLS to an `https://` URL when the
//! network has a client configuration ([`SimNetwork::set_tls_client`]), verifying the server's
//! certificate against the sim CA as the Workers runtime verifies an origin's. Without one an
//! `https://` URL is carried over plain HTTP to the mapped address.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub use crate::tls::{TlsPolicy, TlsSession};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type BoxBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(b: impl Into<Bytes>) -> BoxBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

pub fn boxed(b: Incoming) -> BoxBody {
    b.map_err(Into::into).boxed_unsync()
}

/// A JSON response with an explicit length.
pub fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<BoxBody> {
    let body = v.to_string();
    let mut r = Response::new(full(body.clone()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    r
}

pub fn text_response(status: StatusCode, text: &str) -> Response<BoxBody> {
    let mut r = Response::new(full(text.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[derive(Debug, Clone)]
enum Name {
    Exact(String),
    /// Matches `*.suffix` (suffix stored with its leading dot).
    Suffix(String),
}

#[derive(Debug, Clone)]
struct Entry {
    name: Name,
    addr: SocketAddr,
    refused: bool,
}

/// Called when a TLS handshake of [`SimNetwork::send`] fails: the trace id of the request (from
/// its trace header), the host, and the error.
pub type TlsFailureHook = Arc<dyn Fn(Option<&str>, &str, &str) + Send + Sync>;

/// Maps production hostnames to loopback addresses.
#[derive(Default)]
pub struct SimNetwork {
    entries: RwLock<Vec<Entry>>,
    tls_client: RwLock<Option<Arc<rustls::ClientConfig>>>,
    tls_failure: RwLock<Option<TlsFailureHook>>,
}

impl std::fmt::Debug for SimNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNetwork")
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

/// Why a name did not give a connection.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("getaddrinfo ENOTFOUND {0}")]
    NotFound(String),
    #[error("connect ECONNREFUSED {0}")]
    Refused(String),
    #[error("connect {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("fetch failed: {}", fetch_cause(.0))]
    Http(#[from] hyper::Error),
    #[error("invalid url: {0}")]
    Url(String),
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(String, String),
}

/// The status and body the Workers runtime gives a subrequest whose origin certificate does not
/// verify (Cloudflare's error 526, "Invalid SSL certificate").
pub const INVALID_CERTIFICATE_STATUS: u16 = 526;

/// What Node's fetch (undici) says when a request fails after the connection was made: a
/// connection that the other side closed before a complete response is `other side closed`
/// however the close raced with the request (hyper reports it as canceled, incomplete or a reset).
fn fetch_cause(e: &hyper::Error) -> String {
    if closed_by_peer(e) {
        "other side closed".to_string()
    } else {
        e.to_string()
    }
}

/// The connection was closed or reset before a complete response, however the close raced with
/// the request (hyper reports it as canceled, incomplete or a reset).
fn closed_by_peer(e: &hyper::Error) -> bool {
    use std::io::ErrorKind as K;
    let io_closed = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                K::ConnectionReset | K::BrokenPipe | K::UnexpectedEof | K::ConnectionAborted
            )
        });
    e.is_canceled() || e.is_incomplete_message() || io_closed
}

/// What the Workers runtime's `fetch` rejects with (docs/behaviour.md §3.1, transport errors):
/// workerd turns a refused, reset or closed connection (kj's `DISCONNECTED` exceptions) into
/// `Error: Network connection lost.`
pub const WORKERD_CONNECTION_LOST: &str = "Network connection lost.";

impl NetError {
    /// This failure as the OS worker's `fetch` (workerd) reports it: a refused, reset or closed
    /// connection is [`WORKERD_CONNECTION_LOST`]; a name that does not resolve and a URL that
    /// cannot be used keep their own words.
    pub fn workerd_message(&self) -> String {
        use std::io::ErrorKind as K;
        match self {
            NetError::Refused(_) => WORKERD_CONNECTION_LOST.to_string(),
            NetError::Connect(_, e)
                if matches!(
                    e.kind(),
                    K::ConnectionRefused
                        | K::ConnectionReset
                        | K::ConnectionAborted
                        | K::BrokenPipe
                        | K::NotConnected
                        | K::HostUnreachable
                        | K::NetworkUnreachable
                ) =>
            {
                WORKERD_CONNECTION_LOST.to_string()
            }
            NetError::Http(e) if closed_by_peer(e) => WORKERD_CONNECTION_LOST.to_string(),
            other => other.to_string(),
        }
    }
}

impl SimNetwork {
    pub fn add_exact(&self, name: &str, addr: SocketAddr) {
        if let Ok(mut e) = self.entries.write() {
            e.push(Entry {
                name: Name::Exact(name.to_ascii_lowercase()),
                addr,
                refused: false,
            });
        }
    }

    /// `suffix` like `fly.dev` maps every `*.fly.dev`.
    pub fn add_suffix(&self, suffix: &str, addr: SocketAddr) {
        if let Ok(mut e) = self.entries.write() {
            e.push(Entry {
                name: Name::Suffix(format!(".{}", suffix.to_ascii_lowercase())),
                addr,
                refused: false,
            });
        }
    }

    /// Makes connections to `addr` (by any name) refused, or lets them through again.
    pub fn set_refused(&self, addr: SocketAddr, refused: bool) {
        if let Ok(mut es) = self.entries.write() {
            for e in es.iter_mut().filter(|e| e.addr == addr) {
                e.refused = refused;
            }
        }
    }

    /// Resolves a host (a name or an IP literal) and port to a socket address.
    pub fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, NetError> {
        let h = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = h.parse::<std::net::IpAddr>() {
            let addr = SocketAddr::new(ip, port);
            let refused = self
                .entries
                .read()
                .map(|es| es.iter().any(|e| e.addr == addr && e.refused))
                .unwrap_or(false);
            return if refused {
                Err(NetError::Refused(addr.to_string()))
            } else {
                Ok(addr)
            };
        }
        let lower = h.to_ascii_lowercase();
        let es = self
            .entries
            .read()
            .map_err(|_| NetError::NotFound(lower.clone()))?;
        let hit = es.iter().find(|e| match &e.name {
            Name::Exact(n) => *n == lower,
            Name::Suffix(s) => lower.ends_with(s.as_str()) && lower.len() > s.len(),
        });
        match hit {
            Some(e) if e.refused => Err(NetError::Refused(format!("{lower}:{port}"))),
            Some(e) => Ok(e.addr),
            None => Err(NetError::NotFound(lower)),
        }
    }

    /// Speak TLS to `https://` URLs with this configuration (it says which CA is trusted).
    pub fn set_tls_client(&self, config: Arc<rustls::ClientConfig>) {
        if let Ok(mut c) = self.tls_client.write() {
            *c = Some(config);
        }
    }

    /// Who is told about a failed TLS handshake (the runtime records it as the provider's).
    pub fn on_tls_failure(&self, hook: TlsFailureHook) {
        if let Ok(mut h) = self.tls_failure.write() {
            *h = Some(hook);
        }
    }

    fn tls_client(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls_client.read().ok()?.clone()
    }

    /// Opens a connection for an absolute URL.
    pub async fn connect(&self, uri: &Uri) -> Result<TcpStream, NetError> {
        let host = uri.host().ok_or_else(|| NetError::Url(uri.to_string()))?;
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        let addr = self.resolve(host, port)?;
        match TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Err(NetError::Refused(addr.to_string()))
            }
            Err(e) => Err(NetError::Connect(addr.to_string(), e)),
        }
    }

    /// Sends one request (absolute URI) on a fresh connection with upgrades enabled. Sets `Host`
    /// from the URL when absent (as fetch does) and sends the origin-form target.
    ///
    /// An `https://` URL goes over TLS when the network has a client configuration; a certificate
    /// that does not verify gives the answer the Workers runtime gives, a `526` (see
    /// [`INVALID_CERTIFICATE_STATUS`]), and the failure hook is told.
    pub async fn send(&self, mut req: Request<BoxBody>) -> Result<Response<Incoming>, NetError> {
        let uri = req.uri().clone();
        let stream = self.connect(&uri).await?;
        let tls = match (uri.scheme_str(), self.tls_client()) {
            (Some("https"), Some(cfg)) => Some(cfg),
            _ => None,
        };
        if !req.headers().contains_key(header::HOST)
            && let Some(auth) = uri.authority()
            && let Ok(v) = HeaderValue::from_str(auth.as_str())
        {
            req.headers_mut().insert(header::HOST, v);
        }
        *req.uri_mut() = uri
            .path_and_query()
            .map(|pq| Uri::from(pq.clone()))
            .unwrap_or_else(|| Uri::from_static("/"));
        let Some(cfg) = tls else {
            return send_on(stream, req).await;
        };
        let host = uri.host().unwrap_or_default().to_string();
        match crate::tls::connect(cfg, &host, stream).await {
            Ok(tls) => send_on(tls, req).await,
            Err(e) => {
                let id = req
                    .headers()
                    .get(crate::trace::TRACE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let hook = self.tls_failure.read().ok().and_then(|h| h.clone());
                if let Some(hook) = hook {
                    hook(
                        id.as_deref(),
                        &host,
                        &crate::tls::describe_handshake_error(&e),
                    );
                }
                invalid_certificate_response().await
            }
        }
    }
}

/// Sends one request on a connection (upgrades enabled).
async fn send_on<S>(stream: S, req: Request<BoxBody>) -> Result<Response<Incoming>, NetError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender.send_request(req).await?)
}

/// The `526` the Workers runtime answers a subrequest with when the origin's certificate does not
/// verify, as a real response read from an in-memory connection.
async fn invalid_certificate_response() -> Result<Response<Incoming>, NetError> {
    let (client, server) = tokio::io::duplex(4096);
    tokio::spawn(async move {
        let svc = service_fn(|_req| async {
            let r = text_response(
                StatusCode::from_u16(INVALID_CERTIFICATE_STATUS).unwrap_or(StatusCode::BAD_GATEWAY),
                "error code: 526",
            );
            Ok::<_, Infallible>(r)
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(server), svc)
            .await;
    });
    let req = Request::builder()
        .uri("/")
        .header(header::HOST, "invalid-certificate")
        .body(full(Bytes::new()))
        .map_err(|e| NetError::Url(e.to_string()))?;
    send_on(client, req).await
}

/// Whether a request asks for a protocol upgrade.
pub fn is_upgrade(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && proxy::hop_headers::connection_has_token(headers, "upgrade")
}

/// Joins two upgraded connections with a byte tunnel.
pub fn spawn_tunnel(client: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        if let Ok((c, u)) = tokio::try_join!(client, upstream) {
            let mut c = TokioIo::new(c);
            let mut u = TokioIo::new(u);
            let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
        }
    });
}

/// Forwards an upstream response to the client. For a `101`, the tunnel is spawned between the
/// client's pending upgrade and the upstream's.
pub fn relay_response(
    mut upstream: Response<Incoming>,
    client_upgrade: Option<OnUpgrade>,
) -> Response<BoxBody> {
    if upstream.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client) = client_upgrade
    {
        let up = hyper::upgrade::on(&mut upstream);
        spawn_tunnel(client, up);
        let (parts, _) = upstream.into_parts();
        return Response::from_parts(parts, full(Bytes::new()));
    }
    upstream.map(boxed)
}

pin_project_lite::pin_project! {
    /// Calls `on_end` once when the body ends, fails, or is dropped.
    pub struct OnEnd<B, F: FnOnce()> {
        #[pin]
        inner: B,
        on_end: Option<F>,
    }

    impl<B, F: FnOnce()> PinnedDrop for OnEnd<B, F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(f) = this.project().on_end.take() {
                f();
            }
        }
    }
}

impl<B, F: FnOnce()> OnEnd<B, F> {
    pub fn new(inner: B, on_end: F) -> Self {
        OnEnd {
            inner,
            on_end: Some(on_end),
        }
    }
}

impl<B: Body<Data = Bytes>, F: FnOnce()> Body for OnEnd<B, F> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let res = this.inner.as_mut().poll_frame(cx);
        let ended = match &res {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Pending => false,
        };
        if ended && let Some(f) = this.on_end.take() {
            f();
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request handler for [`serve_http`].
pub type Handler = Arc<
    dyn Fn(Request<Incoming>, SocketAddr) -> Pin<Box<dyn Future<Output = Response<BoxBody>> + Send>>
        + Send
        + Sync,
>;

/// Serves HTTP/1.1 (with upgrades) on `listener` until `stop` turns true; then every connection is
/// closed at once (a simulated server that goes away does not drain).
/// The returned task ends once the listener is closed and every connection is gone: await it to
/// know the server has stopped.
pub fn serve_http(
    listener: TcpListener,
    handler: Handler,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    serve(listener, handler, None, stop)
}

/// The accept loop of [`serve_http`] and [`serve_https`].
fn serve(
    listener: TcpListener,
    handler: Handler,
    tls: Option<Arc<dyn TlsPolicy>>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                acc = listener.accept() => {
                    let Ok((stream, peer)) = acc else { continue };
                    let _ = stream.set_nodelay(true);
                    let h = handler.clone();
                    let tls = tls.clone();
                    conns.spawn(async move {
                        let Some(policy) = tls else {
                            return serve_connection(stream, h, peer, None).await;
                        };
                        if let Some((stream, session)) =
                            crate::tls::accept(stream, peer, &*policy).await
                        {
                            serve_connection(stream, h, peer, Some(session)).await;
                        }
                    });
                }
            }
        }
        drop(listener);
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    })
}

/// Serves one connection; a TLS connection's requests carry its [`TlsSession`].
async fn serve_connection<S>(stream: S, h: Handler, peer: SocketAddr, session: Option<TlsSession>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let svc = service_fn(move |mut req: Request<Incoming>| {
        let h = h.clone();
        if let Some(s) = &session {
            req.extensions_mut().insert(s.clone());
        }
        async move { Ok::<_, Infallible>(h(req, peer).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades()
        .await;
}

/// Serves HTTP/1.1 over TLS on `listener`, the certificate picked per connection by `policy`, until
/// `stop` turns true (as [`serve_http`]).
pub fn serve_https(
    listener: TcpListener,
    handler: Handler,
    policy: Arc<dyn TlsPolicy>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    serve(listener, handler, Some(policy), stop)
}

fn socket_for(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // Several sockets may hold the port: a listener and a reservation (see `reserve_port`).
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    Ok(s)
}

/// Binds a listener that a later [`reserve_port`] can hand its port over to.
pub fn bind_handover(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = socket_for(addr)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    TcpListener::from_std(s.into())
}

/// Holds `addr` bound without listening: connections to it are refused (RST), and nothing else
/// in this process (another world) can be given the port while it is "down". A real machine's
/// port does not change hands when its app stops; a shared process must not let it either.
pub fn reserve_port(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    let s = socket_for(addr)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// Binds an ephemeral port on 127.0.0.1.
pub async fn bind_local() -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let a = l.local_addr()?;
    Ok((l, a))
}
