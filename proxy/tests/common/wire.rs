//! A strict HTTP/1.1 reference parser of our own (RFC 9112), for the desync tests: it accepts only
//! what a careful peer may rely on — CRLF line ends, token field names, one framing — and says
//! exactly where each message ends. It is deliberately independent of httparse and hyper, so
//! that it can judge what the proxy (built on them) sends.

/// One parsed message head and its decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request: method; response: status code as text.
    pub start: String,
    /// Request: target; response: reason phrase.
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// The decoded body (chunked decoded, trailers dropped).
    pub body: Vec<u8>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .count()
    }

    pub fn status(&self) -> u16 {
        self.start.parse().unwrap_or(0)
    }

    /// `Connection: close` is among the message's connection options.
    pub fn closes(&self) -> bool {
        self.headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("connection")
                && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
        })
    }
}

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

/// The outcome of parsing at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// A whole message of this many bytes.
    Done(Message, usize),
    /// More bytes are needed.
    Partial,
    /// A response whose body runs until the connection closes (head length given).
    UntilClose(Message, usize),
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn find_crlf(buf: &[u8], from: usize) -> Result<Option<usize>, Invalid> {
    for i in from..buf.len() {
        match buf[i] {
            b'\r' => {
                return match buf.get(i + 1) {
                    Some(b'\n') => Ok(Some(i)),
                    Some(_) => Err(Invalid("CR not followed by LF".into())),
                    None => Ok(None),
                };
            }
            b'\n' => return Err(Invalid("bare LF".into())),
            _ => {}
        }
    }
    Ok(None)
}

/// A parsed head: start line, fields, length.
type Head = (String, Vec<(String, String)>, usize);

/// Parses a head: start line and fields, up to and including the blank line.
fn head(buf: &[u8]) -> Result<Option<Head>, Invalid> {
    let Some(end) = find_crlf(buf, 0)? else {
        return Ok(None);
    };
    let start = std::str::from_utf8(&buf[..end])
        .map_err(|_| Invalid("start line is not UTF-8".into()))?
        .to_string();
    let mut pos = end + 2;
    let mut headers = Vec::new();
    loop {
        let Some(end) = find_crlf(buf, pos)? else {
            return Ok(None);
        };
        if end == pos {
            return Ok(Some((start, headers, end + 2)));
        }
        let line = &buf[pos..end];
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| Invalid("field line without a colon".into()))?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
            return Err(Invalid(format!(
                "bad field name {:?}",
                String::from_utf8_lossy(name)
            )));
        }
        let value = line[colon + 1..].trim_ascii();
        if value.iter().any(|b| *b == 0 || (*b < 0x20 && *b != b'\t')) {
            return Err(Invalid("control character in a field value".into()));
        }
        headers.push((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
        pos = end + 2;
    }
}

/// How the body after a head is delimited, by the fields alone (RFC 9112 §6.3, strictly: a message
/// with both, or with a `Transfer-Encoding` other than `chunked`, or with differing lengths, is
/// invalid).
enum Framing {
    Length(usize),
    Chunked,
}

fn framing(headers: &[(String, String)]) -> Result<Option<Framing>, Invalid> {
    let te: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
        .map(|(_, v)| v.as_str())
        .collect();
    let cl: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.as_str())
        .collect();
    match (te.as_slice(), cl.as_slice()) {
        ([], []) => Ok(None),
        ([t], []) if t.eq_ignore_ascii_case("chunked") => Ok(Some(Framing::Chunked)),
        ([], [n]) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => n
            .parse()
            .map(|n| Some(Framing::Length(n)))
            .map_err(|_| Invalid("content-length overflow".into())),
        _ => Err(Invalid(format!(
            "ambiguous framing: transfer-encoding {te:?}, content-length {cl:?}"
        ))),
    }
}

/// Decodes a chunked body starting at `buf[0]`: the data and the bytes it took.
fn chunked(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, Invalid> {
    let mut pos = 0;
    let mut data = Vec::new();
    loop {
        let Some(end) = find_crlf(buf, pos)? else {
            return Ok(None);
        };
        let line = &buf[pos..end];
        let size_part = line.split(|b| *b == b';').next().unwrap_or(b"");
        if size_part.is_empty() || !size_part.iter().all(u8::is_ascii_hexdigit) {
            return Err(Invalid(format!(
                "bad chunk size {:?}",
                String::from_utf8_lossy(line)
            )));
        }
        let size = usize::from_str_radix(std::str::from_utf8(size_part).unwrap_or("x"), 16)
            .map_err(|_| Invalid("chunk size overflow".into()))?;
        pos = end + 2;
        if size == 0 {
            // Trailer fields, then the blank line.
            loop {
                let Some(end) = find_crlf(buf, pos)? else {
                    return Ok(None);
                };
                if end == pos {
                    return Ok(Some((data, end + 2)));
                }
                if !buf[pos..end].contains(&b':') {
                    return Err(Invalid("trailer line without a colon".into()));
                }
                pos = end + 2;
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        data.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(Invalid("chunk data not followed by CRLF".into()));
        }
        pos += size + 2;
    }
}

/// Parses the head of a request at the start of `buf` (without its body).
pub fn request_head(buf: &[u8]) -> Result<Option<(Message, usize)>, Invalid> {
    let Some((start, headers, len)) = head(buf)? else {
        return Ok(None);
    };
    let mut parts = start.split(' ');
    let (Some(method), Some(target), Some("HTTP/1.1"), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Invalid(format!("bad request line {start:?}")));
    };
    if method.is_empty() || !method.bytes().all(is_tchar) || target.is_empty() {
        return Err(Invalid(format!("bad request line {start:?}")));
    }
    let hosts = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("host"))
        .count();
    if hosts != 1 {
        return Err(Invalid(format!("{hosts} Host fields")));
    }
    framing(&headers)?;
    Ok(Some((
        Message {
            start: method.to_string(),
            target: target.to_string(),
            headers,
            body: Vec::new(),
        },
        len,
    )))
}

