//! The rules compiled to Lua: the clean script's template (`lua/<version>/
//! clean.lua`) filled in for one set of rules. Its `setup` line becomes the
//! rules' count, the SCAN MATCH and the tables of the globs matched in Lua;
//! its `decide` line becomes the per-key decision, one `if` per pattern and
//! one per rule with only the conditions that rule has. The script then does
//! no rule interpretation per key, which is most of what a key costs Redis
//! beyond SCAN itself.
//!
//! Every byte string goes into the script as a Lua literal with every byte
//! outside printable ASCII (and `"`, `\`) escaped, so no key pattern or type
//! name can change the code around it.
//!
//! The code is written to `String`s, which never fail a `write!`: hence the
//! `let _ =` on each.

use std::fmt::Write;

use crate::batch::{BLIND, UNCHANGED};
use crate::error::Error;
use crate::glob::{GlobParts, LuaMatcher};
use crate::rules::{Action, Rule, Rules};

/// The template line that receives the rules' count, SCAN MATCH and globs.
const SETUP: &str = "-- rules: setup";
/// The template line that receives the per-key decision.
const DECIDE: &str = "-- rules: decide";

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

/// The clean script's body from `template`, for `rules`, with `scan_match` as
/// its SCAN MATCH (`None`: every key's name is matched in Lua).
pub fn clean_script(
    template: &str,
    rules: &Rules,
    scan_match: Option<&[u8]>,
) -> Result<String, Error> {
    let matchers = rules.lua_matchers(scan_match);
    let mut globs = Vec::new();
    let mut decide = String::new();
    for group in groups(&rules.rules, &matchers) {
        let test = match &matchers[group.start] {
            LuaMatcher::Never => continue,
            LuaMatcher::All => "do".to_string(),
            LuaMatcher::Prefix(head) => format!("if find(key, {}) then", string(&anchored(head))),
            LuaMatcher::Parts(parts) => {
                globs.push(glob_table(parts));
                format!("if matches(key, GLOBS[{}]) then", globs.len())
            }
        };
        decide_group(&mut decide, &rules.rules, group, &test);
    }
    let setup = format!(
        "local RULES, SCAN_MATCH, GLOBS = {}, {}, {{{}}}",
        rules.rules.len(),
        scan_match.map_or_else(|| "nil".to_string(), string),
        globs.concat()
    );
    let body = fill(template, SETUP, &setup)?;
    fill(&body, DECIDE, &decide)
}

/// Replaces the one line of `template` that holds `marker` with `code`,
/// indented like that line.
fn fill(template: &str, marker: &str, code: &str) -> Result<String, Error> {
    let mut found = template.match_indices(marker);
    let (Some((at, _)), None) = (found.next(), found.next()) else {
        return Err(Error::Script(format!(
            "the clean script's template must hold the line {marker:?} exactly once"
        )));
    };
    let start = template[..at].rfind('\n').map_or(0, |n| n + 1);
    let end = template[at..].find('\n').map_or(template.len(), |n| at + n);
    let indent = &template[start..at];
    let indent = if indent.trim().is_empty() { indent } else { "" };
    let mut out = template[..start].to_string();
    for line in code.lines() {
        out.push_str(indent);
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(
        template[end..]
            .strip_prefix('\n')
            .unwrap_or(&template[end..]),
    );
    Ok(out)
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
fn decide_group(out: &mut String, rules: &[Rule], group: std::ops::Range<usize>, test: &str) {
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
        if rule.action == Action::Delete && rule.conditions == Default::default() {
            let _ = write!(
                out,
                "  acted[{n}] = acted[{n}] + 1\n  nblind[{n}] = nblind[{n}] + 1\n  \
                 blind[{n}][nblind[{n}]] = key\n  outcome = {}\n  break\n",
                deleted(r),
                n = r + 1,
            );
            // The group's later rules never see a key.
            break;
        }
        if !checked {
            out.push_str("  outcome = UNCHANGED\n");
            out.push_str(
                "  if not pttl then\n    pttl = call('PTTL', key)\n    if pttl == -2 then\n      \
                 vanished = vanished + 1\n      outcome = VANISHED\n      break\n    end\n  end\n",
            );
            checked = true;
        }
        let _ = writeln!(out, "  if {} then", condition(rule));
        let _ = writeln!(out, "    acted[{n}] = acted[{n}] + 1", n = r + 1);
        match rule.action {
            Action::Delete => {
                out.push_str("    ndeletes = ndeletes + 1\n    deletes[ndeletes] = key\n")
            }
            Action::Expire(ttl) => {
                let _ = writeln!(
                    out,
                    "    nexpires = nexpires + 2\n    expires[nexpires - 1], expires[nexpires] = key, \"{}\"",
                    ttl.as_millis()
                );
            }
        }
        let _ = writeln!(out, "    outcome = {}\n    break\n  end", acted(r));
    }
    out.push_str("end\n");
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

    const TEMPLATE: &str = "local RULES, SCAN_MATCH, GLOBS = 0, nil, {} -- rules: setup\n\
                            for i = 1, 2 do\n  repeat\n    -- rules: decide\n  until true\nend\n";

    /// The rules in `text` compiled without a SCAN MATCH, so that every
    /// pattern is matched in Lua.
    fn compiled(text: &str) -> String {
        let rules = Rules::parse("test rules", text).unwrap();
        clean_script(TEMPLATE, &rules, None).unwrap()
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
        let body = clean_script(TEMPLATE, &rules, rules.scan_match().as_deref()).unwrap();
        assert!(
            body.starts_with("local RULES, SCAN_MATCH, GLOBS = 3, \"[ct][ae][cm][hp][:e]*\", {}\n")
        );
        assert_eq!(
            body.matches("if find(key, \"^cache%:\") then").count(),
            1,
            "{body}"
        );
        assert_eq!(
            body.matches("if find(key, \"^temp%:\") then").count(),
            1,
            "{body}"
        );
        assert!(body.contains("    if pttl == -1 then\n"), "{body}");
        assert!(
            body.contains("    if pttl >= 0 and pttl < 60000 then\n"),
            "{body}"
        );
        assert!(
            body.contains("expires[nexpires] = key, \"3600000\""),
            "{body}"
        );
        assert!(
            body.contains("blind[3][nblind[3]] = key\n      outcome = 131\n"),
            "{body}"
        );
        assert!(body.ends_with("  until true\nend\n"), "{body}");
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
    fn a_template_without_its_markers_is_refused() {
        let rules = Rules::builtin();
        let err = clean_script("return 1\n", &rules, None).unwrap_err();
        assert!(err.to_string().contains("rules: setup"), "{err}");
    }
}
