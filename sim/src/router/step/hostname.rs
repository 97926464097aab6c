//! Public hostname → target (project slug or machine id, port), as the OS router parses it.
//!
//! V0 ("step 0", docs/behaviour.md §3.2): labels = lowercase host split on `.`, empties dropped; fewer than 3
//! → `invalid_hostname`. If `labels[1] == "machines"`: at least 4 labels, a valid token, and an
//! identifier starting `mach_` (else `invalid_hostname`); root = `labels[2..]`. Otherwise the token
//! grammar of "Shared pieces", without slug validation; root = `labels[1..]`.
//!
//! Token grammar: no `__` → identifier = token, port 3000 (implicit). `__` at index 0, an empty
//! identifier, or a port that is not `^\d+$` in 1..65535 → `invalid_port`. Otherwise port = text
//! before the first `__`, identifier = text after.

use crate::model::{DEFAULT_PORT, ParseError, ParsedTarget, Refusal, TargetKind};
use crate::trace::RouterEvent;

/// Step (V1+, `parseProjectIngressHostname`): the hostname parsed with the standard rules (no
/// `.machines.` form; project slugs validated) and recorded; a parse error → `400 <code>`.
pub fn parsed_standard(ev: &mut RouterEvent) -> Result<ParsedTarget, Refusal> {
    let parsed = parse_standard(&ev.hostname)?;
    ev.parsed = Some(parsed.clone());
    Ok(parsed)
}

/// The hostname's labels (lowercase, empties dropped), as the error details show them.
pub fn labels(host: &str) -> Vec<String> {
    host.to_lowercase()
        .split('.')
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// A project slug (V1+): `^[a-z0-9-]+$`, with a letter, at most 50 characters, not `prj`/`org`.
pub fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 50
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && s != "prj"
        && s != "org"
}

/// V1+ parse (`parseProjectIngressHostname`, the shared module from V3 on).
pub fn parse_standard(host: &str) -> Result<ParsedTarget, ParseError> {
    let labels = labels(host);
    if labels.len() < 3 {
        return Err(ParseError::InvalidHostname);
    }
    let (id, port, explicit) = parse_token(&labels[0])?;
    let kind = if id.starts_with("mach_") {
        TargetKind::Machine
    } else if valid_slug(&id) {
        TargetKind::Project
    } else {
        return Err(ParseError::InvalidProjectSlug);
    };
    Ok(ParsedTarget {
        kind,
        id,
        target_port: port,
        port_explicit: explicit,
        root_domain: labels[1..].join("."),
    })
}

/// Step (V0): the hostname parsed and recorded; a parse error → `400 <code>`.
pub fn parsed_v0(ev: &mut RouterEvent) -> Result<ParsedTarget, Refusal> {
    let parsed = parse_v0(&ev.hostname)?;
    ev.parsed = Some(parsed.clone());
    Ok(parsed)
}

fn parse_port(s: &str) -> Option<u16> {
    proxy::target_host::parse_port(s)
}

/// `<port>__<id>` or `<id>` → (id, port, explicit).
fn parse_token(token: &str) -> Result<(String, u16, bool), ParseError> {
    match token.find("__") {
        None => Ok((token.to_string(), DEFAULT_PORT, false)),
        Some(0) => Err(ParseError::InvalidPort),
        Some(i) => {
            let (port, id) = (&token[..i], &token[i + 2..]);
            if id.is_empty() {
                return Err(ParseError::InvalidPort);
            }
            let port = parse_port(port).ok_or(ParseError::InvalidPort)?;
            Ok((id.to_string(), port, true))
        }
    }
}

