//! Model-based property tests of whole passes: random keyspaces (all six
//! types, no TTL, short and long ones, key names with NUL, 0xff, newlines
//! and glob metacharacters), random valid rules files and random
//! `--batch-size`s; the real binary cleans a real server, and a plain-Rust
//! model of the rules ([`oracle`], independent of the code under test)
//! predicts what it must do to every key.
//!
//! - `a_pass_ends_in_the_state_the_model_predicts`: a quiet keyspace. Every
//!   key a pattern selects is looked at, each look's logged fate is the
//!   model's, the final keyspace is the model's key by key (type, TTL within
//!   a tolerance, present or not), and the report's counts are the model's.
//!   A dry run decides the same and changes nothing.
//! - `with_concurrent_writers_every_action_was_justified`: a writer thread
//!   changes TTLs, deletes and re-creates keys (some with another type)
//!   during the pass. Keys no pattern selects stay byte-identical, keys the
//!   writer never touched end as the model says, and every action the job
//!   logged was justified by the state it observed: the PTTL the script saw
//!   (the `pttl` of each "rule acts on key" line) and, for keys the writer
//!   never re-creates with another type, the type.
//! - Two tests of those checks on made-up log lines: they refuse what the
//!   rules do not allow, and read keys and PTTLs back as the job logs them.
//!
//! Each test reuses one server for all its cases (FLUSHALL in between).
//! `PROPTEST_CASES` raises the number of cases for a long run,
//! `PROPTEST_RNG_SEED` replays one (a failure prints its seed); see
//! docs/testing.md.

pub mod oracle;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use serde_json::Value as Json;

use redis_janitor::script::protocol::RESERVED_PREFIX;

use crate::support::*;
use oracle::{Act, Decision, Rule, Seen, TYPES};

// ---------------------------------------------------------------------------
// running properties
// ---------------------------------------------------------------------------

/// Runs `test` on `cases` values of `strategy` (unless `PROPTEST_CASES`
/// says otherwise) and panics with the smallest failing value proptest
/// finds, and the seed that replays the run.
///
/// Failures are not persisted (no `proptest-regressions/` files): the inputs
/// are drawn anew on every run, so a persisted seed would replay a case only
/// until the strategies change, and the files would pile up per developer.
/// A failure prints its minimal case and its seed instead; the fix commits
/// that case as a plain regression test.
pub fn check<S>(name: &str, cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), String>)
where
    S: Strategy,
    S::Value: fmt::Debug,
{
    // `Config::default()` reads the PROPTEST_* variables.
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if std::env::var_os("PROPTEST_MAX_SHRINK_TIME").is_none() {
        // Cases that start processes shrink slowly: give up after a minute
        // with the smallest case found so far.
        config.max_shrink_time = 60_000;
    }
    config.failure_persistence = None;
    let seed = match config.rng_seed {
        RngSeed::Fixed(seed) => seed,
        RngSeed::Random => fastrand::u64(..),
    };
    config.rng_seed = RngSeed::Fixed(seed);
    let cases = config.cases;
    let started = Instant::now();
    let mut runner = TestRunner::new(config);
    match runner.run(&strategy, |value| test(value).map_err(TestCaseError::fail)) {
        Ok(()) => eprintln!(
            "{name}: {cases} cases passed in {:.1?} (PROPTEST_RNG_SEED={seed})",
            started.elapsed()
        ),
        Err(TestError::Fail(reason, value)) => panic!(
            "{name} failed: {reason}\n\nminimal failing case: {value:#?}\n\n\
             replay: PROPTEST_RNG_SEED={seed} PROPTEST_CASES={cases}"
        ),
        Err(TestError::Abort(reason)) => panic!("{name} aborted: {reason} (seed {seed})"),
    }
}

// ---------------------------------------------------------------------------
// what a case is made of
// ---------------------------------------------------------------------------

/// One key as the case seeds it.
#[derive(Clone)]
struct Key {
    name: Vec<u8>,
    kind: &'static str,
    /// Milliseconds of TTL, or none.
    ttl: Option<u64>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ttl {
            Some(ms) => write!(f, "{} {} ttl {ms}ms", show(&self.name), self.kind),
            None => write!(f, "{} {} no ttl", show(&self.name), self.kind),
        }
    }
}

/// A keyspace, the rules and how the job runs.
#[derive(Clone)]
struct Case {
    keys: Vec<Key>,
    rules: Vec<Rule>,
    batch_size: u32,
    dry_run: bool,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "--batch-size {}{}",
            self.batch_size,
            if self.dry_run { " --dry-run" } else { "" }
        )?;
        writeln!(f, "keys:")?;
        for key in &self.keys {
            writeln!(f, "  {key:?}")?;
        }
        writeln!(f, "rules file:\n{}", oracle::rules_file(&self.rules))
    }
}

/// Bytes that key names are made of: glob metacharacters, NUL, 0xff, a
/// newline, a two-byte UTF-8 letter.
const KEY_BYTES: &[&[u8]] = &[
    b"a",
    b"b",
    b"c",
    b":",
    b"*",
    b"?",
    b"[",
    b"]",
    b"\\",
    b"-",
    b"^",
    b"\x00",
    b"\xff",
    b"\n",
    "\u{e9}".as_bytes(),
];

/// How key names start, so that patterns with a literal prefix select some;
/// and the prefix reserved for the job's own keys, which no rule may select,
/// with a near miss.
const KEY_PREFIXES: &[&[u8]] = &[
    b"",
    b"",
    b"cache:",
    b"temp:",
    b"a",
    b"b:",
    b"\x00",
    b"\xff",
    b"x\n",
    b"__redis-janitor__:",
    b"__redis-janitor__",
];

fn key_name() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(KEY_PREFIXES),
        prop::collection::vec(prop::sample::select(KEY_BYTES), 0..5),
    )
        .prop_map(|(prefix, parts)| {
            let mut name = prefix.to_vec();
            name.extend(parts.concat());
            if name.is_empty() {
                // The empty key is left to tests/keys.rs.
                name.push(b'e');
            }
            name
        })
}

