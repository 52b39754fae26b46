//! The rules: which keys the job acts on and how. Reads a TOML rules file
//! (bounded in size, UTF-8 text), validates it (every error names the file
//! and line) within the bounds Redis and the script accept, holds the
//! built-in default, and renders the effective rules back as TOML for
//! `check`.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::file::{self, Unread};
use crate::glob::{Glob, LuaMatcher};

/// The rules used when no file is given: the classic cache-and-temp policy.
pub const DEFAULT_RULES: &str = r#"
[[rule]]
name    = "cache-missing-ttl"
pattern = "cache:*"
no_ttl  = true
action  = "expire"
ttl     = "1h"

[[rule]]
name      = "cache-expiring-soon"
pattern   = "cache:*"
ttl_below = "60s"
action    = "delete"

[[rule]]
name    = "temp"
pattern = "temp:*"
action  = "delete"
"#;

/// The most prefix positions a SCAN MATCH built from several patterns spells
/// out: enough to tell key families apart, few for Redis to check.
const MATCH_PREFIX_MAX: usize = 16;

/// The most rules one file may hold: the script's reply names the acting
/// rule in one byte (`script::protocol` asserts that they fit).
pub const MAX_RULES: usize = 64;

/// The largest rules file read: 64 rules take a few KB, so anything near
/// this is not a rules file, and it is refused before it is read.
pub const MAX_FILE_BYTES: u64 = file::MAX_BYTES;

/// The longest duration a rule may hold: 100 years, `"100y"`. Every TTL
/// the script compares or sets is then exact in Lua's numbers (doubles, exact
/// to 2^53 ms), and `PEXPIRE`'s sum of it with the server's clock in
/// milliseconds stays far below the 2^63 that Redis refuses, so no write can
/// fail on a rule's value.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// A validated, ordered list of rules. The first rule whose pattern and
/// conditions all hold acts on a key; a key no rule takes is never touched.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Where the rules came from, for messages and the report.
    pub source: String,
    /// The rules in file order.
    pub rules: Vec<Rule>,
    /// Each distinct pattern once, for the SCAN MATCH.
    patterns: Vec<Glob>,
}

/// One rule: a pattern, optional conditions, an action.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name, used in logs and the report.
    pub name: String,
    /// Redis glob the key name must match.
    pub pattern: Glob,
    /// Conditions checked atomically by the script; all must hold.
    pub conditions: Conditions,
    /// What happens to a key this rule takes.
    pub action: Action,
    /// The most keys the rule may act on in one run (`max_keys`): beyond,
    /// the run stops and fails, since the rule selects far more keys than
    /// it should.
    pub max_keys: Option<u64>,
}

/// The conditions of a rule. `None` (or `false`) means "no such condition".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// The key has no expiry.
    pub no_ttl: bool,
    /// The key has an expiry due in less than this.
    pub ttl_below: Option<Duration>,
    /// The key has an expiry due in more than this.
    pub ttl_above: Option<Duration>,
    /// The key holds this type.
    pub key_type: Option<KeyType>,
    /// The key was last accessed more than this long ago (whole seconds).
    pub idle_above: Option<Duration>,
}

/// What a rule does to the keys it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// UNLINK the key (its memory is freed off Redis's main thread).
    Delete,
    /// Set the key's TTL to this, unless it already expires sooner.
    Expire(Duration),
}

/// The Redis data types a rule can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    String,
    List,
    Set,
    Zset,
    Hash,
    Stream,
}

impl Rule {
    /// Whether the rule deletes every key its pattern matches, without a
    /// check: the script then needs no `PTTL` for it.
    pub fn is_unconditional_delete(&self) -> bool {
        self.action == Action::Delete && self.conditions == Conditions::default()
    }
}

impl KeyType {
    /// The name TYPE replies with.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::String => "string",
            KeyType::List => "list",
            KeyType::Set => "set",
            KeyType::Zset => "zset",
            KeyType::Hash => "hash",
            KeyType::Stream => "stream",
        }
    }
}

impl Action {
    /// The action's name in rules files and the report.
    pub fn name(self) -> &'static str {
        match self {
            Action::Delete => "delete",
            Action::Expire(_) => "expire",
        }
    }
}

