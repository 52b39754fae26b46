//! Fuzzing on stable Rust: property-based runs (proptest) of the three
//! places where arbitrary input meets the job's own parsers and compilers.
//!
//! - The rules parser (`Rules::parse`): arbitrary text and TOML-like text
//!   never panic and are either accepted or refused in one line that names a
//!   line of the file; structured rules files are accepted exactly when the
//!   README's rules say they are valid, read back as written, and the
//!   effective rules `check` prints read back to the same rules.
//! - The glob compiler (`Glob`): on random patterns and keys, `Glob`, the
//!   model's own matcher and the clean script's Lua matcher all return what
//!   a real server's `KEYS` returns, and `Glob::new` accepts exactly the
//!   patterns the README allows. tests/glob.rs holds the corner cases and a
//!   fixed-seed run; these draw new inputs on every run, shrink a failure to
//!   a minimal one, and run as long as asked.
//! - The Lua matchers of whole rule sets: a real server runs the compiled
//!   script (with the SCAN MATCH the rules give) and takes each key by the
//!   rule the Rust matcher names.
//!
//! CI runs a few hundred cases; `PROPTEST_CASES` runs as many as asked (the
//! long run's command is in docs/testing.md).

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use redis_janitor::glob::Glob;
use redis_janitor::rules::{Action, Rules};
use redis_janitor::script::protocol::{BLIND, Batch, Claim, Op, Reply, UNCHANGED};
use redis_janitor::script::{Invoke, KeyMode, Layout, Mode, Script};

use crate::model::{check, oracle, pattern};
use crate::support::{RedisServer, dialect, show};

// ---------------------------------------------------------------------------
// the rules parser
// ---------------------------------------------------------------------------

/// What must hold whatever the text: no panic (proptest reports one as a
/// failure), an error is one line naming a line of the text, and accepted
/// rules are within the bounds and read back from what `check` prints.
fn parsed_or_refused_in_one_line(text: &str) -> Result<(), String> {
    match Rules::parse("fuzz.toml", text) {
        Ok(rules) => {
            if rules.rules.is_empty() || rules.rules.len() > redis_janitor::rules::MAX_RULES {
                return Err(format!("accepted {} rules", rules.rules.len()));
            }
            let rendered = rules.to_toml();
            let again = Rules::parse("rendered", &rendered)
                .map_err(|e| format!("the effective rules do not read back: {e}\n{rendered}"))?;
            same_rules(&rules, &again).map_err(|e| format!("{e}\n{rendered}"))
        }
        Err(err) => {
            let shown = err.to_string();
            if shown.contains(['\n', '\r']) || err.message.trim().is_empty() {
                return Err(format!("the error is not one line: {shown:?}"));
            }
            let lines = text.split('\n').count();
            if err.line.is_some_and(|line| line == 0 || line > lines) {
                return Err(format!(
                    "the error names line {:?} of {lines}: {shown}",
                    err.line
                ));
            }
            Ok(())
        }
    }
}

/// Two rule sets hold the same rules, in the same order.
fn same_rules(a: &Rules, b: &Rules) -> Result<(), String> {
    let describe = |rules: &Rules| -> Vec<String> {
        rules
            .rules
            .iter()
            .map(|r| {
                format!(
                    "{:?} {} {:?} {:?} {:?}",
                    r.name,
                    r.pattern.as_bytes().escape_ascii(),
                    r.conditions,
                    r.action,
                    r.max_keys
                )
            })
            .collect()
    };
    let (a, b) = (describe(a), describe(b));
    if a == b {
        Ok(())
    } else {
        Err(format!("rules differ:\n{a:#?}\n{b:#?}"))
    }
}

#[test]
fn arbitrary_text_is_parsed_or_refused_in_one_line() {
    check("fuzz::arbitrary_text", 2_000, any::<String>(), |text| {
        parsed_or_refused_in_one_line(&text)
    });
}

/// Pieces of TOML, of rules files and of what goes wrong in them.
const KEYS: &[&str] = &[
    "name",
    "pattern",
    "action",
    "ttl",
    "no_ttl",
    "ttl_below",
    "ttl_above",
    "type",
    "idle_above",
    "Name",
    "max_keys",
    "rule",
    "rule.name",
    "\"name\"",
    "'pattern'",
    "ttl .x",
];