/// TTLs keys are seeded with, in seconds: bands that keep clear of every
/// duration a rule holds ([`RULE_DURATIONS`]) by more than the few seconds
/// a case lasts, so that a decision cannot flip while the case runs, and
/// the model knows it even when the log does not say what PTTL the job saw.
const KEY_TTL_BANDS: &[(u64, u64)] = &[
    (12, 40),
    (90, 250),
    (400, 1_500),
    (7_200, 12_600),
    (18_000, 72_000),
    (259_200, 2_592_000),
];

/// 100 years in milliseconds: the longest duration a rule may hold.
const CENTURY_MS: u64 = 100 * 31_557_600_000;

/// The durations rules hold, in milliseconds.
const RULE_DURATIONS: &[u64] = &[
    1_000,
    5_000,
    60_000,
    75_000,
    300_000,
    1_800_000,
    3_600_000,
    14_400_000,
    86_400_000,
    172_800_000,
    CENTURY_MS,
];

/// A key's TTL in milliseconds: none, in one of the bands, or within a
/// second and a half of a rule's duration (a minute or more, so that the key
/// outlives the case), where the decision turns on the PTTL the job saw.
fn key_ttl() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![
        4 => Just(None),
        4 => prop::sample::select(KEY_TTL_BANDS)
            .prop_flat_map(|(lo, hi)| (lo..=hi).prop_map(|secs| Some(secs * 1000))),
        2 => (prop::sample::select(&RULE_DURATIONS[2..]), -1_500i64..=1_500)
            .prop_map(|(edge, delta)| Some(edge.saturating_add_signed(delta))),
    ]
}

fn key() -> impl Strategy<Value = Key> {
    (key_name(), prop::sample::select(&TYPES[..]), key_ttl()).prop_map(|(name, kind, ttl)| Key {
        name,
        kind,
        ttl,
    })
}

/// Keys with distinct names, about `size` of them.
fn keys(size: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Key>> {
    prop::collection::vec(key(), size).prop_map(|keys| {
        let mut seen = BTreeSet::new();
        keys.into_iter()
            .filter(|k| seen.insert(k.name.clone()))
            .collect()
    })
}

/// One literal character of a pattern, escaped where the glob syntax needs
/// it (and sometimes where it does not: `\a` is `a`).
fn literal() -> impl Strategy<Value = String> {
    prop::sample::select(
        &[
            "a", "b", "c", ":", "-", "^", "]", "\n", "\u{0}", "\u{e9}", "\\*", "\\?", "\\[",
            "\\\\", "\\a", "\\]",
        ][..],
    )
    .prop_map(str::to_string)
}

/// A `[...]` class: ranges (sometimes backwards, which Redis swaps) and
/// single bytes, every byte the class syntax reads specially escaped.
fn class() -> impl Strategy<Value = String> {
    let end = || prop::sample::select(&['a', 'b', 'c', 'z', '0', '9', ':'][..]);
    let item = prop_oneof![
        (end(), end()).prop_map(|(from, to)| format!("{from}-{to}")),
        prop::sample::select(
            &[
                "a", "b", ":", "\n", "\u{0}", "\u{e9}", "[", "*", "?", "\\]", "\\-", "\\^", "\\\\"
            ][..]
        )
        .prop_map(str::to_string),
    ];
    (any::<bool>(), prop::collection::vec(item, 0..4)).prop_map(|(negated, items)| {
        format!("[{}{}]", if negated { "^" } else { "" }, items.concat())
    })
}

fn pattern_part() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(&["cache:", "temp:", "a", "b:", "x\n"][..]).prop_map(str::to_string),
        4 => literal(),
        2 => Just("?".to_string()),
        3 => Just("*".to_string()),
        2 => class(),
    ]
}

/// A valid pattern: never empty, every class closed, no trailing `\`.
/// Broad ones are frequent, so that most keys meet a rule.
pub fn pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just("*".to_string()),
        3 => prop::sample::select(&["cache:", "temp:", "a", "b:", "\u{0}"][..]).prop_map(|p| format!("{p}*")),
        2 => prop::collection::vec(pattern_part(), 1..4).prop_map(|parts| format!("*{}*", parts.concat())),
        5 => prop::collection::vec(pattern_part(), 1..6).prop_map(|parts| parts.concat()),
    ]
}

/// Which TTL conditions a rule has.
#[derive(Debug, Clone, Copy)]
enum TtlCondition {
    None,
    NoTtl,
    Below(u64),
    Above(u64),
    Between(u64, u64),
}

fn duration() -> impl Strategy<Value = u64> {
    prop::sample::select(RULE_DURATIONS)
}

fn ttl_condition() -> impl Strategy<Value = TtlCondition> {
    prop_oneof![
        3 => Just(TtlCondition::None),
        2 => Just(TtlCondition::NoTtl),
        2 => duration().prop_map(TtlCondition::Below),
        2 => duration().prop_map(TtlCondition::Above),
        1 => (duration(), duration()).prop_map(|(a, b)| TtlCondition::Between(a.min(b), a.max(b))),
    ]
}

const NAME_SUFFIXES: &[&str] = &[
    "cache",
    "temp",
    "two words",
    "\u{e9}t\u{e9}",
    "q\"uote",
    "back\\slash",
];

/// The rules file's rule number `i`, made valid: a condition that can never
/// hold (see README) is dropped, an expire rule's TTL is one its `ttl_below`
/// leaves room for, or the rule deletes.
fn rule(i: usize) -> impl Strategy<Value = Rule> {
    (
        pattern(),
        ttl_condition(),
        prop::option::weighted(0.25, prop::sample::select(&TYPES[..])),
        prop::option::weighted(0.5, prop::sample::select(&RULE_DURATIONS[2..])),
        prop::sample::select(NAME_SUFFIXES),
    )
        .prop_map(move |(pattern, condition, key_type, expire, suffix)| {
            let (no_ttl, ttl_below, ttl_above) = match condition {
                TtlCondition::None => (false, None, None),
                TtlCondition::NoTtl => (true, None, None),
                TtlCondition::Below(b) => (false, Some(b), None),
                TtlCondition::Above(a) => (false, None, Some(a)),
                TtlCondition::Between(a, b) if a < b => (false, Some(b), Some(a)),
                TtlCondition::Between(_, b) => (false, Some(b), None),
            };
            let act = match (expire, ttl_below) {
                (Some(ttl), Some(below)) if below <= ttl => RULE_DURATIONS
                    .iter()
                    .rev()
                    .find(|&&d| d < below && d >= 60_000)
                    .map_or(Act::Delete, |&d| Act::Expire(d)),
                (Some(ttl), _) => Act::Expire(ttl),
                (None, _) => Act::Delete,
            };
            Rule {
                name: format!("{i}-{suffix}"),
                pattern,
                no_ttl,
                ttl_below,
                ttl_above,
                key_type,
                act,
            }
        })
}

