//! The model the property tests compare the job with, written from the
//! README and Redis's `stringmatchlen`, not from the code under test: a glob
//! matcher of its own (a tokenizer and a backtracking match, where
//! `redis_janitor::glob` is an iterative matcher with fast paths), the rules
//! as plain data, the decision "first rule whose pattern and conditions hold
//! acts", and the rules file written as TOML text. `fuzz::` checks this
//! matcher against a real server's `KEYS`, so the model is itself tested.

use std::fmt::Write;

use redis_janitor::script::protocol::RESERVED_PREFIX;

/// One element of a glob, as Redis reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// This byte exactly (also an escaped one).
    Byte(u8),
    /// `?`: any one byte.
    Any,
    /// `*` (or a run of them): any bytes, none included.
    Star,
    /// `[...]`: one byte in (or, negated, not in) the ranges. A single byte
    /// is the range from it to itself.
    Class {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

/// Redis compares range ends as C `char`s, which are signed on the servers
/// we run: `[a-\xff]` is 0xff and 0x00..=0x61.
fn signed(b: u8) -> i8 {
    b as i8
}

/// `pattern` as tokens, and whether it is well formed. A `[` without its
/// `]` takes the rest of the pattern as its class, as Redis does, and a
/// trailing `\` is a literal backslash: neither is well formed, nor is a
/// class range from an ASCII byte to one of 0x80 or above.
fn tokens(pattern: &[u8]) -> (Vec<Token>, bool) {
    let mut out = Vec::new();
    let mut well_formed = true;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'*' => {
                if out.last() != Some(&Token::Star) {
                    out.push(Token::Star);
                }
                i += 1;
            }
            b'?' => {
                out.push(Token::Any);
                i += 1;
            }
            b'[' => {
                i += 1;
                let negated = pattern.get(i) == Some(&b'^');
                if negated {
                    i += 1;
                }
                let mut ranges = Vec::new();
                loop {
                    let rest = &pattern[i.min(pattern.len())..];
                    match rest {
                        [] => {
                            well_formed = false;
                            break;
                        }
                        [b'\\', b, ..] => {
                            ranges.push((*b, *b));
                            i += 2;
                        }
                        [b']', ..] => {
                            i += 1;
                            break;
                        }
                        [from, b'-', to, ..] => {
                            // Across the sign of a C char: other bytes on
                            // ARM servers than on x86 ones.
                            well_formed &= from.is_ascii() == to.is_ascii();
                            ranges.push((*from, *to));
                            i += 3;
                        }
                        [b, ..] => {
                            ranges.push((*b, *b));
                            i += 1;
                        }
                    }
                }
                out.push(Token::Class { negated, ranges });
            }
            b'\\' if i + 1 < pattern.len() => {
                out.push(Token::Byte(pattern[i + 1]));
                i += 2;
            }
            b => {
                // Only a backslash at the very end gets here.
                well_formed &= b != b'\\';
                out.push(Token::Byte(b));
                i += 1;
            }
        }
    }
    (out, well_formed)
}

/// The most `*`s Redis nests before it gives up on a match (a final `*`
/// does not count).
const MAX_NESTED_STARS: usize = 1000;

/// Whether a rules file may hold `pattern` (README: not empty, no unclosed
/// `[`, no trailing `\`, no range from ASCII to non-ASCII), and Redis
/// matches it without giving up.
pub fn glob_valid(pattern: &[u8]) -> bool {
    let (tokens, well_formed) = tokens(pattern);
    let nested = tokens.iter().filter(|t| **t == Token::Star).count()
        - usize::from(tokens.last() == Some(&Token::Star));
    !pattern.is_empty() && well_formed && nested <= MAX_NESTED_STARS
}

fn token_matches(token: &Token, b: u8) -> bool {
    match token {
        Token::Byte(want) => *want == b,
        Token::Any => true,
        Token::Star => unreachable!("a star spans bytes"),
        Token::Class { negated, ranges } => {
            let inside = ranges.iter().any(|&(from, to)| {
                let (lo, hi) = if signed(from) <= signed(to) {
                    (from, to)
                } else {
                    (to, from)
                };
                (signed(lo)..=signed(hi)).contains(&signed(b))
            });
            inside != *negated
        }
    }
}

/// Whether Redis's `KEYS pattern` returns `key`. The empty key is matched
/// only by the empty pattern and by `*` (which `KEYS` and `SCAN` answer
/// without matching); the nesting cap on `*` is not modelled (the tests'
/// patterns are short).
pub fn glob_matches(pattern: &[u8], key: &[u8]) -> bool {
    if key.is_empty() {
        return pattern.is_empty() || pattern == b"*";
    }
    let (tokens, _) = tokens(pattern);
    // failed[t][k]: tokens t.. already failed against key k..
    let mut failed = vec![vec![false; key.len() + 1]; tokens.len() + 1];
    match_from(&tokens, key, 0, 0, &mut failed)
}

