//! The engine's userland proxy for a published port (`docker-proxy`): the host port accepts every
//! connection, then dials the container's port; when that dial fails (nothing listens on 8080 in
//! the container) the accepted connection is closed, so a client sees an accepted connection that
//! ends without an answer, not a refusal. While the container is paused, data stops flowing both
//! ways (connections stay open). When the binding goes (stop, network disconnect) every connection
//! through it is closed.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// One published port.
pub struct PublishedPort {
    pub addr: SocketAddr,
    paused: watch::Sender<bool>,
    closed: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl PublishedPort {
    /// Publishes `target` on a new ephemeral port of 127.0.0.1.
    pub async fn start(target: SocketAddr) -> std::io::Result<PublishedPort> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (paused, paused_rx) = watch::channel(false);
        let (closed, closed_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, target, paused_rx, closed_rx));
        Ok(PublishedPort {
            addr,
            paused,
            closed,
            task,
        })
    }

    /// Stops (or lets again) data flow through every connection, as a paused container does.
    pub fn set_paused(&self, on: bool) {
        self.paused.send_replace(on);
    }

    /// Removes the binding: the port is released and every connection through it is closed.
    pub async fn close(self) {
        self.closed.send_replace(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    paused: watch::Receiver<bool>,
    mut closed: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => {
                if let Ok((client, _)) = r {
                    let paused = paused.clone();
                    let closed = closed.clone();
                    conns.spawn(relay(client, target, paused, closed));
                }
            }
            _ = closed.changed() => break,
        }
    }
    drop(listener);
    conns.shutdown().await;
}

/// Waits until not paused; false if the binding was removed meanwhile.
async fn wait_running(
    paused: &mut watch::Receiver<bool>,
    closed: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        if *closed.borrow() {
            return false;
        }
        if !*paused.borrow() {
            return true;
        }
        tokio::select! {
            r = paused.changed() => if r.is_err() { return false; },
            _ = closed.changed() => {}
        }
    }
}

async fn relay(
    client: TcpStream,
    target: SocketAddr,
    mut paused: watch::Receiver<bool>,
    mut closed: watch::Receiver<bool>,
) {
    if !wait_running(&mut paused, &mut closed).await {
        return;
    }
    // Dial on accept, as docker-proxy does; a refused dial closes the accepted connection.
    let Ok(upstream) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let up = pump(cr, uw, paused.clone(), closed.clone());
    let down = pump(ur, cw, paused, closed);
    tokio::join!(up, down);
}

/// Copies one direction until EOF, an error or the binding's removal, holding data while paused.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: watch::Receiver<bool>,
    mut closed: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = closed.changed() => return,
        };
        if !wait_running(&mut paused, &mut closed).await {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepts_then_closes_when_the_container_port_refuses() {
        // A port with nothing listening.
        let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = free.local_addr().unwrap();
        drop(free);
        let p = PublishedPort::start(target).await.unwrap();
        let mut c = TcpStream::connect(p.addr)
            .await
            .expect("the host port accepts");
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("closed, not hung")
            .unwrap_or(0);
        assert_eq!(n, 0);
        p.close().await;
    }

    #[tokio::test]
    async fn relays_and_holds_data_while_paused() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = upstream.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let p = PublishedPort::start(target).await.unwrap();
        let mut c = TcpStream::connect(p.addr).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        p.set_paused(true);
        c.write_all(b"pong").await.unwrap();
        let held =
            tokio::time::timeout(std::time::Duration::from_millis(200), c.read(&mut buf)).await;
        assert!(held.is_err(), "data flowed while paused");
        p.set_paused(false);
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        p.close().await;
        let n = c.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "closing the binding closes its connections");
    }
}
