//! The rules compiled to Lua: the clean script's template (`lua/<version>/
//! clean.lua`) filled in for one set of rules. The template is split once,
//! at its three marker lines, and the code goes between the pieces, so
//! nothing a rule holds can be taken for a marker. The `setup` line becomes
//! the protocol's constants (from `protocol`, where they are defined), the
//! rules' count, the SCAN MATCH and the tables of the globs matched in Lua;
//! the `keys` line, how a step gets its keys: a SCAN step inside the script
//! (the scanned variant) or the keys the call declares (the declared one),
//! the only difference between the two; the `decide` line becomes the per-key decision, one `if` per pattern and one
//! per rule with only the conditions that rule has. The script then does no
//! rule interpretation per key, which is most of what a key costs Redis
//! beyond SCAN itself.
//!
//! Every byte string goes into the script as a Lua literal with every byte
//! outside printable ASCII (and `"`, `\`) escaped, so no key pattern or type
//! name can change the code around it.
//!
//! The code is written to `String`s, which never fail a `write!`: hence the
//! `let _ =` on each.

use std::fmt::Write;

use crate::glob::{GlobParts, LuaMatcher};
use crate::rules::{Action, Rule, Rules};

use super::protocol::{BLIND, CAPPED, MIN_STEP, MOVED, RESERVED_PREFIX, UNCHANGED, VANISHED};
use super::{KeyMode, Layout};

/// The template line that receives the constants, the rules' count, SCAN
/// MATCH and globs.
const SETUP: &str = "-- compiled: setup";
/// The template line that receives how a step gets its keys.
const KEYS: &str = "-- compiled: keys";
/// The template line that receives the per-key decision.
const DECIDE: &str = "-- compiled: decide";
/// The marker lines, in the order the template holds them.
const MARKERS: [&str; 3] = [SETUP, KEYS, DECIDE];

/// The outcome byte of a key rule `r` (0-based) acted on after checking it;
/// rule numbers in outcome bytes are 1-based.
fn acted(r: usize) -> usize {
    usize::from(UNCHANGED) + 1 + r
}

/// The outcome byte of a key rule `r` (0-based), a delete without
/// conditions, deleted unless it had vanished.
fn deleted(r: usize) -> usize {
    usize::from(BLIND) + 1 + r
}

/// The clean script's template, split at its marker lines: each marker is a
/// line of its own, exactly once, in the order of [`MARKERS`]. The compiled
/// code replaces each marker line, indented like it.
#[derive(Debug, Clone)]
pub struct Template<'a> {
    /// Per marker, in order: the text before its line (after the marker
    /// before it), and its line's indentation.
    pieces: Vec<(&'a str, &'a str)>,
    /// The text after the last marker line.
    tail: &'a str,
}

impl<'a> Template<'a> {
    /// Splits `text` at its marker lines, or says which is missing, twice
    /// or out of order.
    pub fn parse(text: &'a str) -> Result<Template<'a>, String> {
        let found = MARKERS
            .iter()
            .map(|marker| find_marker(text, marker))
            .collect::<Result<Vec<_>, _>>()?;
        if found.windows(2).any(|pair| pair[0].0 > pair[1].0) {
            return Err(format!(
                "the marker lines must come in the order {MARKERS:?}"
            ));
        }
        let mut pieces = Vec::new();
        let mut from = 0;
        for (start, end, indent) in found {
            pieces.push((&text[from..start], indent));
            from = end;
        }
        Ok(Template {
            pieces,
            tail: &text[from..],
        })
    }

    /// The script's body for `rules` on a server of `layout`, getting its
    /// keys as `key_mode` says, with `scan_match` as its SCAN MATCH (`None`:
    /// every key's name is matched in Lua).
    pub fn compile(
        &self,
        rules: &Rules,
        scan_match: Option<&[u8]>,
        layout: Layout,
        key_mode: KeyMode,
    ) -> String {
        let (setup, decide) = rules_code(rules, scan_match, layout);
        let mut out = String::new();
        for ((before, indent), code) in
            self.pieces
                .iter()
                .zip([&setup, keys_code(key_mode), &decide])
        {
            out.push_str(before);
            indented(&mut out, indent, code);
        }
        out.push_str(self.tail);
        out
    }
}

/// Where the one line that is `marker` (with indentation) starts and ends
/// in `text`, and its indentation.
fn find_marker<'a>(text: &'a str, marker: &str) -> Result<(usize, usize, &'a str), String> {
    let mut found = None;
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let end = start + line.len();
        if line.trim() == marker {
            if found.is_some() {
                return Err(format!("the template holds the line {marker:?} twice"));
            }
            let indent = &line[..line.len() - line.trim_start().len()];
            found = Some((start, end, indent));
        }
        start = end;
    }
    found.ok_or_else(|| format!("the template lacks the line {marker:?}"))
}

