//! Idle upstream connections of the fast path, per port on the machine's localhost.
//!
//! A connection is put back only after a complete, well-framed response with nothing after it;
//! it is taken most-recent-first and never after `idle_timeout` (which is kept below the apps'
//! own keep-alive timeout, Node's 5 s). A housekeeping tick closes expired ones so that sockets
//! the app has given up on do not linger.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

struct Idle {
    stream: TcpStream,
    addr: SocketAddr,
    since: Instant,
}

pub(crate) struct Pool {
    /// Per port; a machine has a handful of app ports, so a short list beats a hash map.
    idle: Mutex<Vec<(u16, Vec<Idle>)>>,
    max_per_port: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub(crate) fn new(max_per_port: usize, idle_timeout: Duration) -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
            max_per_port,
            idle_timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u16, Vec<Idle>)>> {
        // A panic while holding the lock cannot leave the list inconsistent; keep using it.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection to `port` that has not expired.
    pub(crate) fn checkout(&self, port: u16) -> Option<(TcpStream, SocketAddr)> {
        let mut idle = self.lock();
        let list = &mut idle.iter_mut().find(|(p, _)| *p == port)?.1;
        while let Some(c) = list.pop() {
            if c.since.elapsed() < self.idle_timeout {
                return Some((c.stream, c.addr));
            }
            // Expired: every older one has expired too.
            list.clear();
        }
        None
    }

    /// Keeps a connection for reuse (dropped, so closed, when the port already has the maximum).
    pub(crate) fn checkin(&self, port: u16, stream: TcpStream, addr: SocketAddr) {
        if self.max_per_port == 0 {
            return;
        }
        let mut idle = self.lock();
        let list = match idle.iter().position(|(p, _)| *p == port) {
            Some(i) => &mut idle[i].1,
            None => {
                idle.push((port, Vec::new()));
                let last = idle.len() - 1;
                &mut idle[last].1
            }
        };
        if list.len() >= self.max_per_port {
            return;
        }
        list.push(Idle {
            stream,
            addr,
            since: Instant::now(),
        });
    }

    /// Closes expired connections and forgets ports with none left.
    pub(crate) fn prune(&self) {
        let timeout = self.idle_timeout;
        let mut idle = self.lock();
        for (_, list) in idle.iter_mut() {
            list.retain(|c| c.since.elapsed() < timeout);
        }
        idle.retain(|(_, list)| !list.is_empty());
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.lock().iter().map(|(_, l)| l.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair(l: &TcpListener) -> (TcpStream, SocketAddr) {
        let addr = l.local_addr().unwrap();
        (TcpStream::connect(addr).await.unwrap(), addr)
    }

    #[tokio::test]
    async fn lifo_per_port_bounded_and_expiring() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::new(2, Duration::from_secs(60));
        for _ in 0..3 {
            let (s, a) = pair(&l).await;
            pool.checkin(7, s, a);
        }
        assert_eq!(pool.idle_count(), 2, "bounded per port");
        assert!(pool.checkout(8).is_none(), "other port");
        assert!(pool.checkout(7).is_some());
        assert!(pool.checkout(7).is_some());
        assert!(pool.checkout(7).is_none());

        let expiring = Pool::new(4, Duration::ZERO);
        let (s, a) = pair(&l).await;
        expiring.checkin(7, s, a);
        assert!(expiring.checkout(7).is_none(), "expired is never reused");
        let (s, a) = pair(&l).await;
        expiring.checkin(7, s, a);
        expiring.prune();
        assert_eq!(expiring.idle_count(), 0);
    }
}
