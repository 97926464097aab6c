//! The binary's access log: each record is formatted into a bounded buffer, and one writer thread
//! writes whole buffers, one `write(2)` per flush — nginx's `access_log … buffer= flush=`.
//!
//! - A buffer is flushed when it holds `buffer` bytes, after `flush` at the latest, and on
//!   [`AccessLog::flush`] (which `serve` calls when it has drained, so SIGTERM loses no line).
//! - The request path never blocks on the log: a record is formatted under a mutex held for the
//!   copy only; the thread does the writing. When the writer cannot keep up (a full pipe, a slow
//!   disk) and the buffer the requests fill is full as well, new lines are dropped and counted,
//!   and the count is logged (`access log: N lines dropped`) once the writer catches up.
//! - With `buffer` 0 every line is written at once (still off the request path).
//!
//! The lines are the ones the `tracing` sink would write ([`TracingAccessLog`]): the same fields
//! in the same order, as JSON (`--log-format json`, parsed by the simulator's machine image) or as
//! text. Hand-written rather than through `tracing`, whose writer makes one call per event.
//!
//! [`TracingAccessLog`]: crate::access_log::TracingAccessLog

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use crate::access_log::{ACCESS_TARGET, AccessLog, RequestRecord};

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    Text,
    Json,
}

/// Where the writer thread writes (stderr in the binary; anything in tests).
pub type Sink = Box<dyn Write + Send>;

struct State {
    /// Lines not yet taken by the writer.
    filling: Vec<u8>,
    /// A flush was asked for (`flush()`); the writer clears it when done.
    flush_asked: u64,
    flushed: u64,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer (a full buffer, a flush, closing).
    wake: Condvar,
    /// Wakes `flush()` callers when the writer has written.
    done: Condvar,
    dropped: AtomicU64,
}