/// How one step of a call gets its keys (see the template's header):
/// the scanned variant runs a SCAN step from the cursor; the declared one
/// takes the keys the call declares, in one step.
fn keys_code(key_mode: KeyMode) -> &'static str {
    match key_mode {
        KeyMode::Server => {
            "step[1], step[count_at] = cursor, next_count\n\
             local reply = call('SCAN', unpack(step))\n\
             cursor = reply[1]\n\
             local keys = reply[2]\n\
             looked_at = looked_at + next_count\n"
        }
        KeyMode::Declared => {
            "local keys = KEYS\n\
             cursor = '0'\n\
             looked_at = looked_at + #keys\n"
        }
    }
}

/// Appends each line of `code` to `out`, after `indent`.
fn indented(out: &mut String, indent: &str, code: &str) {
    for line in code.lines() {
        out.push_str(indent);
        out.push_str(line);
        out.push('\n');
    }
}

/// The setup and decide code for `rules`.
fn rules_code(rules: &Rules, scan_match: Option<&[u8]>, layout: Layout) -> (String, String) {
    let matchers = rules.lua_matchers(scan_match);
    let mut globs = Vec::new();
    let mut decide = String::new();
    if rules.may_select(RESERVED_PREFIX) {
        // Never the job's own keys, whatever the patterns (a byte first:
        // most keys differ there, and a substring costs an allocation).
        let _ = writeln!(
            decide,
            "if byte(key, 1) == {} and sub(key, 1, {}) == {} then\n  break\nend",
            RESERVED_PREFIX[0],
            RESERVED_PREFIX.len(),
            string(RESERVED_PREFIX)
        );
    }
    for group in groups(&rules.rules, &matchers) {
        let test = match &matchers[group.start] {
            LuaMatcher::Never => continue,
            LuaMatcher::All => "do".to_string(),
            LuaMatcher::Literal(prefix) => {
                format!("if find(key, {}, 1, true) == 1 then", string(prefix))
            }
            LuaMatcher::Prefix(head) => format!("if find(key, {}) then", string(&anchored(head))),
            LuaMatcher::Parts(parts) => {
                globs.push(glob_table(parts));
                format!("if matches(key, GLOBS[{}]) then", globs.len())
            }
        };
        decide_group(&mut decide, &rules.rules, group, &test, layout);
    }
    let setup = format!(
        "local VANISHED, UNCHANGED, CAPPED, MOVED, BLIND, MIN_STEP = \
         {VANISHED}, {UNCHANGED}, {CAPPED}, {MOVED}, {BLIND}, {MIN_STEP}\n\
         local RULES, SCAN_MATCH, GLOBS = {}, {}, {{{}}}\n",
        rules.rules.len(),
        scan_match.map_or_else(|| "nil".to_string(), string),
        globs.concat()
    );
    (setup, decide)
}

/// The runs of consecutive rules with the same matcher, whose test then runs
/// once per key.
fn groups(rules: &[Rule], matchers: &[LuaMatcher]) -> Vec<std::ops::Range<usize>> {
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    for r in 0..rules.len() {
        match groups.last_mut() {
            Some(group) if matchers[group.start] == matchers[r] => group.end = r + 1,
            _ => groups.push(r..r + 1),
        }
    }
    groups
}

