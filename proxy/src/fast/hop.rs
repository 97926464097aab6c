//! Hop-by-hop fields (RFC 9110 §7.6.1) of a message in bytes: what `Connection` and `TE` say, and
//! the copy of the end-to-end fields. The byte-level twin of [`crate::hop_headers`].

use super::bytes::{is, tokens};

use crate::hop_headers::{is_hop_by_hop, never_nominated};

/// Most `Connection` tokens naming other headers that are honoured in place; a message naming
/// more goes to hyper (requests) or is refused (responses).
pub(super) const MAX_NAMED: usize = 8;

/// What a message's hop-by-hop fields say (RFC 9110 §7.6.1), and the copy of its other fields.
/// The byte-level twin of [`crate::hop_headers::strip_hop_by_hop`] (the parity property in
/// `tests/properties.rs` holds them to the same result).
pub(super) struct Hop<'a> {
    /// Fields named by `Connection` (besides `close`, `keep-alive` and `upgrade`).
    pub(super) named: [&'a [u8]; MAX_NAMED],
    pub(super) n_named: usize,
    /// `Connection: close`.
    pub(super) close: bool,
    /// `Connection: upgrade`.
    pub(super) upgrade: bool,
    /// Every `TE` value is `trailers` (then a single `te: trailers` is kept).
    pub(super) te_trailers_only: bool,
}

impl<'a> Hop<'a> {
    pub(super) fn new() -> Self {
        Hop {
            named: [b""; MAX_NAMED],
            n_named: 0,
            close: false,
            upgrade: false,
            te_trailers_only: true,
        }
    }

    /// Takes note of a `Connection` or `TE` field (any other is ignored). `false` when `Connection`
    /// names more fields than [`MAX_NAMED`].
    pub(super) fn note(&mut self, name: &[u8], value: &'a [u8]) -> bool {
        if is(name, "te") {
            self.te_trailers_only &= tokens(value).all(|t| t.eq_ignore_ascii_case(b"trailers"));
        } else if is(name, "connection") {
            for t in tokens(value) {
                if t.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    self.upgrade = true;
                } else if !t.is_empty()
                    && !t.eq_ignore_ascii_case(b"keep-alive")
                    // Framing is decided first: a nomination of a framing field is ignored.
                    && !never_nominated(t)
                {
                    if self.n_named == MAX_NAMED {
                        return false;
                    }
                    self.named[self.n_named] = t;
                    self.n_named += 1;
                }
            }
        }
        true
    }

    /// Writes `name: value` lines for the end-to-end fields of `headers`. `own` sees each field
    /// first and returns `true` when it has dealt with it (written its own line, or dropped it).
    pub(super) fn copy_end_to_end(
        &self,
        headers: &[httparse::Header<'_>],
        out: &mut Vec<u8>,
        mut own: impl FnMut(&[u8], &mut Vec<u8>) -> bool,
    ) {
        let named = &self.named[..self.n_named];
        let mut te_written = false;
        for h in headers {
            let name = h.name.as_bytes();
            if own(name, out) || named.iter().any(|t| t.eq_ignore_ascii_case(name)) {
                continue;
            }
            if is(name, "te") {
                if self.te_trailers_only && !te_written {
                    out.extend_from_slice(b"te: trailers\r\n");
                    te_written = true;
                }
                continue;
            }
            if is_hop_by_hop(name) {
                continue;
            }
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
    }
}
