//! Parsing of the `X-Iterate-Proxy-Target-Host` header (docs/behaviour.md §5.3, grammar "P2").
//!
//! The header tells the machine proxy which port on the machine's own loopback the request is for.
//! Accepted forms, after trimming:
//! 1. `<port>__<anything>`: the prefix (before the first `__`, which must not be at index 0) must be a
//!    valid port and the suffix must not be empty. The hostname after `__` is ignored.
//! 2. `<host>:<port>` (split at the last `:`): host must be `localhost` or `127.0.0.1` (case-insensitive,
//!    trimmed), port must be valid. Any other host is rejected: the proxy never leaves the machine.
//! 3. anything else (a bare hostname): port 3000.
//!
//! A valid port is ASCII digits only, 1..=65535.

/// Port used when the header names no explicit port.
pub const DEFAULT_TARGET_PORT: u16 = 3000;

/// Why a target header was refused. Both map to HTTP 400 with a stable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetHostError {
    /// The header is absent, empty or only whitespace.
    #[error("missing_proxy_target_host")]
    Missing,
    /// The header is present but does not follow the grammar, or names a non-local host.
    #[error("invalid_proxy_target_host")]
    Invalid,
}

impl TargetHostError {
    /// The stable error code sent in the JSON body.
    pub fn code(self) -> &'static str {
        match self {
            TargetHostError::Missing => "missing_proxy_target_host",
            TargetHostError::Invalid => "invalid_proxy_target_host",
        }
    }
}

/// Which rule of the grammar produced the port; recorded in logs and traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `<port>__<hostname>`
    PortPrefix,
    /// `localhost:<port>` or `127.0.0.1:<port>`
    LocalHostPort,
    /// A bare hostname: the default port.
    Default,
}

impl TargetForm {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetForm::PortPrefix => "port_prefix",
            TargetForm::LocalHostPort => "local_host_port",
            TargetForm::Default => "default",
        }
    }
}

/// A parsed target: always a port on the machine's own loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub port: u16,
    pub form: TargetForm,
}

impl Target {
    /// The `Host` header value sent upstream: `localhost:<port>`.
    pub fn upstream_host_header(&self) -> String {
        format!("localhost:{}", self.port)
    }
}

/// Parses a port: ASCII digits only, 1..=65535 (leading zeros allowed, as `^\d+$` allows them).
pub fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Strip leading zeros so that very long zero-padded values do not overflow the parser.
    let trimmed = s.trim_start_matches('0');
    if trimmed.is_empty() || trimmed.len() > 5 {
        return None;
    }
    match trimmed.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => u16::try_from(p).ok(),
        _ => None,
    }
}

/// Parses a header value (raw bytes, as received). Non-UTF-8 values are invalid.
pub fn parse_target_host_bytes(raw: Option<&[u8]>) -> Result<Target, TargetHostError> {
    let Some(raw) = raw else {
        return Err(TargetHostError::Missing);
    };
    match std::str::from_utf8(raw) {
        Ok(s) => parse_target_host(s),
        Err(_) => {
            if raw.iter().all(|b| b.is_ascii_whitespace()) {
                Err(TargetHostError::Missing)
            } else {
                Err(TargetHostError::Invalid)
            }
        }
    }
}