/// The code for one group of rules: once the name matches, the key is
/// UNCHANGED until a rule acts on it and `break`s out with its outcome.
fn decide_group(
    out: &mut String,
    rules: &[Rule],
    group: std::ops::Range<usize>,
    test: &str,
    layout: Layout,
) {
    let names: Vec<&str> = rules[group.clone()]
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    let pattern = rules[group.start].pattern.as_bytes().escape_ascii();
    let _ = writeln!(out, "-- {} ({pattern})", names.join(", ").escape_default());
    let _ = writeln!(out, "{test}");
    let mut checked = false;
    for r in group {
        let rule = &rules[r];
        if rule.is_unconditional_delete() {
            let queue = format!(
                "nblind[{n}] = nblind[{n}] + 1\nblind[{n}][nblind[{n}]] = key\n",
                n = r + 1
            );
            act(out, "  ", r, &queue, deleted(r));
            // The group's later rules never see a key.
            break;
        }
        if !checked {
            out.push_str("  outcome = UNCHANGED\n");
            out.push_str(first_check(layout));
            checked = true;
        }
        let queue = match rule.action {
            Action::Delete => "ndeletes = ndeletes + 1\ndeletes[ndeletes] = key\n".to_string(),
            Action::Expire(ttl) => format!(
                "nexpires = nexpires + 1\nexpires[nexpires], ttls[nexpires] = key, \"{}\"\n",
                ttl.as_millis()
            ),
        };
        let _ = writeln!(out, "  if {} then", condition(rule));
        act(out, "    ", r, &queue, acted(r));
        out.push_str("  end\n");
    }
    out.push_str("end\n");
}

/// The code by which rule `r` (0-based) takes a key, at `indent`: within
/// the rule's cap and the call's, it counts the key, runs `queue` (which
/// queues the action) and gives the key `outcome`; beyond a cap, the key is
/// left as it is and counted as the rule's capped key. Either way the key's
/// decision ends.
fn act(out: &mut String, indent: &str, r: usize, queue: &str, outcome: usize) {
    let n = r + 1;
    let _ = writeln!(
        out,
        "{indent}if acted[{n}] < cap[{n}] and nacted < cap_all then\n\
         {indent}  acted[{n}] = acted[{n}] + 1\n{indent}  nacted = nacted + 1"
    );
    for line in queue.lines() {
        let _ = writeln!(out, "{indent}  {line}");
    }
    let _ = writeln!(
        out,
        "{indent}  outcome = {outcome}\n{indent}else\n{indent}  capped[{n}] = capped[{n}] + 1\n\
         {indent}  ncapped = ncapped + 1\n\
         {indent}  outcome = CAPPED\n{indent}end\n{indent}break"
    );
}

/// The key's first check, once per key: its PTTL, which tells whether it
/// vanished. A cluster node may refuse the key (its slot is moving): then
/// the key is MOVED, and the rest of the call leaves it alone, unless the
/// ACL refused it (see `unless_denied` in the script).
fn first_check(layout: Layout) -> &'static str {
    match layout {
        Layout::Standalone => {
            "  if not pttl then\n    pttl = call('PTTL', key)\n    if pttl == -2 then\n      \
             vanished = vanished + 1\n      outcome = VANISHED\n      break\n    end\n  end\n"
        }
        Layout::Cluster => {
            "  if not pttl then\n    pttl = try('PTTL', key)\n    if type(pttl) == 'table' then\n      \
             unless_denied('PTTL', key)\n      moved = moved + 1\n      outcome = MOVED\n      break\n    end\n    \
             if pttl == -2 then\n      \
             vanished = vanished + 1\n      outcome = VANISHED\n      break\n    end\n  end\n"
        }
    }
}

/// A rule's conditions as one Lua expression over `pttl` (known), cheapest
/// first: TYPE and OBJECT IDLETIME are asked only when the TTL conditions
/// hold. An expire rule takes a key only when it would shorten its life.
fn condition(rule: &Rule) -> String {
    let c = &rule.conditions;
    let mut all = Vec::new();
    if c.no_ttl {
        all.push("pttl == -1".to_string());
    } else {
        let mut bounds = Vec::new();
        if let Some(below) = c.ttl_below {
            bounds.push(format!("pttl < {}", below.as_millis()));
        }
        if let Some(above) = c.ttl_above {
            bounds.push(format!("pttl > {}", above.as_millis()));
        }
        let shortens = match rule.action {
            Action::Expire(ttl) => Some(format!("pttl > {}", ttl.as_millis())),
            Action::Delete => None,
        };
        if bounds.is_empty() {
            // A key without TTL passes: no bound excludes it, and any TTL
            // shortens its life.
            all.extend(shortens.map(|s| format!("(pttl == -1 or {s})")));
        } else {
            all.push("pttl >= 0".to_string());
            all.extend(bounds);
            all.extend(shortens);
        }
    }
    if let Some(key_type) = c.key_type {
        all.push(format!("call('TYPE', key).ok == \"{}\"", key_type.as_str()));
    }
    if let Some(idle) = c.idle_above {
        all.push(format!(
            "call('OBJECT', 'IDLETIME', key) > {}",
            idle.as_secs()
        ));
    }
    if all.is_empty() {
        return "true".to_string();
    }
    all.join(" and ")
}