const VALUES: &[&str] = &[
    "\"a\"",
    "\"cache:*\"",
    "\"*\"",
    "\"\"",
    "\"[a\"",
    "\"a\\\\\"",
    "\"[a-]\"",
    "\"\\u0000\"",
    "\"\\uD800\"",
    "\"\\n\"",
    "\"delete\"",
    "\"expire\"",
    "\"1h\"",
    "\"0s\"",
    "\"500us\"",
    "\"100y\"",
    "\"101y\"",
    "\"99999999999999999999d\"",
    "\"1h 30m\"",
    "\"-1s\"",
    "\"1\"",
    "\"hash\"",
    "\"HASH\"",
    "true",
    "false",
    "0",
    "-1",
    "1e400",
    "99999999999999999999",
    "3.5",
    "nan",
    "[]",
    "[\"a\", 1]",
    "{}",
    "{ a = 1 }",
    "1979-05-27",
    "\"\"\"\nx\n\"\"\"",
    "'lit\\'",
    "\"unterminated",
    "'",
    "\"\\x41\"",
    "\"é\"",
    "\"\u{202e}\"",
];

const HEADERS: &[&str] = &[
    "[[rule]]",
    "[[rule]]",
    "[[rule]]",
    "[rule]",
    "[[rule.x]]",
    "[a]",
    "[[ rule ]]",
    "[[rule]",
    "[[]]",
];

fn toml_line() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (prop::sample::select(KEYS), prop::sample::select(VALUES))
            .prop_map(|(k, v)| format!("{k} = {v}")),
        1 => prop::sample::select(HEADERS).prop_map(str::to_string),
        1 => "[ -~]{0,12}".prop_map(|s| s.to_string()),
        1 => Just("# comment \"[[rule]]\"".to_string()),
        1 => any::<char>().prop_map(|c| c.to_string()),
    ]
}

#[test]
fn toml_like_text_is_parsed_or_refused_in_one_line() {
    let text = (
        prop::collection::vec(toml_line(), 0..40),
        prop::sample::select(&["\n", "\r\n", "\n\n", " "][..]),
    )
        .prop_map(|(lines, sep)| lines.join(sep));
    check("fuzz::toml_like_text", 2_000, text, |text| {
        parsed_or_refused_in_one_line(&text)
    });
}

/// A duration as a rules file spells it, and its milliseconds when the
/// README's rules accept it (whole milliseconds, at most 100 years).
#[derive(Debug, Clone, Copy)]
struct Spelled {
    text: &'static str,
    ms: Option<u64>,
}

const fn d(text: &'static str, ms: Option<u64>) -> Spelled {
    Spelled { text, ms }
}

const DURATIONS: &[Spelled] = &[
    d("1ms", Some(1)),
    d("1s", Some(1_000)),
    d("1500ms", Some(1_500)),
    d("2000us", Some(2)),
    d("59s", Some(59_000)),
    d("60s", Some(60_000)),
    d("1m", Some(60_000)),
    d("90s", Some(90_000)),
    d("1h", Some(3_600_000)),
    d(" 1h ", Some(3_600_000)),
    d("1h 30m", Some(5_400_000)),
    d("2h", Some(7_200_000)),
    d("1d", Some(86_400_000)),
    d("100y", Some(3_155_760_000_000)),
    d("36525d", Some(3_155_760_000_000)),
    d("0s", Some(0)),
    d("0ms", Some(0)),
    d("36526d", None),
    d("101y", None),
    d("500us", None),
    d("1500us", None),
    d("1ns", None),
    d("1", None),
    d("", None),
    d("-1s", None),
    d("soon", None),
    d("99999999999999999999d", None),
];

/// A pattern and whether a rules file may hold it.
fn any_pattern() -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        19 => pattern().prop_map(|p| (p, true)),
        1 => prop::sample::select(&["", "[ab", "a\\", "[a-]", "x[^", "*[\\"][..])
            .prop_map(|p| (p.to_string(), false)),
    ]
}