/// A buffered access-log sink with its writer thread. Dropping it flushes and stops the thread.
pub struct BufferedAccessLog {
    shared: Arc<Shared>,
    format: LineFormat,
    buffer: usize,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl BufferedAccessLog {
    /// Starts the writer thread. `buffer`: bytes gathered before a write (0: every line at once);
    /// `flush`: the longest a line waits.
    pub fn new(
        sink: Sink,
        format: LineFormat,
        buffer: usize,
        flush: Duration,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                filling: Vec::with_capacity(buffer.clamp(512, 64 * 1024)),
                flush_asked: 0,
                flushed: 0,
                closed: false,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let thread_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(&thread_shared, sink, buffer, flush))?;
        Ok(BufferedAccessLog {
            shared,
            format,
            buffer,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Lines dropped so far because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Flushes and stops the writer thread (idempotent). Waits at most 5 s: a writer stuck on a
    /// sink that never drains (a full pipe nobody reads) is left behind rather than holding up
    /// the process's exit.
    pub fn close(&self) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.closed = true;
        }
        self.shared.wake.notify_all();
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle {
            let give_up = std::time::Instant::now() + Duration::from_secs(5);
            while !h.is_finished() && std::time::Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for BufferedAccessLog {
    fn drop(&mut self) {
        self.close();
    }
}

impl AccessLog for BufferedAccessLog {
    fn enabled(&self) -> bool {
        tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO)
    }

    fn record(&self, rec: &RequestRecord) {
        let Ok(mut st) = self.shared.state.lock() else {
            return;
        };
        // The most the requests may gather while the writer is busy: one buffer beyond the
        // threshold (and at least 64 KiB, so that an unbuffered log still absorbs a burst).
        let cap = self.buffer.saturating_mul(2).max(64 * 1024);
        if st.filling.len() >= cap || st.closed {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = st.filling.len();
        format_line(&mut st.filling, rec, self.format);
        if st.filling.len() > cap {
            // One line larger than what is left: dropped whole, never cut.
            st.filling.truncate(before);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let ready = st.filling.len() >= self.buffer;
        drop(st);
        if ready {
            self.shared.wake.notify_one();
        }
    }

    /// Writes every line recorded so far before returning.
    fn flush(&self) {
        let Ok(mut st) = self.shared.state.lock() else {
            return;
        };
        if st.closed {
            return;
        }
        st.flush_asked += 1;
        let ticket = st.flush_asked;
        self.shared.wake.notify_one();
        while st.flushed < ticket && !st.closed {
            st = match self
                .shared
                .done
                .wait_timeout(st, Duration::from_secs(5))
                .map(|(g, t)| (g, t.timed_out()))
            {
                Ok((g, false)) => g,
                // A writer stuck on a full pipe: give up waiting rather than hang shutdown.
                Ok((_, true)) | Err(_) => return,
            };
        }
    }
}

/// The writer thread: waits for a full buffer, a flush, closing or the interval; writes what has
/// gathered in one call, outside the lock (the requests fill a fresh buffer meanwhile).
fn write_loop(shared: &Shared, mut sink: Sink, buffer: usize, interval: Duration) {
    let threshold = buffer.max(1);
    // A zero interval would make this loop spin (and contend for the lock the requests take).
    let interval = interval.max(Duration::from_millis(1));
    let mut out: Vec<u8> = Vec::new();
    loop {
        let (asked, closing) = {
            let Ok(st) = shared.state.lock() else {
                return;
            };
            let Ok((mut st, _)) = shared.wake.wait_timeout_while(st, interval, |st| {
                !(st.closed || st.flush_asked > st.flushed || st.filling.len() >= threshold)
            }) else {
                return;
            };
            std::mem::swap(&mut out, &mut st.filling);
            (st.flush_asked, st.closed)
        };
        if !out.is_empty() {
            // One write for the whole batch (`write_all` repeats only after a short write).
            let _ = sink.write_all(&out);
            let _ = sink.flush();
            out.clear();
            if out.capacity() > threshold.max(64 * 1024).saturating_mul(4) {
                out = Vec::new();
            }
        }
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "access log: {dropped} lines dropped (the log could not keep up)"
            );
        }
        let Ok(mut st) = shared.state.lock() else {
            return;
        };
        st.flushed = st.flushed.max(asked);
        shared.done.notify_all();
        if closing && st.filling.is_empty() {
            return;
        }
    }
}

/// Appends one record as a line in `format`.
pub(crate) fn format_line(out: &mut Vec<u8>, r: &RequestRecord, format: LineFormat) {
    let mut line = String::with_capacity(320);
    let ts = rfc3339_micros(SystemTime::now());
    let millis = |d: Duration| d.as_micros() as f64 / 1000.0;
    match format {
        LineFormat::Json => {
            let _ = write!(
                line,
                "{{\"timestamp\":\"{ts}\",\"level\":\"INFO\",\"message\":\"request\""
            );
            json_str(&mut line, "request_id", &r.request_id);
            json_str(&mut line, "method", &r.method);
            json_str(&mut line, "path", &r.path);
            if let Some(t) = &r.target_header {
                json_str(&mut line, "target_header", t);
            }
            if let Some(p) = r.target_port {
                let _ = write!(line, ",\"target_port\":{p}");
            }
            if let Some(f) = r.target_form {
                json_str(&mut line, "target_form", f);
            }
            if let Some(a) = r.upstream_addr {
                json_str(&mut line, "upstream", &a.to_string());
            }
            let _ = write!(line, ",\"status\":{}", r.status);
            if let Some(e) = r.error {
                json_str(&mut line, "error", e);
            }
            if let Some(c) = r.cause {
                json_str(&mut line, "cause", c);
            }
            let _ = write!(
                line,
                ",\"upgraded\":{},\"duration_ms\":{},\"head_ms\":{},\"bytes_in\":{},\"bytes_out\":{},\"completed\":{},\"target\":\"{ACCESS_TARGET}\"}}",
                r.upgraded,
                millis(r.duration),
                millis(r.head_duration),
                r.bytes_in,
                r.bytes_out,
                r.completed
            );
        }
        LineFormat::Text => {
            let _ = write!(
                line,
                "{ts}  INFO {ACCESS_TARGET}: request request_id={} method={} path={}",
                r.request_id, r.method, r.path
            );
            if let Some(t) = &r.target_header {
                let _ = write!(line, " target_header={t:?}");
            }
            if let Some(p) = r.target_port {
                let _ = write!(line, " target_port={p}");
            }
            if let Some(f) = r.target_form {
                let _ = write!(line, " target_form={f:?}");
            }
            if let Some(a) = r.upstream_addr {
                let _ = write!(line, " upstream={a}");
            }
            let _ = write!(line, " status={}", r.status);
            if let Some(e) = r.error {
                let _ = write!(line, " error={e:?}");
            }
            if let Some(c) = r.cause {
                let _ = write!(line, " cause={c:?}");
            }
            let _ = write!(
                line,
                " upgraded={} duration_ms={} head_ms={} bytes_in={} bytes_out={} completed={}",
                r.upgraded,
                millis(r.duration),
                millis(r.head_duration),
                r.bytes_in,
                r.bytes_out,
                r.completed
            );
        }
    }
    line.push('\n');
    out.extend_from_slice(line.as_bytes());
}

/// `,"key":"value"` with the value escaped as JSON.
fn json_str(out: &mut String, key: &str, value: &str) {
    let _ = write!(out, ",\"{key}\":\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `2026-12-06T04:01:33.917670Z`.
fn rfc3339_micros(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_993_693_917_670);
        assert_eq!(rfc3339_micros(t), "2025-12-06T04:01:33.917670Z");
        assert_eq!(
            rfc3339_micros(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_micros(leap), "2000-02-29T00:00:00.000000Z");
    }

    /// A buffer too large to double, and a zero interval, neither panic nor spin: one line still
    /// arrives, and closing returns.
    #[test]
    fn extreme_settings_stay_safe() {
        let out = Arc::new(Mutex::new(Vec::new()));
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let log = BufferedAccessLog::new(
            Box::new(Shared(out.clone())),
            LineFormat::Json,
            usize::MAX,
            Duration::ZERO,
        )
        .unwrap();
        log.record(&RequestRecord::new("r1".into(), "GET", "/x", None));
        // flush() returns once the writer has written (it gives up only after 5 s).
        let t = std::time::Instant::now();
        log.flush();
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "the writer did not answer the flush"
        );
        assert!(String::from_utf8_lossy(&out.lock().unwrap()).contains("\"request_id\":\"r1\""));
        log.close();
    }

    #[test]
    fn json_lines_are_json_and_escape() {
        let mut r = RequestRecord::new("id\"1".into(), "GET", "/a\\b\n", Some(b"localhost:3000"));
        r.status = 502;
        r.error = Some("proxy_error");
        r.cause = Some("connect_refused");
        r.duration = Duration::from_micros(2268);
        let mut out = Vec::new();
        format_line(&mut out, &r, LineFormat::Json);
        let line = String::from_utf8(out).unwrap();
        assert!(line.ends_with("}\n"), "{line}");
        assert!(
            line.contains(r#""request_id":"id\"1","method":"GET","path":"/a\\b\n""#),
            "{line}"
        );
        assert!(line.contains(r#""status":502,"error":"proxy_error","cause":"connect_refused","upgraded":false,"duration_ms":2.268,"#), "{line}");
        assert!(
            line.contains(r#""target":"project_ingress_proxy::access"}"#),
            "{line}"
        );
    }
}