fn match_from(tokens: &[Token], key: &[u8], t: usize, k: usize, failed: &mut [Vec<bool>]) -> bool {
    if failed[t][k] {
        return false;
    }
    let found = match tokens.get(t) {
        None => k == key.len(),
        Some(Token::Star) => (k..=key.len()).any(|at| match_from(tokens, key, t + 1, at, failed)),
        Some(token) => {
            k < key.len()
                && token_matches(token, key[k])
                && match_from(tokens, key, t + 1, k + 1, failed)
        }
    };
    if !found {
        failed[t][k] = true;
    }
    found
}

/// A key's type, as `TYPE` names it.
pub const TYPES: [&str; 6] = ["string", "list", "set", "zset", "hash", "stream"];

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Delete,
    /// Set the TTL to this many milliseconds.
    Expire(u64),
}

/// One rule as the model holds it: durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub pattern: String,
    pub no_ttl: bool,
    pub ttl_below: Option<u64>,
    pub ttl_above: Option<u64>,
    pub key_type: Option<&'static str>,
    pub act: Act,
}

/// What a key is at the moment a rule looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen<'a> {
    /// `PTTL`: milliseconds left, -1 for no expiry.
    pub pttl: i64,
    /// `TYPE`, when known (a key that a concurrent writer re-created with
    /// another type has no known type).
    pub kind: Option<&'a str>,
}

impl Rule {
    /// A delete without conditions: the script deletes without a look.
    pub fn is_unconditional_delete(&self) -> bool {
        self.act == Act::Delete
            && !self.no_ttl
            && self.ttl_below.is_none()
            && self.ttl_above.is_none()
            && self.key_type.is_none()
    }

    /// Whether the rule's name pattern takes `key`. No rule takes a key
    /// under the reserved prefix, the job's own (its lease and checkpoint),
    /// not even `*`.
    pub fn selects(&self, key: &[u8]) -> bool {
        !key.starts_with(RESERVED_PREFIX) && glob_matches(self.pattern.as_bytes(), key)
    }

    /// Whether the rule's TTL conditions hold for `pttl`, the implicit one of
    /// an expire rule included: it only shortens a key's life.
    pub fn ttl_holds(&self, pttl: i64) -> bool {
        let has_ttl = pttl >= 0;
        let bounded = self.ttl_below.is_some() || self.ttl_above.is_some();
        (!self.no_ttl || pttl == -1)
            && (!bounded || has_ttl)
            && self.ttl_below.is_none_or(|below| pttl < below as i64)
            && self.ttl_above.is_none_or(|above| pttl > above as i64)
            && match self.act {
                Act::Delete => true,
                Act::Expire(ttl) => pttl == -1 || pttl > ttl as i64,
            }
    }

    /// Whether every condition holds for `seen`: `None` when only the
    /// unknown type could tell.
    pub fn holds(&self, seen: Seen) -> Option<bool> {
        if !self.ttl_holds(seen.pttl) {
            return Some(false);
        }
        match (self.key_type, seen.kind) {
            (None, _) => Some(true),
            (Some(want), Some(kind)) => Some(want == kind),
            (Some(_), None) => None,
        }
    }
}

/// The model's decision for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No rule's pattern takes the key's name: the job never looks at it.
    NotSelected,
    /// Some pattern takes it, but no rule's conditions hold.
    Unchanged,
    /// This rule (0-based) acts on it.
    Acts(usize),
}

/// The first rule in file order whose pattern and conditions hold acts.
/// `seen.kind` must be known.
pub fn decide(rules: &[Rule], key: &[u8], seen: Seen) -> Decision {
    let mut selected = false;
    for (r, rule) in rules.iter().enumerate() {
        if !rule.selects(key) {
            continue;
        }
        selected = true;
        if rule.holds(seen).expect("decide needs the key's type") {
            return Decision::Acts(r);
        }
    }
    if selected {
        Decision::Unchanged
    } else {
        Decision::NotSelected
    }
}

/// Whether some rule's pattern takes `key`.
pub fn selected(rules: &[Rule], key: &[u8]) -> bool {
    rules.iter().any(|rule| rule.selects(key))
}