/// One `[[rule]]` as written: every field may be missing, and most may be
/// wrong.
#[derive(Debug, Clone)]
struct WrittenRule {
    name: Option<String>,
    pattern: Option<(String, bool)>,
    action: Option<&'static str>,
    ttl: Option<Spelled>,
    /// `Some(Err(text))`: written as this TOML value, not a boolean.
    no_ttl: Option<Result<bool, &'static str>>,
    ttl_below: Option<Spelled>,
    ttl_above: Option<Spelled>,
    key_type: Option<&'static str>,
    idle_above: Option<Spelled>,
    /// `max_keys`, as a TOML value.
    max_keys: Option<&'static str>,
    /// A key that no rule has.
    unknown: Option<&'static str>,
}

/// Mostly something valid, now and then something that is not.
fn mostly<T: Clone + std::fmt::Debug + 'static>(
    valid: &'static [T],
    invalid: &'static [T],
) -> impl Strategy<Value = T> + Clone {
    prop_oneof![
        12 => prop::sample::select(valid),
        1 => prop::sample::select(invalid),
    ]
}

fn spelled() -> impl Strategy<Value = Spelled> + Clone {
    let valid = DURATIONS
        .iter()
        .position(|d| d.ms.is_none())
        .unwrap_or(DURATIONS.len());
    mostly(&DURATIONS[..valid], &DURATIONS[valid..])
}

/// Names: most distinct, some the same once trimmed, some empty.
fn rule_name() -> impl Strategy<Value = String> {
    prop_oneof![
        20 => (prop::sample::select(&["r", "\u{e9}", "x\"y", "line\nbreak", "two words"][..]), 0u8..40)
            .prop_map(|(base, n)| format!("{base}{n}")),
        1 => prop::sample::select(&["", "  ", " r1 ", "r1"][..]).prop_map(str::to_string),
    ]
}

fn written_rule() -> impl Strategy<Value = WrittenRule> {
    let action_and_ttl = prop_oneof![
        10 => prop::option::weighted(0.05, spelled()).prop_map(|ttl| (Some("delete"), ttl)),
        10 => prop::option::weighted(0.95, spelled()).prop_map(|ttl| (Some("expire"), ttl)),
        1 => (mostly(&[Some("Delete"), Some("purge"), Some("")], &[None]), prop::option::of(spelled())),
    ];
    (
        (
            prop::option::weighted(0.99, rule_name()),
            prop::option::weighted(0.99, any_pattern()),
            action_and_ttl,
            prop::option::weighted(
                0.3,
                prop_oneof![
                    18 => Just(Ok(true)),
                    1 => Just(Ok(false)),
                    1 => Just(Err("\"yes\"")),
                ],
            ),
        ),
        (
            prop::option::weighted(0.25, spelled()),
            prop::option::weighted(0.25, spelled()),
            prop::option::weighted(
                0.2,
                mostly(
                    &["string", "list", "set", "zset", "hash", "stream"],
                    &["String", "sets", "", "none"],
                ),
            ),
            prop::option::weighted(0.1, spelled()),
            prop::option::weighted(
                0.1,
                mostly(
                    &["1", "100", "9223372036854775807"],
                    &["0", "-1", "\"5\"", "1.5"],
                ),
            ),
            prop::option::weighted(
                0.02,
                prop::sample::select(&["maxkeys", "Name", "ttl_min"][..]),
            ),
        ),
    )
        .prop_map(
            |(
                (name, pattern, (action, ttl), no_ttl),
                (ttl_below, ttl_above, key_type, idle_above, max_keys, unknown),
            )| {
                WrittenRule {
                    name,
                    pattern,
                    action,
                    ttl,
                    no_ttl,
                    ttl_below,
                    ttl_above,
                    key_type,
                    idle_above,
                    max_keys,
                    unknown,
                }
            },
        )
}