fn rules() -> impl Strategy<Value = Vec<Rule>> {
    (1usize..6).prop_flat_map(|n| (0..n).map(rule).collect::<Vec<_>>())
}

fn batch_size() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => 1u32..=12,
        1 => Just(100u32),
        1 => Just(10_000u32),
        1 => Just(100_000u32),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        keys(0..40),
        rules(),
        batch_size(),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(keys, rules, batch_size, dry_run)| Case {
            keys,
            rules,
            batch_size,
            dry_run,
        })
}

// ---------------------------------------------------------------------------
// the server side
// ---------------------------------------------------------------------------

/// Queues the commands that create `key` holding a small value of `kind`.
fn create(pipe: &mut redis::Pipeline, key: &[u8], kind: &str) {
    match kind {
        "string" => pipe.cmd("SET").arg(key).arg("v"),
        "list" => pipe.cmd("RPUSH").arg(key).arg("a").arg("b"),
        "set" => pipe.cmd("SADD").arg(key).arg("a").arg("b"),
        "zset" => pipe.cmd("ZADD").arg(key).arg(1).arg("a"),
        "hash" => pipe.cmd("HSET").arg(key).arg("f").arg("v"),
        "stream" => pipe.cmd("XADD").arg(key).arg("*").arg("f").arg("v"),
        other => panic!("no such type {other}"),
    }
    .ignore();
}

/// An empty database holding exactly `keys`.
fn seed_keys(con: &mut redis::Connection, keys: &[Key]) -> Result<(), String> {
    let mut pipe = redis::pipe();
    pipe.cmd("FLUSHALL").arg("SYNC").ignore();
    for key in keys {
        create(&mut pipe, &key.name, key.kind);
        if let Some(ms) = key.ttl {
            pipe.cmd("PEXPIRE").arg(&key.name).arg(ms).ignore();
        }
    }
    pipe.exec(con)
        .map_err(|e| format!("seeding the keyspace: {e}"))
}

/// Every key with its type and PTTL: the harness's [`keyspace`], which
/// leaves out the job's own keys, and those of the case's `keys` that are
/// under the reserved prefix with them.
fn snapshot(con: &mut redis::Connection, keys: &[Key]) -> BTreeMap<Vec<u8>, KeyState> {
    let mut all = keyspace(con);
    for key in keys.iter().filter(|k| k.name.starts_with(RESERVED_PREFIX)) {
        let (kind, pttl): (String, i64) = redis::pipe()
            .cmd("TYPE")
            .arg(&key.name)
            .cmd("PTTL")
            .arg(&key.name)
            .query(con)
            .expect("TYPE and PTTL");
        if kind != "none" {
            all.insert(key.name.clone(), KeyState { kind, pttl });
        }
    }
    all
}

/// One look of the job at a key, as its debug line tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    /// "rule acts on key", with the PTTL the script saw when the log holds it.
    Acted { rule: String, pttl: Option<i64> },
    /// "rule deletes key, unless it had vanished": a delete without
    /// conditions, which needs no look at the key.
    Deleted { rule: String },
    /// "no rule's conditions hold; key left as it was".
    Unchanged { pttl: Option<i64> },
    /// "key vanished before the script saw it".
    Vanished,
    /// "a cap was reached; key left as it was": the model's rules have no
    /// caps, so this is never expected.
    Capped,
}

impl Fate {
    /// The same fate, whatever PTTL was seen.
    fn same(&self, other: &Fate) -> bool {
        match (self, other) {
            (Fate::Acted { rule: a, .. }, Fate::Acted { rule: b, .. }) => a == b,
            (Fate::Deleted { rule: a }, Fate::Deleted { rule: b }) => a == b,
            (Fate::Unchanged { .. }, Fate::Unchanged { .. }) => true,
            (Fate::Vanished, Fate::Vanished) | (Fate::Capped, Fate::Capped) => true,
            _ => false,
        }
    }

    fn pttl(&self) -> Option<i64> {
        match self {
            Fate::Acted { pttl, .. } | Fate::Unchanged { pttl } => *pttl,
            _ => None,
        }
    }
}

impl fmt::Display for Fate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seen = |pttl: &Option<i64>| pttl.map_or(String::new(), |p| format!(" (pttl {p})"));
        match self {
            Fate::Acted { rule, pttl } => write!(f, "rule {rule:?} acts{}", seen(pttl)),
            Fate::Deleted { rule } => write!(f, "rule {rule:?} deletes unconditionally"),
            Fate::Unchanged { pttl } => write!(f, "unchanged{}", seen(pttl)),
            Fate::Vanished => write!(f, "vanished"),
            Fate::Capped => write!(f, "capped"),
        }
    }
}

/// The job's debug lines about keys, in order: the key and its fate. Lines
/// about other things are skipped; a key line that cannot be read is an
/// error.
fn key_lines(stderr: &str) -> Result<Vec<(Vec<u8>, Fate)>, String> {
    let mut out = Vec::new();
    for line in stderr.lines().filter(|l| l.starts_with('{')) {
        let event: Json = serde_json::from_str(line)
            .map_err(|e| format!("log line is not JSON ({e}): {line}"))?;
        let text = |field: &str| event[field].as_str().map(str::to_string);
        let pttl = match &event["pttl"] {
            Json::Null => None,
            Json::Number(n) => Some(n.as_i64().ok_or(format!("pttl {n} in {line}"))?),
            Json::String(s) => Some(s.parse().map_err(|_| format!("pttl {s:?} in {line}"))?),
            other => return Err(format!("pttl {other} in {line}")),
        };
        let rule = || text("rule").ok_or(format!("no rule in {line}"));
        let fate = match event["message"].as_str().unwrap_or_default() {
            "rule acts on key" => Fate::Acted {
                rule: rule()?,
                pttl,
            },
            "rule deletes key, unless it had vanished" => Fate::Deleted { rule: rule()? },
            "no rule's conditions hold; key left as it was" => Fate::Unchanged { pttl },
            "key vanished before the script saw it" => Fate::Vanished,
            "a cap was reached; key left as it was" => Fate::Capped,
            _ => continue,
        };
        let shown = text("key").ok_or(format!("no key in {line}"))?;
        let key = shown
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .and_then(oracle::unescape)
            .ok_or(format!(
                "key {shown:?} is not a quoted, escaped key: {line}"
            ))?;
        out.push((key, fate));
    }
    Ok(out)
}

