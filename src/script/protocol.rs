//! What the job and the clean script say to each other: one call's arguments
//! ([`Batch`]), its reply ([`Reply`]), and the outcome bytes that name each
//! key's fate. The constants are defined here, once, and emitted into the
//! script's Lua by `compile`; the reply's layout is documented at the top of
//! `lua/v11/clean.lua`. [`Counts`] adds the replies of a pass together.

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
/// Outcome byte: the rule that would have acted on the key had reached its
/// cap, or the run its own; the key was left as it was.
pub const CAPPED: u8 = 126;
/// Outcome byte: the cluster node refused the key (its slot is moving away
/// or being imported); the key was left for the next run.
pub const MOVED: u8 = 127;
/// Outcome byte base: `BLIND + 1 + r`: rule `r` (0-based), a delete without
/// conditions, deleted the key unless it had vanished.
pub const BLIND: u8 = 128;

// Every rule's two outcome bytes fit in one byte, apart from each other and
// from MOVED.
const _: () = assert!(UNCHANGED as usize + MAX_RULES < CAPPED as usize);
const _: () = assert!(CAPPED < MOVED);
const _: () = assert!(MOVED < BLIND);
const _: () = assert!(BLIND as usize + MAX_RULES <= u8::MAX as usize);

/// The prefix of the job's own keys (the lease, the checkpoint): no rule
/// selects a key under it, not even `pattern = "*"`.
pub const RESERVED_PREFIX: &[u8] = b"__redis-janitor__:";

/// The fewest keys a SCAN step looks at: a smaller step costs more than it
/// does. The pacer sizes each call's first step no smaller, and the script
/// stops a call rather than take a smaller one.
pub const MIN_STEP: usize = 10;

/// Where one call starts and how much it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The most keys the call may act on, over all rules (`None`: no cap).
    pub cap: Option<u64>,
    /// The most keys each rule may act on in the call, in rule order.
    pub rule_caps: Vec<Option<u64>>,
    /// Whether the reply sums the bytes the deleted keys held (`MEMORY
    /// USAGE` of each).
    pub estimate_freed: bool,
}

/// The job's own keys on a node: they carry the reserved prefix and, on a
/// cluster node, one hash tag of a slot the node serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateKeys {
    /// The lease: which run may write on the node.
    pub lease: Vec<u8>,
    /// The checkpoint: where the node's pass stands.
    pub checkpoint: Vec<u8>,
    /// The history: when a run last cleaned the node successfully.
    pub history: Vec<u8>,
}

/// What a writing call sends beside its work: the node's state keys, the
/// run's lease token (empty for none) and the lease's time to live. A dry
/// run sends no keys, and no token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The node's state keys; `None` in a dry run.
    pub keys: Option<StateKeys>,
    /// The run's token; empty with `--no-lock` and in a dry run.
    pub token: String,
    /// How long the lease lasts unless renewed.
    pub lease_ttl: Duration,
}

/// The pass a checkpoint records: saved with each call's progress, and
/// compared by the next run before it resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassId {
    /// The rules' fingerprint: the scanned variant's SHA-1 (see
    /// `Script::fingerprint`).
    pub fingerprint: String,
    /// The server process's `run_id`: a cursor means nothing to another.
    pub run_id: String,
    /// When the pass began, in milliseconds of the server's clock.
    pub started_ms: u64,
    /// How long the checkpoint outlives its last call.
    pub max_age: Duration,
}

/// One call of the clean script.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    /// Take the lease (when the claim has a token) and read the checkpoint;
    /// `holder` names this run in the lease.
    Acquire {
        /// Who holds the lease, as another run's report names it.
        holder: &'a str,
    },
    /// Renew the lease.
    Renew,
    /// Give the lease back, recording the node's last success when the
    /// run's work on it `succeeded`.
    Release {
        /// The node's work ended as a success (see `pass::End`).
        succeeded: bool,
    },
    /// Clean a stretch of the keyspace, saving the checkpoint of `pass`
    /// when there is one.
    Clean(&'a Batch, Option<&'a PassId>),
    /// Clean `keys`, which the call declares (the declared variant): no
    /// lease is read and no checkpoint saved, since on a cluster the job's
    /// own keys are in another slot; [`Op::Save`] follows. The call refuses
    /// to act from `deadline` on (see [`Deadline`]).
    Declared(&'a Batch, &'a [Vec<u8>], Deadline),
    /// Save the checkpoint of a declared-keys pass, if the run still holds
    /// its lease (renewing it).
    Save(&'a Saved, &'a PassId),
}

