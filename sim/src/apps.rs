//! Apps listening on a machine's localhost: echo, WebSocket echo, SSE, slow, fixed status,
//! redirect, two Set-Cookie, large body, reset mid-body. Each is a real HTTP server on its own
//! loopback port; "down" closes the listener and cuts every connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::model::{AppFault, AppKind, AppSpec, Bind};
use crate::net::{
    BoxBody, BoxError, Handler, bind_handover, full, json_response, reserve_port, serve_http,
    text_response,
};
use crate::trace::{AppEvent, Event, TRACE_HEADER, TraceStore, is_hidden_header};

/// Runtime state of one app.
pub struct App {
    pub machine: String,
    pub spec: AppSpec,
    pub addr: SocketAddr,
    /// Releases a gated SSE stream (a latch: once released, it stays open).
    pub released: watch::Sender<bool>,
    /// Fault: answer every request by dying mid-body.
    pub reset_mid_body: AtomicBool,
    /// While up: the stop signal and the serving task.
    stop: std::sync::Mutex<Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>>,
    /// While down: the port, bound but not listening.
    reservation: std::sync::Mutex<Option<socket2::Socket>>,
    /// An IPv6-only app's port on 127.0.0.1, held bound (refusing) for the app's life.
    _v4_twin: Option<socket2::Socket>,
    trace: Arc<TraceStore>,
}

