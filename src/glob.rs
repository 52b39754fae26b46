//! Redis glob patterns (`KEYS`, `SCAN ... MATCH`): a byte-exact port of
//! `stringmatchlen` from Redis's `src/util.c` (7.0 with the CVE-2022-36021
//! `skipLongerMatches` fix, plus the CVE-2024-31228 nesting cap that every
//! maintained Redis and Debian's 7.0.15 have), case-sensitive only, with cheap
//! fast paths for the common pattern shapes.
//!
//! The port reproduces Redis's quirks on purpose, because a janitor that
//! disagrees with `SCAN MATCH` about which keys a rule covers is worse than
//! useless. The main ones (all checked against a real server in
//! `tests/glob.rs`):
//!
//! * `*` never matches the empty key, except that `KEYS` and `SCAN` answer the
//!   exact pattern `*` without calling the matcher, so `*` does and `**` does
//!   not.
//! * Class ranges compare C `char`s, which are signed on x86_64: bytes >= 0x80
//!   sort *below* ASCII, so `[a-\xff]` means `[\xff-a]` = bytes 0xff and
//!   0x00..=0x61. Reversed ranges (`[z-a]`) are swapped. On aarch64, where
//!   `char` is unsigned, a range from an ASCII byte to a byte >= 0x80 means
//!   other bytes, so a rule may not have one ([`Glob::new`] refuses it).
//! * An unclosed `[` swallows the rest of the pattern as its class; `[^` alone
//!   matches any single byte; `[]` is an empty class that matches nothing; in
//!   `[a-]` the `]` is the range end, so the class is unclosed.
//! * A lone trailing `\` matches a literal backslash.

use std::fmt;

/// Redis (since the CVE-2024-31228 fix: 6.2.16, 7.2.6, 7.4.1, and Debian's
/// 7.0.15) gives up on a `*` once this many `*` are already being expanded
/// around it.
const MAX_NESTING: u32 = 1000;

/// A compiled Redis glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Box<[u8]>,
    /// Length of the literal run before the first `*`, `?`, `[` or `\`.
    prefix_len: usize,
    shape: Shape,
}

/// Pattern shapes with a matcher simpler than the general one. Each is
/// provably equivalent to `stringmatchlen` (and fuzzed against it): a literal
/// byte only ever matches itself, and with `*` only at the ends the one
/// freedom left is where the literal sits in the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Exactly `*`: KEYS/SCAN short-circuit it, so even the empty key matches.
    All,
    /// Two or more `*` only: the matcher needs at least one byte of key.
    NonEmpty,
    /// No special byte at all (including the empty pattern): equality.
    Exact,
    /// `literal*...`: the key starts with `pattern[..prefix_len]`.
    Prefix,
    /// `*...literal`: the key ends with `pattern[start..]`.
    Suffix { start: usize },
    /// `*...literal*...`: the key contains `pattern[start..end]`.
    Contains { start: usize, end: usize },
    /// Anything else: run the port of `stringmatchlen`.
    General,
}

/// Why [`Glob::new`] rejected a pattern that Redis would silently accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobError {
    message: String,
    offset: usize,
}

impl GlobError {
    fn new(offset: usize, what: &str) -> GlobError {
        GlobError {
            message: format!("{what} (at byte offset {offset})"),
            offset,
        }
    }

    /// Byte offset in the pattern where the problem is.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for GlobError {}

impl Glob {
    /// Parse and validate a pattern. Errors are for patterns that are almost
    /// certainly mistakes, even though Redis accepts them: the empty pattern,
    /// an unclosed `[`, a trailing lone `\`.
    pub fn new(pattern: &[u8]) -> Result<Glob, GlobError> {
        validate(pattern)?;
        Ok(Glob::new_unchecked(pattern))
    }

    /// Build without validation: every byte string is a pattern Redis accepts,
    /// and this one then behaves exactly like Redis on it.
    pub fn new_unchecked(pattern: &[u8]) -> Glob {
        Glob {
            pattern: pattern.into(),
            prefix_len: pattern.iter().take_while(|&&b| !is_special(b)).count(),
            shape: classify(pattern),
        }
    }

    /// True when `key` matches, exactly as Redis's `SCAN MATCH` / `KEYS`
    /// would decide (including their short-circuit of the pattern `*`).
    pub fn matches(&self, key: &[u8]) -> bool {
        let p = &*self.pattern;
        match self.shape {
            Shape::All => true,
            Shape::NonEmpty => !key.is_empty(),
            Shape::Exact => key == p,
            Shape::Prefix => key.starts_with(&p[..self.prefix_len]),
            Shape::Suffix { start } => key.ends_with(&p[start..]),
            Shape::Contains { start, end } => contains(key, &p[start..end]),
            Shape::General => string_match(p, key),
        }
    }

