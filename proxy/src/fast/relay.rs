//! The response body: copied from the app to the client with its framing checked.

use super::response::Framing;
use super::{FIRST_READ, FastConn, RELAY_READ};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::access_log::{AccessLog, RequestRecord};
use crate::chunked::ChunkedScanner;

impl FastConn {
    /// Copies the response body (its first bytes are in `ubuf` after the head) to the client.
    /// Returns the upstream connection and whether the message ended cleanly with nothing after
    /// it, or `None` when the client connection must close (client gone, app cut the body).
    pub(super) async fn relay_body(
        &mut self,
        framing: Framing,
        head_len: usize,
        mut up: TcpStream,
        mut log: Option<&mut RequestRecord>,
        started: std::time::Instant,
        sink: &dyn AccessLog,
    ) -> Option<(TcpStream, bool)> {
        let finish = |log: &mut Option<&mut RequestRecord>, completed: bool, bytes: u64| {
            if let Some(r) = log.take() {
                r.bytes_out = bytes;
                r.completed = completed;
                r.duration = started.elapsed();
                sink.record(r);
            }
        };
        let mut bytes: u64 = 0;
        let mut first = true;
        let mut pos = head_len;
        let mut chunked = ChunkedScanner::new();
        let mut remaining = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        loop {
            // The body bytes now in `ubuf[pos..]`: decide how many belong to the message.
            let avail = &self.ubuf[pos..];
            let (take, done, extra) = match framing {
                Framing::None => (0, true, !avail.is_empty()),
                Framing::Length(_) => {
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(avail.len());
                    remaining -= take as u64;
                    (take, remaining == 0, avail.len() > take)
                }
                Framing::Chunked => match chunked.scan(avail) {
                    Ok(n) => (n, chunked.is_done(), avail.len() > n),
                    Err(_) => {
                        tracing::debug!("invalid chunked body from the app");
                        finish(&mut log, false, chunked.data_bytes);
                        if first {
                            // The head still goes out; the cut body tells the client it failed.
                            let _ = self.write_out().await;
                        }
                        return None;
                    }
                },
                Framing::Close => (avail.len(), false, false),
            };
            bytes = match framing {
                Framing::Chunked => chunked.data_bytes,
                _ => bytes + take as u64,
            };
            if done {
                finish(&mut log, true, bytes);
            }
            // Write what belongs to the message: with the head in one write on the first round,
            // straight from the read buffer after that.
            let data = &self.ubuf[pos..pos + take];
            let written = if framing == Framing::Close && take > 0 {
                if !first {
                    self.out.clear();
                }
                self.out
                    .extend_from_slice(format!("{take:x}\r\n").as_bytes());
                self.out.extend_from_slice(data);
                self.out.extend_from_slice(b"\r\n");
                self.write_out().await
            } else if first {
                self.out.extend_from_slice(data);
                self.write_out().await
            } else {
                self.client.write_all(data).await.is_ok()
            };
            if !written {
                finish(&mut log, false, bytes);
                return None;
            }
            first = false;
            if done {
                if self.ubuf.capacity() > 2 * FIRST_READ {
                    // A long body was relayed in large reads; an idle connection keeps less.
                    self.ubuf = Vec::with_capacity(FIRST_READ);
                }
                return Some((up, !extra));
            }
            // Read more of the body.
            self.ubuf.clear();
            pos = 0;
            self.ubuf.reserve(RELAY_READ);
            match up.read_buf(&mut self.ubuf).await {
                Ok(0) if framing == Framing::Close => {
                    finish(&mut log, true, bytes);
                    self.out.clear();
                    self.out.extend_from_slice(b"0\r\n\r\n");
                    return self.write_out().await.then_some((up, false));
                }
                Ok(n) if n > 0 => {}
                _ => {
                    // The app cut the body short: the client must see an incomplete message.
                    finish(&mut log, false, bytes);
                    return None;
                }
            }
        }
    }
}
