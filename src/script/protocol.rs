//! What the job and the clean script say to each other: one call's arguments
//! ([`Batch`]), its reply ([`Reply`]), and the outcome bytes that name each
//! key's fate. The constants are defined here, once, and emitted into the
//! script's Lua by `compile`; the reply's layout is documented at the top of
//! `lua/v4/clean.lua`. [`Counts`] adds the replies of a pass together.

use std::time::Duration;

use tracing::debug;

use crate::error::Error;
use crate::rules::{MAX_RULES, Rules};

use super::{Invoke, Script};

/// Outcome byte: the key had vanished before the script saw it.
pub const VANISHED: u8 = 0;
/// Outcome byte: no rule's conditions held; the key was left as it was.
/// `UNCHANGED + 1 + r`: rule `r` (0-based) acted on the key after checking it.
pub const UNCHANGED: u8 = 1;
/// Outcome byte: the cluster node refused the key (its slot is moving away
/// or being imported); the key was left for the next run.
pub const MOVED: u8 = 127;
/// Outcome byte base: `BLIND + 1 + r`: rule `r` (0-based), a delete without
/// conditions, deleted the key unless it had vanished.
pub const BLIND: u8 = 128;

// Every rule's two outcome bytes fit in one byte, apart from each other and
// from MOVED.
const _: () = assert!(UNCHANGED as usize + MAX_RULES < MOVED as usize);
const _: () = assert!(MOVED < BLIND);
const _: () = assert!(BLIND as usize + MAX_RULES <= u8::MAX as usize);

/// The fewest keys a SCAN step looks at: a smaller step costs more than it
/// does. The pacer sizes each call's first step no smaller, and the script
/// stops a call rather than take a smaller one.
pub const MIN_STEP: usize = 10;

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

/// What one script call answered (see the header of `lua/v4/clean.lua`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// Matched keys the cluster node refused (their slot is moving).
    pub moved: u64,
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
            moved,
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
            moved,
            acted,
            scan_micros,
            micros,
            keys,
            outcomes,
        })
    }
}

/// The counters a pass keeps as it goes, summed over its calls (and a run's,
/// over its nodes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Keys SCAN returned.
    pub keys_scanned: u64,
    /// Keys whose name matched a rule's pattern.
    pub keys_matched: u64,
    /// Script calls that completed.
    pub batches: u64,
    /// Matched keys gone before their rule acted.
    pub vanished: u64,
    /// Matched keys a cluster node refused because their slot was moving;
    /// the next run gets them.
    pub moved: u64,
    /// Matched keys whose state no rule's conditions took.
    pub unchanged: u64,
    /// Keys each rule acted on (or would have, in a dry run), in rule order.
    pub per_rule: Vec<u64>,
    /// Times a NOSCRIPT reply made the pass send its script again.
    pub script_reloads: u64,
}

impl Counts {
    /// Zeroed counts for `rules`.
    pub fn new(rules: &Rules) -> Counts {
        Counts {
            per_rule: vec![0; rules.rules.len()],
            ..Counts::default()
        }
    }

    /// Keys acted on by any rule.
    pub fn acted(&self) -> u64 {
        self.per_rule.iter().sum()
    }

    /// Adds `other`'s counts to these (the same rules).
    pub fn add(&mut self, other: &Counts) {
        self.keys_scanned += other.keys_scanned;
        self.keys_matched += other.keys_matched;
        self.batches += other.batches;
        self.vanished += other.vanished;
        self.moved += other.moved;
        self.unchanged += other.unchanged;
        self.script_reloads += other.script_reloads;
        for (total, keys) in self.per_rule.iter_mut().zip(&other.per_rule) {
            *total += keys;
        }
    }
}

impl Reply {
    /// Checks the reply's shape against `rules`, adds it to `counts`, and
    /// logs each reported key's fate at debug level.
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
        let fates: Vec<Fate> = self
            .outcomes
            .iter()
            .map(|&outcome| Fate::decode(outcome, rules.rules.len()))
            .collect::<Result<_, _>>()?;
        for (key, fate) in self.keys.iter().zip(fates) {
            log_key(key, fate, rules);
        }
        counts.batches += 1;
        counts.keys_scanned += self.returned;
        counts.keys_matched += self.matched;
        counts.unchanged += self.unchanged;
        counts.vanished += self.vanished;
        counts.moved += self.moved;
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
    /// The cluster node refused the key: its slot is moving.
    Moved,
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
            MOVED => Some(Fate::Moved),
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
        Fate::Moved => {
            debug!(%key, "the node refused the key, its slot is moving; left for the next run")
        }
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
        assert_eq!(Fate::decode(127, 3).unwrap(), Fate::Moved);
        assert!(Fate::decode(126, 3).is_err());
        assert!(Fate::decode(5, 3).is_err());
        assert!(Fate::decode(132, 3).is_err());
        assert!(Fate::decode(128, 3).is_err());
    }

    /// A reply for the three built-in rules with every count distinct, so a
    /// count added to the wrong total shows.
    fn reply() -> Reply {
        Reply {
            cursor: 7,
            looked_at: 100,
            returned: 50,
            matched: 40,
            unchanged: 3,
            vanished: 2,
            moved: 1,
            acted: vec![10, 20, 5],
            scan_micros: 600,
            micros: 800,
            keys: vec![b"cache:a".to_vec(), b"temp:\xff".to_vec()],
            outcomes: vec![2, 131],
        }
    }

    #[test]
    fn a_reply_adds_to_every_count() {
        let rules = Rules::builtin();
        let mut counts = Counts::new(&rules);
        reply().tally(&rules, &mut counts).unwrap();
        reply().tally(&rules, &mut counts).unwrap();
        assert_eq!(
            counts,
            Counts {
                keys_scanned: 100,
                keys_matched: 80,
                batches: 2,
                vanished: 4,
                moved: 2,
                unchanged: 6,
                per_rule: vec![20, 40, 10],
                script_reloads: 0,
            }
        );
        assert_eq!(counts.acted(), 70);
    }

    #[test]
    fn a_reply_of_the_wrong_shape_is_refused_and_counts_nothing() {
        let rules = Rules::builtin();
        let mut counts = Counts::new(&rules);
        let wrong_rules = Reply {
            acted: vec![1, 2],
            ..reply()
        };
        let wrong_keys = Reply {
            outcomes: vec![2],
            ..reply()
        };
        let wrong_outcome = Reply {
            outcomes: vec![2, 200],
            ..reply()
        };
        for bad in [wrong_rules, wrong_keys, wrong_outcome] {
            let err = bad.tally(&rules, &mut counts).unwrap_err();
            assert!(matches!(err, Error::Script(_)), "{err}");
        }
        assert_eq!(counts, Counts::new(&rules));
    }

    #[test]
    fn counts_add_up_field_by_field() {
        let rules = Rules::builtin();
        let mut one = Counts::new(&rules);
        reply().tally(&rules, &mut one).unwrap();
        one.script_reloads = 1;
        // Three nodes' worth: with two, a count of 2 could not tell
        // multiplying from adding (2 * 2 = 2 + 2).
        let mut total = one.clone();
        total.add(&one);
        total.add(&one);
        assert_eq!(
            total,
            Counts {
                keys_scanned: 150,
                keys_matched: 120,
                batches: 3,
                vanished: 6,
                moved: 3,
                unchanged: 9,
                per_rule: vec![30, 60, 15],
                script_reloads: 3,
            }
        );
    }
}