impl Rules {
    /// The built-in default rules.
    pub fn builtin() -> Rules {
        Rules::parse("built-in rules", DEFAULT_RULES).expect("the built-in rules are valid")
    }

    /// One delete rule without conditions for `pattern`, which may be any
    /// bytes: for testing the pattern's Lua matcher against every key.
    pub fn delete_matching(pattern: Glob) -> Rules {
        Rules {
            source: "delete-matching rule".into(),
            patterns: vec![pattern.clone()],
            rules: vec![Rule {
                name: "delete".into(),
                pattern,
                conditions: Conditions::default(),
                action: Action::Delete,
                max_keys: None,
            }],
        }
    }

    /// Reads and validates the rules file at `path`: at most
    /// [`MAX_FILE_BYTES`] (never read further), and UTF-8 text.
    pub fn load(path: &Path) -> Result<Rules, RulesError> {
        let source = path.display().to_string();
        let text = read_text(path).map_err(|message| RulesError {
            source: source.clone(),
            line: None,
            message,
        })?;
        Rules::parse(&source, &text)
    }

    /// Validates rules given as TOML text; `source` names it in errors.
    pub fn parse(source: &str, text: &str) -> Result<Rules, RulesError> {
        let error_at = |span: Option<std::ops::Range<usize>>, message: String| RulesError {
            source: source.to_string(),
            line: span.map(|s| line_of(text, s.start)),
            message,
        };
        let file: RulesFile = toml::from_str(text)
            .map_err(|err| error_at(err.span(), crate::error::one_line(err.message())))?;
        let raw = file.rule.unwrap_or_default();
        if raw.is_empty() {
            return Err(error_at(None, "no rules: add at least one [[rule]]".into()));
        }
        if raw.len() > MAX_RULES {
            return Err(error_at(
                Some(raw[MAX_RULES].span()),
                format!("too many rules: at most {MAX_RULES} are allowed"),
            ));
        }
        let mut rules: Vec<Rule> = Vec::with_capacity(raw.len());
        for entry in &raw {
            let rule = entry
                .get_ref()
                .validate()
                .map_err(|(span, message)| error_at(Some(span), message))?;
            if rules.iter().any(|r| r.name == rule.name) {
                let span = entry.get_ref().name.span();
                return Err(error_at(
                    Some(span),
                    format!("duplicate rule name {:?}", rule.name),
                ));
            }
            rules.push(rule);
        }
        let mut patterns: Vec<Glob> = Vec::new();
        for rule in &rules {
            if !patterns.contains(&rule.pattern) {
                patterns.push(rule.pattern.clone());
            }
        }
        Ok(Rules {
            source: source.to_string(),
            rules,
            patterns,
        })
    }

    /// A SCAN MATCH pattern that every key some rule could take matches, so
    /// Redis filters the rest before they cross the network: the one pattern
    /// when all rules share it, else the rules' literal prefixes spelled
    /// position by position, up to the shortest, followed by `*`:
    /// `cache:*` and `temp:*` give `[ct][ae][cm][hp][:e]*`. `None` when some
    /// pattern starts with a wildcard.
    pub fn scan_match(&self) -> Option<Vec<u8>> {
        if let [glob] = self.patterns.as_slice() {
            return (!glob.matches_everything()).then(|| glob.as_bytes().to_vec());
        }
        let prefixes: Vec<&[u8]> = self.patterns.iter().map(Glob::literal_prefix).collect();
        let len = prefixes
            .iter()
            .map(|p| p.len())
            .min()?
            .min(MATCH_PREFIX_MAX);
        if len == 0 {
            return None;
        }
        let mut pattern = Vec::new();
        for at in 0..len {
            let mut bytes: Vec<u8> = prefixes.iter().map(|p| p[at]).collect();
            bytes.sort_unstable();
            bytes.dedup();
            if let [byte] = bytes[..] {
                // A literal prefix holds no byte special outside a class.
                pattern.push(byte);
                continue;
            }
            pattern.push(b'[');
            for byte in bytes {
                if matches!(byte, b'\\' | b']' | b'^' | b'-') {
                    pattern.push(b'\\');
                }
                pattern.push(byte);
            }
            pattern.push(b']');
        }
        pattern.push(b'*');
        Some(pattern)
    }