/// A duration in the spelling a rules file takes, in the largest unit that
/// keeps it exact.
pub fn duration(ms: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
        (1, "ms"),
    ];
    let (size, unit) = UNITS
        .into_iter()
        .find(|(size, _)| ms.is_multiple_of(*size))
        .expect("1 ms divides everything");
    format!("{}{unit}", ms / size)
}

/// `text` as a TOML basic string: `"` and `\` escaped, control characters as
/// `\uXXXX`.
pub fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The rules as a rules file.
pub fn rules_file(rules: &[Rule]) -> String {
    let mut out = String::new();
    for rule in rules {
        out.push_str("[[rule]]\n");
        let _ = writeln!(out, "name = {}", toml_string(&rule.name));
        let _ = writeln!(out, "pattern = {}", toml_string(&rule.pattern));
        if rule.no_ttl {
            out.push_str("no_ttl = true\n");
        }
        if let Some(ms) = rule.ttl_below {
            let _ = writeln!(out, "ttl_below = \"{}\"", duration(ms));
        }
        if let Some(ms) = rule.ttl_above {
            let _ = writeln!(out, "ttl_above = \"{}\"", duration(ms));
        }
        if let Some(kind) = rule.key_type {
            let _ = writeln!(out, "type = \"{kind}\"");
        }
        match rule.act {
            Act::Delete => out.push_str("action = \"delete\"\n"),
            Act::Expire(ms) => {
                let _ = writeln!(out, "action = \"expire\"\nttl = \"{}\"", duration(ms));
            }
        }
        out.push('\n');
    }
    out
}

/// Reverses `<[u8]>::escape_ascii`, as the debug log shows keys: `\t`, `\r`,
/// `\n`, `\'`, `\"`, `\\` and `\xNN`.
pub fn unescape(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let (byte, width) = match *bytes.get(i + 1)? {
            b't' => (b'\t', 2),
            b'r' => (b'\r', 2),
            b'n' => (b'\n', 2),
            b @ (b'\'' | b'"' | b'\\') => (b, 2),
            b'x' => {
                let hex = std::str::from_utf8(bytes.get(i + 2..i + 4)?).ok()?;
                (u8::from_str_radix(hex, 16).ok()?, 4)
            }
            _ => return None,
        };
        out.push(byte);
        i += width;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matcher_reads_globs_like_redis() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"*", b"", true),
            (b"**", b"", false),
            (b"a*", b"a", true),
            (b"*a*", b"bab", true),
            (b"a?c", b"abc", true),
            (b"a?c", b"ac", false),
            (b"[z-a]", b"b", true),
            (b"[^a]", b"\xff", true),
            (b"[a-\xff]", b"\x00", true),
            (b"[a-\xff]", b"b", false),
            (b"[a-]]", b"]", true),
            (b"[]a]", b"a", false),
            (b"[^]", b"x", true),
            (b"\\*", b"*", true),
            (b"\\*", b"a", false),
            (b"[\\]]", b"]", true),
            (b"a\\", b"a\\", true),
            (b"[^", b"a", true),
            (b"[^", b"ab", false),
        ];
        for (pattern, valid) in [
            (&b"a*"[..], true),
            (b"", false),
            (b"[ab", false),
            (b"[a-]", false),
            (b"[a-]]", true),
            (b"a\\", false),
            (b"a\\\\", true),
            (b"[\\", false),
            (b"[]", true),
        ] {
            assert_eq!(glob_valid(pattern), valid, "{}", pattern.escape_ascii());
        }
        assert!(glob_valid(&b"*a".repeat(1000)));
        assert!(!glob_valid(&b"*a".repeat(1001)));
        assert!(glob_valid(&[&b"*a".repeat(1000)[..], b"*"].concat()));
        for &(pattern, key, want) in cases {
            assert_eq!(
                glob_matches(pattern, key),
                want,
                "pattern {} key {}",
                pattern.escape_ascii(),
                key.escape_ascii()
            );
        }
    }

    #[test]
    fn durations_and_strings_are_spelled_for_toml() {
        assert_eq!(duration(3_600_000), "1h");
        assert_eq!(duration(90_000), "90s");
        assert_eq!(duration(1_500), "1500ms");
        assert_eq!(
            toml_string("a\"\\\u{0}\n\u{e9}"),
            "\"a\\\"\\\\\\u0000\\u000A\u{e9}\""
        );
    }

    #[test]
    fn unescape_reverses_escape_ascii() {
        let key = b"a\x00\xff\n\t\r\"'\\z".to_vec();
        let shown = key.escape_ascii().to_string();
        assert_eq!(unescape(&shown), Some(key));
        assert_eq!(unescape("\\q"), None);
    }
}