/// Parses a header value according to grammar P2.
pub fn parse_target_host(value: &str) -> Result<Target, TargetHostError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(TargetHostError::Missing);
    }
    if let Some(idx) = v.find("__")
        && idx > 0
    {
        let (prefix, rest) = (&v[..idx], &v[idx + 2..]);
        if rest.is_empty() {
            return Err(TargetHostError::Invalid);
        }
        let port = parse_port(prefix).ok_or(TargetHostError::Invalid)?;
        return Ok(Target {
            port,
            form: TargetForm::PortPrefix,
        });
    }
    if let Some(idx) = v.rfind(':') {
        let host = v[..idx].trim().to_ascii_lowercase();
        let port_text = &v[idx + 1..];
        if host != "localhost" && host != "127.0.0.1" {
            return Err(TargetHostError::Invalid);
        }
        let port = parse_port(port_text).ok_or(TargetHostError::Invalid)?;
        return Ok(Target {
            port,
            form: TargetForm::LocalHostPort,
        });
    }
    Ok(Target {
        port: DEFAULT_TARGET_PORT,
        form: TargetForm::Default,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(v: &str) -> Result<u16, TargetHostError> {
        parse_target_host(v).map(|t| t.port)
    }

    /// Every row of the docs/behaviour.md §5.3 table (P2 column).
    #[test]
    fn reference_table_p2() {
        use TargetHostError::*;
        let rows: &[(&str, Result<u16, TargetHostError>)] = &[
            ("4096__bla.bla.com", Ok(4096)),
            ("4096__mach_1.iterate.app", Ok(4096)),
            ("banana.boopie.lala.internal", Ok(3000)),
            ("70000__x", Err(Invalid)),
            ("0__x", Err(Invalid)),
            ("4096__", Err(Invalid)),
            ("localhost:4096", Ok(4096)),
            ("127.0.0.1:3001", Ok(3001)),
            ("LOCALHOST:4096", Ok(4096)),
            ("example.com:4096", Err(Invalid)),
            ("opencode.templestein.com", Ok(3000)),
            ("4096.templestein.com", Ok(3000)),
            ("abc__x.y", Err(Invalid)),
            ("__x.y", Ok(3000)),
            ("localhost", Ok(3000)),
            ("localhost:", Err(Invalid)),
            ("localhost:abc", Err(Invalid)),
            ("[::1]:4096", Err(Invalid)),
            ("", Err(Missing)),
            ("   \t ", Err(Missing)),
        ];
        for (input, want) in rows {
            assert_eq!(port(input), *want, "header {input:?}");
        }
    }

    #[test]
    fn trims_and_lowercases_host_part() {
        assert_eq!(port("  localhost:4096  "), Ok(4096));
        assert_eq!(port(" LocalHost :5173"), Ok(5173));
        assert_eq!(port("127.0.0.1:65535"), Ok(65535));
        assert_eq!(port("127.0.0.1:65536"), Err(TargetHostError::Invalid));
        assert_eq!(port("localhost:+80"), Err(TargetHostError::Invalid));
        assert_eq!(port("localhost:-1"), Err(TargetHostError::Invalid));
        assert_eq!(port("localhost: 80"), Err(TargetHostError::Invalid));
    }

    #[test]
    fn forms_are_reported() {
        assert_eq!(
            parse_target_host("4096__x").map(|t| t.form),
            Ok(TargetForm::PortPrefix)
        );
        assert_eq!(
            parse_target_host("localhost:1").map(|t| t.form),
            Ok(TargetForm::LocalHostPort)
        );
        assert_eq!(
            parse_target_host("a.b").map(|t| t.form),
            Ok(TargetForm::Default)
        );
    }

    #[test]
    fn port_prefix_wins_over_colon() {
        // `__` at index > 0 is rule 1 even if a colon follows.
        assert_eq!(port("4096__evil.com:80"), Ok(4096));
        // A colon before `__` still makes the prefix an invalid port.
        assert_eq!(port("a:1__x"), Err(TargetHostError::Invalid));
    }

    #[test]
    fn port_parser_edges() {
        assert_eq!(parse_port("0003000"), Some(3000));
        assert_eq!(parse_port("000000000000000000000080"), Some(80));
        assert_eq!(parse_port("99999999999999999999"), None);
        assert_eq!(parse_port("0"), None);
        assert_eq!(parse_port("١٢٣"), None); // non-ASCII digits
        assert_eq!(parse_port(""), None);
    }

    #[test]
    fn bytes_variant() {
        assert_eq!(parse_target_host_bytes(None), Err(TargetHostError::Missing));
        assert_eq!(
            parse_target_host_bytes(Some(b"\xff\xfe")),
            Err(TargetHostError::Invalid)
        );
        assert_eq!(
            parse_target_host_bytes(Some(b"4096__x")).map(|t| t.port),
            Ok(4096)
        );
    }
}
