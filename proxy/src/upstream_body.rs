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
    ) -> Self {
        ClientBody {
            inner,
            counter,
            errored,
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