/// When a declared call, which cannot read its run's lease, refuses to act:
/// the time of the server's clock, in ms, from which that lease, as the run
/// last renewed it, may have expired, and another run may hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// The run holds no lease (`--no-lock`, a dry run).
    None,
    /// The server time (ms) from which the call refuses.
    At(u64),
}

impl Deadline {
    /// The call's argument: the time, or -1 for none.
    fn arg(self) -> i64 {
        match self {
            Deadline::None => -1,
            Deadline::At(ms) => ms.min(i64::MAX as u64) as i64,
        }
    }
}

/// The progress a declared-keys pass saves after its calls (see
/// [`Op::Save`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// Where the next call starts.
    pub cursor: u64,
    /// Whether the pass is done.
    pub done: bool,
    /// The keys the job's SCAN returned since the last save.
    pub returned: u64,
    /// The keys acted on since the last save.
    pub acted: u64,
}

impl Claim {
    /// The call that runs `op` with `script`, naming the script `by` SHA
    /// or by text.
    pub fn command(&self, script: &Script, by: Invoke, op: Op<'_>) -> redis::Cmd {
        let (command, script_arg) = script.invocation(by);
        let mut cmd = redis::cmd(command);
        cmd.arg(script_arg);
        match (&self.keys, op) {
            (_, Op::Declared(_, keys, _)) => cmd.arg(keys.len()).arg(keys),
            (Some(keys), _) => cmd
                .arg(3)
                .arg(&keys.lease)
                .arg(&keys.checkpoint)
                .arg(&keys.history),
            (None, _) => cmd.arg(0),
        };
        let name = match op {
            Op::Acquire { .. } => "acquire",
            Op::Renew => "renew",
            Op::Release { .. } => "release",
            Op::Clean(..) | Op::Declared(..) => "clean",
            Op::Save(..) => "save",
        };
        // A declared call's KEYS are the keys to clean: it cannot read the
        // lease, and carries its run's deadline instead.
        match op {
            Op::Declared(_, _, deadline) => cmd.arg(name).arg("").arg(deadline.arg()),
            _ => cmd
                .arg(name)
                .arg(&self.token)
                .arg(self.lease_ttl.as_millis() as u64),
        };
        match op {
            Op::Acquire { holder } => {
                cmd.arg(holder);
            }
            Op::Release { succeeded } => {
                cmd.arg(if succeeded { "1" } else { "0" });
            }
            Op::Renew => {}
            Op::Clean(batch, pass) => batch.args(&mut cmd, pass),
            Op::Declared(batch, ..) => batch.args(&mut cmd, None),
            Op::Save(saved, pass) => {
                cmd.arg(saved.cursor)
                    .arg(if saved.done { "1" } else { "0" })
                    .arg(saved.returned)
                    .arg(saved.acted);
                pass.args(&mut cmd);
            }
        }
        cmd
    }
}

impl PassId {
    /// Appends the pass's four arguments: fingerprint, run_id, start (ms)
    /// and the checkpoint's time to live (ms).
    fn args(&self, cmd: &mut redis::Cmd) {
        cmd.arg(&self.fingerprint)
            .arg(&self.run_id)
            .arg(self.started_ms)
            .arg(self.max_age.as_millis() as u64);
    }
}

