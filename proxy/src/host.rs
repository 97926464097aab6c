//! The `Host` field's grammar (RFC 9112 §3.2: `Host = uri-host [ ":" port ]`, with `uri-host` and
//! `port` from RFC 3986 §3.2.2–3.2.3). A request whose `Host` does not follow it is refused with
//! `400 invalid_request` on both paths (RFC 9112 §3.2 requires the 400), so nothing that is not a
//! host — a space, a path, user info, a broken IP literal — is forwarded to an app or echoed in
//! `X-Iterate-Proxy-Via`.
//!
//! Hand-written: the `http` crate's `Authority` accepts user info, which `Host` must not carry.

/// Whether `value` (the field value, already trimmed of surrounding whitespace by the parser) is a
/// valid `Host`. An empty value is valid (RFC 9110 §7.2: a request whose target has no authority
/// sends an empty `Host`); the underscores of `4096__mach_123.machines…` are valid reg-name
/// characters.
pub fn valid_host(value: &[u8]) -> bool {
    let port = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|b| *b == b']') else {
            return false;
        };
        if !ip_literal(&rest[..end]) {
            return false;
        }
        match &rest[end + 1..] {
            [] => return true,
            [b':', port @ ..] => port,
            _ => return false,
        }
    } else {
        let (host, port) = match value.iter().position(|b| *b == b':') {
            Some(i) => (&value[..i], &value[i + 1..]),
            None => (value, &b""[..]),
        };
        if !reg_name(host) {
            return false;
        }
        port
    };
    port.iter().all(u8::is_ascii_digit)
}

const fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

const fn sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// The bytes of a `reg-name` other than `%` ([`unreserved`] and [`sub_delim`]), as a table: one
/// load per byte on the request path.
const REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = unreserved(b as u8) || sub_delim(b as u8);
        b += 1;
    }
    t
};

/// `reg-name = *( unreserved / pct-encoded / sub-delims )` (an IPv4 address is one too).
fn reg_name(v: &[u8]) -> bool {
    if v.iter().all(|&b| REG_NAME[usize::from(b)]) {
        return true;
    }
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'%' => {
                if !(v.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && v.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
                {
                    return false;
                }
                i += 3;
            }
            b if REG_NAME[usize::from(b)] => i += 1,
            _ => return false,
        }
    }
    true
}

/// The inside of `[…]`: an IPv6 address, or `IPvFuture = "v" 1*HEXDIG "." 1*( unreserved /
/// sub-delims / ":" )`.
fn ip_literal(v: &[u8]) -> bool {
    if let [b'v' | b'V', rest @ ..] = v {
        let Some(dot) = rest.iter().position(|b| *b == b'.') else {
            return false;
        };
        let (ver, tail) = (&rest[..dot], &rest[dot + 1..]);
        return !ver.is_empty()
            && ver.iter().all(u8::is_ascii_hexdigit)
            && !tail.is_empty()
            && tail
                .iter()
                .all(|&b| unreserved(b) || sub_delim(b) || b == b':');
    }
    std::str::from_utf8(v).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::valid_host;

    #[test]
    fn hosts() {
        for ok in [
            "",
            "a",
            "localhost:3000",
            "4096__mach_123.machines.iterate.town",
            "misha.iterate.town:443",
            "127.0.0.1",
            "[::1]",
            "[::1]:8080",
            "[v1.fe80::a+en1]",
            "a%2Db.example",
            "x:",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok:?} is a valid Host");
        }
        for bad in [
            "a b.example",
            "evil.example/path",
            "user@evil.example",
            "[::1",
            "[::1]x",
            "[zz::1]",
            "a:b",
            "a:80:90",
            "a%2",
            "a\tb",
            "é.example",
            "[v.x]",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?} is not a valid Host");
        }
    }
}