/// A problem when some "rule acts on key" line lacks the PTTL the script
/// saw, which the checks of the observed state need.
fn pttl_missing(lines: &[(Vec<u8>, Fate)]) -> Option<String> {
    let (key, fate) = lines
        .iter()
        .find(|(_, fate)| matches!(fate, Fate::Acted { pttl: None, .. }))?;
    Some(format!(
        "{}: {fate}, and the log line gives no pttl",
        show(key)
    ))
}

/// The job over the case's rules, logging every key's fate as JSON.
fn run_job(server: &RedisServer, case: &Case) -> Janitor {
    let rules = write_rules(server.dir(), &oracle::rules_file(&case.rules));
    let job = run_json(&server.url())
        .arg("--rules")
        .arg(rules)
        .args(["--log-format", "json", "--batch-size"])
        .arg(case.batch_size.to_string())
        .env("RUST_LOG", "redis_janitor=debug");
    if case.dry_run {
        job.arg("--dry-run")
    } else {
        job
    }
}

// ---------------------------------------------------------------------------
// the model's replay of one key
// ---------------------------------------------------------------------------

/// What the model knows of a key's TTL between two looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    /// No expiry.
    Forever,
    /// PTTL somewhere in `lo..=hi` milliseconds (the time between two looks
    /// is not known exactly).
    Within { lo: i64, hi: i64 },
}

impl Life {
    /// The PTTLs at which the model's decision may differ: both ends, and
    /// each rule's durations (and their neighbours) in between.
    fn probes(self, rules: &[Rule]) -> Vec<i64> {
        let Life::Within { lo, hi } = self else {
            return vec![-1];
        };
        let mut probes = vec![lo, hi];
        for rule in rules {
            let act = match rule.act {
                Act::Expire(ttl) => Some(ttl),
                Act::Delete => None,
            };
            for d in [rule.ttl_below, rule.ttl_above, act].into_iter().flatten() {
                let d = d as i64;
                probes.extend(
                    [d - 1, d, d + 1]
                        .into_iter()
                        .filter(|p| (lo..=hi).contains(p)),
                );
            }
        }
        probes
    }

    fn contains(self, pttl: i64) -> bool {
        match self {
            Life::Forever => pttl == -1,
            Life::Within { lo, hi } => (lo..=hi).contains(&pttl),
        }
    }
}

/// The fate the model gives a key of `kind` whose PTTL is `pttl`.
fn model_fate(rules: &[Rule], key: &[u8], kind: &str, pttl: i64) -> Fate {
    match oracle::decide(
        rules,
        key,
        Seen {
            pttl,
            kind: Some(kind),
        },
    ) {
        Decision::Acts(r) if rules[r].is_unconditional_delete() => Fate::Deleted {
            rule: rules[r].name.clone(),
        },
        Decision::Acts(r) => Fate::Acted {
            rule: rules[r].name.clone(),
            pttl: None,
        },
        Decision::Unchanged | Decision::NotSelected => Fate::Unchanged { pttl: None },
    }
}