    /// The literal prefix before the first special character (`*?[\`), e.g.
    /// `b"cache:"` for `cache:*`. Every matching key starts with it.
    pub fn literal_prefix(&self) -> &[u8] {
        &self.pattern[..self.prefix_len]
    }

    /// True when the pattern matches every key. That is only `*`: `**` (and
    /// any other pattern) does not match the empty key in Redis.
    pub fn matches_everything(&self) -> bool {
        self.shape == Shape::All
    }

    /// The pattern as given.
    pub fn as_bytes(&self) -> &[u8] {
        &self.pattern
    }

    /// The pattern as a name matcher for the clean script's Lua, which
    /// `script::compile` renders into the script. The parts between the `*`s come
    /// from this port's own parse, and each class is spelled as the set of
    /// bytes [`match_class`] accepts, so every Redis quirk (signed ranges,
    /// escapes, `]` eaten by a range) carries over exactly.
    pub fn lua_matcher(&self) -> LuaMatcher {
        match self.shape {
            Shape::All => return LuaMatcher::All,
            Shape::Prefix => return LuaMatcher::Literal(self.literal_prefix().to_vec()),
            _ => {}
        }
        let Some(parts) = lua_parts(&self.pattern) else {
            return LuaMatcher::Never;
        };
        let (head, rest) = parts.split_first().expect("a pattern has a first part");
        let (tail, middles) = rest
            .split_last()
            .map_or((&[][..], &[][..]), |(t, m)| (&t[..], m));
        let star = !rest.is_empty();
        if star && !head.is_empty() && tail.is_empty() && middles.is_empty() {
            return LuaMatcher::Prefix(head.concat());
        }
        LuaMatcher::Parts(GlobParts {
            head: head.concat(),
            head_len: head.len(),
            tail: tail.concat(),
            tail_len: tail.len(),
            star,
            middles: middles.iter().map(|m| m.concat()).collect(),
        })
    }
}

/// How the clean script tells whether a key's name matches a pattern. The
/// byte strings are Lua patterns (unanchored: the script anchors them) of
/// one item per key byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LuaMatcher {
    /// Every key SCAN returns: the pattern is `*`.
    All,
    /// No key: the pattern has a class that accepts no byte.
    Never,
    /// Literal bytes then a `*`: the key starts with those bytes (a plain
    /// `string.find` tells, which costs Redis less than a Lua pattern).
    Literal(Vec<u8>),
    /// A fixed-width head then a `*`: the key starts with what it matches.
    Prefix(Vec<u8>),
    /// Any other glob, matched by its parts.
    Parts(GlobParts),
}

/// A glob split at its `*`s into a head that starts the key, a tail that
/// ends it and middles in between, as Lua patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobParts {
    pub head: Vec<u8>,
    /// Key bytes the head matches.
    pub head_len: usize,
    pub tail: Vec<u8>,
    /// Key bytes the tail matches.
    pub tail_len: usize,
    /// Whether the glob has any `*` (without one, the key is exactly the head).
    pub star: bool,
    pub middles: Vec<Vec<u8>>,
}

/// One key byte's worth of a Lua pattern: a literal, `.` or a class.
type LuaItem = Vec<u8>;

/// The pattern split at its `*`s into fixed-width parts (the first and last
/// may be empty), each a list of Lua pattern items; `None` when some class
/// accepts no byte at all, so no key can match.
fn lua_parts(p: &[u8]) -> Option<Vec<Vec<LuaItem>>> {
    let (mut parts, mut part) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'*' => {
                while byte_at(p, i + 1) == b'*' {
                    i += 1;
                }
                parts.push(std::mem::take(&mut part));
            }
            b'?' => part.push(b".".to_vec()),
            b'[' => {
                let accepted: Vec<bool> =
                    (0..=255).map(|c| match_class(p, i, c).is_some()).collect();
                part.push(lua_class(&accepted)?);
                // Validated patterns close every class.
                i = class_end(p, i).expect("a validated pattern") - 1;
            }
            b => {
                // Validated patterns have no trailing lone `\`.
                let literal = if b == b'\\' {
                    i += 1;
                    p[i]
                } else {
                    b
                };
                part.push(lua_literal(literal));
            }
        }
        i += 1;
    }
    parts.push(part);
    Some(parts)
}

