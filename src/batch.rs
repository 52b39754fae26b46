//! One script call: the candidate keys of a batch, the arguments that tell the
//! script which rules each key may fall under, and reading its reply back into
//! counts. This is the binary's side of the protocol documented at the top of
//! `lua/v1/clean.lua`.

use std::fmt::Write as _;

use tracing::{Level, debug, enabled};

use crate::error::Error;
use crate::report::Counts;
use crate::rules::{Action, Rules};
use crate::scripts::{Invoke, Script};

/// The most distinct candidate sets one batch can carry: each key names its
/// set in one byte of ARGV[3].
const MAX_SETS: usize = 255;

/// Reply byte: the key had vanished before the script saw it.
const VANISHED: u8 = 0;
/// Reply byte: no rule's conditions held; the key was left as it was.
const UNCHANGED: u8 = 1;
/// Reply bytes from here on: a delete without conditions (rule = byte - 128,
/// 1-based) deleted the key unless it had vanished.
const BLIND: u8 = 128;

/// Candidate keys waiting for, or in, one script call.
#[derive(Debug, Default)]
pub struct Batch {
    /// The keys, sent as the script's KEYS.
    keys: Vec<Vec<u8>>,
    /// The distinct candidate-rule sets of this batch (bit i = rule i).
    sets: Vec<u64>,
    /// For each key, the 1-based index of its set in `sets`.
    set_of: Vec<u8>,
}

impl Batch {
    /// An empty batch with room for `capacity` keys.
    pub fn with_capacity(capacity: usize) -> Batch {
        Batch {
            keys: Vec::with_capacity(capacity),
            sets: Vec::new(),
            set_of: Vec::with_capacity(capacity),
        }
    }

    /// Adds `key`, whose candidate rules are `set`. Gives the key back when
    /// the batch cannot name one more distinct set.
    pub fn push(&mut self, key: Vec<u8>, set: u64) -> Result<(), Vec<u8>> {
        let index = match self.sets.iter().position(|&s| s == set) {
            Some(index) => index,
            None if self.sets.len() < MAX_SETS => {
                self.sets.push(set);
                self.sets.len() - 1
            }
            None => return Err(key),
        };
        self.keys.push(key);
        self.set_of.push(index as u8 + 1);
        Ok(())
    }

    /// How many keys the batch holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the batch holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The call that runs `script` on this batch, naming the script `by` SHA
    /// or by text. `rules_arg` is [`rules_arg`] of the pass's rules.
    pub fn command(&self, script: &Script, by: Invoke, rules_arg: &str) -> redis::Cmd {
        let (command, script_arg) = script.invocation(by);
        let mut cmd = redis::cmd(command);
        cmd.arg(script_arg).arg(self.keys.len());
        for key in &self.keys {
            cmd.arg(key.as_slice());
        }
        cmd.arg(rules_arg)
            .arg(sets_arg(&self.sets))
            .arg(self.set_of.as_slice());
        cmd
    }

    /// Adds the script's reply to `counts`, and logs each key's fate at
    /// debug level.
    pub fn tally(&self, reply: &Reply, rules: &Rules, counts: &mut Counts) -> Result<(), Error> {
        if reply.outcomes.len() != self.keys.len() || reply.gone.len() != rules.rules.len() {
            return Err(Error::Script(format!(
                "the script answered for {} keys and {} rules, expected {} and {}",
                reply.outcomes.len(),
                reply.gone.len(),
                self.keys.len(),
                rules.rules.len()
            )));
        }
        let log_keys = enabled!(Level::DEBUG);
        counts.batches += 1;
        counts.keys_matched += self.keys.len() as u64;
        for (key, &outcome) in self.keys.iter().zip(&reply.outcomes) {
            let fate = Fate::decode(outcome, rules.rules.len())?;
            match fate {
                Fate::Vanished => counts.vanished += 1,
                Fate::Unchanged => counts.unchanged += 1,
                Fate::Acted(rule) | Fate::Deleted(rule) => counts.per_rule[rule] += 1,
            }
            if log_keys {
                log_key(key, fate, rules);
            }
        }
        // Blind deletes were counted as acted; the script says how many of
        // each rule's keys had in fact vanished.
        for (acted, &gone) in counts.per_rule.iter_mut().zip(&reply.gone) {
            *acted = acted.saturating_sub(gone);
            counts.vanished += gone;
        }
        Ok(())
    }
}

/// What one script call answered (see the header of `lua/v1/clean.lua`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// One outcome byte per key.
    pub outcomes: Vec<u8>,
    /// How long the script ran, by the server's clock.
    pub micros: u64,
    /// Per rule, how many of the keys it deleted without a check had vanished.
    pub gone: Vec<u64>,
}