    /// Each rule's name matcher for the clean script ([`Glob::lua_matcher`]),
    /// or [`LuaMatcher::All`] when `scan_match` (the pass's SCAN MATCH) is
    /// the rule's own pattern: every key the SCAN returns then matches it
    /// without a second look.
    pub fn lua_matchers(&self, scan_match: Option<&[u8]>) -> Vec<LuaMatcher> {
        self.rules
            .iter()
            .map(|rule| {
                if scan_match == Some(rule.pattern.as_bytes()) {
                    LuaMatcher::All
                } else {
                    rule.pattern.lua_matcher()
                }
            })
            .collect()
    }

    /// Whether some rule's pattern matches the key name `key`: a key no
    /// pattern matches is none of the rules' business.
    pub fn matches(&self, key: &[u8]) -> bool {
        self.patterns.iter().any(|glob| glob.matches(key))
    }

    /// Whether some rule's pattern may match a key that starts with
    /// `prefix`: its literal prefix does not rule it out.
    pub fn may_select(&self, prefix: &[u8]) -> bool {
        self.patterns.iter().any(|glob| {
            let head = glob.literal_prefix();
            head.starts_with(prefix) || prefix.starts_with(head)
        })
    }

    /// Whether any rule needs `OBJECT IDLETIME`, which Redis refuses under
    /// an LFU eviction policy.
    pub fn uses_idle_time(&self) -> bool {
        self.rules.iter().any(|r| r.conditions.idle_above.is_some())
    }

    /// The rules as normalized TOML, as `check` prints them.
    pub fn to_toml(&self) -> String {
        let file = RenderedFile {
            rule: self.rules.iter().map(RenderedRule::from).collect(),
        };
        toml::to_string(&file).expect("rules render as TOML")
    }
}

/// A rules file that failed validation: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesError {
    /// The file's path, or "built-in rules".
    pub source: String,
    /// 1-based line of the offending item, when known.
    pub line: Option<usize>,
    /// What is wrong, on one line.
    pub message: String,
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.source, line, self.message),
            None => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

impl std::error::Error for RulesError {}

impl From<RulesError> for crate::error::Error {
    fn from(err: RulesError) -> Self {
        crate::error::Error::Rules(err.to_string())
    }
}

/// The 1-based line that byte `offset` of `text` is on.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The text of the file at `path`, or why it is not a rules file. The read
/// is bounded, so a huge file (or `/dev/zero`) costs at most the limit.
fn read_text(path: &Path) -> Result<String, String> {
    let file =
        std::fs::File::open(path).map_err(|err| format!("cannot read the rules file: {err}"))?;
    let meta = file
        .metadata()
        .map_err(|err| format!("cannot read the rules file: {err}"))?;
    if meta.is_dir() {
        return Err("is a directory, not a rules file".into());
    }
    let bytes = file::read_at_most(file).map_err(|why| match why {
        Unread::TooLarge => format!("{why}: not a rules file"),
        Unread::Io(err) => format!("cannot read the rules file: {err}"),
    })?;
    let line_at =
        |bytes: &[u8], offset: usize| bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
    if let Some(nul) = bytes.iter().position(|&b| b == 0) {
        return Err(format!(
            "line {}: a NUL byte: a binary file, not TOML text",
            line_at(&bytes, nul)
        ));
    }
    String::from_utf8(bytes).map_err(|err| {
        let at = err.utf8_error().valid_up_to();
        format!(
            "line {}: not UTF-8 text (byte {at}): TOML files are UTF-8",
            line_at(err.as_bytes(), at)
        )
    })
}

/// The file as written, with spans for messages.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rule: Option<Vec<Spanned<RawRule>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    pattern: Spanned<String>,
    action: Spanned<String>,
    ttl: Option<Spanned<String>>,
    no_ttl: Option<Spanned<bool>>,
    ttl_below: Option<Spanned<String>>,
    ttl_above: Option<Spanned<String>>,
    #[serde(rename = "type")]
    key_type: Option<Spanned<String>>,
    idle_above: Option<Spanned<String>>,
    max_keys: Option<Spanned<toml::Value>>,
}

