//! WebSocket and upgrade behaviour through a running proxy.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn ws_request(
    proxy: std::net::SocketAddr,
    path: &str,
    target: Option<&str>,
    protocol: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = format!("ws://{proxy}{path}").into_client_request().unwrap();
    req.headers_mut().insert(
        "host",
        "4096__mach_1.machines.iterate.town".parse().unwrap(),
    );
    if let Some(t) = target {
        req.headers_mut()
            .insert("x-iterate-proxy-target-host", t.parse().unwrap());
    }
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    req
}

#[tokio::test]
async fn websocket_echo_text_binary_and_close_code() {
    let app = start_ws_app().await;
    let p = proxy_to(app).await;
    let stream = TcpStream::connect(p.addr).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(
        ws_request(
            p.addr,
            "/api/pty/ws?ptyId=123",
            Some("4096__mach_1.machines.iterate.town"),
            Some("chat"),
        ),
        stream,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 101);
    // The app's 101 headers pass through: negotiated subprotocol and the app's own header, which
    // shows that the app saw the rewritten Host.
    assert_eq!(resp.headers()["sec-websocket-protocol"], "chat");
    assert_eq!(resp.headers()["x-app-upgrade"], "localhost:4096");

    ws.send(Message::Text("ping".into())).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Text("echo:ping".into())
    );

    let binary: Vec<u8> = (0..=255u8).cycle().take(1024 * 1024 + 3).collect();
    ws.send(Message::Binary(binary.clone().into()))
        .await
        .unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Binary(b) => assert_eq!(b.as_ref(), binary.as_slice()),
        other => panic!("expected binary, got {other:?}"),
    }

    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Library(4001),
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Library(4001));
            assert_eq!(frame.reason, "bye");
        }
        other => panic!("expected close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn upgrade_refused_by_app_returns_apps_response() {
    let app = start_ws_app().await;
    let p = proxy_to(app).await;
    let req = http::Request::builder()
        .uri("/refuse")
        .header("host", "m.example")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("x-iterate-proxy-target-host", "localhost:3000")
        .body(full(""))
        .unwrap();
    let resp = send(p.addr, req).await;
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("upgrade").is_none());
    assert_eq!(body_string(resp).await, "refused by app");
}

/// Sends a raw upgrade request and returns everything the proxy wrote until it closed.
async fn raw_upgrade(proxy: std::net::SocketAddr, target_line: &str) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: m.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{target_line}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    // read_to_end returns only when the proxy closes the connection.
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("proxy did not close the connection after refusing the upgrade")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn upgrade_without_or_with_invalid_target_is_400_json_then_close() {
    let p = proxy_to(dead_addr().await).await;
    let out = raw_upgrade(p.addr, "").await;
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    assert!(
        out.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{out}"
    );
    assert!(
        out.ends_with("{\"error\":\"missing_proxy_target_host\"}"),
        "{out}"
    );

    let out = raw_upgrade(p.addr, "X-Iterate-Proxy-Target-Host: example.com:4096\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert!(
        out.ends_with("{\"error\":\"invalid_proxy_target_host\"}"),
        "{out}"
    );
}

#[tokio::test]
async fn upgrade_to_closed_port_is_502() {
    let p = proxy_to(dead_addr().await).await;
    let out = raw_upgrade(p.addr, "X-Iterate-Proxy-Target-Host: localhost:3000\r\n").await;
    assert!(out.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{out}");
    assert!(out.ends_with("{\"error\":\"proxy_error\"}"), "{out}");
}

#[tokio::test]
async fn health_path_is_not_special_for_upgrades() {
    // docs/behaviour.md §5.2: there is no /health shortcut on the upgrade path.
    let app = start_ws_app().await;
    let p = proxy_to(app).await;
    let stream = TcpStream::connect(p.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(
        ws_request(p.addr, "/health", Some("localhost:3000"), None),
        stream,
    )
    .await
    .unwrap();
    ws.send(Message::Text("h".into())).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Text("echo:h".into())
    );
}

#[tokio::test]
async fn h2c_upgrade_is_not_tunnelled() {
    // `Upgrade: h2c` is stripped; the app gets a plain HTTP/1.1 request.
    let (app, _) = start_app().await;
    let p = proxy_to(app).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(
        b"GET /smuggle HTTP/1.1\r\nHost: m\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
          HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nX-Iterate-Proxy-Target-Host: localhost:3000\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("\"upgrade\""),
        "upgrade header reached the app: {text}"
    );
    assert!(
        !text.to_ascii_lowercase().contains("http2-settings"),
        "{text}"
    );
}