/// The outcome of replaying one key's looks through the model.
struct Replayed {
    /// The key's final type and life, `None` when gone.
    last: Option<(&'static str, Life)>,
    /// Per rule, how many of the looks it acted at.
    acted: Vec<u64>,
}

/// Replays the job's looks at one key through the model, from its state
/// before the pass: each look's fate must be the one the model gives the
/// state the key is in then. A look with the fate of the look before it is
/// a key that SCAN returned twice (a table resize between two calls, or
/// both within one call, before the call's writes): acting again leaves the
/// key as the first action did. `window` bounds how long the pass took,
/// which bounds how much a TTL went down between two looks.
fn replay(
    rules: &[Rule],
    key: &Key,
    start: Life,
    looks: &[Fate],
    dry_run: bool,
    window: i64,
) -> Result<Replayed, String> {
    let mut state = Some((key.kind, start));
    let mut acted = vec![0; rules.len()];
    let selected = oracle::selected(rules, &key.name);
    if !selected {
        if let Some(look) = looks.first() {
            return Err(format!(
                "no rule's pattern selects it, yet the job logged: {look}"
            ));
        }
    } else if looks.is_empty() {
        return Err("a rule's pattern selects it, yet the pass never looked at it".into());
    }
    let mut previous: Option<&Fate> = None;
    for (n, look) in looks.iter().enumerate() {
        if previous.is_some_and(|p| p.same(look)) {
            continue;
        }
        previous = Some(look);
        let Some((kind, life)) = state else {
            return Err(format!(
                "look {}: the job logged {look}, but the model has the key gone by then",
                n + 1
            ));
        };
        let allowed: Vec<Fate> = match look.pttl() {
            Some(seen) if !life.contains(seen) => {
                return Err(format!(
                    "look {}: the job saw pttl {seen}, the model expects {life:?}",
                    n + 1
                ));
            }
            Some(seen) => vec![model_fate(rules, &key.name, kind, seen)],
            None => life
                .probes(rules)
                .into_iter()
                .map(|p| model_fate(rules, &key.name, kind, p))
                .collect(),
        };
        if !allowed.iter().any(|f| f.same(look)) {
            let mut allowed: Vec<String> = allowed.iter().map(|f| f.to_string()).collect();
            allowed.sort();
            allowed.dedup();
            return Err(format!(
                "look {}: the job logged {look}; the model says {} for a {kind} with {life:?}",
                n + 1,
                allowed.join(" or ")
            ));
        }
        let rule = match look {
            Fate::Acted { rule, .. } | Fate::Deleted { rule } => {
                rules.iter().position(|r| &r.name == rule)
            }
            _ => None,
        };
        if let Some(r) = rule {
            acted[r] += 1;
            if !dry_run {
                state = match rules[r].act {
                    Act::Delete => None,
                    Act::Expire(ttl) => Some((
                        kind,
                        Life::Within {
                            lo: ttl as i64 - window,
                            hi: ttl as i64,
                        },
                    )),
                };
            }
        }
    }
    Ok(Replayed { last: state, acted })
}

/// What the harness's keyspace diff expects of a key the model has in
/// `state` at the end.
fn want(kind: &str, life: Life) -> Want {
    match life {
        Life::Forever => Want::new(kind, Ttl::Persistent),
        Life::Within { hi, .. } => Want::new(kind, Ttl::About((hi as u64).div_ceil(1000))),
    }
}

/// The job's looks at each key, by key.
fn looks_by_key(lines: &[(Vec<u8>, Fate)]) -> BTreeMap<Vec<u8>, Vec<Fate>> {
    let mut by_key: BTreeMap<Vec<u8>, Vec<Fate>> = BTreeMap::new();
    for (key, fate) in lines {
        by_key.entry(key.clone()).or_default().push(fate.clone());
    }
    by_key
}

/// The life of every key in a snapshot.
fn lives(snapshot: &BTreeMap<Vec<u8>, KeyState>, window: i64) -> BTreeMap<Vec<u8>, Life> {
    snapshot
        .iter()
        .map(|(name, state)| {
            let life = match state.pttl {
                -1 => Life::Forever,
                pttl => Life::Within {
                    lo: pttl - window,
                    hi: pttl,
                },
            };
            (name.clone(), life)
        })
        .collect()
}

/// How much longer than the case's measured time a TTL may have run down:
/// the snapshot's own round trips.
const WINDOW_SLACK_MS: i64 = 1_000;

// ---------------------------------------------------------------------------
// the quiet keyspace
// ---------------------------------------------------------------------------

fn quiet_case(
    server: &RedisServer,
    con: &mut redis::Connection,
    case: &Case,
) -> Result<(), String> {
    seed_keys(con, &case.keys)?;
    let started = Instant::now();
    let before = snapshot(con, &case.keys);
    if before.len() != case.keys.len() {
        return Err(format!(
            "seeded {} keys, the server holds {}",
            case.keys.len(),
            before.len()
        ));
    }
    let out = run_job(server, case).run();
    let window = started.elapsed().as_millis() as i64 + WINDOW_SLACK_MS;
    if out.code != 0 {
        return Err(format!("the job exited {}\n{}", out.code, out.dump()));
    }
    let report = out.report();
    let lines = key_lines(&out.stderr)?;
    let looks = looks_by_key(&lines);
    let lives = lives(&before, window);

    let mut problems: Vec<String> = pttl_missing(&lines).into_iter().collect();
    let mut expected = BTreeMap::new();
    let mut acted = vec![0u64; case.rules.len()];
    for key in &case.keys {
        let seen = looks.get(&key.name).map_or(&[][..], Vec::as_slice);
        match replay(
            &case.rules,
            key,
            lives[&key.name],
            seen,
            case.dry_run,
            window,
        ) {
            Ok(replayed) => {
                for (total, n) in acted.iter_mut().zip(&replayed.acted) {
                    *total += n;
                }
                if let Some((kind, life)) = replayed.last {
                    expected.insert(key.name.clone(), want(kind, life));
                }
            }
            Err(why) => problems.push(format!("{}: {why}", show(&key.name))),
        }
    }
    for key in looks.keys() {
        if !case.keys.iter().any(|k| &k.name == key) {
            problems.push(format!("{}: logged, but no such key was seeded", show(key)));
        }
    }
    let after = snapshot(con, &case.keys);
    problems.extend(keyspace_diff(&after, &expected));

    let counts: Vec<u64> = rule_counts(&report).iter().map(|(_, _, n)| *n).collect();
    if counts != acted {
        problems.push(format!(
            "the report's per-rule counts are {counts:?}, the model's {acted:?}"
        ));
    }
    let unchanged = lines
        .iter()
        .filter(|(_, f)| matches!(f, Fate::Unchanged { .. }))
        .count();
    for (name, want) in [("keys_matched", lines.len()), ("unchanged", unchanged)] {
        if report[name].as_u64() != Some(want as u64) {
            problems.push(format!(
                "report {name} is {}, the log holds {want}",
                report[name]
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} problems:\n{}\n{}",
            problems.len(),
            problems.join("\n"),
            out.dump()
        ))
    }
}

#[test]
fn a_pass_ends_in_the_state_the_model_predicts() {
    let server = RedisServer::start();
    let con = RefCell::new(server.conn());
    check("model::quiet", 100, case(), |case| {
        quiet_case(&server, &mut con.borrow_mut(), &case)
    });
}

// ---------------------------------------------------------------------------
// concurrent writers
// ---------------------------------------------------------------------------

/// A TTL the writer sets.
#[derive(Debug, Clone)]
enum WriterTtl {
    /// One of the rules' durations, this many milliseconds off: right at the
    /// edge of a condition.
    Near(Index, i64),
    /// A few milliseconds: the key expires during the pass.
    Tiny(u64),
    /// Seconds, as the keys are seeded with.
    Band(u64),
}

/// One thing the writer does to a key.
#[derive(Debug, Clone)]
enum Write {
    Persist,
    Expire(WriterTtl),
    Delete,
    /// DEL, then create it again (with this type, if the key is one the
    /// writer re-creates with other types), maybe with a TTL.
    Recreate(&'static str, Option<WriterTtl>),
}

/// A case with a writer thread that runs through `writes` in a loop while
/// the pass runs.
#[derive(Clone)]
struct Busy {
    case: Case,
    /// The keys the writer touches (indexes into `case.keys`), and whether
    /// it re-creates them with other types.
    hot: Vec<(Index, bool)>,
    /// What it does, to which of the `hot` keys.
    writes: Vec<(Index, Write)>,
}

/// A key the writer touches.
#[derive(Debug, Clone)]
struct Hot {
    key: usize,
    /// Re-created with other types: its type is unknown during the pass.
    retyped: bool,
}

impl Busy {
    /// The hot keys, each once.
    fn hot(&self) -> Vec<Hot> {
        let mut hot: Vec<Hot> = Vec::new();
        if self.case.keys.is_empty() {
            return hot;
        }
        for (index, retyped) in &self.hot {
            let key = index.index(self.case.keys.len());
            if !hot.iter().any(|h| h.key == key) {
                hot.push(Hot {
                    key,
                    retyped: *retyped,
                });
            }
        }
        hot
    }