/// One key's fate, decoded from its outcome byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// The key no longer existed.
    Vanished,
    /// No rule's conditions held; the key was left as it was.
    Unchanged,
    /// This rule (0-based) acted on the key after checking it.
    Acted(usize),
    /// This rule (0-based), a delete without conditions, deleted the key
    /// unless it had vanished.
    Deleted(usize),
}

impl Fate {
    fn decode(outcome: u8, rules: usize) -> Result<Fate, Error> {
        // Rule numbers in outcome bytes are 1-based: 0 would be no rule.
        let rule = |first: u8| usize::from(outcome - first).checked_sub(1);
        let fate = match outcome {
            VANISHED => Some(Fate::Vanished),
            UNCHANGED => Some(Fate::Unchanged),
            BLIND.. => rule(BLIND).map(Fate::Deleted),
            _ => rule(UNCHANGED).map(Fate::Acted),
        };
        match fate {
            Some(Fate::Acted(rule) | Fate::Deleted(rule)) if rule >= rules => None,
            fate => fate,
        }
        .ok_or_else(|| {
            Error::Script(format!(
                "the script answered outcome {outcome}, which names none of the {rules} rules"
            ))
        })
    }
}

/// ARGV[1]: the rules, as the script parses them; built once per pass.
pub fn rules_arg(rules: &Rules) -> String {
    let mut arg = String::new();
    for rule in &rules.rules {
        let c = &rule.conditions;
        let millis = |d: Option<std::time::Duration>| d.map_or(-1, |d| d.as_millis() as i64);
        let (action, ttl) = match rule.action {
            Action::Delete => ('d', 0),
            Action::Expire(ttl) => ('e', ttl.as_millis() as i64),
        };
        let _ = write!(
            arg,
            "{action},{ttl},{},{},{},{},{};",
            u8::from(c.no_ttl),
            millis(c.ttl_below),
            millis(c.ttl_above),
            c.key_type.map_or("", |t| t.as_str()),
            c.idle_above.map_or(-1, |d| d.as_secs() as i64),
        );
    }
    arg
}

/// ARGV[2]: each set as its 1-based rule indices, e.g. "1,2;3".
fn sets_arg(sets: &[u64]) -> String {
    let mut arg = String::new();
    for &set in sets {
        let mut rest = set;
        while rest != 0 {
            let index = rest.trailing_zeros();
            let _ = write!(arg, "{},", index + 1);
            rest &= rest - 1;
        }
        arg.push(';');
    }
    arg
}

fn log_key(key: &[u8], fate: Fate, rules: &Rules) {
    // Keys are bytes: quoted and escaped, a key cannot forge or split a log line.
    let key = format!("\"{}\"", key.escape_ascii());
    match fate {
        Fate::Vanished => debug!(%key, "key vanished before the script saw it"),
        Fate::Unchanged => debug!(%key, "no rule's conditions hold; key left as it was"),
        Fate::Acted(rule) => {
            let rule = &rules.rules[rule];
            debug!(%key, rule = %rule.name, action = rule.action.name(), "rule acts on key");
        }
        Fate::Deleted(rule) => {
            let rule = &rules.rules[rule];
            debug!(%key, rule = %rule.name, "rule deletes key, unless it had vanished");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_bytes_decode_to_fates() {
        assert_eq!(Fate::decode(0, 3).unwrap(), Fate::Vanished);
        assert_eq!(Fate::decode(1, 3).unwrap(), Fate::Unchanged);
        assert_eq!(Fate::decode(2, 3).unwrap(), Fate::Acted(0));
        assert_eq!(Fate::decode(4, 3).unwrap(), Fate::Acted(2));
        assert_eq!(Fate::decode(129, 3).unwrap(), Fate::Deleted(0));
        assert!(Fate::decode(5, 3).is_err());
        assert!(Fate::decode(132, 3).is_err());
        assert!(Fate::decode(128, 3).is_err());
    }

    #[test]
    fn sets_are_listed_in_rule_order() {
        assert_eq!(sets_arg(&[0b011, 0b100]), "1,2,;3,;");
    }

    #[test]
    fn rules_travel_in_the_scripts_format() {
        assert_eq!(
            rules_arg(&Rules::builtin()),
            "e,3600000,1,-1,-1,,-1;d,0,0,60000,-1,,-1;d,0,0,-1,-1,,-1;"
        );
    }

    #[test]
    fn a_batch_names_at_most_255_distinct_sets() {
        let mut batch = Batch::with_capacity(300);
        for set in 1..=255u64 {
            batch.push(vec![1], set).unwrap();
        }
        assert_eq!(batch.push(vec![2], 256), Err(vec![2]));
        assert!(batch.push(vec![3], 7).is_ok());
        assert_eq!(batch.len(), 256);
    }
}
