//! Where `localhost:<port>` is, and how the proxy connects there.
//!
//! Production uses [`Loopback`]: `127.0.0.1:<port>` first and, when that is refused, `[::1]:<port>`
//! at once (Vite and Node bind only `::1` when told `localhost`). An embedder (the simulator) may
//! inject another [`Localhost`] so that several machines share one process, each with its own
//! "localhost". Nothing else about the proxy is configurable from outside.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Resolves `localhost:<port>` to the socket addresses to try, in order. The next address is
/// tried only when the previous one refused the connection (or is not available on this host).
pub trait Localhost: Send + Sync + 'static {
    fn addrs(&self, port: u16) -> Vec<SocketAddr>;
}

/// The machine's real loopback: `127.0.0.1`, then `[::1]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Loopback;

impl Localhost for Loopback {
    fn addrs(&self, port: u16) -> Vec<SocketAddr> {
        vec![
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        ]
    }
}

impl<F> Localhost for F
where
    F: Fn(u16) -> Vec<SocketAddr> + Send + Sync + 'static,
{
    fn addrs(&self, port: u16) -> Vec<SocketAddr> {
        self(port)
    }
}

/// The address an upstream connection was made to; placed in response extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamAddr(pub SocketAddr);

/// Errors worth trying the next candidate address for.
fn is_fallthrough(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::HostUnreachable
    )
}

/// Connects to `localhost:<port>` as resolved by `localhost`, falling through refused addresses.
pub async fn connect_local(
    localhost: &dyn Localhost,
    port: u16,
    connect_timeout: Duration,
) -> io::Result<(TcpStream, SocketAddr)> {
    let mut last_err: Option<io::Error> = None;
    for addr in localhost.addrs(port) {
        match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // Nagle only adds latency to a request/response proxy.
                let _ = stream.set_nodelay(true);
                return Ok((stream, addr));
            }
            Ok(Err(e)) => {
                let fall = is_fallthrough(&e);
                // Keep the most telling error: a refusal on the first address beats
                // "address not available" on ::1 for a host without IPv6.
                if last_err.is_none() || e.kind() == io::ErrorKind::ConnectionRefused {
                    last_err = Some(e);
                }
                if !fall {
                    break;
                }
            }
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect to {addr} timed out"),
                ));
            }
        }
    }
    Err(last_err
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address for localhost")))
}

/// Extracts the port from an upstream URI of the form `http://localhost:<port>/...`.
fn uri_port(uri: &Uri) -> io::Result<u16> {
    uri.port_u16()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "upstream uri without port"))
}

/// A hyper-util connector that only ever connects to the machine's localhost.
#[derive(Clone)]
pub struct LocalConnector {
    pub localhost: Arc<dyn Localhost>,
    pub connect_timeout: Duration,
}

/// A loopback TCP stream that reports its peer to hyper-util.
pub struct LocalStream {
    io: TokioIo<TcpStream>,
    addr: SocketAddr,
}

impl Connection for LocalStream {
    fn connected(&self) -> Connected {
        Connected::new().extra(UpstreamAddr(self.addr))
    }
}

impl hyper::rt::Read for LocalStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for LocalStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

impl tower_service::Service<Uri> for LocalConnector {
    type Response = LocalStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<LocalStream>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let port = uri_port(&uri)?;
            let (stream, addr) =
                connect_local(this.localhost.as_ref(), port, this.connect_timeout).await?;
            Ok(LocalStream {
                io: TokioIo::new(stream),
                addr,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn loopback_order() {
        let a = Loopback.addrs(3000);
        assert_eq!(a[0], "127.0.0.1:3000".parse().unwrap());
        assert_eq!(a[1], "[::1]:3000".parse().unwrap());
    }

    #[tokio::test]
    async fn falls_through_refused_to_next() {
        // A port that refuses: bind then drop.
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        let map = move |_p: u16| vec![dead_addr, live_addr];
        let (_s, used) = connect_local(&map, 1, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(used, live_addr);
    }

    #[tokio::test]
    async fn all_refused_reports_refusal() {
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let map = move |_p: u16| vec![dead_addr];
        let err = connect_local(&map, 1, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }
}