type Invalid = (std::ops::Range<usize>, String);

impl RawRule {
    fn validate(&self) -> Result<Rule, Invalid> {
        let name = self.name.get_ref().trim().to_string();
        if name.is_empty() {
            return Err((self.name.span(), "a rule name must not be empty".into()));
        }
        // The name is printed in log lines and the report's: a line break
        // or a control character in it would forge or garble lines.
        if name.chars().any(char::is_control) {
            return Err((
                self.name.span(),
                format!("rule {name:?}: a rule name must be one line, without control characters"),
            ));
        }
        let pattern = Glob::new(self.pattern.get_ref().as_bytes()).map_err(|err| {
            (
                self.pattern.span(),
                format!("rule {name:?}: invalid pattern: {err}"),
            )
        })?;
        let conditions = self.conditions(&name)?;
        let action = self.action(&name)?;
        check_satisfiable(&name, &conditions, action)
            .map_err(|(field, message)| (self.span_of(field), message))?;
        let max_keys = match self
            .max_keys
            .as_ref()
            .map(|max| (max.get_ref(), max.span()))
        {
            None => None,
            Some((toml::Value::Integer(max), _)) if *max >= 1 => Some(*max as u64),
            Some((value, span)) => {
                return Err((
                    span,
                    format!(
                        "rule {name:?}: max_keys = {value} is not a cap: write a whole number \
                         of keys, at least 1 (to stop a rule, remove it)"
                    ),
                ));
            }
        };
        Ok(Rule {
            name,
            pattern,
            conditions,
            action,
            max_keys,
        })
    }

    /// Where `field` is written, falling back to the rule's `action`.
    fn span_of(&self, field: &str) -> std::ops::Range<usize> {
        let span = |value: &Option<Spanned<String>>| value.as_ref().map(Spanned::span);
        match field {
            "ttl_below" => span(&self.ttl_below),
            "ttl_above" => span(&self.ttl_above),
            _ => None,
        }
        .unwrap_or_else(|| self.action.span())
    }

    fn conditions(&self, name: &str) -> Result<Conditions, Invalid> {
        if let Some(no_ttl) = &self.no_ttl
            && !no_ttl.get_ref()
        {
            return Err((
                no_ttl.span(),
                format!(
                    "rule {name:?}: no_ttl = false is not a condition; \
                     leave it out, or use ttl_below/ttl_above for keys with a TTL"
                ),
            ));
        }
        let key_type = match &self.key_type {
            None => None,
            Some(t) => Some(
                KeyType::deserialize(toml::Value::String(t.get_ref().clone())).map_err(|_| {
                    (
                        t.span(),
                        format!(
                            "rule {name:?}: unknown type {:?}: expected one of \
                             string, list, set, zset, hash, stream",
                            t.get_ref()
                        ),
                    )
                })?,
            ),
        };
        let idle_above = duration(name, "idle_above", &self.idle_above)?;
        if let (Some(idle), Some(raw)) = (idle_above, &self.idle_above)
            && idle.subsec_nanos() != 0
        {
            return Err((
                raw.span(),
                format!(
                    "rule {name:?}: idle_above must be whole seconds \
                     (Redis tracks idle time in seconds)"
                ),
            ));
        }
        Ok(Conditions {
            no_ttl: self.no_ttl.is_some(),
            ttl_below: duration(name, "ttl_below", &self.ttl_below)?,
            ttl_above: duration(name, "ttl_above", &self.ttl_above)?,
            key_type,
            idle_above,
        })
    }

