//! A client for public URLs: connects to the world's edge (or any address) and sends the request
//! with `Host` taken from the URL, as a browser behind DNS would.

use std::net::SocketAddr;

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

/// Sends one HTTP request for `url` to `addr` on a fresh connection. Headers given override the
/// `Host` derived from the URL.
pub async fn send(
    addr: SocketAddr,
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
    for (k, v) in headers {
        let (k, v) = header_pair(k, v)?;
        if k == http::header::HOST {
            req.headers_mut().insert(k, v);
        } else {
            req.headers_mut().append(k, v);
        }
    }
    if !body.is_empty() && !req.headers().contains_key(http::header::CONTENT_LENGTH) {
        req.headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| ClientError::Connect(addr, e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender.send_request(req).await?)
}

pub type WsStream = WebSocketStream<TcpStream>;

/// Opens a WebSocket for `url` (ws/wss/http/https) through `addr`. A refused upgrade returns the
/// HTTP status and body as an error message.
pub async fn websocket(
    addr: SocketAddr,
    url: &str,
    headers: &[(String, String)],
) -> Result<
    (
        WsStream,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    ClientError,
> {
    let u = PublicUrl::parse(url)?;
    let mut req = format!("ws://{}{}", u.authority, u.path_and_query)
        .into_client_request()
        .map_err(|e| ClientError::WebSocket(e.to_string()))?;
    for (k, v) in headers {
        let (k, v) = header_pair(k, v)?;
        req.headers_mut().insert(k, v);
    }
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| ClientError::Connect(addr, e))?;
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
