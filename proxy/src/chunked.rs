//! A streaming scanner for `Transfer-Encoding: chunked` (RFC 9112 §7.1) used by the fast path to
//! pass an app's chunked body through byte for byte while knowing where the message ends and how
//! many data bytes it carried. It holds a few integers of state, never the body.

/// Longest chunk-size line (size, extensions) or trailer line accepted. Longer is an error, as it
/// is for hyper (whose limit on extensions is smaller still).
const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size (`digits` read so far).
    Size { digits: u8 },
    /// After the size: extensions, up to CR.
    Ext,
    /// Expecting LF after the size line's CR.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// Expecting LF of a trailer line.
    TrailerLf,
    /// Expecting LF of the final empty line.
    EndLf,
    /// The message is complete.
    Done,
}

/// The body is not valid chunked encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidChunked;

#[derive(Debug, Clone)]
pub(crate) struct ChunkedScanner {
    state: State,
    /// Size of the chunk being read (while in `Size`), then data bytes left (in `Data`).
    size: u64,
    line: usize,
    /// Data bytes seen so far (the decoded body length).
    pub(crate) data_bytes: u64,
}

impl ChunkedScanner {
    pub(crate) fn new() -> Self {
        ChunkedScanner {
            state: State::Size { digits: 0 },
            size: 0,
            line: 0,
            data_bytes: 0,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Scans `buf`; returns how many bytes belong to the message (all of `buf` unless the message
    /// ends inside it).
    pub(crate) fn scan(&mut self, buf: &[u8]) -> Result<usize, InvalidChunked> {
        let mut i = 0;
        while i < buf.len() {
            match self.state {
                State::Done => return Ok(i),
                State::Data => {
                    let take =
                        (buf.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    i += take;
                    self.size -= take as u64;
                    self.data_bytes += take as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                _ => {}
            }
            let b = buf[i];
            i += 1;
            self.state = match self.state {
                State::Size { digits } => match hex(b) {
                    Some(d) => {
                        // 16 hex digits fill a u64; more (beyond leading zeros) is an overflow.
                        if self.size > (u64::MAX >> 4) || digits == u8::MAX {
                            return Err(InvalidChunked);
                        }
                        self.size = (self.size << 4) | u64::from(d);
                        State::Size { digits: digits + 1 }
                    }
                    None if digits == 0 => return Err(InvalidChunked),
                    None => self.after_size(b)?,
                },
                State::Ext => self.in_line(b, State::Ext, State::SizeLf)?,
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(InvalidChunked);
                    }
                    if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    }
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => {
                    self.size = 0;
                    State::Size { digits: 0 }
                }
                State::DataCr | State::DataLf => return Err(InvalidChunked),
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    b'\n' => return Err(InvalidChunked),
                    _ => {
                        self.line = 1;
                        State::Trailer
                    }
                },
                State::Trailer => self.in_line(b, State::Trailer, State::TrailerLf)?,
                State::TrailerLf if b == b'\n' => State::TrailerStart,
                State::EndLf if b == b'\n' => State::Done,
                State::TrailerLf | State::EndLf => return Err(InvalidChunked),
                // Handled before the byte is taken; staying put keeps the scanner total.
                s @ (State::Data | State::Done) => s,
            };
        }
        Ok(i)
    }

    /// A byte inside a size line's extensions or a trailer line (`same`): counted against the line
    /// limit; CR ends the line (`at_cr`), a bare LF is an error.
    fn in_line(&mut self, b: u8, same: State, at_cr: State) -> Result<State, InvalidChunked> {
        self.line += 1;
        match b {
            _ if self.line > MAX_LINE => Err(InvalidChunked),
            b'\r' => Ok(at_cr),
            b'\n' => Err(InvalidChunked),
            _ => Ok(same),
        }
    }

    /// The byte after the last size digit: extensions (`;`, after optional whitespace) or CR.
    fn after_size(&mut self, b: u8) -> Result<State, InvalidChunked> {
        self.line = 0;
        match b {
            b'\r' => Ok(State::SizeLf),
            b';' | b' ' | b'\t' => Ok(State::Ext),
            _ => Err(InvalidChunked),
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(parts: &[&[u8]]) -> Result<(usize, u64, bool), InvalidChunked> {
        let mut s = ChunkedScanner::new();
        let mut used = 0;
        for p in parts {
            used += s.scan(p)?;
        }
        Ok((used, s.data_bytes, s.is_done()))
    }

    #[test]
    fn whole_message_in_one_piece() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        assert_eq!(scan_all(&[body]), Ok((body.len(), 11, true)));
    }

    #[test]
    fn split_at_every_byte() {
        let body = b"a\r\n0123456789\r\n0\r\nx-t: 1\r\n\r\n";
        let parts: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(scan_all(&parts), Ok((body.len(), 10, true)));
    }

    #[test]
    fn stops_at_the_end_of_the_message() {
        let mut s = ChunkedScanner::new();
        let buf = b"1\r\nx\r\n0\r\n\r\nEXTRA";
        assert_eq!(s.scan(buf), Ok(buf.len() - 5));
        assert!(s.is_done());
    }

    #[test]
    fn incomplete_is_not_done() {
        assert_eq!(scan_all(&[b"5\r\nhel"]), Ok((6, 3, false)));
        assert_eq!(scan_all(&[b"0\r\n"]), Ok((3, 0, false)));
    }

    #[test]
    fn invalid_encodings_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello",
            b"5\r\nhelloX",
            b"5\r\nhello\rX",
            b"0\r\n\n",
            b"0\r\nx-t: 1\n",
            b"-1\r\n",
            b"11111111111111111\r\n",
        ] {
            assert_eq!(scan_all(&[bad]), Err(InvalidChunked), "{bad:?}");
        }
    }

    #[test]
    fn largest_size_fits() {
        let mut s = ChunkedScanner::new();
        assert!(s.scan(b"ffffffffffffffff\r\n").is_ok());
    }
}