impl WrittenRule {
    /// The rule's lines in a rules file.
    fn lines(&self) -> Vec<String> {
        let mut lines = vec!["[[rule]]".to_string()];
        let string = |key: &str, value: &str| format!("{key} = {}", oracle::toml_string(value));
        if let Some(name) = &self.name {
            lines.push(string("name", name));
        }
        if let Some((pattern, _)) = &self.pattern {
            lines.push(string("pattern", pattern));
        }
        if let Some(action) = self.action {
            lines.push(string("action", action));
        }
        for (key, value) in [
            ("ttl", self.ttl),
            ("ttl_below", self.ttl_below),
            ("ttl_above", self.ttl_above),
            ("idle_above", self.idle_above),
        ] {
            if let Some(spelled) = value {
                lines.push(string(key, spelled.text));
            }
        }
        match self.no_ttl {
            Some(Ok(b)) => lines.push(format!("no_ttl = {b}")),
            Some(Err(value)) => lines.push(format!("no_ttl = {value}")),
            None => {}
        }
        if let Some(kind) = self.key_type {
            lines.push(string("type", kind));
        }
        if let Some(value) = self.max_keys {
            lines.push(format!("max_keys = {value}"));
        }
        if let Some(key) = self.unknown {
            lines.push(format!("{key} = 1"));
        }
        lines
    }

    /// Why the README's rules refuse the rule, or its effective form:
    /// (name, pattern, conditions as the library holds them, action).
    fn verdict(&self) -> Result<Effective, &'static str> {
        if self.unknown.is_some() {
            return Err("an unknown key");
        }
        let no_ttl = match self.no_ttl {
            Some(Err(_)) => return Err("no_ttl is not a boolean"),
            Some(Ok(false)) => return Err("no_ttl = false"),
            Some(Ok(true)) => true,
            None => false,
        };
        let name = self.name.as_deref().ok_or("no name")?.trim();
        if name.is_empty() {
            return Err("an empty name");
        }
        if name.chars().any(char::is_control) {
            return Err("a name of more than one line");
        }
        let (pattern, valid) = self.pattern.as_ref().ok_or("no pattern")?;
        if !valid {
            return Err("an invalid pattern");
        }
        let action = self.action.ok_or("no action")?;
        let ms = |d: Option<Spelled>| -> Result<Option<u64>, &'static str> {
            d.map(|d| d.ms.ok_or("a bad duration")).transpose()
        };
        let (ttl, below, above, idle) = (
            ms(self.ttl)?,
            ms(self.ttl_below)?,
            ms(self.ttl_above)?,
            ms(self.idle_above)?,
        );
        if idle.is_some_and(|ms| !ms.is_multiple_of(1000)) {
            return Err("idle_above is not whole seconds");
        }
        if let Some(kind) = self.key_type
            && !oracle::TYPES.contains(&kind)
        {
            return Err("an unknown type");
        }
        let max_keys = match self.max_keys.map(str::parse::<i64>) {
            None => None,
            Some(Ok(n)) if n >= 1 => Some(n as u64),
            Some(Ok(_)) => return Err("max_keys below 1"),
            Some(Err(_)) => return Err("max_keys is not an integer"),
        };
        let expire = match (action, ttl) {
            ("delete", None) => None,
            ("delete", Some(_)) => return Err("a ttl on a delete"),
            ("expire", Some(0)) => return Err("an expire ttl of 0"),
            ("expire", Some(ttl)) => Some(ttl),
            ("expire", None) => return Err("an expire without ttl"),
            _ => return Err("an unknown action"),
        };
        if no_ttl && (below.is_some() || above.is_some()) {
            return Err("no_ttl with a TTL bound");
        }
        if below == Some(0) {
            return Err("ttl_below = 0");
        }
        if let (Some(below), Some(above)) = (below, above)
            && above >= below
        {
            return Err("ttl_above not below ttl_below");
        }
        if let (Some(ttl), Some(below)) = (expire, below)
            && below <= ttl
        {
            return Err("an expire whose ttl_below is not above its ttl");
        }
        let millis = |ms: Option<u64>| ms.map(Duration::from_millis);
        Ok(Effective {
            name: name.to_string(),
            pattern: pattern.clone(),
            text: format!(
                "no_ttl {no_ttl} below {:?} above {:?} type {:?} idle {:?} action {:?} max_keys {:?}",
                millis(below),
                millis(above),
                self.key_type,
                millis(idle),
                expire.map(Duration::from_millis),
                max_keys
            ),
        })
    }
}

