//! One structured record per request, emitted when the response body has finished (or was cut).
//!
//! The default sink writes a `tracing` event (text or JSON, chosen by the binary's subscriber).
//! An embedder can add its own sink (the simulator records machine decisions into its trace).
//! The secret header is never part of a record, and the query string is not logged (it may carry
//! tokens): `path` is the path only.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// What the proxy saw and decided for one request.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub request_id: String,
    pub method: String,
    pub path: String,
    /// The raw target header, if any (first value).
    pub target_header: Option<String>,
    pub target_port: Option<u16>,
    /// Which grammar rule matched (`port_prefix`, `local_host_port`, `default`).
    pub target_form: Option<&'static str>,
    /// The socket address the upstream connection used.
    pub upstream_addr: Option<SocketAddr>,
    pub status: u16,
    /// The proxy's own error code when it refused or failed.
    pub error: Option<&'static str>,
    /// Why the exchange with the app failed (`connect_refused`, `reset`, `head_timeout`, … see
    /// [`crate::cause`]), when it did.
    pub cause: Option<&'static str>,
    pub upgraded: bool,
    /// Time to the response head.
    pub head_duration: Duration,
    /// Time until the response body finished or was cut.
    pub duration: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// False when the response body was cut short (client went away, upstream died mid-body).
    pub completed: bool,
}

impl RequestRecord {
    /// A record for a request just read, before any decision: the target header as sent (lossy
    /// UTF-8), nothing else known yet.
    pub fn new(request_id: String, method: &str, path: &str, target_header: Option<&[u8]>) -> Self {
        RequestRecord {
            request_id,
            method: method.to_string(),
            path: path.to_string(),
            target_header: target_header.map(|v| String::from_utf8_lossy(v).into_owned()),
            target_port: None,
            target_form: None,
            upstream_addr: None,
            status: 0,
            error: None,
            cause: None,
            upgraded: false,
            head_duration: Duration::ZERO,
            duration: Duration::ZERO,
            bytes_in: 0,
            bytes_out: 0,
            completed: false,
        }
    }
}

/// A sink for request records.
pub trait AccessLog: Send + Sync + 'static {
    fn record(&self, rec: &RequestRecord);

    /// Whether records are wanted at all. When `false` the proxy may skip building them (the
    /// default sink with the access target filtered out: nothing would be written).
    fn enabled(&self) -> bool {
        true
    }

    /// Writes out whatever the sink has buffered; `serve` calls it once it has drained.
    fn flush(&self) {}
}

/// The `tracing` target of access records.
pub const ACCESS_TARGET: &str = "project_ingress_proxy::access";

/// Writes each record as one `tracing` info event with structured fields.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingAccessLog;

impl AccessLog for TracingAccessLog {
    fn enabled(&self) -> bool {
        tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO)
    }

    fn record(&self, r: &RequestRecord) {
        tracing::info!(
            target: ACCESS_TARGET,
            request_id = %r.request_id,
            method = %r.method,
            path = %r.path,
            target_header = r.target_header.as_deref(),
            target_port = r.target_port.map(u64::from),
            target_form = r.target_form,
            upstream = r.upstream_addr.map(tracing::field::display),
            status = r.status,
            error = r.error,
            cause = r.cause,
            upgraded = r.upgraded,
            duration_ms = millis(r.duration),
            head_ms = millis(r.head_duration),
            bytes_in = r.bytes_in,
            bytes_out = r.bytes_out,
            completed = r.completed,
            "request"
        );
    }
}

/// Milliseconds with microsecond precision (`2.268`, not `2.268455000000001`).
fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// Fans a record out to several sinks.
pub struct Tee(pub Vec<Arc<dyn AccessLog>>);

impl AccessLog for Tee {
    fn record(&self, rec: &RequestRecord) {
        for s in &self.0 {
            if s.enabled() {
                s.record(rec);
            }
        }
    }

    fn enabled(&self) -> bool {
        self.0.iter().any(|s| s.enabled())
    }

    fn flush(&self) {
        for s in &self.0 {
            s.flush();
        }
    }
}

/// Pending record, finished by [`LoggedBody`] when the response ends.
pub(crate) struct PendingLog {
    pub(crate) record: RequestRecord,
    pub(crate) start: Instant,
    pub(crate) bytes_in: Arc<AtomicU64>,
    pub(crate) sink: Arc<dyn AccessLog>,
}

impl PendingLog {
    fn finish(mut self, completed: bool, bytes_out: u64) {
        self.record.duration = self.start.elapsed();
        self.record.bytes_in = self.bytes_in.load(Ordering::Relaxed);
        self.record.bytes_out = bytes_out;
        self.record.completed = completed;
        self.sink.record(&self.record);
    }
}

pin_project_lite::pin_project! {
    /// Wraps a response body: counts bytes and emits the record at the end, on error, or on drop.
    pub struct LoggedBody<B> {
        #[pin]
        inner: B,
        bytes: u64,
        // Boxed: the record is large and the body is moved several times on its way out.
        pending: Option<Box<PendingLog>>,
    }

    impl<B> PinnedDrop for LoggedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(p) = this.pending.take() {
                p.finish(false, *this.bytes);
            }
        }
    }
}

impl<B: Body> LoggedBody<B> {
    /// A body that is already complete (a `101`, an empty response) is logged at once, before its
    /// head is written, so the record never lags behind what the client sees.
    pub(crate) fn new(inner: B, pending: PendingLog) -> Self {
        let pending = if inner.is_end_stream() {
            pending.finish(true, 0);
            None
        } else {
            Some(Box::new(pending))
        };
        LoggedBody {
            inner,
            bytes: 0,
            pending,
        }
    }
}

impl<B> Body for LoggedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        let res = this.inner.as_mut().poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    *this.bytes += d.len() as u64;
                }
                // hyper stops polling once a known length has been written, or once trailers
                // (always the last frame) are out: the body is complete as soon as the inner body
                // says so, not only at a final `None`.
                if (frame.is_trailers() || this.inner.is_end_stream())
                    && let Some(p) = this.pending.take()
                {
                    p.finish(true, *this.bytes);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(p) = this.pending.take() {
                    tracing::debug!(request_id = %p.record.request_id, error = ?e, "response body failed");
                    p.finish(false, *this.bytes);
                }
            }
            Poll::Ready(None) => {
                if let Some(p) = this.pending.take() {
                    p.finish(true, *this.bytes);
                }
            }
            Poll::Pending => {}
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
