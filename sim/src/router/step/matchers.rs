//! Host matchers: minimatch globs with `{ nocase: true, dot: true }`, as the OS worker uses them
//! for `PROJECT_INGRESS_PROXY_HOST_MATCHERS`.
//!
//! A hostname has no `/`, so minimatch's path segmentation never applies: `*` (and `**`) match any
//! run of characters *including dots* (docs/behaviour.md §3.2, observed: `*.iterate.town` matches
//! `a.b.iterate.town`). Also supported: `?` (one character), `[abc]`, `[a-z]`, `[!x]`/`[^x]`, and
//! `{a,b}` brace alternatives (not nested). Matching is case-insensitive.
//!
//! The steps: [`configured`] (no matchers → `500 ingress_not_configured`) and [`matching`] (no
//! matcher covers the host → `404 not_found`; the first that does is recorded).

use crate::model::{Code, Refusal};
use crate::trace::RouterEvent;

/// Step: at least one matcher is configured.
pub fn configured(matchers: &[HostGlob]) -> Result<(), Refusal> {
    if matchers.is_empty() {
        return Err(Code::IngressNotConfigured.into());
    }
    Ok(())
}

/// Step: a matcher covers the hostname (the first in configuration order is recorded).
pub fn matching(matchers: &[HostGlob], ev: &mut RouterEvent) -> Result<(), Refusal> {
    let m = matchers
        .iter()
        .find(|g| g.matches(&ev.hostname))
        .ok_or(Code::NotFound)?;
    ev.matched = Some(m.raw.clone());
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGlob {
    pub raw: String,
    /// Brace-expanded alternatives, lowercased.
    alternatives: Vec<Vec<Tok>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Any,
    Star,
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

impl HostGlob {
    pub fn new(raw: &str) -> HostGlob {
        let lower = raw.trim().to_lowercase();
        let alternatives = expand_braces(&lower).iter().map(|a| tokenize(a)).collect();
        HostGlob {
            raw: lower,
            alternatives,
        }
    }

    pub fn matches(&self, host: &str) -> bool {
        let h: Vec<char> = host.to_lowercase().chars().collect();
        self.alternatives.iter().any(|toks| match_toks(toks, &h))
    }
}

/// The env var format: split on `,`, trim, lowercase, drop empties, dedupe (first wins).
pub fn parse_matchers(csv: &str) -> Vec<HostGlob> {
    let mut out: Vec<HostGlob> = Vec::new();
    for item in csv.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let g = HostGlob::new(item);
        if !out.iter().any(|o| o.raw == g.raw) {
            out.push(g);
        }
    }
    out
}

fn expand_braces(s: &str) -> Vec<String> {
    let Some(open) = s.find('{') else {
        return vec![s.to_string()];
    };
    let Some(close_rel) = s[open..].find('}') else {
        return vec![s.to_string()];
    };
    let close = open + close_rel;
    let inner = &s[open + 1..close];
    if !inner.contains(',') {
        return vec![s.to_string()];
    }
    let (pre, post) = (&s[..open], &s[close + 1..]);
    inner
        .split(',')
        .flat_map(|alt| expand_braces(&format!("{pre}{alt}{post}")))
        .collect()
}

fn tokenize(s: &str) -> Vec<Tok> {
    let cs: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < cs.len() {
        match cs[i] {
            '*' => {
                if out.last() != Some(&Tok::Star) {
                    out.push(Tok::Star);
                }
                i += 1;
            }
            '?' => {
                out.push(Tok::Any);
                i += 1;
            }
            '[' => {
                // Find the closing bracket; an unclosed `[` is a literal.
                let close = cs[i + 1..]
                    .iter()
                    .position(|&c| c == ']')
                    .map(|p| p + i + 1);
                match close {
                    Some(close) if close > i + 1 => {
                        let mut body = &cs[i + 1..close];
                        let negated = matches!(body.first(), Some('!') | Some('^'));
                        if negated {
                            body = &body[1..];
                        }
                        let mut items = Vec::new();
                        let mut j = 0;
                        while j < body.len() {
                            if j + 2 < body.len() && body[j + 1] == '-' {
                                items.push((body[j], body[j + 2]));
                                j += 3;
                            } else {
                                items.push((body[j], body[j]));
                                j += 1;
                            }
                        }
                        out.push(Tok::Class { negated, items });
                        i = close + 1;
                    }
                    _ => {
                        out.push(Tok::Lit('['));
                        i += 1;
                    }
                }
            }
            '\\' if i + 1 < cs.len() => {
                out.push(Tok::Lit(cs[i + 1]));
                i += 2;
            }
            c => {
                out.push(Tok::Lit(c));
                i += 1;
            }
        }
    }
    out
}

/// Iterative wildcard matching with single-star backtracking (linear in practice).
fn match_toks(toks: &[Tok], s: &[char]) -> bool {
    let (mut t, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if t < toks.len() {
            match &toks[t] {
                Tok::Star => {
                    star = Some((t, i));
                    t += 1;
                    continue;
                }
                Tok::Any => {
                    t += 1;
                    i += 1;
                    continue;
                }
                Tok::Lit(c) if *c == s[i] => {
                    t += 1;
                    i += 1;
                    continue;
                }
                Tok::Class { negated, items } => {
                    let inside = items.iter().any(|(a, b)| *a <= s[i] && s[i] <= *b);
                    if inside != *negated {
                        t += 1;
                        i += 1;
                        continue;
                    }
                }
                Tok::Lit(_) => {}
            }
        }
        match star {
            Some((st, si)) => {
                t = st + 1;
                i = si + 1;
                star = Some((st, si + 1));
            }
            None => return false,
        }
    }
    toks[t..].iter().all(|x| *x == Tok::Star)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str =
        "*.local.iterate.town,*.*.dev.iterate.com,*.iterate.town,*.iterate.app,*.p.os.iterate.com";

    fn handled(host: &str) -> bool {
        parse_matchers(M).iter().any(|g| g.matches(host))
    }

    /// docs/behaviour.md §6, the matching table.
    #[test]
    fn reference_matching_table() {
        for h in [
            "misha.iterate.town",
            "mach_123.iterate.town",
            "misha.p.os.iterate.com",
            "misha.iterate.app",
            "mach_123.iterate.app",
            "misha.jonas.dev.iterate.com",
            "mach_123.jonas.dev.iterate.com",
            "a.b.iterate.town",
        ] {
            assert!(handled(h), "{h} should be handled");
        }
        for h in ["jonas.dev.iterate.com", "google.com", "misha.example.com"] {
            assert!(!handled(h), "{h} should not be handled");
        }
    }

    #[test]
    fn case_insensitive_and_dot_spanning() {
        let g = HostGlob::new("*.Iterate.Town");
        assert!(g.matches("MISHA.ITERATE.TOWN"));
        assert!(g.matches("4096__mach_1.machines.iterate.town"));
        assert!(!g.matches("iterate.town"));
    }

    #[test]
    fn other_operators() {
        assert!(HostGlob::new("m?sha.x.y").matches("misha.x.y"));
        assert!(HostGlob::new("[a-c]1.x").matches("b1.x"));
        assert!(!HostGlob::new("[!a-c]1.x").matches("b1.x"));
        assert!(HostGlob::new("*.{iterate.town,iterate.app}").matches("a.iterate.app"));
        assert!(!HostGlob::new("*.{iterate.town,iterate.app}").matches("a.iterate.com"));
    }

    #[test]
    fn parse_dedupes_and_trims() {
        let ms = parse_matchers(" *.A.com, *.a.com ,, ");
        assert_eq!(ms.len(), 1);
        assert_eq!(ms[0].raw, "*.a.com");
        assert!(parse_matchers("").is_empty());
        assert!(parse_matchers(" , ").is_empty());
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let g = HostGlob::new("*a*a*a*a*a*a*a*a*b");
        let s = "a".repeat(200);
        assert!(!g.matches(&s));
    }
}
