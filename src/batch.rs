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

    /// Adds the script's reply (one outcome byte per key) to `counts`, and
    /// logs each key's fate at debug level.
    pub fn tally(&self, reply: &[u8], rules: &Rules, counts: &mut Counts) -> Result<(), Error> {
        if reply.len() != self.keys.len() {
            return Err(Error::Script(format!(
                "the script answered for {} keys, expected {}",
                reply.len(),
                self.keys.len()
            )));
        }
        let log_keys = enabled!(Level::DEBUG);
        counts.batches += 1;
        counts.keys_matched += self.keys.len() as u64;
        for (key, &outcome) in self.keys.iter().zip(reply) {
            match outcome {
                VANISHED => counts.vanished += 1,
                UNCHANGED => counts.unchanged += 1,
                _ => {
                    let index = usize::from(outcome - 2);
                    let Some(slot) = counts.per_rule.get_mut(index) else {
                        return Err(Error::Script(format!(
                            "the script named rule {} of {}",
                            index + 1,
                            rules.rules.len()
                        )));
                    };
                    *slot += 1;
                }
            }
            if log_keys {
                log_key(key, outcome, rules);
            }
        }
        Ok(())
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

fn log_key(key: &[u8], outcome: u8, rules: &Rules) {
    // Keys are bytes: quoted and escaped, a key cannot forge or split a log line.
    let key = format!("\"{}\"", key.escape_ascii());
    match outcome {
        VANISHED => debug!(%key, "key vanished before the script saw it"),
        UNCHANGED => debug!(%key, "no rule's conditions hold; key left as it was"),
        _ => {
            let rule = &rules.rules[usize::from(outcome - 2)];
            debug!(%key, rule = %rule.name, action = rule.action.name(), "rule acts on key");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