    fn action(&self, name: &str) -> Result<Action, Invalid> {
        let ttl = duration(name, "ttl", &self.ttl)?;
        match (self.action.get_ref().as_str(), ttl) {
            ("delete", None) => Ok(Action::Delete),
            ("delete", Some(_)) => Err((
                self.ttl.as_ref().expect("ttl is set").span(),
                format!("rule {name:?}: ttl is only meaningful with action = \"expire\""),
            )),
            ("expire", Some(ttl)) if ttl >= Duration::from_millis(1) => Ok(Action::Expire(ttl)),
            ("expire", Some(_)) => Err((
                self.ttl.as_ref().expect("ttl is set").span(),
                format!("rule {name:?}: ttl must be at least 1ms"),
            )),
            ("expire", None) => Err((
                self.action.span(),
                format!("rule {name:?}: action \"expire\" needs a ttl, e.g. ttl = \"1h\""),
            )),
            (other, _) => Err((
                self.action.span(),
                format!(
                    "rule {name:?}: unknown action {other:?}: expected \"delete\" or \"expire\""
                ),
            )),
        }
    }
}

/// Parses an optional humantime duration field, e.g. "90s" or "4m30s": whole
/// milliseconds (Redis keeps TTLs in milliseconds: "500us" would silently
/// become 0), and at most [`MAX_DURATION`].
fn duration(
    rule: &str,
    field: &str,
    value: &Option<Spanned<String>>,
) -> Result<Option<Duration>, Invalid> {
    let Some(value) = value else { return Ok(None) };
    let text = value.get_ref();
    let invalid = |why: String| {
        (
            value.span(),
            format!("rule {rule:?}: {field} = {text:?} {why}"),
        )
    };
    let duration = humantime::parse_duration(text.trim()).map_err(|err| {
        invalid(format!(
            "is not a duration ({err}); write e.g. \"90s\", \"1h\" or \"4m30s\""
        ))
    })?;
    if duration > MAX_DURATION {
        return Err(invalid(
            "is longer than 100 years, the longest duration a rule may hold".into(),
        ));
    }
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err(invalid(
            "is not a whole number of milliseconds: Redis keeps TTLs in milliseconds".into(),
        ));
    }
    Ok(Some(duration))
}

/// Rejects rules whose conditions (with the action's implicit one) can never
/// all hold: such a rule is always a mistake. The error names the field to
/// point at.
fn check_satisfiable(
    name: &str,
    c: &Conditions,
    action: Action,
) -> Result<(), (&'static str, String)> {
    let never = |field, why: &str| Err((field, format!("rule {name:?} can never act: {why}")));
    if c.no_ttl && c.ttl_below.is_some() {
        return never("ttl_below", "no_ttl contradicts ttl_below");
    }
    if c.no_ttl && c.ttl_above.is_some() {
        return never("ttl_above", "no_ttl contradicts ttl_above");
    }
    if c.ttl_below == Some(Duration::ZERO) {
        return never("ttl_below", "no TTL is below 0s");
    }
    if let (Some(below), Some(above)) = (c.ttl_below, c.ttl_above)
        && above >= below
    {
        return never("ttl_above", "ttl_above must be less than ttl_below");
    }
    // An expire rule takes only keys whose TTL it would shorten.
    if let (Action::Expire(ttl), Some(below)) = (action, c.ttl_below)
        && below <= ttl
    {
        return never(
            "ttl_below",
            "every key below ttl_below already expires sooner than ttl, \
             and expire never lengthens a TTL",
        );
    }
    Ok(())
}

/// The serializable form of the effective rules.
#[derive(Serialize)]
struct RenderedFile {
    rule: Vec<RenderedRule>,
}

#[derive(Serialize)]
struct RenderedRule {
    name: String,
    pattern: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    no_ttl: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_below: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_above: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    key_type: Option<KeyType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_above: Option<String>,
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_keys: Option<u64>,
}