/// V0 parse.
pub fn parse_v0(host: &str) -> Result<ParsedTarget, ParseError> {
    let lower = host.to_lowercase();
    let labels: Vec<&str> = lower.split('.').filter(|l| !l.is_empty()).collect();
    if labels.len() < 3 {
        return Err(ParseError::InvalidHostname);
    }
    if labels[1] == "machines" {
        if labels.len() < 4 {
            return Err(ParseError::InvalidHostname);
        }
        let (id, port, explicit) = parse_token(labels[0])?;
        if !id.starts_with("mach_") {
            return Err(ParseError::InvalidHostname);
        }
        return Ok(ParsedTarget {
            kind: TargetKind::Machine,
            id,
            target_port: port,
            port_explicit: explicit,
            root_domain: labels[2..].join("."),
        });
    }
    let (id, port, explicit) = parse_token(labels[0])?;
    let kind = if id.starts_with("mach_") {
        TargetKind::Machine
    } else {
        TargetKind::Project
    };
    Ok(ParsedTarget {
        kind,
        id,
        target_port: port,
        port_explicit: explicit,
        root_domain: labels[1..].join("."),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/behaviour.md §6, the standard-parse table (V1+ rules).
    #[test]
    fn standard_parse_table() {
        let ok = |h: &str| {
            let t = parse_standard(h).unwrap_or_else(|e| panic!("{h}: {e}"));
            (t.kind, t.id, t.target_port, t.port_explicit, t.root_domain)
        };
        let p = TargetKind::Project;
        let m = TargetKind::Machine;
        assert_eq!(
            ok("my-proj.iterate.app"),
            (
                p.clone(),
                "my-proj".into(),
                3000,
                false,
                "iterate.app".into()
            )
        );
        assert_eq!(ok("4096__my-proj.iterate.app").2, 4096);
        assert!(ok("4096__my-proj.iterate.app").3);
        assert_eq!(ok("mach_abc123.iterate.app").0, m);
        assert_eq!(
            ok("4096__mach_abc123.iterate.app"),
            (
                m.clone(),
                "mach_abc123".into(),
                4096,
                true,
                "iterate.app".into()
            )
        );
        assert_eq!(
            ok("my-proj.dev-mmkal-os.dev.iterate.app").4,
            "dev-mmkal-os.dev.iterate.app"
        );
        assert_eq!(
            ok("4096__banana.dev-jonas-os.dev.iterate.com"),
            (
                p.clone(),
                "banana".into(),
                4096,
                true,
                "dev-jonas-os.dev.iterate.com".into()
            )
        );
        assert_eq!(ok("My-Proj.Iterate.App").1, "my-proj");
        assert_eq!(
            parse_standard("iterate.app"),
            Err(ParseError::InvalidHostname)
        );
        for h in [
            "0__proj.iterate.app",
            "abc__proj.iterate.app",
            "__x.iterate.app",
        ] {
            assert_eq!(parse_standard(h), Err(ParseError::InvalidPort), "{h}");
        }
        for h in [
            "org.iterate.app",
            "banana_test.iterate.app",
            "1234.iterate.app",
            "prj.iterate.app",
        ] {
            assert_eq!(
                parse_standard(h),
                Err(ParseError::InvalidProjectSlug),
                "{h}"
            );
        }
        assert_eq!(
            ok("3000__mach_01kh7nrrtkfap865vjbmv559ta.jonas2.dev.iterate.com"),
            (
                m.clone(),
                "mach_01kh7nrrtkfap865vjbmv559ta".into(),
                3000,
                true,
                "jonas2.dev.iterate.com".into()
            )
        );
        assert_eq!(
            ok("mach_123.machines.iterate.town"),
            (
                m,
                "mach_123".into(),
                3000,
                false,
                "machines.iterate.town".into()
            )
        );
        assert_eq!(ok("misha.machines.iterate.town").1, "misha");
        assert_eq!(
            parse_standard(&format!("{}.iterate.app", "a".repeat(51))),
            Err(ParseError::InvalidProjectSlug)
        );
        assert_eq!(ok(&format!("{}.iterate.app", "a".repeat(50))).0, p);
    }

    fn ok(host: &str) -> (TargetKind, String, u16, bool, String) {
        let t = parse_v0(host).unwrap_or_else(|e| panic!("{host}: {e}"));
        (t.kind, t.id, t.target_port, t.port_explicit, t.root_domain)
    }

    #[test]
    fn seed_forms() {
        assert_eq!(
            ok("mach_123.machines.iterate.town"),
            (
                TargetKind::Machine,
                "mach_123".into(),
                3000,
                false,
                "iterate.town".into()
            )
        );
        assert_eq!(
            ok("4096__mach_123.machines.iterate.town"),
            (
                TargetKind::Machine,
                "mach_123".into(),
                4096,
                true,
                "iterate.town".into()
            )
        );
        assert_eq!(
            ok("misha.iterate.town"),
            (
                TargetKind::Project,
                "misha".into(),
                3000,
                false,
                "iterate.town".into()
            )
        );
        assert_eq!(
            ok("4096__misha.iterate.town"),
            (
                TargetKind::Project,
                "misha".into(),
                4096,
                true,
                "iterate.town".into()
            )
        );
    }

    /// docs/behaviour.md §6, the standard-parse table, V0 column where it differs.
    #[test]
    fn reference_parse_table_v0() {
        assert_eq!(ok("my-proj.iterate.app").1, "my-proj");
        assert_eq!(ok("4096__my-proj.iterate.app").2, 4096);
        assert_eq!(ok("mach_abc123.iterate.app").0, TargetKind::Machine);
        assert_eq!(ok("4096__mach_abc123.iterate.app").2, 4096);
        assert_eq!(
            ok("my-proj.dev-mmkal-os.dev.iterate.app").4,
            "dev-mmkal-os.dev.iterate.app"
        );
        assert_eq!(ok("4096__banana.dev-jonas-os.dev.iterate.com").1, "banana");
        assert_eq!(ok("My-Proj.Iterate.App").1, "my-proj");
        assert_eq!(parse_v0("iterate.app"), Err(ParseError::InvalidHostname));
        assert_eq!(
            parse_v0("0__proj.iterate.app"),
            Err(ParseError::InvalidPort)
        );
        assert_eq!(
            parse_v0("abc__proj.iterate.app"),
            Err(ParseError::InvalidPort)
        );
        // V0 does no slug validation: these are projects.
        assert_eq!(ok("org.iterate.app").0, TargetKind::Project);
        assert_eq!(ok("banana_test.iterate.app").1, "banana_test");
        assert_eq!(ok("1234.iterate.app").1, "1234");
        assert_eq!(
            ok("3000__mach_01kh7nrrtkfap865vjbmv559ta.jonas2.dev.iterate.com"),
            (
                TargetKind::Machine,
                "mach_01kh7nrrtkfap865vjbmv559ta".into(),
                3000,
                true,
                "jonas2.dev.iterate.com".into()
            )
        );
        assert_eq!(
            parse_v0("misha.machines.iterate.town"),
            Err(ParseError::InvalidHostname)
        );
        assert_eq!(parse_v0("__x.iterate.town"), Err(ParseError::InvalidPort));
        assert_eq!(
            parse_v0("4096__.iterate.town"),
            Err(ParseError::InvalidPort)
        );
        assert_eq!(
            parse_v0("mach_1.machines.town"),
            Err(ParseError::InvalidHostname)
        );
        assert_eq!(
            parse_v0("70000__mach_1.machines.iterate.town"),
            Err(ParseError::InvalidPort)
        );
        // Nested host under a matcher: label 0 is the token.
        assert_eq!(ok("a.b.iterate.town").1, "a");
    }
}