impl Batch {
    /// Appends the clean call's arguments after its claim's.
    fn args(&self, cmd: &mut redis::Cmd, pass: Option<&PassId>) {
        let cap = |cap: Option<u64>| cap.map_or(-1, |n| n.min(i64::MAX as u64) as i64);
        cmd.arg(self.cursor)
            .arg(self.step)
            .arg(self.scan_budget.as_micros() as u64)
            .arg(self.max_keys)
            .arg(if self.report_keys { "1" } else { "0" });
        match pass {
            Some(pass) => pass.args(cmd.arg("1")),
            None => {
                cmd.arg("").arg("").arg("").arg(0).arg(0);
            }
        }
        cmd.arg(if self.estimate_freed { "1" } else { "0" })
            .arg(cap(self.cap));
        for rule_cap in &self.rule_caps {
            cmd.arg(cap(*rule_cap));
        }
    }
}

/// What one script call answered (see the header of `lua/v11/clean.lua`).
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
    /// Per rule, the keys it would have acted on beyond a cap.
    pub capped: Vec<u64>,
    /// The checkpoint's fate: "saved", empty (none asked for), or the
    /// error that refused its write.
    pub checkpoint: String,
    /// With `report_keys`: the PTTL each key's check saw (-3: none).
    pub pttls: Vec<i64>,
    /// With `estimate_freed`: the bytes the deleted keys held.
    pub freed: u64,
}

/// The reply's shape on the wire.
type Wire = (
    (u64, u64, u64, u64, u64, u64, u64, Vec<u64>),
    (
        u64,
        u64,
        Vec<Vec<u8>>,
        Vec<u8>,
        Vec<u64>,
        String,
        Vec<i64>,
        u64,
    ),
);

impl redis::FromRedisValue for Reply {
    fn from_redis_value(value: redis::Value) -> Result<Reply, redis::ParsingError> {
        // Tuples convert from at most 12 items: the reply splits in two.
        let redis::Value::Array(mut items) = value else {
            return Err("the clean script's reply is not an array".into());
        };
        if items.len() != 16 {
            return Err(format!(
                "the clean script answered {} items, expected 16",
                items.len()
            )
            .into());
        }
        let second = items.split_off(8);
        let (
            (cursor, looked_at, returned, matched, unchanged, vanished, moved, acted),
            (scan_micros, micros, keys, outcomes, capped, checkpoint, pttls, freed),
        ): Wire = redis::FromRedisValue::from_redis_value(redis::Value::Array(vec![
            redis::Value::Array(items),
            redis::Value::Array(second),
        ]))?;
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
            capped,
            checkpoint,
            pttls,
            freed,
        })
    }
}

/// What an `acquire` call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquired {
    /// Whether the run holds the lease now.
    pub lease: LeaseState,
    /// The lease's holder: this run, or the one that holds it.
    pub holder: String,
    /// Since when the holder holds it (ms of the server's clock), if known.
    pub since_ms: Option<u64>,
    /// How long the lease lasts unless renewed, in ms.
    pub ttl_ms: i64,
    /// The server's clock at the call, in ms.
    pub now_ms: u64,
    /// The checkpoint's fields as stored, empty when there is none.
    pub checkpoint: Vec<(String, String)>,
}

/// Who holds a node's lease after an `acquire`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// This run (or nobody, with `--no-lock`).
    Held,
    /// Another run.
    Locked,
    /// The server refused the lease's write; `holder` holds its error.
    Refused,
}

impl redis::FromRedisValue for Acquired {
    fn from_redis_value(value: redis::Value) -> Result<Acquired, redis::ParsingError> {
        let (status, holder, since, ttl_ms, now_ms, checkpoint): (
            String,
            String,
            String,
            i64,
            u64,
            Vec<(String, String)>,
        ) = redis::FromRedisValue::from_redis_value(value)?;
        let lease = match status.as_str() {
            "acquired" => LeaseState::Held,
            "locked" => LeaseState::Locked,
            "refused" => LeaseState::Refused,
            other => return Err(format!("unknown lease status {other:?}").into()),
        };
        Ok(Acquired {
            lease,
            holder,
            since_ms: since.parse().ok(),
            ttl_ms,
            now_ms,
            checkpoint,
        })
    }
}