    /// The rules' durations, which `WriterTtl::Near` picks from.
    fn edges(&self) -> Vec<u64> {
        let mut edges: Vec<u64> = self
            .case
            .rules
            .iter()
            .flat_map(|r| {
                let ttl = match r.act {
                    Act::Expire(ttl) => Some(ttl),
                    Act::Delete => None,
                };
                [r.ttl_below, r.ttl_above, ttl]
            })
            .flatten()
            .collect();
        edges.sort_unstable();
        edges.dedup();
        edges
    }

    fn ttl_ms(&self, ttl: &WriterTtl) -> u64 {
        match ttl {
            WriterTtl::Near(index, delta) => {
                let edges = self.edges();
                if edges.is_empty() {
                    return 10;
                }
                edges[index.index(edges.len())]
                    .saturating_add_signed(*delta)
                    .max(1)
            }
            WriterTtl::Tiny(ms) => *ms,
            WriterTtl::Band(secs) => secs * 1000,
        }
    }

    /// The writer's commands, one pipeline per write, with what each does
    /// in words.
    fn plan(&self) -> Vec<(String, redis::Pipeline)> {
        let hot = self.hot();
        if hot.is_empty() {
            return Vec::new();
        }
        self.writes
            .iter()
            .map(|(index, write)| {
                let h = &hot[index.index(hot.len())];
                let key = &self.case.keys[h.key];
                let mut pipe = redis::pipe();
                let what = match write {
                    Write::Persist => {
                        pipe.cmd("PERSIST").arg(&key.name).ignore();
                        "PERSIST".to_string()
                    }
                    Write::Expire(ttl) => {
                        let ms = self.ttl_ms(ttl);
                        pipe.cmd("PEXPIRE").arg(&key.name).arg(ms).ignore();
                        format!("PEXPIRE {ms}")
                    }
                    Write::Delete => {
                        pipe.cmd("DEL").arg(&key.name).ignore();
                        "DEL".to_string()
                    }
                    Write::Recreate(kind, ttl) => {
                        let kind = if h.retyped { kind } else { key.kind };
                        pipe.cmd("DEL").arg(&key.name).ignore();
                        create(&mut pipe, &key.name, kind);
                        let ms = ttl.as_ref().map(|t| self.ttl_ms(t));
                        if let Some(ms) = ms {
                            pipe.cmd("PEXPIRE").arg(&key.name).arg(ms).ignore();
                        }
                        format!("DEL, create as {kind}, ttl {ms:?} ms")
                    }
                };
                (format!("{}: {what}", show(&key.name)), pipe)
            })
            .collect()
    }
}

impl fmt::Debug for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.case)?;
        writeln!(f, "hot keys:")?;
        for h in self.hot() {
            let retyped = if h.retyped {
                ", re-created with other types"
            } else {
                ""
            };
            writeln!(f, "  {}{retyped}", show(&self.case.keys[h.key].name))?;
        }
        writeln!(f, "the writer's loop:")?;
        for (what, _) in self.plan() {
            writeln!(f, "  {what}")?;
        }
        Ok(())
    }
}

fn writer_ttl() -> impl Strategy<Value = WriterTtl> {
    prop_oneof![
        2 => (any::<Index>(), -2i64..=2).prop_map(|(i, d)| WriterTtl::Near(i, d)),
        2 => (any::<Index>(), -200i64..=1_500).prop_map(|(i, d)| WriterTtl::Near(i, d)),
        1 => (1u64..=30).prop_map(WriterTtl::Tiny),
        1 => prop::sample::select(KEY_TTL_BANDS).prop_flat_map(|(lo, hi)| (lo..=hi).prop_map(WriterTtl::Band)),
    ]
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        2 => Just(Write::Persist),
        4 => writer_ttl().prop_map(Write::Expire),
        1 => Just(Write::Delete),
        2 => (prop::sample::select(&TYPES[..]), prop::option::of(writer_ttl()))
            .prop_map(|(kind, ttl)| Write::Recreate(kind, ttl)),
    ]
}

/// A busy case: more keys and smaller batches than a quiet one, so that
/// the pass is many script calls long, and the writer's writes fall between
/// them. A dry run writes nothing, so its decisions are the quiet test's.
fn busy() -> impl Strategy<Value = Busy> {
    (
        keys(10..60),
        rules(),
        1u32..=4,
        prop::collection::vec((any::<Index>(), prop::bool::weighted(0.3)), 1..24),
        prop::collection::vec((any::<Index>(), write()), 1..24),
    )
        .prop_map(|(keys, rules, batch_size, hot, writes)| Busy {
            case: Case {
                keys,
                rules,
                batch_size,
                dry_run: false,
            },
            hot,
            writes,
        })
}

/// The most writes the writer makes in one case, however long the pass.
const MAX_WRITES: usize = 100_000;

/// Runs `plan` in a loop on its own connection until `stop` (or
/// [`MAX_WRITES`]); says `ready` after its first write. Returns how many
/// writes it made.
fn writer(
    mut con: redis::Connection,
    plan: Vec<(String, redis::Pipeline)>,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<()>,
) -> usize {
    let mut writes = 0;
    while writes < MAX_WRITES && !plan.is_empty() && !stop.load(Ordering::Relaxed) {
        let (what, pipe) = &plan[writes % plan.len()];
        pipe.exec(&mut con)
            .unwrap_or_else(|e| panic!("writer: {what}: {e}"));
        writes += 1;
        if writes == 1 {
            let _ = ready.send(());
        }
    }
    let _ = ready.send(());
    writes
}

/// Whether `rule`'s conditions held for a key of `kind` (when known) whose
/// PTTL was `pttl` (when known): `None` when what is unknown could tell.
fn decided(rule: &Rule, pttl: Option<i64>, kind: Option<&str>) -> Option<bool> {
    if let (Some(want), Some(kind)) = (rule.key_type, kind)
        && want != kind
    {
        return Some(false);
    }
    let ttl_free = !rule.no_ttl
        && rule.ttl_below.is_none()
        && rule.ttl_above.is_none()
        && rule.act == Act::Delete;
    match pttl {
        Some(pttl) => rule.holds(Seen { pttl, kind }),
        // No TTL condition: any PTTL gives the same answer.
        None if ttl_free => rule.holds(Seen { pttl: -1, kind }),
        None => None,
    }
}

