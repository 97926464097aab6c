//! Cloudflare Worker route patterns (`OS_WORKER_ROUTES`), as the edge matches them.
//!
//! Our reading of Cloudflare's documented rules ("Routes" and "Known issues" pages):
//! - A pattern is `[scheme://]host[/path]`. No scheme matches both http and https.
//! - The only operator is `*`, matching zero or more of any character. It may appear only at the
//!   start of the host (`*.example.com`, `*example.com`) and at the end of the path
//!   (`example.com/images/*`, `example.com/images*`). Infix wildcards and query strings are invalid.
//! - The pattern is matched against the whole URL `host + path + query`; a path ending in `*`
//!   therefore also matches any query string. A pattern without a trailing `*` matches that exact
//!   path with no query.
//! - `*.example.com` does not match `example.com` itself (the dot is literal); `*example.com` does.
//! - Host comparison is case-insensitive; the path is compared as sent.
//! - When several patterns match, the most specific wins: an exact host beats a wildcard host,
//!   then the longer host, then the longer path.

/// A parsed route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    pub raw: String,
    scheme: Option<String>,
    /// Host without a leading `*`, lowercased.
    host: String,
    host_wildcard: bool,
    /// Path without a trailing `*`.
    path: String,
    path_wildcard: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid route pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: &'static str,
}

impl RoutePattern {
    pub fn parse(raw: &str) -> Result<RoutePattern, PatternError> {
        let err = |reason| PatternError {
            pattern: raw.to_string(),
            reason,
        };
        let s = raw.trim();
        if s.is_empty() {
            return Err(err("empty pattern"));
        }
        let (scheme, rest) = match s.split_once("://") {
            Some((sch, rest)) => {
                let sch = sch.to_ascii_lowercase();
                if sch != "http" && sch != "https" {
                    return Err(err("scheme must be http or https"));
                }
                (Some(sch), rest)
            }
            None => (None, s),
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if path.contains('?') {
            return Err(err("route patterns may not contain a query"));
        }
        let (host_wildcard, host) = match host.strip_prefix('*') {
            Some(h) => (true, h),
            None => (false, host),
        };
        if host.contains('*') {
            return Err(err("a wildcard is only allowed at the start of the host"));
        }
        if host.is_empty() && !host_wildcard {
            return Err(err("empty host"));
        }
        let (path_wildcard, path) = match path.strip_suffix('*') {
            Some(p) => (true, p),
            None => (false, path),
        };
        if path.contains('*') {
            return Err(err("a wildcard is only allowed at the end of the path"));
        }
        Ok(RoutePattern {
            raw: s.to_string(),
            scheme,
            host: host.to_ascii_lowercase(),
            host_wildcard,
            path: path.to_string(),
            path_wildcard,
        })
    }

    /// Parses a comma-separated list (the env var format); empty items are skipped.
    pub fn parse_list(csv: &str) -> Result<Vec<RoutePattern>, PatternError> {
        csv.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(RoutePattern::parse)
            .collect()
    }

    /// Whether the pattern matches a request for `scheme://host/path?query`.
    pub fn matches(&self, scheme: &str, host: &str, path_and_query: &str) -> bool {
        if let Some(s) = &self.scheme
            && !s.eq_ignore_ascii_case(scheme)
        {
            return false;
        }
        let host = host.to_ascii_lowercase();
        let host_ok = if self.host_wildcard {
            host.ends_with(&self.host)
        } else {
            host == self.host
        };
        if !host_ok {
            return false;
        }
        if self.path_wildcard {
            path_and_query.starts_with(&self.path)
        } else {
            path_and_query == self.path
        }
    }

    /// Specificity for "most specific wins": exact host, longer host, longer path.
    fn specificity(&self) -> (bool, usize, bool, usize) {
        (
            !self.host_wildcard,
            self.host.len(),
            !self.path_wildcard,
            self.path.len(),
        )
    }
}

/// The most specific matching pattern, if any.
pub fn best_match<'a>(
    patterns: &'a [RoutePattern],
    scheme: &str,
    host: &str,
    path_and_query: &str,
) -> Option<&'a RoutePattern> {
    patterns
        .iter()
        .filter(|p| p.matches(scheme, host, path_and_query))
        .max_by_key(|p| p.specificity())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, host: &str, pq: &str) -> bool {
        RoutePattern::parse(p).unwrap().matches("https", host, pq)
    }

    #[test]
    fn wildcard_subdomain() {
        assert!(m("*.iterate.town/*", "misha.iterate.town", "/"));
        assert!(m("*.iterate.town/*", "a.b.iterate.town", "/x?y=1"));
        assert!(m(
            "*.iterate.town/*",
            "4096__mach_1.machines.iterate.town",
            "/"
        ));
        assert!(!m("*.iterate.town/*", "iterate.town", "/"));
        assert!(m("*iterate.town/*", "iterate.town", "/"));
        assert!(!m("*.iterate.town/*", "misha.iterate.app", "/"));
        assert!(m("*.Iterate.Town/*", "MISHA.iterate.town", "/"));
    }

    #[test]
    fn path_rules() {
        assert!(m("example.com/images/*", "example.com", "/images/a.png"));
        assert!(!m("example.com/images/*", "example.com", "/images"));
        assert!(m("example.com/images*", "example.com", "/images"));
        assert!(m("example.com/images*", "example.com", "/images123"));
        // No trailing wildcard: exact path, and a query makes it miss.
        assert!(m("example.com/", "example.com", "/"));
        assert!(!m("example.com/", "example.com", "/?a=1"));
        assert!(m("example.com", "example.com", "/"));
    }

    #[test]
    fn scheme_restricts() {
        let p = RoutePattern::parse("http://example.com/*").unwrap();
        assert!(p.matches("http", "example.com", "/"));
        assert!(!p.matches("https", "example.com", "/"));
    }

    #[test]
    fn invalid_patterns() {
        for bad in [
            "example.com/*.jpg",
            "ex*ample.com/*",
            "example.com/?foo=*",
            "",
            "ftp://x/*",
        ] {
            assert!(RoutePattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn most_specific_wins() {
        let ps =
            RoutePattern::parse_list("*.example.com/*, www.example.com/*, www.example.com/api/*")
                .unwrap();
        assert_eq!(
            best_match(&ps, "https", "www.example.com", "/")
                .unwrap()
                .raw,
            "www.example.com/*"
        );
        assert_eq!(
            best_match(&ps, "https", "www.example.com", "/api/x")
                .unwrap()
                .raw,
            "www.example.com/api/*"
        );
        assert_eq!(
            best_match(&ps, "https", "a.example.com", "/").unwrap().raw,
            "*.example.com/*"
        );
        assert!(best_match(&ps, "https", "example.org", "/").is_none());
    }
}