/// A byte as a Lua pattern item or class member: alphanumerics as they are,
/// NUL as `%z` (Lua 5.1 patterns end at a NUL), any other byte escaped.
fn lua_literal(b: u8) -> Vec<u8> {
    match b {
        0 => b"%z".to_vec(),
        b if b.is_ascii_alphanumeric() => vec![b],
        b => vec![b'%', b],
    }
}

/// The Lua item for a class accepting the bytes `accepted[c]`: `.` for all
/// of them, a `[...]` (or, when shorter, `[^...]`) set otherwise; `None`
/// for none. Runs of alphanumerics become Lua ranges (`a-z`), whose ends
/// Lua compares as unsigned bytes like the set itself.
fn lua_class(accepted: &[bool]) -> Option<LuaItem> {
    let count = accepted.iter().filter(|&&a| a).count();
    if count == 0 {
        return None;
    }
    if count == 256 {
        return Some(b".".to_vec());
    }
    let negate = count > 128;
    let mut item = if negate {
        b"[^".to_vec()
    } else {
        b"[".to_vec()
    };
    let mut c = 0;
    while c < 256 {
        if accepted[c] == negate {
            c += 1;
            continue;
        }
        let mut end = c;
        while end + 1 < 256
            && accepted[end + 1] != negate
            && (end as u8 + 1).is_ascii_alphanumeric()
            && (c as u8).is_ascii_alphanumeric()
        {
            end += 1;
        }
        if end - c >= 2 {
            item.extend_from_slice(&[c as u8, b'-', end as u8]);
        } else {
            for b in c..=end {
                item.extend(lua_literal(b as u8));
            }
        }
        c = end + 1;
    }
    item.push(b']');
    Some(item)
}

/// The bytes that stop a literal run (`]`, `^` and `-` are only special
/// inside a class, which needs a `[` first).
fn is_special(b: u8) -> bool {
    matches!(b, b'*' | b'?' | b'[' | b'\\')
}

/// Pick the cheapest matcher that gives the same answers as `stringmatchlen`.
fn classify(p: &[u8]) -> Shape {
    if p == b"*" {
        return Shape::All;
    }
    let lead = p.iter().take_while(|&&b| b == b'*').count();
    if lead > 0 && lead == p.len() {
        return Shape::NonEmpty;
    }
    let trail = p[lead..].iter().rev().take_while(|&&b| b == b'*').count();
    let end = p.len() - trail;
    if p[lead..end].iter().any(|&b| is_special(b)) {
        return Shape::General;
    }
    match (lead > 0, trail > 0) {
        (false, false) => Shape::Exact,
        (false, true) => Shape::Prefix,
        (true, false) => Shape::Suffix { start: lead },
        (true, true) => Shape::Contains { start: lead, end },
    }
}

/// Substring test; `needle` is never empty here (that shape is `NonEmpty`).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Redis reads the NUL terminator (its strings are sds) where the port would
/// index past the end; those reads only ever compare against `*`, `^`, `\` or
/// `]`, so a 0 here reproduces them exactly, even for patterns holding NULs.
fn byte_at(p: &[u8], i: usize) -> u8 {
    p.get(i).copied().unwrap_or(0)
}

/// Outcome of one `stringmatchlen_impl` call up to its (single) `*`.
enum Frame {
    Matched,
    Failed,
    /// A non-final `*` at key offset `si`; the rest of the pattern is `p[rest..]`.
    Star {
        rest: usize,
        si: usize,
    },
}

/// `stringmatchlen(pattern, key, nocase=0)` without the KEYS/SCAN `*`
/// short-circuit.
///
/// Redis recurses once per `*` and tries the rest of the pattern at each key
/// offset. Thanks to `skipLongerMatches`, once a `*` is expanded the answer is
/// that `*`'s: either a match, or "no match at all" which unwinds every outer
/// `*` too. So only the innermost `*` is ever retried, and this loop keeps just
/// that one instead of a call stack: no recursion (a pattern with 100k `*`
/// cannot overflow the stack) and O(pattern × key) time.
fn string_match(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    let mut nesting = 0;
    loop {
        match run_frame(p, pi, s, si) {
            Frame::Matched => return true,
            Frame::Star { rest, si: at } => {
                // Entering a new `*` loop: outer ones are now decided by it.
                nesting += 1;
                if nesting > MAX_NESTING {
                    return false;
                }
                star = Some((rest, at));
                (pi, si) = (rest, at);
            }
            Frame::Failed => {
                let Some((rest, at)) = star else { return false };
                // Redis's `*` loop only tries non-empty key suffixes; when they
                // run out it sets skipLongerMatches and everything fails.
                if at + 1 >= s.len() {
                    return false;
                }
                star = Some((rest, at + 1));
                (pi, si) = (rest, at + 1);
            }
        }
    }
}

