//! The accept loop and graceful shutdown: the single entry point the binary and the simulator use.

use std::future::Future;
use std::io::{self, Cursor};
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::config::ProxyConfig;
use crate::fast::{FastConn, Next, Stop};
use crate::guard::{EndFlag, FramingGuard};
use crate::handler::handle;
use crate::localhost::LocalConnector;
use crate::shared::Shared;

/// Most header fields accepted in an app's response head.
const MAX_RESPONSE_HEADERS: usize = crate::fast::RESP_HEADERS;

/// Serves the proxy on `listener` until `shutdown` resolves, then drains: stops accepting, lets
/// in-flight requests and tunnels finish for up to `drain_timeout`, closes what is left and
/// returns `Ok(())`.
pub async fn serve<F>(listener: TcpListener, config: ProxyConfig, shutdown: F) -> io::Result<()>
where
    F: Future<Output = ()>,
{
    let local = listener.local_addr()?;
    let self_port = config.self_port.unwrap_or(local.port());
    let connector = LocalConnector {
        localhost: config.localhost.clone(),
        connect_timeout: config.limits.connect_timeout,
    };
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(config.limits.pool_idle_timeout)
        .pool_max_idle_per_host(config.limits.pool_max_idle_per_port)
        .pool_timer(TokioTimer::new())
        .http1_max_buf_size(config.limits.max_response_head_bytes.max(8192))
        .http1_max_headers(MAX_RESPONSE_HEADERS)
        .set_host(false)
        .build(connector);
    let drain_timeout = config.drain_timeout;
    let shared = Arc::new(Shared::new(config, self_port, client));
    // Closes the fast path's expired idle upstream connections (and keeps a timer armed, so that
    // arming a request's own timer never has to wake the driver).
    let housekeeping = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                shared.pool.prune();
            }
        })
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);

    tracing::info!(listen = %local, self_port, "project-ingress-proxy listening");
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                conns.spawn(connection(stream, peer, shared.clone(), Stop::new(stop_rx.clone())));
            }
        }
    }

    drop(listener);
    tracing::info!(
        connections = conns.len(),
        tunnels = shared.tunnels.active(),
        drain_timeout_ms = drain_timeout.as_millis() as u64,
        "shutdown: draining"
    );
    let tunnels = shared.tunnels.clone();
    shared
        .stopping
        .store(true, std::sync::atomic::Ordering::Relaxed);
    stop_tx.send_replace(true);
    let drained = tokio::time::timeout(drain_timeout, async {
        while conns.join_next().await.is_some() {}
        tunnels.wait_idle().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = conns.len(),
            tunnels = tunnels.active(),
            "drain deadline reached: closing what is left"
        );
    }
    tunnels.cancel_all();
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    // Cancelled tunnels end at their next poll; wait for them briefly so their sockets are closed
    // before we return.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), tunnels.wait_idle()).await;
    housekeeping.abort();
    shared.cfg.access_log.flush();
    tracing::info!("shutdown complete");
    Ok(())
}

/// One client connection: the fast path first, then hyper for the rest of the connection when the
/// fast path hands it over.
async fn connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, mut stop: Stop) {
    let mut fast = FastConn::new(stream, shared.clone());
    let rest = match fast.run(&mut stop).await {
        Next::Close => {
            // FIN after the last response rather than a bare close.
            fast.shutdown().await;
            return;
        }
        Next::Hyper(rest) => rest,
    };
    // The bytes the fast path had read come first, then the socket; hyper reads them through the
    // framing guard.
    let limits = &shared.cfg.limits;
    let (read, write) = fast.into_stream().into_split();
    let ends = EndFlag::default();
    let read = FramingGuard::new(
        Cursor::new(rest).chain(read),
        limits.max_request_head_bytes,
        limits.max_request_headers,
        ends.clone(),
    );
    let io = TokioIo::new(tokio::io::join(read, write));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_request_head_bytes)
        .max_headers(limits.max_request_headers)
        // The read buffer bounds per-connection memory; it must hold a whole head.
        .max_buf_size((limits.max_request_head_bytes + 8192).max(16 * 1024))
        .keep_alive(true);
    let service = {
        let shared = shared.clone();
        service_fn(move |req| handle(shared.clone(), req, ends.clone()))
    };
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let res = tokio::select! {
        res = conn.as_mut() => res,
        _ = &mut stop => {
            // Finish the request in flight, then close; idle connections close now.
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = res {
        tracing::debug!(%peer, error = %e, "connection ended with error");
    }
}