/// The counters a pass keeps as it goes, summed over its calls (and a run's,
/// over its nodes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Keys SCAN returned.
    pub keys_scanned: u64,
    /// Keys the SCAN steps looked at: the sum of their COUNTs (a hint to
    /// Redis, which returns whole hash buckets).
    pub keys_examined: u64,
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
    /// Keys each rule would have acted on beyond its cap or the run's, left
    /// as they were, in rule order.
    pub capped: Vec<u64>,
    /// Times a NOSCRIPT reply made the pass send its script again.
    pub script_reloads: u64,
    /// With `--estimate-freed`: the bytes the deleted keys held (or, in a
    /// dry run, would give back), by `MEMORY USAGE`.
    pub freed_bytes: u64,
}

impl Counts {
    /// Zeroed counts for `rules`.
    pub fn new(rules: &Rules) -> Counts {
        Counts {
            per_rule: vec![0; rules.rules.len()],
            capped: vec![0; rules.rules.len()],
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
        self.keys_examined += other.keys_examined;
        self.freed_bytes += other.freed_bytes;
        self.keys_matched += other.keys_matched;
        self.batches += other.batches;
        self.vanished += other.vanished;
        self.moved += other.moved;
        self.unchanged += other.unchanged;
        self.script_reloads += other.script_reloads;
        for (total, keys) in self.per_rule.iter_mut().zip(&other.per_rule) {
            *total += keys;
        }
        for (total, keys) in self.capped.iter_mut().zip(&other.capped) {
            *total += keys;
        }
    }
}

impl Reply {
    /// A reply of no work, for `rules`: what a declared-keys step merges
    /// its calls' replies into.
    pub fn empty(rules: &Rules) -> Reply {
        let n = rules.rules.len();
        Reply {
            acted: vec![0; n],
            capped: vec![0; n],
            ..Reply::default()
        }
    }

    /// Adds `other`, a call of the same step, to this reply: its counts,
    /// times and reported keys (the cursor and the keys looked at and
    /// returned are the step's, set by the job).
    pub fn absorb(&mut self, other: Reply) {
        self.matched += other.matched;
        self.unchanged += other.unchanged;
        self.vanished += other.vanished;
        self.moved += other.moved;
        for (total, n) in self.acted.iter_mut().zip(&other.acted) {
            *total += n;
        }
        for (total, n) in self.capped.iter_mut().zip(&other.capped) {
            *total += n;
        }
        self.scan_micros += other.scan_micros;
        self.micros += other.micros;
        self.keys.extend(other.keys);
        self.outcomes.extend(other.outcomes);
        self.pttls.extend(other.pttls);
        self.freed += other.freed;
    }

    /// The reported keys that a rule acted on (or would have, in a dry
    /// run), with the rule's index; none unless the call reported its keys.
    pub fn acted_keys(&self, rules: &Rules) -> Vec<(usize, &[u8])> {
        self.keys
            .iter()
            .zip(&self.outcomes)
            .filter_map(
                |(key, &outcome)| match Fate::decode(outcome, rules.rules.len()) {
                    Ok(Fate::Acted(rule) | Fate::Deleted(rule)) => Some((rule, key.as_slice())),
                    _ => None,
                },
            )
            .collect()
    }

