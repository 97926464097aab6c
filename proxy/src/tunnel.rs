//! Upgraded connections (WebSocket and other HTTP/1.1 upgrades) as raw byte tunnels.
//!
//! Frames are never decoded: bytes are copied both ways with fixed-size buffers, so a tunnel's
//! memory is bounded whatever the message sizes. Tunnels are tracked so that a graceful shutdown
//! can wait for them and close the ones still open at the drain deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::{Notify, watch};

#[derive(Clone)]
pub(crate) struct Tunnels {
    inner: Arc<Inner>,
}

struct Inner {
    active: AtomicUsize,
    idle: Notify,
    cancel: watch::Sender<bool>,
}

impl Default for Tunnels {
    fn default() -> Self {
        let (cancel, _) = watch::channel(false);
        Tunnels {
            inner: Arc::new(Inner {
                active: AtomicUsize::new(0),
                idle: Notify::new(),
                cancel,
            }),
        }
    }
}

struct Guard(Arc<Inner>);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Size of each direction's copy buffer (tokio's default): 16 KiB of buffers per open tunnel.
const TUNNEL_BUF: usize = 8 * 1024;

impl Tunnels {
    /// Spawns the tunnel: waits for both sides' upgrades, then copies bytes until either side
    /// closes or the tunnels are cancelled.
    pub(crate) fn spawn(&self, client: OnUpgrade, upstream: OnUpgrade) {
        self.inner.active.fetch_add(1, Ordering::AcqRel);
        let guard = Guard(self.inner.clone());
        let mut cancel = self.inner.cancel.subscribe();
        tokio::spawn(async move {
            let _guard = guard;
            let (client, upstream) = match tokio::try_join!(client, upstream) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            tokio::select! {
                res = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, TUNNEL_BUF, TUNNEL_BUF) => {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "tunnel ended with error");
                    }
                }
                _ = async { let _ = cancel.wait_for(|c| *c).await; } => {
                    tracing::debug!("tunnel closed by shutdown");
                }
            }
        });
    }

    pub(crate) fn active(&self) -> usize {
        self.inner.active.load(Ordering::Acquire)
    }

    /// Resolves when no tunnel is open.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Closes every open tunnel.
    pub(crate) fn cancel_all(&self) {
        self.inner.cancel.send_replace(true);
    }
}