/// The body of `stringmatchlen_impl` from pattern offset `pi` and key offset
/// `si`, stopping at the first `*` that is not the last pattern byte.
fn run_frame(p: &[u8], mut pi: usize, s: &[u8], mut si: usize) -> Frame {
    // Redis loops while BOTH are non-empty, which is why `*` (the matcher,
    // not the KEYS shortcut) fails on the empty key.
    while pi < p.len() && si < s.len() {
        match p[pi] {
            b'*' => {
                while byte_at(p, pi + 1) == b'*' {
                    pi += 1;
                }
                if pi + 1 == p.len() {
                    return Frame::Matched;
                }
                return Frame::Star { rest: pi + 1, si };
            }
            b'?' => {}
            b'[' => match match_class(p, pi, s[si]) {
                Some(last) => pi = last,
                None => return Frame::Failed,
            },
            b => {
                // `\x` matches `x`; a lone trailing `\` matches itself.
                if b == b'\\' && p.len() - pi >= 2 {
                    pi += 1;
                }
                if p[pi] != s[si] {
                    return Frame::Failed;
                }
            }
        }
        pi += 1;
        si += 1;
        if si == s.len() {
            // Key used up: only trailing `*`s may remain.
            while byte_at(p, pi) == b'*' {
                pi += 1;
            }
            break;
        }
    }
    if pi == p.len() && si == s.len() {
        Frame::Matched
    } else {
        Frame::Failed
    }
}

/// Match key byte `c` against the class opening at `p[open] == b'['`. Returns
/// the offset of the class's last pattern byte (its `]`, or the pattern's last
/// byte when unclosed) when `c` is accepted.
fn match_class(p: &[u8], open: usize, c: u8) -> Option<usize> {
    let mut pi = open + 1;
    let negate = byte_at(p, pi) == b'^';
    if negate {
        pi += 1;
    }
    let mut hit = false;
    loop {
        let left = p.len() - pi;
        let b = byte_at(p, pi);
        if b == b'\\' && left >= 2 {
            pi += 1;
            hit |= p[pi] == c;
        } else if b == b']' {
            break;
        } else if left == 0 {
            // Unclosed: Redis steps back onto the last byte and stops.
            pi -= 1;
            break;
        } else if left >= 3 && p[pi + 1] == b'-' {
            hit |= in_range(p[pi], p[pi + 2], c);
            pi += 2;
        } else {
            hit |= b == c;
        }
        pi += 1;
    }
    (hit != negate).then_some(pi)
}

/// `[a-b]` as Redis evaluates it: bounds and byte are C `char`s, signed on
/// x86_64 (the platform Redis runs on), so bytes >= 0x80 compare as negative
/// numbers. Reversed bounds are swapped.
fn in_range(a: u8, b: u8, c: u8) -> bool {
    let (a, b, c) = (a as i8, b as i8, c as i8);
    (a.min(b)..=a.max(b)).contains(&c)
}

/// Walk the pattern the way Redis parses it and reject likely mistakes.
fn validate(p: &[u8]) -> Result<(), GlobError> {
    if p.is_empty() {
        return Err(GlobError::new(
            0,
            "empty pattern (it matches only the empty key)",
        ));
    }
    let mut i = 0;
    // Runs of `*` followed by more pattern: how deep Redis's matcher nests.
    let mut nesting = 0;
    while i < p.len() {
        i = match p[i] {
            b'*' if byte_at(p, i + 1) != b'*' && i + 1 < p.len() => {
                nesting += 1;
                if nesting > MAX_NESTING {
                    return Err(GlobError::new(
                        i,
                        &format!(
                            "more than {MAX_NESTING} runs of '*' followed by more pattern \
                             (Redis gives up matching such a pattern)"
                        ),
                    ));
                }
                i + 1
            }
            b'\\' if i + 1 == p.len() => {
                return Err(GlobError::new(
                    i,
                    "trailing lone '\\' (Redis matches it as a literal backslash; write '\\\\' for that)",
                ));
            }
            b'\\' => i + 2,
            b'[' => class_end(p, i)?,
            _ => i + 1,
        };
    }
    Ok(())
}