/// An ephemeral `[::1]` listener whose port is also held, bound but not listening, on 127.0.0.1.
///
/// "localhost" tries 127.0.0.1 first. In one process several worlds share the host, and the kernel
/// gives out ephemeral ports per address: without the twin, another world's app could be given
/// 127.0.0.1 with the same port number, and this app's machine would reach it instead of being
/// refused and falling through to `[::1]` (seen once in CI). The twin is a plain socket without
/// `SO_REUSEPORT`, so nothing else can bind that address.
fn bind_ipv6_with_refusing_v4_twin() -> std::io::Result<(TcpListener, socket2::Socket)> {
    let mut last = None;
    for _ in 0..32 {
        let listener = bind_handover(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)))?;
        let port = listener.local_addr()?.port();
        let twin = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        match twin.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into()) {
            Ok(()) => return Ok((listener, twin)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port free on both ::1 and 127.0.0.1")))
}

impl App {
    /// Starts the app on an ephemeral loopback port (in-process worlds: machines share a host).
    pub async fn start(
        machine: &str,
        spec: AppSpec,
        trace: Arc<TraceStore>,
    ) -> std::io::Result<Arc<App>> {
        Self::start_on(machine, spec, trace, false).await
    }

    /// Starts the app; with `real_port`, on its own port (a machine of its own, e.g. a container).
    pub async fn start_on(
        machine: &str,
        spec: AppSpec,
        trace: Arc<TraceStore>,
        real_port: bool,
    ) -> std::io::Result<Arc<App>> {
        let port = if real_port { spec.port } else { 0 };
        let (listener, v4_twin) = match spec.bind {
            Bind::Ipv4 => (
                bind_handover(SocketAddr::from(([127, 0, 0, 1], port)))?,
                None,
            ),
            Bind::Ipv6 if real_port => (
                bind_handover(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)))?,
                None,
            ),
            Bind::Ipv6 => {
                let (l, twin) = bind_ipv6_with_refusing_v4_twin()?;
                (l, Some(twin))
            }
        };
        let addr = listener.local_addr()?;
        let app = Arc::new(App {
            machine: machine.to_string(),
            spec,
            addr,
            released: watch::channel(false).0,
            reset_mid_body: AtomicBool::new(false),
            stop: std::sync::Mutex::new(None),
            reservation: std::sync::Mutex::new(None),
            _v4_twin: v4_twin,
            trace,
        });
        app.serve(listener);
        Ok(app)
    }

    fn serve(self: &Arc<Self>, listener: TcpListener) {
        let (tx, rx) = watch::channel(false);
        let me = self.clone();
        let handler: Handler = Arc::new(move |req, _peer| {
            let me = me.clone();
            Box::pin(async move { me.handle(req).await })
        });
        let task = serve_http(listener, handler, rx);
        if let Ok(mut s) = self.stop.lock() {
            *s = Some((tx, task));
        }
    }

    /// Stops listening and cuts every connection, and returns once both are done (a request sent
    /// after it is refused); the port stays reserved (refusing).
    pub async fn down(&self) {
        let running = self.stop.lock().ok().and_then(|mut s| s.take());
        if let Some((tx, task)) = running {
            match reserve_port(self.addr) {
                Ok(r) => {
                    if let Ok(mut slot) = self.reservation.lock() {
                        *slot = Some(r);
                    }
                }
                Err(e) => {
                    tracing::warn!(addr = %self.addr, error = %e, "cannot reserve a downed app's port")
                }
            }
            tx.send_replace(true);
            let _ = task.await;
        }
    }

    /// Listens again on the same address.
    pub async fn up(self: &Arc<Self>) -> std::io::Result<()> {
        if self.stop.lock().map(|s| s.is_some()).unwrap_or(false) {
            return Ok(());
        }
        let listener = bind_handover(self.addr)?;
        self.serve(listener);
        if let Ok(mut slot) = self.reservation.lock() {
            *slot = None;
        }
        Ok(())
    }

    /// Listens again, healthy: the `app_up` fault (clears `app_reset_mid_body` too).
    pub async fn restore(self: &Arc<Self>) -> std::io::Result<()> {
        self.reset_mid_body.store(false, Ordering::Relaxed);
        self.up().await
    }

    /// Carries out a fault aimed at this app (only `up` can fail: the port cannot be listened on
    /// again).
    pub async fn apply(self: &Arc<Self>, fault: AppFault) -> std::io::Result<()> {
        match fault {
            AppFault::Down => self.down().await,
            AppFault::Up => self.restore().await?,
            AppFault::ResetMidBody => self.reset_mid_body.store(true, Ordering::Relaxed),
        }
        Ok(())
    }

    /// "localhost:<port>" candidates for this app, with the production rule (v4, then v6).
    pub fn candidates(&self) -> Vec<SocketAddr> {
        let p = self.addr.port();
        vec![
            SocketAddr::from(([127, 0, 0, 1], p)),
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, p)),
        ]
    }

    fn record(&self, req: &Request<Incoming>, body_bytes: u64) {
        self.record_parts(req.method(), req.uri(), req.headers(), body_bytes);
    }

    fn record_parts(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        body_bytes: u64,
    ) {
        let Some(id) = headers
            .get(TRACE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
        else {
            return;
        };
        self.trace.record(
            &id,
            Event::App(AppEvent {
                machine: self.machine.clone(),
                port: self.spec.port,
                kind: self.spec.kind.name().to_string(),
                method: method.to_string(),
                path_and_query: uri
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default(),
                headers: visible_headers(headers),
                body_bytes,
            }),
        );
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<BoxBody> {
        if self.reset_mid_body.load(Ordering::Relaxed) {
            self.record(&req, 0);
            return reset_mid_body();
        }
        match self.spec.kind.clone() {
            AppKind::Echo => self.echo(req).await,
            AppKind::Websocket => self.websocket(req),
            AppKind::Sse {
                count,
                interval_ms,
                gated,
            } => {
                self.record(&req, 0);
                self.sse(count, interval_ms, gated)
            }
            AppKind::Slow { delay_ms, stall } => {
                self.record(&req, 0);
                if stall {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                text_response(StatusCode::OK, "slow done")
            }
            AppKind::Status { status, body } => {
                self.record(&req, 0);
                let code =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                text_response(code, &body)
            }
            AppKind::Redirect { location, status } => {
                self.record(&req, 0);
                // The redirect target itself is served (so a followed redirect lands).
                let pq = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                if pq == location {
                    return text_response(StatusCode::OK, &format!("landed at {location}"));
                }
                let code = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
                let mut r = text_response(code, "");
                if let Ok(v) = HeaderValue::from_str(&location) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                r
            }
            AppKind::Cookies => {
                self.record(&req, 0);
                let mut r = text_response(StatusCode::OK, "cookies");
                r.headers_mut()
                    .append(header::SET_COOKIE, HeaderValue::from_static("a=1; Path=/"));
                r.headers_mut()
                    .append(header::SET_COOKIE, HeaderValue::from_static("b=2; Path=/"));
                r
            }
            AppKind::Large { bytes } => {
                self.record(&req, 0);
                let n = query_param(&req, "bytes")
                    .and_then(|b| b.parse().ok())
                    .unwrap_or(bytes);
                large_body(n)
            }
            AppKind::ResetMidBody => {
                self.record(&req, 0);
                reset_mid_body()
            }
        }
    }

    async fn echo(&self, req: Request<Incoming>) -> Response<BoxBody> {
        let (parts, body) = req.into_parts();
        let mut hasher = Sha256::new();
        let mut n = 0u64;
        let mut body = body;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        n += d.len() as u64;
                        hasher.update(d);
                    }
                }
                Err(_) => break,
            }
        }
        self.record_parts(&parts.method, &parts.uri, &parts.headers, n);
        let headers = visible_headers(&parts.headers);
        let v = serde_json::json!({
            "app": {"machine": self.machine, "port": self.spec.port, "kind": "echo"},
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers,
            "body": {"bytes": n, "sha256": hex(&hasher.finalize())},
        });
        json_response(StatusCode::OK, &v)
    }

    fn websocket(&self, mut req: Request<Incoming>) -> Response<BoxBody> {
        self.record(&req, 0);
        let key = req
            .headers()
            .get("sec-websocket-key")
            .map(|k| k.as_bytes().to_vec());
        let wants = crate::net::is_upgrade(req.headers())
            && req
                .headers()
                .get(header::UPGRADE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let Some(key) = key.filter(|_| wants) else {
            return text_response(
                StatusCode::UPGRADE_REQUIRED,
                "websocket app: upgrade required",
            );
        };
        let protocol = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|s| s.trim().to_string());
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on.await else { return };
            let mut ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            while let Some(Ok(msg)) = ws.next().await {
                let reply = match msg {
                    Message::Text(t) => Some(Message::Text(format!("echo:{t}").into())),
                    Message::Binary(b) => Some(Message::Binary(b)),
                    // tungstenite answers a close with the same code; reading on flushes it.
                    _ => None,
                };
                if let Some(r) = reply
                    && ws.send(r).await.is_err()
                {
                    break;
                }
            }
        });
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert("sec-websocket-accept", v);
        }
        if let Some(p) = protocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
            h.insert("sec-websocket-protocol", p);
        }
        r
    }

    fn sse(self: &Arc<Self>, count: u32, interval_ms: u64, gated: bool) -> Response<BoxBody> {
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let mut released = self.released.subscribe();
        tokio::spawn(async move {
            for i in 1..=count {
                if i > 1 {
                    if gated {
                        let _ = released.wait_for(|r| *r).await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
                    }
                }
                let ev = format!("id: {i}\nevent: tick\ndata: tick {i}\n\n");
                if tx.send(Ok(Frame::data(Bytes::from(ev)))).await.is_err() {
                    return;
                }
            }
        });
        let mut r = Response::new(channel_body(rx));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    }
}