    /// Checks the reply's shape against `rules`, adds it to `counts`, and
    /// logs each reported key's fate at debug level.
    pub fn tally(&self, rules: &Rules, counts: &mut Counts) -> Result<(), Error> {
        let n = rules.rules.len();
        if self.acted.len() != n
            || self.capped.len() != n
            || self.keys.len() != self.outcomes.len()
            || self.keys.len() != self.pttls.len()
        {
            return Err(Error::Script(format!(
                "the script answered for {} rules ({} capped) and {} keys with {} outcomes \
                 and {} TTLs, expected {n} rules",
                self.acted.len(),
                self.capped.len(),
                self.keys.len(),
                self.outcomes.len(),
                self.pttls.len(),
            )));
        }
        let fates: Vec<Fate> = self
            .outcomes
            .iter()
            .map(|&outcome| Fate::decode(outcome, rules.rules.len()))
            .collect::<Result<_, _>>()?;
        for ((key, fate), pttl) in self.keys.iter().zip(fates).zip(&self.pttls) {
            log_key(key, fate, *pttl, rules);
        }
        counts.batches += 1;
        counts.keys_scanned += self.returned;
        counts.keys_examined += self.looked_at;
        counts.freed_bytes += self.freed;
        counts.keys_matched += self.matched;
        counts.unchanged += self.unchanged;
        counts.vanished += self.vanished;
        counts.moved += self.moved;
        for (total, acted) in counts.per_rule.iter_mut().zip(&self.acted) {
            *total += acted;
        }
        for (total, capped) in counts.capped.iter_mut().zip(&self.capped) {
            *total += capped;
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
    /// A cap left the key as it was.
    Capped,
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
            CAPPED => Some(Fate::Capped),
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

/// Logs one key's fate at debug level, with the PTTL the script's check saw
/// (the state the rule acted on), when it checked the key.
fn log_key(key: &[u8], fate: Fate, pttl: i64, rules: &Rules) {
    // Keys are bytes: quoted and escaped, a key cannot forge or split a log line.
    let key = format!("\"{}\"", key.escape_ascii());
    match fate {
        Fate::Vanished => debug!(%key, "key vanished before the script saw it"),
        Fate::Unchanged => debug!(%key, pttl, "no rule's conditions hold; key left as it was"),
        Fate::Moved => {
            debug!(%key, "the node refused the key, its slot is moving; left for the next run")
        }
        Fate::Capped => debug!(%key, pttl, "a cap was reached; key left as it was"),
        Fate::Acted(rule) => {
            let rule = &rules.rules[rule];
            debug!(%key, rule = %rule.name, action = rule.action.name(), pttl, "rule acts on key");
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
        assert_eq!(Fate::decode(126, 3).unwrap(), Fate::Capped);
        assert!(Fate::decode(125, 3).is_err());
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
            capped: vec![0, 4, 0],
            checkpoint: "saved".into(),
            pttls: vec![-1, -3],
            freed: 4096,
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
                keys_examined: 200,
                keys_matched: 80,
                batches: 2,
                vanished: 4,
                moved: 2,
                unchanged: 6,
                per_rule: vec![20, 40, 10],
                capped: vec![0, 8, 0],
                script_reloads: 0,
                freed_bytes: 8192,
            }
        );
        assert_eq!(counts.acted(), 70);
    }

    #[test]
    fn the_replies_of_a_steps_calls_merge_into_one() {
        // A declared-keys step sends one call per slot group; the cursor
        // and the keys looked at and returned stay the step's own.
        let mut step = Reply::empty(&Rules::builtin());
        step.absorb(reply());
        step.absorb(Reply {
            keys: vec![b"cache:b".to_vec()],
            outcomes: vec![1],
            pttls: vec![5000],
            ..reply()
        });
        assert_eq!(
            step,
            Reply {
                cursor: 0,
                looked_at: 0,
                returned: 0,
                matched: 80,
                unchanged: 6,
                vanished: 4,
                moved: 2,
                acted: vec![20, 40, 10],
                scan_micros: 1200,
                micros: 1600,
                keys: vec![
                    b"cache:a".to_vec(),
                    b"temp:\xff".to_vec(),
                    b"cache:b".to_vec()
                ],
                outcomes: vec![2, 131, 1],
                capped: vec![0, 8, 0],
                checkpoint: String::new(),
                pttls: vec![-1, -3, 5000],
                freed: 8192,
            }
        );
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
        let wrong_capped = Reply {
            capped: vec![1],
            ..reply()
        };
        let wrong_pttls = Reply {
            pttls: vec![],
            ..reply()
        };
        for bad in [
            wrong_rules,
            wrong_keys,
            wrong_outcome,
            wrong_capped,
            wrong_pttls,
        ] {
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
                keys_examined: 300,
                keys_matched: 120,
                batches: 3,
                vanished: 6,
                moved: 3,
                unchanged: 9,
                per_rule: vec![30, 60, 15],
                capped: vec![0, 12, 0],
                script_reloads: 3,
                freed_bytes: 12288,
            }
        );
    }
}
