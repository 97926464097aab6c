//! The request body as sent to the app: the client's body, streamed, counted, with client-side
//! errors flagged, and (for `Expect: 100-continue`) held back until the app asks for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// When the last request body bytes were handed to the upstream connection: the app's head
/// timeout counts from then (see [`with_head_timeout`]).
#[derive(Debug)]
pub(crate) struct Progress {
    start: tokio::time::Instant,
    /// Milliseconds after `start`.
    last_ms: AtomicU64,
}

impl Progress {
    pub(crate) fn new() -> Self {
        Progress {
            start: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn mark(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> tokio::time::Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Runs `fut` (sending a request and waiting for the response head) with `timeout` counted from
/// the last body bytes sent, as nginx's `proxy_read_timeout` counts: an upload longer than the
/// timeout is not cut, an app silent for `timeout` after it is. `Err(())` when it passed.
pub(crate) async fn with_head_timeout<F: Future>(
    timeout: Duration,
    progress: &Progress,
    fut: F,
) -> Result<F::Output, ()> {
    let mut fut = std::pin::pin!(fut);
    loop {
        match tokio::time::timeout_at(progress.last() + timeout, &mut fut).await {
            Ok(v) => return Ok(v),
            Err(_) if progress.last() + timeout <= tokio::time::Instant::now() => return Err(()),
            Err(_) => {}
        }
    }
}

/// What the upstream client sends: the client's body, or nothing (a retried body-less request).
pub(crate) type UpstreamBody = Either<ClientBody, Empty<Bytes>>;

/// Resolves to `true` to send the body, `false` when the app answered without asking for it.
type Gate = Pin<Box<dyn Future<Output = bool> + Send>>;

pin_project_lite::pin_project! {
    pub(crate) struct ClientBody {
        #[pin]
        inner: Incoming,
        counter: Arc<AtomicU64>,
        errored: Arc<AtomicBool>,
        progress: Arc<Progress>,
        gate: Option<Gate>,
        aborted: bool,
        started: Arc<AtomicBool>,
    }
}

impl ClientBody {
    pub(crate) fn new(
        inner: Incoming,
        counter: Arc<AtomicU64>,
        errored: Arc<AtomicBool>,
        started: Arc<AtomicBool>,
        progress: Arc<Progress>,
    ) -> Self {
        ClientBody {
            inner,
            counter,
            errored,
            progress,
            gate: None,
            aborted: false,
            started,
        }
    }

    /// Holds the body back until the app sends `100 Continue` (signalled on `go`) or `timeout`
    /// passes. Until the body is polled, hyper does not send `100 Continue` to the client, so an
    /// app that answers early (e.g. `413`) is seen by the client without any upload.
    pub(crate) fn gated(
        mut self,
        mut go: tokio::sync::watch::Receiver<bool>,
        timeout: Duration,
    ) -> Self {
        self.gate = Some(Box::pin(async move {
            tokio::select! {
                // `Err` means the sender is gone: hyper drops it when the final response head
                // arrives, so the app answered without a `100`.
                go = async { go.wait_for(|v| *v).await.is_ok() } => go,
                _ = tokio::time::sleep(timeout) => true,
            }
        }));
        self
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        if let Some(gate) = this.gate.as_mut() {
            let go = ready!(gate.as_mut().poll(cx));
            *this.gate = None;
            if !go {
                // Never pull the client's upload once the app has answered; the upstream request
                // ends incomplete and its connection is not reused.
                *this.aborted = true;
            }
        }
        if *this.aborted {
            return Poll::Ready(None);
        }
        this.started.store(true, Ordering::Relaxed);
        let res = this.inner.poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.counter.fetch_add(d.len() as u64, Ordering::Relaxed);
                    this.progress.mark();
                }
            }
            Poll::Ready(Some(Err(_))) => this.errored.store(true, Ordering::Relaxed),
            _ => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