/// A rule as the parser must read it.
#[derive(Debug, PartialEq, Eq)]
struct Effective {
    name: String,
    pattern: String,
    /// Conditions and action, spelled as [`effective`] spells them.
    text: String,
}

/// A parsed rule, spelled like [`WrittenRule::verdict`] spells it.
fn effective(rule: &redis_janitor::rules::Rule) -> Effective {
    let c = &rule.conditions;
    let expire = match rule.action {
        Action::Expire(ttl) => Some(ttl),
        Action::Delete => None,
    };
    Effective {
        name: rule.name.clone(),
        pattern: String::from_utf8_lossy(rule.pattern.as_bytes()).into_owned(),
        text: format!(
            "no_ttl {} below {:?} above {:?} type {:?} idle {:?} action {:?} max_keys {:?}",
            c.no_ttl,
            c.ttl_below,
            c.ttl_above,
            c.key_type.map(|t| t.as_str()),
            c.idle_above,
            expire,
            rule.max_keys
        ),
    }
}

/// A rules file: its rules, maybe a stray top-level key first.
#[derive(Debug, Clone)]
struct WrittenFile {
    stray: bool,
    rules: Vec<WrittenRule>,
}

impl WrittenFile {
    /// The text, and the lines (1-based, inclusive) each rule spans.
    fn text(&self) -> (String, Vec<(usize, usize)>) {
        let mut lines: Vec<String> = Vec::new();
        if self.stray {
            lines.push("title = \"rules\"".into());
        }
        let mut spans = Vec::new();
        for rule in &self.rules {
            let first = lines.len() + 1;
            lines.extend(rule.lines());
            spans.push((first, lines.len()));
            lines.push(String::new());
        }
        (lines.join("\n"), spans)
    }
}

fn written_file() -> impl Strategy<Value = WrittenFile> {
    let count = prop_oneof![1 => Just(0usize), 40 => 1usize..6, 2 => 63usize..=66];
    (
        prop::bool::weighted(0.02),
        count.prop_flat_map(|n| prop::collection::vec(written_rule(), n)),
    )
        .prop_map(|(stray, rules)| WrittenFile { stray, rules })
}

fn accepted_exactly_when_valid(file: &WrittenFile) -> Result<(), String> {
    let (text, spans) = file.text();
    let verdicts: Vec<Result<Effective, &str>> =
        file.rules.iter().map(WrittenRule::verdict).collect();
    let mut why_not: Option<String> = None;
    if file.stray {
        why_not = Some("a stray top-level key".into());
    } else if file.rules.is_empty() {
        why_not = Some("no rules".into());
    } else if file.rules.len() > redis_janitor::rules::MAX_RULES {
        why_not = Some("too many rules".into());
    }
    let invalid: Vec<(usize, &str)> = verdicts
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.as_ref().err().map(|why| (i, *why)))
        .collect();
    if let Some((i, why)) = invalid.first() {
        why_not.get_or_insert(format!("rule {} has {why}", i + 1));
    }
    let names: Vec<&str> = verdicts.iter().flatten().map(|e| e.name.as_str()).collect();
    let duplicate = (1..names.len()).any(|i| names[..i].contains(&names[i]));
    if duplicate && invalid.is_empty() {
        why_not.get_or_insert("a duplicate name".into());
    }
    let parsed = Rules::parse("fuzz.toml", &text);
    match (parsed, why_not) {
        (Ok(rules), None) => {
            let got: Vec<Effective> = rules.rules.iter().map(effective).collect();
            let want: Vec<Effective> = verdicts.into_iter().flatten().collect();
            if got != want {
                return Err(format!("read as {got:#?}\nwritten as {want:#?}\n{text}"));
            }
            parsed_or_refused_in_one_line(&text)
        }
        (Ok(_), Some(why)) => Err(format!("accepted, though {why}:\n{text}")),
        (Err(err), None) => Err(format!("refused a valid file: {err}\n{text}")),
        (Err(err), Some(_)) => {
            parsed_or_refused_in_one_line(&text)?;
            // One bad rule and nothing else wrong: the error points into it.
            if let ([(i, _)], false, false) = (invalid.as_slice(), file.stray, duplicate)
                && file.rules.len() <= redis_janitor::rules::MAX_RULES
            {
                let (first, last) = spans[*i];
                if !err.line.is_some_and(|line| (first..=last).contains(&line)) {
                    return Err(format!(
                        "the error {err} does not point into rule {} (lines {first}..={last}):\n{text}",
                        i + 1
                    ));
                }
            }
            Ok(())
        }
    }
}

