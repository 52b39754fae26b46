//! One script call: the stretch of keyspace it cleans, and reading its reply
//! back into counts. This is the binary's side of the protocol documented at
//! the top of `lua/v3/clean.lua`; the rules are compiled into the script
//! (`crate::lua`).

use std::time::Duration;

use tracing::debug;

use crate::error::Error;
use crate::report::Counts;
use crate::rules::Rules;
use crate::scripts::{Invoke, Script};

/// Reply byte: the key had vanished before the script saw it.
const VANISHED: u8 = 0;
/// Reply byte: no rule's conditions held; the key was left as it was.
pub(crate) const UNCHANGED: u8 = 1;
/// Reply bytes from here on: a delete without conditions (rule = byte - 128,
/// 1-based) deleted the key unless it had vanished.
pub(crate) const BLIND: u8 = 128;

/// Where one call starts and how much it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// The SCAN cursor to start from.
    pub cursor: u64,
    /// The COUNT of each SCAN step.
    pub step: usize,
    /// How long the SCAN steps and checks may run.
    pub scan_budget: Duration,
    /// The most keys the call may look at.
    pub max_keys: usize,
    /// Whether the reply lists every matched key with its fate.
    pub report_keys: bool,
}

impl Batch {
    /// The call that runs `script` on this batch, naming the script `by` SHA
    /// or by text.
    pub fn command(&self, script: &Script, by: Invoke) -> redis::Cmd {
        let (command, script_arg) = script.invocation(by);
        let mut cmd = redis::cmd(command);
        cmd.arg(script_arg)
            .arg(0)
            .arg(self.cursor)
            .arg(self.step)
            .arg(self.scan_budget.as_micros() as u64)
            .arg(self.max_keys)
            .arg(if self.report_keys { "1" } else { "0" });
        cmd
    }
}

/// What one script call answered (see the header of `lua/v3/clean.lua`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Where the next call starts; 0 at the end of the keyspace.
    pub cursor: u64,
    /// Keys the call looked at (its steps' COUNTs).
    pub looked_at: u64,
    /// Keys its SCAN steps returned.
    pub returned: u64,
    /// Keys whose name matched a rule's pattern.
    pub matched: u64,
    /// Matched keys no rule's conditions took.
    pub unchanged: u64,
    /// Matched keys gone before their rule acted.
    pub vanished: u64,
    /// Per rule, the keys it acted on.
    pub acted: Vec<u64>,
    /// How long the scan ran, by the server's clock.
    pub scan_micros: u64,
    /// How long the whole call ran, by the server's clock.
    pub micros: u64,
    /// With `report_keys`: the matched keys.
    pub keys: Vec<Vec<u8>>,
    /// With `report_keys`: one outcome byte for each of `keys`.
    pub outcomes: Vec<u8>,
}

/// The reply's shape on the wire.
type Wire = (
    u64,
    u64,
    u64,
    u64,
    u64,
    u64,
    Vec<u64>,
    u64,
    u64,
    Vec<Vec<u8>>,
    Vec<u8>,
);

impl redis::FromRedisValue for Reply {
    fn from_redis_value(value: redis::Value) -> Result<Reply, redis::ParsingError> {
        let (
            cursor,
            looked_at,
            returned,
            matched,
            unchanged,
            vanished,
            acted,
            scan_micros,
            micros,
            keys,
            outcomes,
        ): Wire = redis::FromRedisValue::from_redis_value(value)?;
        Ok(Reply {
            cursor,
            looked_at,
            returned,
            matched,
            unchanged,
            vanished,
            acted,
            scan_micros,
            micros,
            keys,
            outcomes,
        })
    }
}

impl Reply {
    /// Adds the reply to `counts`, and logs each reported key's fate at
    /// debug level.
    pub fn tally(&self, rules: &Rules, counts: &mut Counts) -> Result<(), Error> {
        if self.acted.len() != rules.rules.len() || self.keys.len() != self.outcomes.len() {
            return Err(Error::Script(format!(
                "the script answered for {} rules and {} keys with {} outcomes, expected {} rules",
                self.acted.len(),
                self.keys.len(),
                self.outcomes.len(),
                rules.rules.len()
            )));
        }
        for (key, &outcome) in self.keys.iter().zip(&self.outcomes) {
            log_key(key, Fate::decode(outcome, rules.rules.len())?, rules);
        }
        counts.batches += 1;
        counts.keys_scanned += self.returned;
        counts.keys_matched += self.matched;
        counts.unchanged += self.unchanged;
        counts.vanished += self.vanished;
        for (total, acted) in counts.per_rule.iter_mut().zip(&self.acted) {
            *total += acted;
        }
        Ok(())
    }
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
}