impl From<&Rule> for RenderedRule {
    fn from(rule: &Rule) -> Self {
        let human = |d: Duration| humantime::format_duration(d).to_string();
        let c = &rule.conditions;
        RenderedRule {
            name: rule.name.clone(),
            pattern: String::from_utf8_lossy(rule.pattern.as_bytes()).into_owned(),
            no_ttl: c.no_ttl.then_some(true),
            ttl_below: c.ttl_below.map(human),
            ttl_above: c.ttl_above.map(human),
            key_type: c.key_type,
            idle_above: c.idle_above.map(human),
            action: rule.action.name(),
            ttl: match rule.action {
                Action::Expire(ttl) => Some(human(ttl)),
                Action::Delete => None,
            },
            max_keys: rule.max_keys,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        Rules::parse("rules.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn builtin_rules_are_the_classic_policy() {
        let rules = Rules::builtin();
        let names: Vec<_> = rules.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["cache-missing-ttl", "cache-expiring-soon", "temp"]);
        assert_eq!(
            rules.rules[0].action,
            Action::Expire(Duration::from_secs(3600))
        );
        assert!(rules.rules[0].conditions.no_ttl);
        assert_eq!(
            rules.rules[1].conditions.ttl_below,
            Some(Duration::from_secs(60))
        );
        assert_eq!(rules.rules[2].action, Action::Delete);
    }

    /// A rules file deleting keys of each pattern, in order.
    fn rules_text(patterns: &[&str]) -> String {
        let mut text = String::new();
        for (i, pattern) in patterns.iter().enumerate() {
            let pattern: String = pattern
                .chars()
                .map(|c| format!("\\u{:04x}", c as u32))
                .collect();
            text += &format!(
                "[[rule]]\nname = \"r{i}\"\npattern = \"{pattern}\"\naction = \"delete\"\n"
            );
        }
        text
    }

    fn rules_of(patterns: &[&str]) -> Rules {
        Rules::parse("r", &rules_text(patterns)).unwrap()
    }

    #[test]
    fn scan_match_spells_several_prefixes_position_by_position() {
        assert_eq!(
            Rules::builtin().scan_match(),
            Some(b"[ct][ae][cm][hp][:e]*".to_vec())
        );
        assert_eq!(
            rules_of(&["]a*", "^a?", "-ab"]).scan_match(),
            Some(b"[\\-\\]\\^]a*".to_vec())
        );
        // No literal prefix: a leading escape or wildcard.
        assert_eq!(rules_of(&["]a*", "\\\\x"]).scan_match(), None);
        assert_eq!(rules_of(&["a*", "*b"]).scan_match(), None);
    }

    #[test]
    fn scan_match_never_hides_a_key_some_rule_takes() {
        // Short literal prefixes over the bytes a class must escape, then a
        // tail that may hold any pattern syntax: keys often match.
        let mut rng = fastrand::Rng::with_seed(0x5ca9_3a7c);
        let bytes = |rng: &mut fastrand::Rng, alphabet: &[u8], max: usize| -> Vec<u8> {
            (0..rng.usize(..=max))
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect()
        };
        let (prefix, tail) = (b"a-]^", b"a-]^\\[*?");
        let mut checked = 0;
        for _ in 0..2000 {
            let patterns: Vec<String> = (0..rng.usize(2..5))
                .map(|_| {
                    let mut pattern = bytes(&mut rng, prefix, 2);
                    pattern.extend(bytes(&mut rng, tail, 3));
                    String::from_utf8(pattern).unwrap()
                })
                .collect();
            let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
            let Ok(rules) = Rules::parse("r", &rules_text(&refs)) else {
                continue;
            };
            let Some(scan_match) = rules.scan_match() else {
                continue;
            };
            let filter = Glob::new(&scan_match).expect("a valid pattern");
            for _ in 0..50 {
                let key = bytes(&mut rng, prefix, 5);
                if rules.matches(&key) {
                    assert!(
                        filter.matches(&key),
                        "{:?} hides {:?}, which {patterns:?} take",
                        String::from_utf8_lossy(&scan_match),
                        String::from_utf8_lossy(&key),
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000, "only {checked} matching keys were tried");
    }

    #[test]
    fn scan_match_covers_every_rule() {
        let one = "[[rule]]\nname = \"a\"\npattern = \"cache:*\"\naction = \"delete\"\n";
        let rules = Rules::parse("r", one).unwrap();
        assert_eq!(rules.scan_match(), Some(b"cache:*".to_vec()));
        let two = format!(
            "{one}{}",
            one.replace("\"a\"", "\"b\"").replace("cache:*", "cache:t?")
        );
        let rules = Rules::parse("r", &two).unwrap();
        assert_eq!(rules.scan_match(), Some(b"cache:*".to_vec()));
    }

    #[test]
    fn rendered_rules_parse_back_to_the_same_rules() {
        let rules = Rules::builtin();
        let again = Rules::parse("again", &rules.to_toml()).unwrap();
        assert_eq!(again.to_toml(), rules.to_toml());
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let text = "[[rule]]\nname = \"a\"\npattern = \"a*\"\naction = \"delete\"\ncolour = 1\n";
        assert!(error(text).starts_with("rules.toml:5: "), "{}", error(text));
        assert!(error(text).contains("colour"));
    }

    #[test]
    fn the_longest_duration_and_whole_milliseconds_are_accepted() {
        let text = "[[rule]]\nname = \"r\"\npattern = \"a*\"\nttl_above = \"1ms\"\n\
                    action = \"expire\"\nttl = \"100y\"\n";
        let rules = Rules::parse("r", text).unwrap();
        assert_eq!(rules.rules[0].action, Action::Expire(MAX_DURATION));
        assert_eq!(
            rules.rules[0].conditions.ttl_above,
            Some(Duration::from_millis(1))
        );
    }

    #[test]
    fn idle_time_is_needed_only_by_idle_rules() {
        let rule = |extra: &str| {
            Rules::parse(
                "r",
                &format!("[[rule]]\nname = \"r\"\npattern = \"a*\"\n{extra}action = \"delete\"\n"),
            )
            .unwrap()
        };
        assert!(rule("idle_above = \"1h\"\n").uses_idle_time());
        assert!(!rule("type = \"hash\"\n").uses_idle_time());
    }

    #[test]
    fn a_contradiction_points_at_the_condition() {
        let text = "[[rule]]\nname = \"r\"\npattern = \"a*\"\nno_ttl = true\nttl_below = \"1s\"\naction = \"delete\"\n";
        assert!(error(text).starts_with("rules.toml:5: "), "{}", error(text));
    }

    #[test]
    fn invalid_files_are_rejected_with_a_reason() {
        let rule = |body: &str| format!("[[rule]]\nname = \"r\"\npattern = \"a*\"\n{body}\n");
        let cases = [
            (String::new(), "no rules"),
            (rule("action = \"expire\""), "needs a ttl"),
            (rule("action = \"delete\"\nttl = \"1h\""), "only meaningful"),
            (rule("action = \"purge\""), "unknown action"),
            (rule("action = \"delete\"\ntype = \"blob\""), "unknown type"),
            (
                rule("action = \"delete\"\nttl_below = \"soon\""),
                "not a duration",
            ),
            (
                rule("action = \"delete\"\nno_ttl = true\nttl_below = \"1s\""),
                "never act",
            ),
            (
                rule("action = \"delete\"\nttl_below = \"1s\"\nttl_above = \"2s\""),
                "never act",
            ),
            (
                rule("action = \"expire\"\nttl = \"1h\"\nttl_below = \"60s\""),
                "never act",
            ),
            (
                rule("action = \"delete\"\nno_ttl = false"),
                "no_ttl = false",
            ),
            (
                rule("action = \"delete\"\nidle_above = \"1500ms\""),
                "whole seconds",
            ),
            (rule("action = \"expire\"\nttl = \"0s\""), "at least 1ms"),
            (
                rule("action = \"expire\"\nttl = \"100y 1ms\""),
                "longer than 100 years",
            ),
            (
                rule("action = \"delete\"\nttl_below = \"1ms 1ns\""),
                "whole number of milliseconds",
            ),
            (
                format!(
                    "{}{}",
                    rule("action = \"delete\""),
                    rule("action = \"delete\"")
                ),
                "duplicate rule name",
            ),
            (
                "[[rule]]\nname = \"r\"\npattern = \"a[b\"\naction = \"delete\"\n".into(),
                "invalid pattern",
            ),
            (
                "[[rule]]\nname = \"r\"\naction = \"delete\"\n".into(),
                "pattern",
            ),
            ("rule = 3\n".into(), "invalid type"),
        ];
        for (text, expected) in cases {
            let message = error(&text);
            assert!(
                message.contains(expected),
                "{text:?}: expected {expected:?} in {message:?}"
            );
            assert!(!message.contains('\n'), "multi-line message: {message:?}");
        }
    }
}