#[test]
fn a_rules_file_is_accepted_exactly_when_it_is_valid() {
    check("fuzz::rules_files", 1_000, written_file(), |file| {
        accepted_exactly_when_valid(&file)
    });
}

// ---------------------------------------------------------------------------
// the glob compiler against a real server
// ---------------------------------------------------------------------------

/// Bytes that patterns and keys are drawn from: every byte the glob syntax
/// reads specially, the signed-char boundaries, NUL, a newline.
const ALPHABET: &[u8] = b"ab-][^\\*?\xff\x80\x00\n:";

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(ALPHABET), 0..=max)
}

/// A random pattern: raw bytes (most of them malformed), or one from the
/// model's grammar (well formed, classes and ranges included).
fn glob_pattern() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => bytes(12),
        2 => pattern().prop_map(String::into_bytes),
        1 => prop::collection::vec(prop::sample::select(&b"ab**?[]"[..]), 0..=14),
    ]
}

/// Keys and patterns for one server round.
#[derive(Clone)]
struct GlobCase {
    keys: Vec<Vec<u8>>,
    patterns: Vec<Vec<u8>>,
}

impl std::fmt::Debug for GlobCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |all: &[Vec<u8>]| all.iter().map(|k| show(k)).collect::<Vec<_>>().join(" ");
        write!(
            f,
            "keys: {}\npatterns: {}",
            shown(&self.keys),
            shown(&self.patterns)
        )
    }
}

fn glob_case() -> impl Strategy<Value = GlobCase> {
    let key = prop_oneof![
        4 => bytes(8),
        1 => pattern().prop_map(String::into_bytes),
        1 => prop::collection::vec(prop::sample::select(&b"ab]"[..]), 0..=30),
    ];
    (
        prop::collection::btree_set(key, 1..80),
        prop::collection::vec(glob_pattern(), 1..24),
    )
        .prop_map(|(keys, patterns)| GlobCase {
            keys: keys.into_iter().collect(),
            patterns,
        })
}

/// The keys of `keys` that a matcher takes.
fn taken(keys: &[Vec<u8>], matches: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
    keys.iter().filter(|k| matches(k)).cloned().collect()
}

/// Every key in one answer but not the other, escaped.
fn differ(redis: &[Vec<u8>], other: &[Vec<u8>]) -> String {
    let only = |a: &[Vec<u8>], b: &[Vec<u8>]| -> Vec<String> {
        a.iter()
            .filter(|k| !b.contains(k))
            .map(|k| show(k))
            .collect()
    };
    format!(
        "only KEYS: [{}], only the matcher: [{}]",
        only(redis, other).join(" "),
        only(other, redis).join(" ")
    )
}

/// The keys the clean script's Lua matcher for `glob` takes: a dry run of
/// one delete rule, with no SCAN MATCH, listing each key it takes.
fn lua_takes(con: &mut redis::Connection, glob: &Glob) -> Result<Vec<Vec<u8>>, String> {
    let rules = Rules::delete_matching(glob.clone());
    let script = Script::clean_scanning(
        &rules,
        None,
        Mode::ReadOnly,
        dialect(con),
        Layout::Standalone,
        KeyMode::Server,
    )
    .map_err(|e| e.to_string())?;
    Ok(script_outcomes(con, &script, 1)?.into_keys().collect())
}