/// Whether `fate`, logged for `key`, was the job's to take, given what it
/// saw: the rule named selects the key and its conditions held, and every
/// earlier rule that selects the key did not hold, as far as the key's
/// type (`kind`, when the writer never gives it another) and the PTTL the
/// script saw (when the log gives it) tell.
fn justified(rules: &[Rule], key: &[u8], fate: &Fate, kind: Option<&str>) -> Result<(), String> {
    let selecting: Vec<usize> = (0..rules.len())
        .filter(|&r| rules[r].selects(key))
        .collect();
    if selecting.is_empty() {
        return Err(format!("{fate}, but no rule's pattern selects the key"));
    }
    let pttl = fate.pttl();
    let seen = format!("pttl {pttl:?}, type {kind:?}");
    let acting = match fate {
        Fate::Acted { rule, .. } | Fate::Deleted { rule } => {
            let r = rules
                .iter()
                .position(|x| &x.name == rule)
                .ok_or(format!("{fate}: no such rule"))?;
            if !selecting.contains(&r) {
                return Err(format!(
                    "{fate}, but its pattern {:?} does not select the key",
                    rules[r].pattern
                ));
            }
            let unconditional = rules[r].is_unconditional_delete();
            if unconditional != matches!(fate, Fate::Deleted { .. }) {
                return Err(format!("{fate}, but the rule is {:?}", rules[r]));
            }
            if decided(&rules[r], pttl, kind) == Some(false) {
                return Err(format!("{fate}, but its conditions do not hold for {seen}"));
            }
            Some(r)
        }
        Fate::Unchanged { .. } | Fate::Vanished => None,
        Fate::Capped => return Err(format!("{fate}, but no cap was set")),
    };
    for e in selecting.into_iter().take_while(|&e| Some(e) != acting) {
        if decided(&rules[e], pttl, kind) == Some(true) {
            return Err(format!(
                "{fate}, but rule {:?} comes first and holds for {seen}",
                rules[e].name
            ));
        }
    }
    Ok(())
}

/// `DUMP key`: its type and value, byte for byte (nil when gone).
fn dump(con: &mut redis::Connection, key: &[u8]) -> Option<Vec<u8>> {
    redis::cmd("DUMP").arg(key).query(con).expect("DUMP")
}

/// Runs one busy case; adds to `checked` the actions on keys the writer
/// touched that were checked against the PTTL the script saw.
fn busy_case(
    server: &RedisServer,
    con: &mut redis::Connection,
    busy: &Busy,
    checked: &Cell<usize>,
) -> Result<(), String> {
    let case = &busy.case;
    seed_keys(con, &case.keys)?;
    let hot = busy.hot();
    let is_hot = |k: usize| hot.iter().any(|h| h.key == k);
    let started = Instant::now();
    let before = snapshot(con, &case.keys);
    if before.len() != case.keys.len() {
        return Err(format!(
            "seeded {} keys, the server holds {}",
            case.keys.len(),
            before.len()
        ));
    }
    let quiet_unselected: Vec<usize> = (0..case.keys.len())
        .filter(|&k| !is_hot(k) && !oracle::selected(&case.rules, &case.keys[k].name))
        .collect();
    let dumps: Vec<Option<Vec<u8>>> = quiet_unselected
        .iter()
        .map(|&k| dump(con, &case.keys[k].name))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready) = mpsc::channel();
    let writer = {
        let (con, plan, stop) = (server.conn(), busy.plan(), Arc::clone(&stop));
        thread::spawn(move || writer(con, plan, stop, ready_tx))
    };
    ready
        .recv_timeout(Duration::from_secs(10))
        .map_err(|e| format!("the writer never started: {e}"))?;
    let out = run_job(server, case).run();
    stop.store(true, Ordering::Relaxed);
    let writes = writer
        .join()
        .map_err(|_| "the writer panicked".to_string())?;
    let window = started.elapsed().as_millis() as i64 + WINDOW_SLACK_MS;
    if out.code != 0 {
        return Err(format!("the job exited {}\n{}", out.code, out.dump()));
    }
    let report = out.report();
    let lines = key_lines(&out.stderr)?;
    let looks = looks_by_key(&lines);
    let lives = lives(&before, window);
    let mut problems = Vec::new();

    // (a) Keys no pattern selects: never looked at, and those the writer
    // leaves alone are byte-identical, TTL included.
    for (&k, was) in quiet_unselected.iter().zip(&dumps) {
        let key = &case.keys[k];
        if &dump(con, &key.name) != was {
            problems.push(format!(
                "{}: no rule selects it, yet its value changed",
                show(&key.name)
            ));
        }
        let pttl: i64 = redis::cmd("PTTL").arg(&key.name).query(con).expect("PTTL");
        if !lives[&key.name].contains(pttl) {
            problems.push(format!(
                "{}: no rule selects it, yet its PTTL is {pttl}, not {:?}",
                show(&key.name),
                lives[&key.name]
            ));
        }
    }
    // (b) Keys the writer never touched: the model's looks and final state.
    let mut expected = BTreeMap::new();
    let mut quiet = BTreeSet::new();
    for (k, key) in case.keys.iter().enumerate().filter(|(k, _)| !is_hot(*k)) {
        quiet.insert(key.name.clone());
        let seen = looks.get(&key.name).map_or(&[][..], Vec::as_slice);
        match replay(&case.rules, key, lives[&key.name], seen, false, window) {
            Ok(Replayed {
                last: Some((kind, life)),
                ..
            }) => {
                expected.insert(key.name.clone(), want(kind, life));
            }
            Ok(_) => {}
            Err(why) => problems.push(format!("{} (k{k}, untouched): {why}", show(&key.name))),
        }
    }
    let after: BTreeMap<Vec<u8>, KeyState> = snapshot(con, &case.keys)
        .into_iter()
        .filter(|(name, _)| quiet.contains(name))
        .collect();
    problems.extend(keyspace_diff(&after, &expected));
    // (c) Every look, at every key: justified by what the job saw.
    for (name, fate) in &lines {
        let Some(k) = case.keys.iter().position(|key| &key.name == name) else {
            problems.push(format!(
                "{}: logged, but no such key was seeded",
                show(name)
            ));
            continue;
        };
        let retyped = hot.iter().any(|h| h.key == k && h.retyped);
        let kind = (!retyped).then_some(case.keys[k].kind);
        if let Err(why) = justified(&case.rules, name, fate, kind) {
            let whose = if is_hot(k) {
                "touched by the writer"
            } else {
                "untouched"
            };
            problems.push(format!("{} ({whose}): {why}", show(name)));
        }
        if is_hot(k) && matches!(fate, Fate::Acted { pttl: Some(_), .. }) {
            checked.set(checked.get() + 1);
        }
    }
    problems.extend(pttl_missing(&lines));
    if report["keys_matched"].as_u64() != Some(lines.len() as u64) {
        problems.push(format!(
            "report keys_matched is {}, the log holds {} keys",
            report["keys_matched"],
            lines.len()
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} problems (the writer made {writes} writes):\n{}\n{}",
            problems.len(),
            problems.join("\n"),
            out.dump()
        ))
    }
}