/// A glob matched by parts, as the table the template's `matches` takes.
fn glob_table(parts: &GlobParts) -> String {
    let middles: Vec<String> = parts.middles.iter().map(|m| string(m)).collect();
    format!(
        "\n  {{ head = {}, head_len = {}, tail = {}, tail_len = {}, star = {}, middles = {{ {} }} }},",
        string(&anchored(&parts.head)),
        parts.head_len,
        string(&anchored(&parts.tail)),
        parts.tail_len,
        parts.star,
        middles.join(", ")
    )
}

/// A Lua pattern anchored at the place `find` starts from.
fn anchored(pattern: &[u8]) -> Vec<u8> {
    [&b"^"[..], pattern].concat()
}

/// `bytes` as a Lua string literal: printable ASCII as it is, any other
/// byte, `"` and `\` as a three-digit decimal escape.
fn string(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &b in bytes {
        if (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\{b:03}");
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "-- compiled: setup\n-- compiled: keys\n\
                            for i = 1, 2 do\n  repeat\n    -- compiled: decide\n  until true\nend\n";

    fn template() -> Template<'static> {
        Template::parse(TEMPLATE).unwrap()
    }

    /// The rules in `text` compiled without a SCAN MATCH, so that every
    /// pattern is matched in Lua.
    fn compiled(text: &str) -> String {
        let rules = Rules::parse("test rules", text).unwrap();
        template().compile(&rules, None, Layout::Standalone, KeyMode::Server)
    }

    #[test]
    fn literals_escape_every_byte_outside_printable_ascii() {
        assert_eq!(string(b"cache:*"), "\"cache:*\"");
        assert_eq!(
            string(b"a\"b\\c\n\0\xff1"),
            "\"a\\034b\\092c\\010\\000\\2551\""
        );
    }

    #[test]
    fn builtin_rules_compile_to_one_test_per_pattern_and_rule() {
        let rules = Rules::builtin();
        let body = template().compile(
            &rules,
            rules.scan_match().as_deref(),
            Layout::Standalone,
            KeyMode::Server,
        );
        assert!(
            body.starts_with(
                "local VANISHED, UNCHANGED, CAPPED, MOVED, BLIND, MIN_STEP = 0, 1, 126, 127, 128, 10\n\
                 local RULES, SCAN_MATCH, GLOBS = 3, \"[ct][ae][cm][hp][:e]*\", {}\n"
            ),
            "{body}"
        );
        assert_eq!(
            body.matches("if find(key, \"cache:\", 1, true) == 1 then")
                .count(),
            1,
            "{body}"
        );
        assert_eq!(
            body.matches("if find(key, \"temp:\", 1, true) == 1 then")
                .count(),
            1,
            "{body}"
        );
        assert!(body.contains("    if pttl == -1 then\n"), "{body}");
        assert!(
            body.contains("    if pttl >= 0 and pttl < 60000 then\n"),
            "{body}"
        );
        assert!(
            body.contains("expires[nexpires], ttls[nexpires] = key, \"3600000\""),
            "{body}"
        );
        assert!(
            body.contains("blind[3][nblind[3]] = key\n        outcome = 131\n"),
            "{body}"
        );
        // No built-in pattern can select the job's own keys: no guard.
        assert!(!body.contains("__redis-janitor__"), "{body}");
        assert!(body.ends_with("  until true\nend\n"), "{body}");
    }

    #[test]
    fn on_a_cluster_node_the_first_check_may_find_the_key_moved() {
        let text = "[[rule]]\nname = \"r\"\npattern = \"*\"\nno_ttl = true\naction = \"delete\"\n";
        let rules = Rules::parse("t", text).unwrap();
        let standalone = template().compile(&rules, None, Layout::Standalone, KeyMode::Server);
        let cluster = template().compile(&rules, None, Layout::Cluster, KeyMode::Server);
        assert!(
            standalone.contains("pttl = call('PTTL', key)"),
            "{standalone}"
        );
        assert!(!standalone.contains("MOVED\n"), "{standalone}");
        assert!(cluster.contains("pttl = try('PTTL', key)"), "{cluster}");
        assert!(
            cluster.contains(
                "if type(pttl) == 'table' then\n          unless_denied('PTTL', key)\n          \
                 moved = moved + 1\n          outcome = MOVED\n"
            ),
            "{cluster}"
        );
    }

    #[test]
    fn conditions_hold_only_what_the_rule_says() {
        let rule = |conditions: &str, action: &str| {
            let text = format!("[[rule]]\nname = \"r\"\npattern = \"*\"\n{conditions}\n{action}\n");
            condition(&Rules::parse("t", &text).unwrap().rules[0])
        };
        let delete = "action = \"delete\"";
        let expire = "action = \"expire\"\nttl = \"1h\"";
        assert_eq!(rule("no_ttl = true", expire), "pttl == -1");
        assert_eq!(rule("", expire), "(pttl == -1 or pttl > 3600000)");
        assert_eq!(
            rule("ttl_above = \"2h\"", expire),
            "pttl >= 0 and pttl > 7200000 and pttl > 3600000"
        );
        assert_eq!(
            rule("type = \"hash\"\nidle_above = \"5m\"", delete),
            "call('TYPE', key).ok == \"hash\" and call('OBJECT', 'IDLETIME', key) > 300"
        );
    }

    #[test]
    fn every_key_patterns_skip_the_test_and_empty_classes_vanish() {
        let body = compiled(
            "[[rule]]\nname = \"never\"\npattern = \"a[]b\"\naction = \"delete\"\n\
             [[rule]]\nname = \"all\"\npattern = \"*\"\naction = \"delete\"\n",
        );
        assert!(!body.contains("-- never"), "{body}");
        assert!(body.contains("-- all (*)\n    do\n"), "{body}");
        assert!(body.contains("outcome = 130"), "{body}");
    }

    #[test]
    fn globs_become_tables_that_matches_takes() {
        let body =
            compiled("[[rule]]\nname = \"g\"\npattern = \"a?*b\\n*\"\naction = \"delete\"\n");
        assert!(body.contains("if matches(key, GLOBS[1]) then"), "{body}");
        assert!(
            body.contains(
                "{ head = \"^a.\", head_len = 2, tail = \"^\", tail_len = 0, star = true, middles = { \"b%\\010\" } },"
            ),
            "{body}"
        );
    }

    #[test]
    fn a_template_needs_each_marker_once_and_in_order() {
        let cases = [
            ("return 1\n", "lacks the line \"-- compiled: setup\""),
            (
                "-- compiled: setup\n-- compiled: keys\nreturn 1\n",
                "lacks the line \"-- compiled: decide\"",
            ),
            (
                "-- compiled: setup\n-- compiled: keys\n-- compiled: decide\n  -- compiled: decide\n",
                "twice",
            ),
            (
                "-- compiled: setup\n-- compiled: decide\n-- compiled: keys\n",
                "must come in the order",
            ),
            // A marker only counts as a line of its own.
            (
                "x = 1 -- compiled: setup\n-- compiled: keys\n-- compiled: decide\n",
                "lacks",
            ),
        ];
        for (text, expected) in cases {
            let err = Template::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn only_the_scanned_variant_runs_scan_and_the_declared_one_takes_its_keys() {
        let rules = Rules::builtin();
        let scanned = template().compile(&rules, None, Layout::Standalone, KeyMode::Server);
        let declared = template().compile(&rules, None, Layout::Standalone, KeyMode::Declared);
        assert!(scanned.contains("call('SCAN'"), "{scanned}");
        assert!(!declared.contains("'SCAN'"), "{declared}");
        assert!(declared.contains("local keys = KEYS\n"), "{declared}");
        // The rest of the text is the same.
        let strip = |body: &str, code: &str| body.replacen(code, "", 1);
        assert_eq!(
            strip(&scanned, keys_code(KeyMode::Server)),
            strip(&declared, keys_code(KeyMode::Declared))
        );
    }

    #[test]
    fn markers_in_a_rule_are_data_not_markers() {
        let body = compiled(
            "[[rule]]\nname = \"-- compiled: decide\"\npattern = \"-- compiled: setup*\"\naction = \"delete\"\n",
        );
        // The template's text around the code is all there, once.
        assert!(body.ends_with("  until true\nend\n"), "{body}");
        assert_eq!(body.matches("for i = 1, 2 do").count(), 1, "{body}");
        assert!(body.contains("\"-- compiled: setup\", 1, true"), "{body}");
    }
}
