//! A request body copied from the client to the app after its head, while the app is watched.

use super::FIRST_READ;
use super::response::{Head, response_head};
use super::timer::MovingDeadline;
use std::io;

use tokio::net::TcpStream;

use crate::cause;
use tokio::time::Instant;

/// Buffer for streaming a request body that did not arrive with its head.
pub(super) const BODY_CHUNK: usize = 16 * 1024;

/// Why copying a body stopped short.
#[derive(Debug)]
pub(super) enum BodyError {
    /// The app's connection failed (or the app closed it), and why.
    Upstream(&'static str),
    /// The client went away.
    ClientGone,
}

/// Writes all of `buf` to a stream that another future may be reading from at the same time.
pub(super) async fn write_to(s: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        s.writable().await?;
        match s.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A request body being copied from the client to the app after its head.
pub(super) struct BodyStream<'a> {
    pub(super) client: &'a TcpStream,
    pub(super) up: &'a TcpStream,
    /// The app's head deadline: `head_timeout` after the last body byte it took.
    pub(super) progress: &'a MovingDeadline,
    pub(super) head_timeout: std::time::Duration,
    pub(super) head_limit: usize,
}

impl BodyStream<'_> {
    /// Copies the `pending` rest of the body through one 16 KiB buffer, while watching the app.
    /// Interim responses (`103 Early Hints`, an unprompted `100`) are passed on to the client and
    /// the body goes on; the start of any other response is the app answering early: the copy
    /// stops and returns how many body bytes were not sent (the answer's first bytes are then in
    /// `ubuf`).
    pub(super) async fn run(
        &self,
        mut pending: u64,
        ubuf: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<u64, BodyError> {
        let (client, up) = (self.client, self.up);
        let mut chunk = vec![0u8; BODY_CHUNK];
        let (mut lo, mut hi) = (0usize, 0usize);
        while pending > 0 || lo < hi {
            tokio::select! {
                biased;
                r = up.readable() => {
                    r.map_err(|e| BodyError::Upstream(cause::of_io(&e)))?;
                    ubuf.reserve(FIRST_READ);
                    match up.try_read_buf(ubuf) {
                        // The app gives up before the whole body is sent.
                        Ok(0) => return Err(BodyError::Upstream(cause::CLOSED)),
                        Ok(_) => {
                            if self.pass_interims(ubuf, out).await? || ubuf.len() > self.head_limit {
                                return Ok(pending + (hi - lo) as u64);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(BodyError::Upstream(cause::of_io(&e))),
                    }
                }
                r = client.readable(), if lo == hi => {
                    r.map_err(|_| BodyError::ClientGone)?;
                    let want = usize::try_from(pending).unwrap_or(usize::MAX).min(chunk.len());
                    match client.try_read(&mut chunk[..want]) {
                        Ok(0) => return Err(BodyError::ClientGone),
                        Ok(n) => {
                            (lo, hi) = (0, n);
                            pending -= n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return Err(BodyError::ClientGone),
                    }
                }
                r = up.writable(), if lo < hi => {
                    r.map_err(|e| BodyError::Upstream(cause::of_io(&e)))?;
                    match up.try_write(&chunk[lo..hi]) {
                        Ok(n) => {
                            lo += n;
                            self.progress.set(Instant::now() + self.head_timeout);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(BodyError::Upstream(cause::of_io(&e))),
                    }
                }
            }
        }
        Ok(0)
    }

    /// Passes the complete interim responses at the start of `ubuf` on to the client and removes
    /// them; `true` when what follows is the start of a final (or invalid) response.
    pub(super) async fn pass_interims(
        &self,
        ubuf: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<bool, BodyError> {
        let mut start = 0;
        let answered = loop {
            match response_head(&ubuf[start..], false, false, out) {
                Head::Interim(n) => {
                    write_to(self.client, out)
                        .await
                        .map_err(|_| BodyError::ClientGone)?;
                    start += n;
                }
                Head::Partial => break false,
                Head::Final(_) | Head::Invalid(_) => break true,
            }
        };
        ubuf.drain(..start);
        Ok(answered)
    }
}
