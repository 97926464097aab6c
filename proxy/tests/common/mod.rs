//! Test helpers: a running proxy, upstream apps on ephemeral ports, and a raw HTTP/1.1 client.
#![allow(dead_code)]
// The WebSocket handshake callback signature is fixed by tokio-tungstenite.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use project_ingress_proxy::{ProxyConfig, RequestRecord};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};

pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// A proxy served in-process on an ephemeral port.
pub struct RunningProxy {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    pub records: Arc<std::sync::Mutex<Vec<RequestRecord>>>,
}

impl RunningProxy {
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task).await.expect("proxy task panicked")
    }
}

struct Collect(Arc<std::sync::Mutex<Vec<RequestRecord>>>);
impl project_ingress_proxy::AccessLog for Collect {
    fn record(&self, rec: &RequestRecord) {
        self.0.lock().unwrap().push(rec.clone());
    }
}

pub async fn start_proxy(mut config: ProxyConfig) -> RunningProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let records = Arc::new(std::sync::Mutex::new(Vec::new()));
    config.access_log = Arc::new(Collect(records.clone()));
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(project_ingress_proxy::serve(listener, config, async move {
        let _ = rx.await;
    }));
    RunningProxy {
        addr,
        stop: Some(tx),
        task,
        records,
    }
}

/// A proxy whose "localhost" maps every port to `app` (the app sees which port from `Host`).
pub async fn proxy_to(app: SocketAddr) -> RunningProxy {
    start_proxy(ProxyConfig {
        localhost: Arc::new(move |_port: u16| vec![app]),
        ..ProxyConfig::default()
    })
    .await
}

/// Controls for the echo app's gated endpoints.
#[derive(Default)]
pub struct AppControl {
    /// `/sse` sends its first event, then waits for this before the rest.
    pub sse_release: Notify,
    /// `/slow` waits for this before answering.
    pub slow_release: Notify,
    /// Counts accepted TCP connections.
    pub connections: std::sync::atomic::AtomicUsize,
    /// `/upload` bodies that ended cleanly.
    pub uploads_ok: std::sync::atomic::AtomicUsize,
    /// `/upload` bodies that failed part-way.
    pub uploads_failed: std::sync::atomic::AtomicUsize,
}

fn fnv(data: &[u8], mut h: u64) -> u64 {
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}
pub const FNV_INIT: u64 = 0xcbf29ce484222325;

/// Deterministic content for large bodies: byte i is (i * 31 + 7) mod 251.
pub fn pattern_chunk(offset: u64, len: usize) -> Bytes {
    (0..len as u64)
        .map(|i| (((offset + i) * 31 + 7) % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

pub fn pattern_hash(total: u64, chunk: usize) -> u64 {
    let mut h = FNV_INIT;
    let mut off = 0;
    while off < total {
        let n = chunk.min((total - off) as usize);
        h = fnv(&pattern_chunk(off, n), h);
        off += n as u64;
    }
    h
}

async fn app_handle(
    ctl: Arc<AppControl>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match path.as_str() {
        "/sse" => {
            let (tx, rx) =
                mpsc::channel::<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>(4);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from("data: first\n\n"))))
                    .await;
                ctl.sse_release.notified().await;
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from("data: second\n\n"))))
                    .await;
            });
            let body = StreamBody::new(tokio_stream_from(rx));
            Ok(Response::builder()
                .header("content-type", "text/event-stream")
                .body(BodyExt::boxed(body))
                .unwrap())
        }
        "/slow" => {
            ctl.slow_release.notified().await;
            Ok(Response::new(full("slow done")))
        }
        "/large" => {
            let total: u64 = query.get("bytes").and_then(|b| b.parse().ok()).unwrap_or(0);
            let (tx, rx) = mpsc::channel(2);
            tokio::spawn(async move {
                let mut off = 0u64;
                while off < total {
                    let n = (64 * 1024).min((total - off) as usize);
                    if tx
                        .send(Ok(Frame::data(pattern_chunk(off, n))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    off += n as u64;
                }
            });
            Ok(Response::builder()
                .header("content-length", total.to_string())
                .body(BodyExt::boxed(StreamBody::new(tokio_stream_from(rx))))
                .unwrap())
        }
        "/upload" => {
            let mut body = req.into_body();
            let (mut n, mut h) = (0u64, FNV_INIT);
            let mut ok = true;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Some(d) = f.data_ref() {
                            n += d.len() as u64;
                            h = fnv(d, h);
                        }
                    }
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            let counter = if ok {
                &ctl.uploads_ok
            } else {
                &ctl.uploads_failed
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Response::new(full(format!("{n} {h:x}"))))
        }
        "/cookies" => Ok(Response::builder()
            .header("set-cookie", "a=1; Path=/")
            .header("set-cookie", "b=2; Path=/")
            .header("connection", "x-app-hop")
            .header("x-app-hop", "must-not-reach-client")
            .header("keep-alive", "timeout=5")
            .body(full("cookies"))
            .unwrap()),
        "/status" => {
            let code = query
                .get("code")
                .and_then(|c| c.parse().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::OK);
            Ok(Response::builder()
                .status(code)
                .body(full("status"))
                .unwrap())
        }
        _ => {
            // Echo: method, uri, headers in order, body.
            let method = req.method().to_string();
            let uri = req.uri().to_string();
            let headers: Vec<(String, String)> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let json = serde_json::json!({
                "method": method,
                "uri": uri,
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            });
            Ok(Response::builder()
                .header("content-type", "application/json")
                .body(full(json.to_string()))
                .unwrap())
        }
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Serves the echo app on `listener`.
pub fn serve_app(listener: TcpListener, ctl: Arc<AppControl>) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            ctl.connections
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let ctl = ctl.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |req| app_handle(ctl.clone(), req)),
                    )
                    .await;
            });
        }
    });
}