/// Every key a whole pass of the (read-only) `script` for `rules` rules
/// reports, with its outcome byte. A key SCAN returns twice must have the
/// same outcome.
fn script_outcomes(
    con: &mut redis::Connection,
    script: &Script,
    rules: usize,
) -> Result<BTreeMap<Vec<u8>, u8>, String> {
    let mut found = BTreeMap::new();
    let mut cursor = 0;
    loop {
        let batch = Batch {
            cursor,
            step: 10_000,
            scan_budget: Duration::from_secs(10),
            max_keys: 100_000,
            report_keys: true,
            cap: None,
            rule_caps: vec![None; rules],
            estimate_freed: false,
        };
        // A dry run: no state keys, no lease.
        let claim = Claim {
            keys: None,
            token: String::new(),
            lease_ttl: Duration::from_secs(60),
        };
        let reply: Reply = claim
            .command(script, Invoke::Text, Op::Clean(&batch, None))
            .query(con)
            .map_err(|e| format!("the script failed: {e}"))?;
        for (key, outcome) in reply.keys.into_iter().zip(reply.outcomes) {
            if let Some(before) = found.insert(key.clone(), outcome)
                && before != outcome
            {
                return Err(format!(
                    "{} reported as {before} and as {outcome}",
                    show(&key)
                ));
            }
        }
        if reply.cursor == 0 {
            return Ok(found);
        }
        cursor = reply.cursor;
    }
}

/// An empty database holding `keys` as strings, and an empty script cache
/// (each case loads new scripts).
fn seed_strings(con: &mut redis::Connection, keys: &[Vec<u8>]) {
    let mut pipe = redis::pipe();
    pipe.cmd("FLUSHALL").arg("SYNC").ignore();
    pipe.cmd("SCRIPT").arg("FLUSH").ignore();
    for key in keys {
        pipe.cmd("SET").arg(key).arg(1).ignore();
    }
    pipe.exec(con).expect("seed keys");
}

fn globs_agree(con: &mut redis::Connection, case: &GlobCase) -> Result<(), String> {
    seed_strings(con, &case.keys);
    let mut pipe = redis::pipe();
    for p in &case.patterns {
        pipe.cmd("KEYS").arg(p);
    }
    let answers: Vec<Vec<Vec<u8>>> = pipe.query(con).map_err(|e| format!("KEYS: {e}"))?;
    let mut problems = Vec::new();
    for (p, mut redis) in case.patterns.iter().zip(answers) {
        redis.sort();
        let shown = show(p);
        let glob = Glob::new_unchecked(p);
        let ours = taken(&case.keys, |k| glob.matches(k));
        if ours != redis {
            problems.push(format!("Glob {shown}: {}", differ(&redis, &ours)));
        }
        let model = taken(&case.keys, |k| oracle::glob_matches(p, k));
        if model != redis {
            problems.push(format!("model {shown}: {}", differ(&redis, &model)));
        }
        let valid = Glob::new(p);
        if valid.is_ok() != oracle::glob_valid(p) {
            problems.push(format!(
                "Glob::new {shown}: {:?}, but the README's rules say {}",
                valid.as_ref().map(|_| ()).map_err(|e| e.to_string()),
                if oracle::glob_valid(p) {
                    "valid"
                } else {
                    "invalid"
                }
            ));
        }
        if let Ok(glob) = valid {
            let lua = lua_takes(con, &glob)?;
            if lua != redis {
                problems.push(format!("Lua {shown}: {}", differ(&redis, &lua)));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

#[test]
fn globs_agree_with_keys() {
    let server = RedisServer::start();
    let con = std::cell::RefCell::new(server.conn());
    check("fuzz::globs", 96, glob_case(), |case| {
        globs_agree(&mut con.borrow_mut(), &case)
    });
}

// ---------------------------------------------------------------------------
// whole rule sets' Lua matchers
// ---------------------------------------------------------------------------

/// How a rule of a matcher case decides, for keys without a TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takes {
    /// A delete without conditions: taken without a look.
    Blind,
    /// `no_ttl = true`: checked, and holds.
    Checked,
    /// `ttl_above = "1h"`: checked, never holds.
    Never,
}

#[derive(Clone)]
struct RuleSetCase {
    keys: Vec<Vec<u8>>,
    rules: Vec<(String, Takes)>,
}

impl std::fmt::Debug for RuleSetCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|k| show(k)).collect();
        writeln!(f, "keys: {}", keys.join(" "))?;
        for (pattern, takes) in &self.rules {
            writeln!(f, "rule {:?} {takes:?}", pattern)?;
        }
        Ok(())
    }
}

