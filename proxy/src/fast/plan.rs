//! The request head: parsed in place, checked, and rewritten into the upstream request.

use super::bytes::{is, parse_decimal, push_u64};
use super::hop::Hop;
use std::mem::MaybeUninit;

use crate::config::ProxyConfig;
use crate::config::{SECRET_HEADER, TARGET_HOST_HEADER, VIA_HEADER};
use crate::host::valid_host;
use crate::target_host::{TargetForm, parse_target_host_bytes};

/// Request header fields parsed on the stack; a request with more goes to hyper (which applies
/// the configured limit itself).
pub(super) const REQ_HEADERS: usize = 128;

/// Characters http's URI parser and every app accept as they are in an origin-form target. A
/// target with anything else goes to hyper, which decides.
pub(super) fn uri_byte_ok(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')'
        | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@' | b'/' | b'?' | b'%')
}

/// A request head the fast path forwards, as [`plan_request`] read it.
#[derive(Debug)]
pub struct PlannedRequest<'a> {
    pub port: u16,
    pub form: TargetForm,
    /// Bytes of the request (head and body) in the buffer.
    pub consumed: usize,
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    pub target_header: Option<&'a [u8]>,
    pub request_id: Option<&'a [u8]>,
    pub body_len: u64,
    /// Body bytes not yet in the buffer: streamed from the client after the head.
    pub body_pending: u64,
    /// The client asked to close after the response.
    pub close: bool,
}

/// What the fast path makes of the bytes at the start of a client buffer.
#[derive(Debug)]
pub enum HeadPlan<'a> {
    /// Forward it: the upstream request (head and body) has been written.
    Forward(PlannedRequest<'a>),
    /// The head is not complete yet.
    Partial,
    /// Not a request the fast path handles: the full handler decides (and may refuse).
    FullHandler,
}

