//! The app's response head: parsed, its framing decided, and rewritten for the client.

use super::bytes::{is, parse_decimal, push_u64, tokens};
use super::hop::Hop;
use crate::cause;
use std::mem::MaybeUninit;

/// Most header fields accepted in an app's response head (the same limit as the hyper client).
pub(crate) const RESP_HEADERS: usize = 200;

/// How an app's response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the app closes; re-chunked for the client.
    Close,
}

#[derive(Debug)]
pub(super) struct RespHead {
    pub(super) status: u16,
    pub(super) framing: Framing,
    /// HTTP/1.1 without `Connection: close`: the connection may be reused after the body.
    pub(super) persistent: bool,
    /// Length of the head in the upstream buffer.
    pub(super) len: usize,
}

#[derive(Debug)]
pub(super) enum Head {
    Partial,
    /// Not acceptable, and why (a [`crate::cause`] word).
    Invalid(&'static str),
    /// A 1xx other than 101, of this length, passed on to the client (its head is in `out`).
    Interim(usize),
    Final(RespHead),
}

/// Parses an app's response head and, when it is complete and acceptable, writes the client's
/// head into `out`: the status line, the app's fields without hop-by-hop ones, the framing of the
/// body as sent on, `date` when the app sent none, and `connection: close` when closing.
pub(super) fn response_head(
    buf: &[u8],
    head_method: bool,
    close_client: bool,
    out: &mut Vec<u8>,
) -> Head {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; RESP_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut storage,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Invalid(cause::INVALID_HEAD),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Head::Invalid(cause::INVALID_HEAD);
    };
    if status == 101 {
        // Never asked for (upgrades go through hyper).
        return Head::Invalid(cause::UNREQUESTED_101);
    }
    let mut length: Option<u64> = None;
    let mut te: Option<bool> = None;
    let mut hop = Hop::new();
    let mut has_date = false;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if is(name, "content-length") {
            match parse_decimal(h.value) {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => return Head::Invalid(cause::INVALID_HEAD),
            }
        } else if is(name, "transfer-encoding") {
            te = Some(
                tokens(h.value)
                    .last()
                    .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")),
            );
        } else if !hop.note(name, h.value) {
            return Head::Invalid(cause::INVALID_HEAD);
        } else if is(name, "date") {
            has_date = true;
        }
    }
    if (100..200).contains(&status) {
        // Passed on as it came, without hop-by-hop and framing fields (a 1xx has no body).
        status_line(out, status, resp.reason);
        hop.copy_end_to_end(resp.headers, out, |name, _| is(name, "content-length"));
        out.extend_from_slice(b"\r\n");
        return Head::Interim(len);
    }
    let framing = if head_method || status == 204 || status == 304 {
        Framing::None
    } else {
        match (te, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::Close,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::Close,
        }
    };
    status_line(out, status, resp.reason);
    // With both, Transfer-Encoding frames the body; the length is wrong and does not go on.
    // A repeated identical length goes on once.
    let mut length_sent = false;
    hop.copy_end_to_end(resp.headers, out, |name, _| {
        is(name, "content-length") && (te.is_some() || std::mem::replace(&mut length_sent, true))
    });
    if matches!(framing, Framing::Chunked | Framing::Close) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        crate::date::push(out);
        out.extend_from_slice(b"\r\n");
    }
    if close_client {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Head::Final(RespHead {
        status,
        framing,
        persistent: version == 1 && !hop.close,
        len,
    })
}

/// Starts `out` with the status line `HTTP/1.1 <status> <reason>`: the app's reason phrase, or the
/// canonical one when it sent none.
pub(super) fn status_line(out: &mut Vec<u8>, status: u16, reason: Option<&str>) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(status));
    out.push(b' ');
    match reason.filter(|r| !r.is_empty()) {
        Some(r) => out.extend_from_slice(r.as_bytes()),
        None => out.extend_from_slice(
            http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("")
                .as_bytes(),
        ),
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "Date: Tue, 01 Jan 2030 00:00:00 GMT\r\n";

    /// The head the client gets for `app` (after the status line's `HTTP/1.1 `), or what else
    /// `response_head` made of it.
    fn client_head(
        app: &str,
        head_method: bool,
        close: bool,
    ) -> Result<(String, Framing, bool), String> {
        let mut out = Vec::new();
        match response_head(app.as_bytes(), head_method, close, &mut out) {
            Head::Final(h) => {
                assert_eq!(h.len, app.find("\r\n\r\n").map_or(0, |i| i + 4), "{app:?}");
                Ok((String::from_utf8(out).unwrap(), h.framing, h.persistent))
            }
            Head::Interim(n) => Err(format!("interim {n}: {}", String::from_utf8(out).unwrap())),
            Head::Partial => Err("partial".into()),
            Head::Invalid(_) => Err("invalid".into()),
        }
    }

    #[test]
    fn final_heads() {
        let table: &[(&str, bool, bool, &str, Framing, bool)] = &[
            // (app head, HEAD request, close client, client head, framing, persistent)
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
                false,
                false,
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
                Framing::Length(5),
                true,
            ),
            // A repeated identical length goes on once; a nomination of it is ignored.
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: content-length\r\n",
                false,
                false,
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
                Framing::Length(5),
                true,
            ),
            // Transfer-Encoding wins over a length, which is dropped.
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n",
                false,
                false,
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n",
                Framing::Chunked,
                true,
            ),
            // No framing: until close, re-chunked.
            (
                "HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nX-Keep: 2\r\n",
                false,
                true,
                "HTTP/1.1 200 OK\r\nX-Keep: 2\r\ntransfer-encoding: chunked\r\nconnection: close\r\n",
                Framing::Close,
                false,
            ),
            // HEAD, 204, 304: no body whatever the fields say.
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n",
                true,
                false,
                "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n",
                Framing::None,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\n",
                false,
                false,
                "HTTP/1.1 304 Not Modified\r\n",
                Framing::None,
                true,
            ),
            // The canonical reason when the app sends none; HTTP/1.0 is not persistent.
            (
                "HTTP/1.0 404 \r\nContent-Length: 0\r\n",
                false,
                false,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n",
                Framing::Length(0),
                false,
            ),
        ];
        for (app, head, close, want, framing, persistent) in table {
            // The app's own Date (so no `date` is added) right after the status line.
            let with_date = |h: &str| h.replacen("\r\n", &format!("\r\n{DATE}"), 1) + "\r\n";
            let (app, want) = (with_date(app), with_date(want));
            assert_eq!(
                client_head(&app, *head, *close),
                Ok((want, *framing, *persistent)),
                "{app:?}"
            );
        }
    }

    #[test]
    fn interim_and_refused_heads() {
        assert_eq!(
            client_head(
                "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nConnection: x\r\nX: 1\r\nContent-Length: 0\r\n\r\n",
                false,
                false
            ),
            Err("interim 80: HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n".into())
        );
        for bad in [
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
        ] {
            assert_eq!(
                client_head(bad, false, false),
                Err("invalid".into()),
                "{bad:?}"
            );
        }
        assert_eq!(
            client_head("HTTP/1.1 200 OK\r\nX: 1\r\n", false, false),
            Err("partial".into())
        );
    }
}
