//! The bench's own upstream (`xtask bench-upstream --port P`, run pinned by the bench): small
//! responses, a streamed download, an upload sink, a WebSocket echo, and a count of accepted
//! connections at `/_stats/accepted`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;

type Body = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

async fn handle(
    accepted: Arc<AtomicU64>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    Ok(match path.as_str() {
        "/_stats/accepted" => Response::new(full(accepted.load(Ordering::SeqCst).to_string())),
        "/download" => {
            let total: u64 = query
                .strip_prefix("bytes=")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let chunk = Bytes::from(vec![0xa5u8; 256 * 1024]);
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let mut sent = 0;
                while sent < total {
                    let n = (total - sent).min(chunk.len() as u64) as usize;
                    if tx.send(Ok(Frame::data(chunk.slice(..n)))).await.is_err() {
                        return;
                    }
                    sent += n as u64;
                }
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(
                futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)),
            )));
            r.headers_mut()
                .insert(http::header::CONTENT_LENGTH, total.into());
            r
        }
        "/upload" => {
            let mut n = 0u64;
            let mut body = req.into_body();
            while let Some(Ok(f)) = body.frame().await {
                n += f.data_ref().map(|d| d.len() as u64).unwrap_or(0);
            }
            Response::new(full(n.to_string()))
        }
        "/ws" => {
            let key = req.headers().get("sec-websocket-key").cloned();
            let Some(key) = key else {
                return Ok(Response::builder()
                    .status(StatusCode::BAD_REQUEST)
                    .body(full(""))
                    .unwrap_or_default());
            };
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                        TokioIo::new(up),
                        tokio_tungstenite::tungstenite::protocol::Role::Server,
                        None,
                    )
                    .await;
                    while let Some(Ok(m)) = ws.next().await {
                        if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("upgrade", "websocket")
                .header("connection", "Upgrade")
                .header("sec-websocket-accept", accept)
                .body(full(""))
                .unwrap_or_default()
        }
        _ => Response::new(full("ok")),
    })
}

pub fn serve(port: u16) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let accepted = Arc::new(AtomicU64::new(0));
        loop {
            let (s, _) = l.accept().await?;
            let _ = s.set_nodelay(true);
            accepted.fetch_add(1, Ordering::SeqCst);
            let a = accepted.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(a.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    })
}

/// Connections the upstream has accepted so far (asked on a connection of its own, which is then
/// subtracted).
pub async fn accepted(port: u16) -> Result<u64> {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
    tokio::spawn(conn);
    let resp = tx
        .send_request(
            Request::get("/_stats/accepted")
                .header("host", "x")
                .body(http_body_util::Empty::<Bytes>::new())?,
        )
        .await?;
    let b = resp.into_body().collect().await?.to_bytes();
    let n: u64 = String::from_utf8_lossy(&b).trim().parse()?;
    Ok(n.saturating_sub(1))
}