/// The fast path's request rewrite: parses the request head at the start of `buf` and, when the
/// fast path handles it, writes into `out` what [`crate::rewrite_request_headers`] would send, in
/// the client's order and spelling.
pub fn plan_request<'a>(
    cfg: &ProxyConfig,
    self_port: u16,
    buf: &'a [u8],
    out: &mut Vec<u8>,
) -> HeadPlan<'a> {
    let limits = &cfg.limits;
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; REQ_HEADERS];
    let n_headers = limits.max_request_headers.min(REQ_HEADERS);
    let mut head = httparse::Request::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut head,
        buf,
        &mut storage[..n_headers],
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return HeadPlan::Partial,
        Err(_) => return HeadPlan::FullHandler,
    };
    let (Some(method), Some(target_uri), Some(1)) = (head.method, head.path, head.version) else {
        return HeadPlan::FullHandler;
    };
    if head_len > limits.max_request_head_bytes
        || method == "CONNECT"
        || !target_uri.starts_with('/')
        || !target_uri.bytes().all(uri_byte_ok)
    {
        return HeadPlan::FullHandler;
    }
    let path = target_uri.split('?').next().unwrap_or(target_uri);
    if path == "/health" {
        return HeadPlan::FullHandler;
    }

    let rid_name = cfg.request_id_header.as_str();
    let mut host: Option<&[u8]> = None;
    let mut hosts = 0;
    let mut target: Option<&[u8]> = None;
    let mut targets = 0;
    let mut secret: Option<&[u8]> = None;
    let mut rid: Option<&[u8]> = None;
    let mut body_len: Option<u64> = None;
    let mut hop = Hop::new();
    for h in head.headers.iter() {
        let name = h.name.as_bytes();
        if is(name, "host") {
            hosts += 1;
            host = Some(h.value);
        } else if is(name, "content-length") {
            if body_len.is_some() {
                return HeadPlan::FullHandler;
            }
            match parse_decimal(h.value) {
                Some(n) => body_len = Some(n),
                None => return HeadPlan::FullHandler,
            }
        } else if is(name, "transfer-encoding")
            || is(name, "expect")
            || is(name, "upgrade")
            // More `Connection`-named fields than honoured in place.
            || !hop.note(name, h.value)
        {
            return HeadPlan::FullHandler;
        } else if is(name, TARGET_HOST_HEADER.as_str()) {
            targets += 1;
            target = Some(h.value);
        } else if is(name, SECRET_HEADER.as_str()) {
            secret = secret.or(Some(h.value));
        }
        if is(name, rid_name) {
            rid = rid.or(Some(h.value));
        }
    }
    // One valid Host and at most one target header, or the full handler refuses (400).
    let Some(host) = host.filter(|h| hosts == 1 && !hop.upgrade && valid_host(h)) else {
        return HeadPlan::FullHandler;
    };
    if targets > 1 {
        return HeadPlan::FullHandler;
    }
    if let Some(s) = &cfg.secret
        && !secret.is_some_and(|p| s.matches(p))
    {
        return HeadPlan::FullHandler;
    }
    let Ok(tgt) = parse_target_host_bytes(target) else {
        return HeadPlan::FullHandler;
    };
    if tgt.port == self_port {
        return HeadPlan::FullHandler;
    }
    let body_len = body_len.unwrap_or(0);
    let Ok(body) = usize::try_from(body_len) else {
        return HeadPlan::FullHandler;
    };
    // What of the body arrived with the head goes out with it; the rest is streamed.
    let in_buf = body.min(buf.len() - head_len);

    // The upstream request: what `rewrite_request_headers` produces, written directly.
    let req = out;
    req.clear();
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(target_uri.as_bytes());
    req.extend_from_slice(b" HTTP/1.1\r\n");
    hop.copy_end_to_end(head.headers, req, |name, req| {
        // Host first: the proxy sets its own even when `Connection` names `Host`.
        if is(name, "host") {
            req.extend_from_slice(b"host: localhost:");
            push_u64(req, u64::from(tgt.port));
            req.extend_from_slice(b"\r\n");
            return true;
        }
        is(name, TARGET_HOST_HEADER.as_str())
            || is(name, SECRET_HEADER.as_str())
            || is(name, VIA_HEADER.as_str())
    });
    req.extend_from_slice(VIA_HEADER.as_str().as_bytes());
    req.extend_from_slice(b": ");
    req.extend_from_slice(host);
    req.extend_from_slice(b"\r\n\r\n");
    req.extend_from_slice(&buf[head_len..head_len + in_buf]);

    HeadPlan::Forward(PlannedRequest {
        port: tgt.port,
        form: tgt.form,
        consumed: head_len + in_buf,
        method,
        path,
        target_header: target,
        request_id: rid,
        body_len,
        body_pending: (body - in_buf) as u64,
        close: hop.close,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    const T: &str = "X-Iterate-Proxy-Target-Host: 4096__m.iterate.town\r\n";

    /// What the fast path makes of `input`: the upstream request with port, bytes consumed and
    /// body still to come; or `partial` / `full` (the full handler decides).
    fn plan(cfg: &ProxyConfig, input: &str) -> Result<(String, u16, usize, u64), &'static str> {
        let mut out = Vec::new();
        match plan_request(cfg, 8080, input.as_bytes(), &mut out) {
            HeadPlan::Forward(p) => Ok((
                String::from_utf8(out).unwrap(),
                p.port,
                p.consumed,
                p.body_pending,
            )),
            HeadPlan::Partial => Err("partial"),
            HeadPlan::FullHandler => Err("full"),
        }
    }

    #[test]
    fn forwarded_requests_are_rewritten_in_place() {
        let cfg = ProxyConfig::default();
        let table: &[(String, &str, usize, u64)] = &[
            (
                format!("GET /p?q=1 HTTP/1.1\r\nHost: Example.com\r\nAccept: */*\r\n{T}\r\n"),
                "GET /p?q=1 HTTP/1.1\r\nhost: localhost:4096\r\nAccept: */*\r\nx-iterate-proxy-via: Example.com\r\n\r\n",
                0,
                0,
            ),
            // Hop-by-hop out (Connection-named too), a client's Via out, TE: trailers kept.
            (
                format!(
                    "GET / HTTP/1.1\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\nHost: h\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Iterate-Proxy-Via: forged\r\n{T}\r\n"
                ),
                "GET / HTTP/1.1\r\nhost: localhost:4096\r\nte: trailers\r\nx-iterate-proxy-via: h\r\n\r\n",
                0,
                0,
            ),
            // A nominated length is kept (framing first); the body that came with the head goes
            // out with it, the rest is still to come.
            (
                format!(
                    "POST / HTTP/1.1\r\nHost: h\r\nConnection: content-length, host\r\nContent-Length: 10\r\n{T}\r\n0123"
                ),
                "POST / HTTP/1.1\r\nhost: localhost:4096\r\nContent-Length: 10\r\nx-iterate-proxy-via: h\r\n\r\n0123",
                4,
                6,
            ),
        ];
        for (input, upstream, body_in, pending) in table {
            let head_len = input.find("\r\n\r\n").unwrap() + 4;
            assert_eq!(
                plan(&cfg, input),
                Ok((upstream.to_string(), 4096, head_len + body_in, *pending)),
                "{input:?}"
            );
        }
    }

    #[test]
    fn everything_else_goes_to_the_full_handler() {
        let cfg = ProxyConfig::default();
        for input in [
            format!("GET / HTTP/1.0\r\nHost: h\r\n{T}\r\n"),
            format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n{T}\r\n"),
            format!(
                "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n{T}\r\n"
            ),
            format!(
                "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n{T}\r\n"
            ),
            "GET /health HTTP/1.1\r\nHost: h\r\n\r\n".to_string(),
            format!("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n{T}\r\n"),
            format!("GET / HTTP/1.1\r\nHost: user@evil.example\r\n{T}\r\n"),
            format!("GET / HTTP/1.1\r\nHost: h\r\n{T}{T}\r\n"),
            "GET / HTTP/1.1\r\nHost: h\r\n\r\n".to_string(),
            "GET / HTTP/1.1
Host: h
X-Iterate-Proxy-Target-Host: localhost:8080

"
            .to_string(),
            format!("GET http://a/ HTTP/1.1\r\nHost: a\r\n{T}\r\n"),
            format!("CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n{T}\r\n"),
            format!(
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n{T}\r\n"
            ),
            format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n{T}\r\n"),
            format!("GET /a\"b HTTP/1.1\r\nHost: h\r\n{T}\r\n"),
            format!(
                "GET / HTTP/1.1\r\nHost: h\r\nConnection: {}\r\n{T}\r\n",
                (0..9)
                    .map(|i| format!("x-{i}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ] {
            assert_eq!(plan(&cfg, &input), Err("full"), "{input:?}");
        }
        assert_eq!(plan(&cfg, "GET / HTTP/1.1\r\nHost: h\r\n"), Err("partial"));
        // With a secret, only requests carrying it.
        let cfg = ProxyConfig {
            secret: Secret::new("s"),
            ..ProxyConfig::default()
        };
        assert_eq!(
            plan(&cfg, &format!("GET / HTTP/1.1\r\nHost: h\r\n{T}\r\n")),
            Err("full")
        );
        let with =
            format!("GET / HTTP/1.1\r\nHost: h\r\nX-Iterate-Project-Ingress-Secret: s\r\n{T}\r\n");
        assert!(plan(&cfg, &with).is_ok_and(|(up, ..)| !up.contains("ecret")));
    }
}
