//! The `date` header value for the fast path's responses, formatted once per second per thread
//! (as hyper does for its own).

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// `Sun, 06 Nov 1994 08:49:37 GMT`
const LEN: usize = 29;

thread_local! {
    static CACHE: RefCell<(u64, [u8; LEN])> = const { RefCell::new((u64::MAX, [0; LEN])) };
}

/// Appends the current IMF-fixdate.
pub(crate) fn push(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let s = httpdate::fmt_http_date(now);
            if s.len() != LEN {
                out.extend_from_slice(s.as_bytes());
                return;
            }
            c.1.copy_from_slice(s.as_bytes());
            c.0 = secs;
        }
        out.extend_from_slice(&c.1);
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_an_http_date() {
        let mut out = Vec::new();
        super::push(&mut out);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s.len(), 29);
        assert!(s.ends_with(" GMT"), "{s}");
        assert!(httpdate::parse_http_date(&s).is_ok(), "{s}");
    }
}