fn rule_set_case() -> impl Strategy<Value = RuleSetCase> {
    let takes = prop::sample::select(&[Takes::Blind, Takes::Checked, Takes::Never][..]);
    // Patterns often share a prefix or repeat, which the SCAN MATCH and the
    // grouping of rules with one pattern are built from.
    let rule_pattern = prop_oneof![
        3 => pattern(),
        1 => prop::sample::select(&["*", "a*", "ab*", "a:*", "\u{0}*", "a"][..]).prop_map(str::to_string),
    ];
    let key = prop_oneof![
        3 => bytes(8),
        2 => pattern().prop_map(String::into_bytes),
        1 => (prop::sample::select(&["a", "ab", "a:", "cache:", "temp:"][..]), bytes(4))
            .prop_map(|(p, rest)| [p.as_bytes(), &rest].concat()),
    ];
    (
        prop::collection::btree_set(key, 1..80),
        prop::collection::vec((rule_pattern, takes), 1..6),
    )
        .prop_map(|(keys, rules)| RuleSetCase {
            keys: keys.into_iter().collect(),
            rules,
        })
}

fn rule_sets_agree(con: &mut redis::Connection, case: &RuleSetCase) -> Result<(), String> {
    let model: Vec<oracle::Rule> = case
        .rules
        .iter()
        .enumerate()
        .map(|(i, (pattern, takes))| oracle::Rule {
            name: format!("r{i}"),
            pattern: pattern.clone(),
            no_ttl: *takes == Takes::Checked,
            ttl_below: None,
            ttl_above: (*takes == Takes::Never).then_some(3_600_000),
            key_type: None,
            act: oracle::Act::Delete,
        })
        .collect();
    let text = oracle::rules_file(&model);
    let rules = Rules::parse("fuzz.toml", &text).map_err(|e| format!("{e}\n{text}"))?;
    let script = Script::clean(
        &rules,
        Mode::ReadOnly,
        dialect(con),
        Layout::Standalone,
        KeyMode::Server,
    )
    .map_err(|e| e.to_string())?;
    seed_strings(con, &case.keys);
    let found = script_outcomes(con, &script, rules.rules.len())?;
    let mut problems = Vec::new();
    for key in &case.keys {
        // The first rule the Rust matcher selects the key for and whose
        // condition holds; selected but none holds: unchanged.
        let mut want = None;
        for (r, rule) in rules.rules.iter().enumerate() {
            if !rule.pattern.matches(key) {
                continue;
            }
            want = Some(UNCHANGED);
            match case.rules[r].1 {
                Takes::Blind => want = Some(BLIND + 1 + r as u8),
                Takes::Checked => want = Some(UNCHANGED + 1 + r as u8),
                Takes::Never => continue,
            }
            break;
        }
        let got = found.get(key).copied();
        if got != want {
            problems.push(format!(
                "{}: the script says {got:?}, Glob {want:?}",
                show(key)
            ));
        }
        let modelled = match oracle::decide(
            &model,
            key,
            oracle::Seen {
                pttl: -1,
                kind: Some("string"),
            },
        ) {
            oracle::Decision::NotSelected => None,
            oracle::Decision::Unchanged => Some(UNCHANGED),
            oracle::Decision::Acts(r) if model[r].is_unconditional_delete() => {
                Some(BLIND + 1 + r as u8)
            }
            oracle::Decision::Acts(r) => Some(UNCHANGED + 1 + r as u8),
        };
        if modelled != want {
            problems.push(format!(
                "{}: the model says {modelled:?}, Glob {want:?}",
                show(key)
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "SCAN MATCH {:?}\n{}\n{text}",
            rules.scan_match().map(|m| show(&m)),
            problems.join("\n")
        ))
    }
}

#[test]
fn rule_sets_take_each_key_in_lua_as_in_rust() {
    let server = RedisServer::start();
    let con = std::cell::RefCell::new(server.conn());
    check("fuzz::rule_sets", 128, rule_set_case(), |case| {
        rule_sets_agree(&mut con.borrow_mut(), &case)
    });
}