pub async fn start_app() -> (SocketAddr, Arc<AppControl>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ctl = Arc::new(AppControl::default());
    serve_app(listener, ctl.clone());
    (addr, ctl)
}

/// A WebSocket echo app: echoes text and binary, answers a close with the same code.
/// Path `/refuse` gets `403`; a requested subprotocol `chat` is accepted.
pub async fn start_ws_app() -> SocketAddr {
    use tokio_tungstenite::tungstenite::handshake::server::{
        ErrorResponse, Request as WsReq, Response as WsResp,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let cb = |req: &WsReq, mut resp: WsResp| -> Result<WsResp, ErrorResponse> {
                    if req.uri().path() == "/refuse" {
                        let mut e = ErrorResponse::new(Some("refused by app".into()));
                        *e.status_mut() = StatusCode::FORBIDDEN;
                        return Err(e);
                    }
                    if let Some(p) = req.headers().get("sec-websocket-protocol")
                        && p.to_str().unwrap_or("").contains("chat")
                    {
                        resp.headers_mut()
                            .insert("sec-websocket-protocol", "chat".parse().unwrap());
                    }
                    resp.headers_mut().insert(
                        "x-app-upgrade",
                        req.headers()
                            .get("host")
                            .cloned()
                            .unwrap_or("none".parse().unwrap()),
                    );
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, cb).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    use tokio_tungstenite::tungstenite::Message;
                    match msg {
                        Message::Text(t) => {
                            let _ = ws.send(Message::Text(format!("echo:{t}").into())).await;
                        }
                        Message::Binary(b) => {
                            let _ = ws.send(Message::Binary(b)).await;
                        }
                        // tungstenite queues the close reply (same code) itself; reading on until
                        // the stream ends flushes it and completes the closing handshake.
                        Message::Close(_) => {}
                        _ => {}
                    }
                }
            });
        }
    });
    addr
}

/// One keep-alive client connection, for several requests in turn.
pub async fn keep_alive_client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Body> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// `GET path` to the app on port 3000 over `sender`; expects 200 and reads the body.
pub async fn get_ok(sender: &mut hyper::client::conn::http1::SendRequest<Body>, path: &str) {
    let resp = sender
        .send_request(get(path, "h", Some("localhost:3000")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    let _ = body_string(resp).await;
}

/// Sends one request on a fresh connection.
pub async fn send(addr: SocketAddr, req: Request<Body>) -> Response<Incoming> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender.send_request(req).await.unwrap()
}

pub fn get(path: &str, host: &str, target: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().uri(path).header("host", host);
    if let Some(t) = target {
        b = b.header("x-iterate-proxy-target-host", t);
    }
    b.body(full("")).unwrap()
}

pub async fn body_string(resp: Response<Incoming>) -> String {
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&b).into_owned()
}

pub async fn json(resp: Response<Incoming>) -> serde_json::Value {
    let s = body_string(resp).await;
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Headers of an echoed request, as (name, value) pairs.
pub fn echoed_headers(v: &serde_json::Value) -> Vec<(String, String)> {
    v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Waits until `cond` holds, polling every 5 ms, panicking after `deadline`.
pub async fn wait_until(deadline: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + deadline;
    while !cond() {
        if tokio::time::Instant::now() > end {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sockets held for the life of the test process by [`dead_addr`].
static RESERVED: std::sync::Mutex<Vec<socket2::Socket>> = std::sync::Mutex::new(Vec::new());

/// An address with nothing listening: bound but not listening, so connections are refused and
/// no other test in this process can be given the port.
pub async fn dead_addr() -> SocketAddr {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let a = s.local_addr().unwrap().as_socket().unwrap();
    RESERVED.lock().unwrap().push(s);
    a
}