#[test]
fn with_concurrent_writers_every_action_was_justified() {
    let server = RedisServer::start();
    let con = RefCell::new(server.conn());
    let checked = Cell::new(0);
    check("model::busy", 64, busy(), |busy| {
        busy_case(&server, &mut con.borrow_mut(), &busy, &checked)
    });
    eprintln!(
        "model::busy: {} actions on keys the writer touched were checked against the PTTL \
         the script saw",
        checked.get()
    );
}

/// The check of the observed state, on log lines made up for it: it must
/// refuse what the rules did not allow.
#[test]
fn an_action_the_observed_state_does_not_allow_is_refused() {
    let rule = |name: &str, pattern: &str, below: Option<u64>, act: Act| Rule {
        name: name.into(),
        pattern: pattern.into(),
        no_ttl: false,
        ttl_below: below,
        ttl_above: None,
        key_type: None,
        act,
    };
    let rules = [
        rule("soon", "cache:*", Some(60_000), Act::Delete),
        rule("cap", "cache:*", None, Act::Expire(3_600_000)),
        rule("typed", "t:*", None, Act::Delete),
        rule("all", "*", None, Act::Delete),
    ];
    let mut typed = rules.clone();
    typed[2].key_type = Some("hash");
    let acted = |rule: &str, pttl: Option<i64>| Fate::Acted {
        rule: rule.into(),
        pttl,
    };
    let ok = |rules: &[Rule], key: &[u8], fate: Fate, kind: Option<&str>| {
        justified(rules, key, &fate, kind)
    };
    // What the rules allow.
    assert_eq!(
        ok(&rules, b"cache:a", acted("soon", Some(59_999)), None),
        Ok(())
    );
    assert_eq!(ok(&rules, b"cache:a", acted("cap", Some(-1)), None), Ok(()));
    assert_eq!(
        ok(&rules, b"cache:a", acted("cap", Some(3_600_001)), None),
        Ok(())
    );
    assert_eq!(ok(&rules, b"cache:a", acted("soon", None), None), Ok(()));
    assert_eq!(
        ok(&typed, b"t:1", acted("typed", Some(-1)), Some("hash")),
        Ok(())
    );
    assert_eq!(ok(&typed, b"t:1", acted("typed", Some(-1)), None), Ok(()));
    assert_eq!(
        ok(&rules, b"x", Fate::Deleted { rule: "all".into() }, None),
        Ok(())
    );
    // What they do not.
    let refused = [
        ok(&rules, b"cache:a", acted("soon", Some(60_000)), None),
        ok(&rules, b"cache:a", acted("soon", Some(-1)), None),
        ok(&rules, b"cache:a", acted("cap", Some(3_600_000)), None),
        ok(&rules, b"cache:a", acted("cap", Some(59_999)), None),
        ok(&rules, b"cache:a", Fate::Unchanged { pttl: Some(10) }, None),
        ok(&rules, b"temp:a", acted("soon", None), None),
        ok(&typed, b"t:1", acted("typed", Some(-1)), Some("list")),
        ok(
            &typed,
            b"t:1",
            Fate::Deleted { rule: "all".into() },
            Some("hash"),
        ),
        ok(&rules, b"x", acted("all", None), None),
        ok(&rules, b"x", acted("nosuch", None), None),
    ];
    for (n, verdict) in refused.iter().enumerate() {
        assert!(verdict.is_err(), "case {n} was not refused");
    }
}

/// The log's key lines are read back to the key's bytes, with the PTTL the
/// script saw when a line gives it (as a number or as text).
#[test]
fn key_lines_read_keys_and_the_pttl() {
    let log = concat!(
        r#"{"level":"INFO","message":"pass started"}"#,
        "\n",
        r#"{"message":"rule acts on key","key":"\"a\\xff\\n\"","rule":"r","action":"delete","pttl":-1}"#,
        "\n",
        r#"{"message":"rule acts on key","key":"\"b\"","rule":"r","action":"delete","pttl":"1500"}"#,
        "\n",
        r#"{"message":"rule deletes key, unless it had vanished","key":"\"\\x00\"","rule":"d"}"#,
        "\n",
        r#"{"message":"no rule's conditions hold; key left as it was","key":"\"c\""}"#,
        "\n",
        r#"{"message":"key vanished before the script saw it","key":"\"\\\"q\\\"\""}"#,
        "\n",
    );
    let lines = key_lines(log).unwrap();
    assert_eq!(
        lines,
        vec![
            (
                b"a\xff\n".to_vec(),
                Fate::Acted {
                    rule: "r".into(),
                    pttl: Some(-1)
                }
            ),
            (
                b"b".to_vec(),
                Fate::Acted {
                    rule: "r".into(),
                    pttl: Some(1500)
                }
            ),
            (b"\x00".to_vec(), Fate::Deleted { rule: "d".into() }),
            (b"c".to_vec(), Fate::Unchanged { pttl: None }),
            (b"\"q\"".to_vec(), Fate::Vanished),
        ]
    );
    assert!(key_lines(r#"{"message":"rule acts on key","key":"a","rule":"r"}"#).is_err());
}