/// Parses a whole request (head and body) at the start of `buf`.
pub fn request(buf: &[u8]) -> Result<Parse, Invalid> {
    let Some((msg, len)) = request_head(buf)? else {
        return Ok(Parse::Partial);
    };
    match framing(&msg.headers)? {
        None => Ok(Parse::Done(msg, len)),
        Some(f) => body(msg, len, &buf[len..], f),
    }
}

/// The message whose head (`len` bytes) is `msg`, with its body framed by `f` read from `rest`.
fn body(mut msg: Message, len: usize, rest: &[u8], f: Framing) -> Result<Parse, Invalid> {
    match f {
        Framing::Length(n) => {
            if rest.len() < n {
                return Ok(Parse::Partial);
            }
            msg.body = rest[..n].to_vec();
            Ok(Parse::Done(msg, len + n))
        }
        Framing::Chunked => match chunked(rest)? {
            None => Ok(Parse::Partial),
            Some((data, n)) => {
                msg.body = data;
                Ok(Parse::Done(msg, len + n))
            }
        },
    }
}

/// Parses a response to a request with `method` at the start of `buf`. A 1xx is a message of its
/// own (no body); the caller reads on for the final response.
pub fn response(buf: &[u8], method: &str) -> Result<Parse, Invalid> {
    let Some((start, headers, len)) = head(buf)? else {
        return Ok(Parse::Partial);
    };
    let mut parts = start.splitn(3, ' ');
    let (Some("HTTP/1.1"), Some(code), reason) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Invalid(format!("bad status line {start:?}")));
    };
    let status: u16 = match code.parse() {
        Ok(s) if code.len() == 3 && (100..600).contains(&s) => s,
        _ => return Err(Invalid(format!("bad status line {start:?}"))),
    };
    let msg = Message {
        start: code.to_string(),
        target: reason.unwrap_or("").to_string(),
        headers,
        body: Vec::new(),
    };
    let framing = framing(&msg.headers)?;
    if (100..200).contains(&status) {
        if framing.is_some() {
            return Err(Invalid("framing fields on a 1xx".into()));
        }
        return Ok(Parse::Done(msg, len));
    }
    if method == "HEAD" || status == 204 || status == 304 {
        return Ok(Parse::Done(msg, len));
    }
    match framing {
        Some(f) => body(msg, len, &buf[len..], f),
        None => Ok(Parse::UntilClose(msg, len)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(p: Parse) -> (Message, usize) {
        match p {
            Parse::Done(m, n) => (m, n),
            other => panic!("not done: {other:?}"),
        }
    }

    #[test]
    fn requests() {
        let (m, n) = done(
            request(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET").unwrap(),
        );
        assert_eq!(
            (m.start.as_str(), m.target.as_str(), &m.body[..], n),
            ("POST", "/a", &b"abc"[..], 51)
        );
        let (m, _) = done(
            request(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\n")
                .unwrap(),
        );
        assert_eq!(m.body, b"abc");
        assert_eq!(
            request(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap(),
            Parse::Partial
        );
        for bad in [
            &b"GET / HTTP/1.1\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\r\n",
        ] {
            assert!(request(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn responses() {
        let (m, n) = done(
            response(
                b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n",
                "GET",
            )
            .unwrap(),
        );
        assert_eq!((m.status(), n), (103, 40));
        assert!(matches!(
            response(b"HTTP/1.1 200 OK\r\n\r\nabc", "GET").unwrap(),
            Parse::UntilClose(_, 19)
        ));
        let (m, _) =
            done(response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "GET").unwrap());
        assert_eq!(m.body, b"hello");
        let (m, n) =
            done(response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD").unwrap());
        assert_eq!((m.body.len(), n), (0, 38));
        assert!(
            response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
                "GET"
            )
            .is_err()
        );
    }
}