fn channel_body(mut rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>) -> BoxBody {
    StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))).boxed_unsync()
}

/// Headers as (name, value), sorted by name (stable for snapshots), without correlation headers.
pub fn visible_headers(h: &http::HeaderMap) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = h
        .iter()
        .filter(|(k, _)| !is_hidden_header(k.as_str()))
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Byte `i` of a large body: `(i * 31 + 7) mod 251`.
pub fn large_chunk(offset: u64, len: usize) -> Bytes {
    (0..len as u64)
        .map(|i| (((offset + i) * 31 + 7) % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn large_body(total: u64) -> Response<BoxBody> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(2);
    tokio::spawn(async move {
        let mut off = 0u64;
        while off < total {
            let n = (64 * 1024).min((total - off) as usize);
            if tx.send(Ok(Frame::data(large_chunk(off, n)))).await.is_err() {
                return;
            }
            off += n as u64;
        }
    });
    let mut r = Response::new(channel_body(rx));
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r
}

/// How long a dying app lingers after its first bytes. Every hop flushes what it has when its
/// upstream body has nothing more to give, so the head and the first bytes reach the client before
/// the death does (otherwise the fault would be "reset before the head").
const DIE_AFTER: Duration = Duration::from_millis(200);

/// `Content-Length: 1000`, 10 bytes, then the connection dies.
fn reset_mid_body() -> Response<BoxBody> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(2);
    tokio::spawn(async move {
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(b"0123456789"))))
            .await;
        tokio::time::sleep(DIE_AFTER).await;
        let _ = tx.send(Err("app died mid-body".into())).await;
    });
    let mut r = Response::new(channel_body(rx));
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("1000"));
    r
}

#[cfg(test)]
mod twin_tests {
    use super::*;
    use crate::model::{AppKind, AppSpec, Bind};

    #[tokio::test]
    async fn ipv6_only_app_holds_its_port_on_127_0_0_1_refusing() {
        let spec = AppSpec {
            port: 5173,
            kind: AppKind::Echo,
            bind: Bind::Ipv6,
        };
        let app = App::start("m", spec, Arc::new(TraceStore::default()))
            .await
            .unwrap();
        assert!(app.addr.is_ipv6());
        let v4 = SocketAddr::from(([127, 0, 0, 1], app.addr.port()));
        // Nothing else can be given the v4 twin, and it refuses, so "localhost" falls through to ::1.
        let e = std::net::TcpListener::bind(v4).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        let e = tokio::net::TcpStream::connect(v4).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        tokio::net::TcpStream::connect(app.addr).await.unwrap();
    }
}
