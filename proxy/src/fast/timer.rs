//! The connection's one timer ([`Deadline`], with a [`MovingDeadline`] a future may push later) and
//! the shutdown signal ([`Stop`]).

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// A shutdown signal that may be polled again after it fired.
pub(crate) struct Stop {
    pub(super) fut: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Stop {
    pub(crate) fn new(mut rx: tokio::sync::watch::Receiver<bool>) -> Stop {
        Stop {
            fut: Some(Box::pin(async move {
                let _ = rx.wait_for(|s| *s).await;
            })),
        }
    }
}

impl Future for Stop {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(fut) = self.fut.as_mut() else {
            return Poll::Ready(());
        };
        match fut.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.fut = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// One timer per connection for every deadline it waits on (head read, upstream head).
///
/// Arming a tokio timer costs a lock and a wheel insertion; re-arming it for every request was a
/// measurable share of the per-request cost. The deadlines here only move forward, so the timer
/// stays armed at the earliest one and, when it fires before the deadline now wanted, is moved
/// once: about one re-arm per timeout period per connection instead of one per request.
pub(crate) struct Deadline {
    pub(super) sleep: Pin<Box<Sleep>>,
    pub(super) armed: Instant,
}

impl Deadline {
    pub(crate) fn new(at: Instant) -> Deadline {
        Deadline {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            armed: at,
        }
    }

    /// Runs `fut` to completion, or returns `None` once the deadline in `at` has passed. `fut` may
    /// move the deadline later while it runs (progress on a request body does): it is read again
    /// only when the timer fires, so moving it costs nothing.
    pub(crate) async fn run<F: Future>(
        &mut self,
        at: &MovingDeadline,
        fut: F,
    ) -> Option<F::Output> {
        if at.get() < self.armed {
            self.sleep.as_mut().reset(at.get());
            self.armed = at.get();
        }
        let mut fut = std::pin::pin!(fut);
        poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            loop {
                match self.sleep.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) if self.armed >= at.get() => return Poll::Ready(None),
                    Poll::Ready(()) => {
                        self.sleep.as_mut().reset(at.get());
                        self.armed = at.get();
                    }
                }
            }
        })
        .await
    }
}

/// A deadline that the future a [`Deadline`] waits on may move later (an atomic only so that the
/// futures holding it stay `Send`: one task uses it).
pub(crate) struct MovingDeadline {
    pub(super) base: Instant,
    /// Nanoseconds after `base`.
    pub(super) after: std::sync::atomic::AtomicU64,
}

impl MovingDeadline {
    pub(crate) fn new(at: Instant) -> MovingDeadline {
        MovingDeadline {
            base: at,
            after: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(super) fn get(&self) -> Instant {
        self.base + std::time::Duration::from_nanos(self.after.load(Ordering::Relaxed))
    }

    pub(super) fn set(&self, at: Instant) {
        let after = at.saturating_duration_since(self.base).as_nanos();
        self.after
            .store(u64::try_from(after).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}