/// Offset just past the `]` closing the class opened at `p[open]`, parsed
/// exactly like `stringmatchlen` (escapes, and ranges that may eat a `]`).
fn class_end(p: &[u8], open: usize) -> Result<usize, GlobError> {
    let mut i = open + 1;
    if p.get(i) == Some(&b'^') {
        i += 1;
    }
    let mut ate_bracket = false;
    loop {
        let left = p.len() - i;
        match p.get(i) {
            Some(b'\\') if left >= 2 => i += 2,
            Some(b']') => return Ok(i + 1),
            None => return Err(unclosed(open, ate_bracket)),
            Some(&start) if left >= 3 && p[i + 1] == b'-' => {
                if start.is_ascii() != p[i + 2].is_ascii() {
                    return Err(GlobError::new(
                        i,
                        "a class range from an ASCII byte to a byte of 0x80 or above \
                         (a non-ASCII character is several bytes) means different bytes \
                         on x86 and ARM servers, whose C chars differ in sign: list the \
                         bytes, or keep each range within ASCII or within 0x80-0xff",
                    ));
                }
                ate_bracket |= p[i + 2] == b']';
                i += 3;
            }
            Some(_) => i += 1,
        }
    }
}

fn unclosed(open: usize, ate_bracket: bool) -> GlobError {
    let hint = if ate_bracket {
        "; a ']' right after '-' is a range end, not the closing bracket: put '-' first or escape it"
    } else {
        ""
    };
    GlobError::new(
        open,
        &format!("unclosed '[' (Redis reads the rest of the pattern as the class{hint})"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straight transliteration of Redis's recursive `stringmatchlen_impl`
    /// (nocase = 0), kept as an oracle for the iterative `string_match`.
    /// Offsets index the whole buffers; C's `patternLen`/`stringLen` are the
    /// distances to their ends, which C keeps in lockstep with the pointers.
    fn reference(p: &[u8], s: &[u8]) -> bool {
        let mut skip = false;
        reference_impl(p, 0, s, 0, &mut skip, 0)
    }

    fn reference_impl(
        pat: &[u8],
        mut pp: usize,
        st: &[u8],
        mut sp: usize,
        skip: &mut bool,
        nesting: u32,
    ) -> bool {
        if nesting > 1000 {
            return false;
        }
        let pb = |i: usize| byte_at(pat, i);
        let pl = |pp: usize| pat.len() - pp;
        while pl(pp) != 0 && sp < st.len() {
            match pb(pp) {
                b'*' => {
                    while pl(pp) != 0 && pb(pp + 1) == b'*' {
                        pp += 1;
                    }
                    if pl(pp) == 1 {
                        return true;
                    }
                    while sp < st.len() {
                        if reference_impl(pat, pp + 1, st, sp, skip, nesting + 1) {
                            return true;
                        }
                        if *skip {
                            return false;
                        }
                        sp += 1;
                    }
                    *skip = true;
                    return false;
                }
                b'?' => sp += 1,
                b'[' => {
                    pp += 1;
                    let not = pb(pp) == b'^';
                    if not {
                        pp += 1;
                    }
                    let mut m = false;
                    loop {
                        if pb(pp) == b'\\' && pl(pp) >= 2 {
                            pp += 1;
                            if pb(pp) == st[sp] {
                                m = true;
                            }
                        } else if pb(pp) == b']' {
                            break;
                        } else if pl(pp) == 0 {
                            pp -= 1;
                            break;
                        } else if pl(pp) >= 3 && pb(pp + 1) == b'-' {
                            let mut start = i32::from(pb(pp) as i8);
                            let mut end = i32::from(pb(pp + 2) as i8);
                            let c = i32::from(st[sp] as i8);
                            if start > end {
                                std::mem::swap(&mut start, &mut end);
                            }
                            pp += 2;
                            if c >= start && c <= end {
                                m = true;
                            }
                        } else if pb(pp) == st[sp] {
                            m = true;
                        }
                        pp += 1;
                    }
                    if not {
                        m = !m;
                    }
                    if !m {
                        return false;
                    }
                    sp += 1;
                }
                _ => {
                    if pb(pp) == b'\\' && pl(pp) >= 2 {
                        pp += 1;
                    }
                    if pb(pp) != st[sp] {
                        return false;
                    }
                    sp += 1;
                }
            }
            pp += 1;
            if sp == st.len() {
                while pb(pp) == b'*' {
                    pp += 1;
                }
                break;
            }
        }
        pl(pp) == 0 && sp == st.len()
    }

    /// What KEYS returns: the reference plus the `*` short-circuit.
    fn keys_semantics(p: &[u8], k: &[u8]) -> bool {
        p == b"*" || reference(p, k)
    }

    fn m(p: &[u8], k: &[u8]) -> bool {
        Glob::new_unchecked(p).matches(k)
    }

    /// (pattern, key, Redis's answer). Every row was checked with `KEYS`
    /// against redis-server 7.0.15 (see also tests/glob.rs, which re-checks
    /// the same kinds of cases against a live server).
    const CASES: &[(&[u8], &[u8], bool)] = &[
        // Empty pattern / empty key, and the `*` short-circuit.
        (b"", b"", true),
        (b"", b"a", false),
        (b"*", b"", true),
        (b"**", b"", false),
        (b"**", b"a", true),
        (b"?", b"", false),
        (b"a*", b"a", true),
        (b"a**", b"a", true),
        (b"a*b", b"a", false),
        (b"*a", b"a", true),
        (b"*a*", b"bab", true),
        (b"*\\", b"a\\", true),
        // `?` matches any single byte, NUL included.
        (b"?", b"\x00", true),
        (b"?", b"aa", false),
        // Classes.
        (b"[abc]", b"b", true),
        (b"[^a]", b"a", false),
        (b"[^a]", b"\xff", true),
        (b"[a-c]", b"b", true),
        (b"[z-a]", b"b", true),
        (b"[z-a]", b"{", false),
        (b"[-a]", b"-", true),
        (b"[a-b-]", b"-", true),
        // Signed chars: 0xff is -1, 0x80 is -128.
        (b"[a-\xff]", b"\xff", true),
        (b"[a-\xff]", b"\x00", true),
        (b"[a-\xff]", b"_", true),
        (b"[a-\xff]", b"b", false),
        (b"[a-\xff]", b"\x80", false),
        (b"[\xff-a]", b"\x00", true),
        (b"[\x80-\xff]", b"\x80", true),
        (b"[\x80-\xff]", b"\xff", true),
        (b"[\x80-\xff]", b"\x7f", false),
        (b"[\x80-\xff]", b"\\", false),
        (b"[^\x80-\xff]", b"\x7f", true),
        (b"[\x00-\x00]", b"\x00", true),
        // `]` as a range end leaves the class unclosed: `[a-]` is `]`..=`a`.
        (b"[a-]", b"]", true),
        (b"[a-]", b"^", true),
        (b"[a-]", b"a", true),
        (b"[a-]", b"-", false),
        (b"[a-]", b"b", false),
        // Empty class and `[^]`.
        (b"[]a]", b"a", false),
        (b"[]a]", b"]", false),
        (b"[^]a]", b"xa]", true),
        // Unclosed classes read to the end.
        (b"[", b"[", false),
        (b"[^", b"a", true),
        (b"[^", b"\x00", true),
        (b"[^", b"ab", false),
        (b"[^a", b"b", true),
        (b"[^a", b"a", false),
        (b"[a\\", b"\\", true),
        (b"[a\\", b"a", true),
        (b"[\\", b"\\", true),
        // Escapes.
        (b"\\", b"\\", true),
        (b"a\\", b"a\\", true),
        (b"\\\\", b"\\", true),
        (b"\\*", b"*", true),
        (b"\\*", b"a", false),
        (b"[\\\\]", b"\\", true),
        (b"[\\]]", b"]", true),
        // Hostile patterns terminate (skipLongerMatches).
        (
            b"a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b",
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            false,
        ),
    ];

    #[test]
    fn corner_cases_match_redis() {
        for &(p, k, want) in CASES {
            let (pe, ke) = (p.escape_ascii(), k.escape_ascii());
            assert_eq!(m(p, k), want, "pattern {pe} key {ke}");
            assert_eq!(
                keys_semantics(p, k),
                want,
                "reference: pattern {pe} key {ke}"
            );
        }
    }

    /// Redis gives up on the 1001st nested `*` (verified: `*a` x 1000 matches
    /// `a` x 1100, `*a` x 1001 does not); a final `*` does not count.
    #[test]
    fn nesting_cap_matches_redis() {
        let key = b"a".repeat(1100);
        assert!(m(&b"*a".repeat(1000), &key));
        assert!(!m(&b"*a".repeat(1001), &key));
        let mut p = b"*a".repeat(1000);
        p.push(b'*');
        assert!(m(&p, &key));
        // `**` counts once, like any run of stars.
        assert!(m(&b"**a".repeat(1000), &key));
        assert!(!m(&b"**a".repeat(1001), &key));
        assert!(!reference(&b"*a".repeat(1001), &key));
    }

    #[test]
    fn deep_and_hostile_patterns_are_cheap() {
        let key = b"a".repeat(10_000);
        let p = b"a*".repeat(50_000);
        assert!(!m(&[&p[..], b"b"].concat(), &key));
        assert!(m(&b"*".repeat(100_000), &key));
        let start = std::time::Instant::now();
        assert!(!m(&[&b"*a".repeat(900)[..], b"b"].concat(), &key));
        assert!(start.elapsed().as_secs() < 5);
    }

    /// A random byte string over `alphabet`, at most `max_len` long.
    fn random_bytes(rng: &mut fastrand::Rng, alphabet: &[u8], max_len: usize) -> Vec<u8> {
        let len = rng.usize(..=max_len);
        (0..len)
            .map(|_| alphabet[rng.usize(..alphabet.len())])
            .collect()
    }

    /// The matcher, fast paths included, decides like `KEYS` would.
    fn assert_agrees_with_keys(p: &[u8], k: &[u8]) {
        assert_eq!(
            m(p, k),
            keys_semantics(p, k),
            "pattern {} key {}",
            p.escape_ascii(),
            k.escape_ascii()
        );
    }

    /// The iterative matcher and the fast paths agree with the recursive
    /// transliteration of Redis on random inputs.
    #[test]
    fn fuzz_against_reference() {
        let alphabet = b"ab-][^\\*?\xff\x80\x00";
        let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200_000 {
            let p = random_bytes(&mut rng, alphabet, 10);
            let k = random_bytes(&mut rng, alphabet, 12);
            assert_agrees_with_keys(&p, &k);
            assert_eq!(string_match(&p, &k), reference(&p, &k));
        }
    }

    /// Long keys and star-heavy patterns: exercises the `*` backtracking.
    #[test]
    fn fuzz_backtracking_against_reference() {
        let mut rng = fastrand::Rng::with_seed(0x2545_f491_4f6c_dd1d);
        for _ in 0..50_000 {
            let p = random_bytes(&mut rng, b"ab**?[]", 14);
            let k = random_bytes(&mut rng, b"ab]", 40);
            assert_agrees_with_keys(&p, &k);
        }
    }

    #[test]
    fn fast_paths_are_chosen() {
        let shape = |p: &[u8]| Glob::new_unchecked(p).shape;
        assert_eq!(shape(b"*"), Shape::All);
        assert_eq!(shape(b"***"), Shape::NonEmpty);
        assert_eq!(shape(b""), Shape::Exact);
        assert_eq!(shape(b"a:b"), Shape::Exact);
        assert_eq!(shape(b"cache:*"), Shape::Prefix);
        assert_eq!(shape(b"**.png"), Shape::Suffix { start: 2 });
        assert_eq!(shape(b"*x**"), Shape::Contains { start: 1, end: 2 });
        assert_eq!(shape(b"a*b"), Shape::General);
        assert_eq!(shape(b"a\\*"), Shape::General);
    }

    #[test]
    fn literal_prefix_and_everything() {
        let g = |p: &[u8]| Glob::new_unchecked(p);
        assert_eq!(g(b"cache:*").literal_prefix(), b"cache:");
        assert_eq!(g(b"user:[0-9]*").literal_prefix(), b"user:");
        assert_eq!(g(b"a\\*b").literal_prefix(), b"a");
        assert_eq!(g(b"x]^-y").literal_prefix(), b"x]^-y");
        assert_eq!(g(b"?x").literal_prefix(), b"");
        assert!(g(b"*").matches_everything());
        assert!(!g(b"**").matches_everything());
        assert!(!g(b"*a").matches_everything());
        assert_eq!(g(b"k?").as_bytes(), b"k?");
    }

    #[test]
    fn validation() {
        let err = |p: &[u8]| Glob::new(p).unwrap_err();
        assert_eq!(err(b"").offset(), 0);
        assert_eq!(err(b"ab[cd").offset(), 2);
        assert_eq!(err(b"x[^").offset(), 1);
        assert_eq!(err(b"a\\").offset(), 1);
        assert_eq!(err(b"a\\\\\\").offset(), 3);
        let e = err(b"[a-]");
        assert_eq!(e.offset(), 0);
        assert!(e.to_string().contains("range end"), "{e}");
        assert!(err(b"ab[cd").to_string().contains("offset 2"));
        assert!(!err(b"ab[cd").to_string().contains('\n'));
        // `[\` : the escape has nothing to escape, the class is unclosed.
        assert_eq!(err(b"[\\").offset(), 0);
        // A range across the sign of a C char: other bytes on ARM than on
        // x86, in either order; a UTF-8 end is its first byte.
        for (mixed, offset) in [
            (&b"k[a-\xff]"[..], 2),
            (b"k[\x80-a]", 2),
            ("k[a-\u{e9}]".as_bytes(), 2),
            (b"[a-\xff]", 1),
            (b"key:[xa-\xff]", 6),
        ] {
            let e = err(mixed);
            assert_eq!(e.offset(), offset, "{}", mixed.escape_ascii());
            assert!(e.to_string().contains("x86 and ARM"), "{e}");
        }
        for ok in [
            &b"*"[..],
            b"a\\\\",
            b"[]",
            b"[\\]]",
            b"[a-]]",
            b"\\[",
            b"[^]",
            b"k:[a-z]*",
            b"[\x80-\xff]",
            b"[^\x80-\xbf]",
            b"[a\xff]",
        ] {
            assert!(Glob::new(ok).is_ok(), "{}", ok.escape_ascii());
        }
        assert!(Glob::new(&b"*a".repeat(1000)).is_ok());
        let mut trailing = b"*a".repeat(1000);
        trailing.push(b'*');
        assert!(Glob::new(&trailing).is_ok());
        let e = err(&b"*a".repeat(1001));
        assert_eq!(e.offset(), 2000);
        assert!(e.to_string().contains("gives up"), "{e}");
    }

    /// The matcher in a compact spelling: `A`, `N`, `L` and the literal
    /// prefix, `P` and the prefix, or `G` and its fields separated by `|`.
    fn lua(p: &[u8]) -> String {
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        match Glob::new(p).unwrap().lua_matcher() {
            LuaMatcher::All => "A".into(),
            LuaMatcher::Never => "N".into(),
            LuaMatcher::Literal(prefix) => format!("L{}", text(&prefix)),
            LuaMatcher::Prefix(head) => format!("P{}", text(&head)),
            LuaMatcher::Parts(parts) => {
                let mut fields = vec![
                    text(&parts.head),
                    parts.head_len.to_string(),
                    text(&parts.tail),
                    parts.tail_len.to_string(),
                    u8::from(parts.star).to_string(),
                ];
                fields.extend(parts.middles.iter().map(|m| text(m)));
                format!("G|{}", fields.join("|"))
            }
        }
    }

    #[test]
    fn lua_matchers_split_at_stars() {
        assert_eq!(lua(b"*"), "A");
        assert_eq!(lua(b"**"), "G||0||0|1");
        assert_eq!(lua(b"cache:*"), "Lcache:");
        assert_eq!(lua(b"100%:**"), "L100%:");
        assert_eq!(lua(b"cache\\:*"), "Pcache%:");
        assert_eq!(lua(b"c?[ab]**"), "Pc.[ab]");
        assert_eq!(lua(b"a?c"), "G|a.c|3||0|0");
        assert_eq!(lua(b"*x*y*z"), "G||0|z|1|1|x|y");
        assert_eq!(lua(b"a\\**b*\\*"), "G|a%*|2|%*|1|1|b");
        assert_eq!(lua(b"a[]b"), "N");
    }

    #[test]
    fn lua_classes_are_the_byte_sets_redis_accepts() {
        assert_eq!(lua(b"[a-z0-9_]"), "G|[0-9%_a-z]|1||0|0");
        assert_eq!(lua(b"[^a]"), "G|[^a]|1||0|0");
        assert_eq!(lua(b"[^]"), "G|.|1||0|0");
        assert_eq!(lua(b"[z-x]"), "G|[x-z]|1||0|0");
        assert_eq!(lua(b"[\\]-]"), "G|[%-%]]|1||0|0");
        // 0xff and 0x00..=0x61 (what x86 makes of `[a-\xff]`, which a rule
        // may not have: see `validation`), NUL spelled %z.
        let LuaMatcher::Parts(GlobParts { head: class, .. }) =
            Glob::new(b"[\x00-a\xff]").unwrap().lua_matcher()
        else {
            panic!("a class is matched by parts");
        };
        assert!(
            class.starts_with(b"[%z%\x01%\x02"),
            "{}",
            class.escape_ascii()
        );
        assert!(
            class.ends_with(b"0-9%:%;%<%=%>%?%@A-Z%[%\\%]%^%_%`a%\xff]"),
            "{}",
            class.escape_ascii()
        );
    }
}
