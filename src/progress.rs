//! How far a node's pass has gone and when it will end, read from the SCAN
//! cursor alone, and how that is shown: a log line every
//! `--progress-interval`, or a progress bar per node on a terminal.
//!
//! Redis and Valkey walk a hash table's buckets in reverse-binary order: the
//! cursor's bits, read from the highest down, count the buckets visited. So
//! the cursor with all 64 bits reversed, divided by 2^64, is the share of
//! the buckets visited, whatever the table's size (a table that grows or
//! shrinks mid-pass keeps the order). With the keys spread evenly over the
//! buckets by the hash, that is the share of the keyspace covered.
//!
//! A cluster node of Redis 7.4 and later, or of Valkey 8.0 and later, keeps
//! one table per slot (its "kvstore") and scans the slots in increasing
//! order, skipping empty ones: the cursor's low 14 bits are the slot being
//! scanned, the rest the cursor within that slot's table. The share is then
//! (the slot's rank among the slots the node serves + the reversed share of
//! the inner cursor) / the number of slots it serves. Standalone servers,
//! and cluster nodes of Redis 6.2 to 7.2, keep one table (`kvstoreScan` in
//! Redis's and Valkey's `kvstore.c`; `docs/operations.md` has the
//! measurements on each server).

use std::time::{Duration, Instant};

use indicatif::ProgressStyle;
use tracing::{Span, info};
use tracing_indicatif::span_ext::IndicatifSpanExt;

use crate::script::protocol::Counts;

/// The bits of a per-slot cursor that hold the slot (`CLUSTER_SLOT_MASK_BITS`).
const SLOT_BITS: u32 = 14;

/// Slots in a Redis Cluster.
const SLOTS: u32 = 1 << SLOT_BITS;

/// The target of the progress log lines: where bars are shown, the log
/// output leaves these lines out.
pub const LINE_TARGET: &str = "redis_janitor::progress";

/// The steps of a progress bar: a hundredth of a percent each.
const BAR_STEPS: u64 = 10_000;

/// How a server keeps a database's keys in hash tables, which says how its
/// SCAN cursor reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tables {
    /// One table: the cursor is its bucket, in reverse-binary order.
    One,
    /// One table per cluster slot: the cursor's low 14 bits are the slot,
    /// the rest the cursor within its table. Holds the slot ranges the
    /// node serves, inclusive.
    PerSlot(Vec<(u16, u16)>),
}

impl Tables {
    /// The tables of a cluster node serving `slots`, on `software`
    /// ("Redis" or "Valkey") at `version`.
    pub fn of_cluster_node(software: &str, version: &str, mut slots: Vec<(u16, u16)>) -> Tables {
        if !per_slot(software, version) {
            return Tables::One;
        }
        slots.sort_unstable();
        Tables::PerSlot(slots)
    }

    /// The share of the keyspace a pass has covered when SCAN returned
    /// `cursor`, from 0 to 1. Cursor 0 is the start of a pass (its end is
    /// for the caller to know).
    pub fn share(&self, cursor: u64) -> f64 {
        match self {
            Tables::One => reversed_share(cursor),
            Tables::PerSlot(slots) => slot_share(slots, cursor),
        }
    }
}

/// Whether a cluster node of `software` at `version` keeps one table per
/// slot: Redis from 7.4, Valkey from 8.0.
pub fn per_slot(software: &str, version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major_minor = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    match software {
        "Valkey" => major_minor >= (8, 0),
        _ => major_minor >= (7, 4),
    }
}

/// The share of a table's buckets visited before `cursor`: its bits
/// reversed, over 2^64.
pub fn reversed_share(cursor: u64) -> f64 {
    // 2^64: the cursor's bits, reversed, are a binary fraction.
    const SPAN: f64 = 18_446_744_073_709_551_616.0;
    (cursor.reverse_bits() as f64 / SPAN).min(1.0)
}

/// The share of a node's keyspace covered before `cursor` on a node with
/// one table per slot, serving the sorted `slots`. A slot the node does
/// not serve (one being imported) counts for nothing; with no slots known,
/// every slot counts.
fn slot_share(slots: &[(u16, u16)], cursor: u64) -> f64 {
    let slot = (cursor & u64::from(SLOTS - 1)) as u32;
    let inner = reversed_share(cursor >> SLOT_BITS);
    let served: u32 = slots.iter().map(|&(first, last)| span(first, last)).sum();
    if served == 0 {
        return (f64::from(slot) + inner) / f64::from(SLOTS);
    }
    // The served slots below `slot`, and whether `slot` is one.
    let below: u32 = slots
        .iter()
        .map(|&(first, last)| {
            (u32::from(last) + 1)
                .min(slot)
                .saturating_sub(u32::from(first))
        })
        .sum();
    let serves = slots
        .iter()
        .any(|&(first, last)| (u32::from(first)..=u32::from(last)).contains(&slot));
    let inner = if serves { inner } else { 0.0 };
    ((f64::from(below) + inner) / f64::from(served)).min(1.0)
}

/// How many slots `first..=last` holds (none if `last < first`).
fn span(first: u16, last: u16) -> u32 {
    (u32::from(last) + 1).saturating_sub(u32::from(first))
}

/// The time left to cover the rest of the keyspace at the pace since the
/// pass began in this run at share `from`, when `done` is covered after
/// `elapsed`; `None` before the pass has covered anything.
pub fn time_left(from: f64, done: f64, elapsed: Duration) -> Option<Duration> {
    let covered = done - from;
    if covered <= 0.0 || elapsed.is_zero() {
        return None;
    }
    let left = (1.0 - done).max(0.0) * elapsed.as_secs_f64() / covered;
    Duration::try_from_secs_f64(left).ok()
}

/// `left` in whole seconds, for people: `1h 2m 5s`.
pub fn human(left: Duration) -> String {
    humantime::format_duration(Duration::from_secs(left.as_secs_f64().round() as u64)).to_string()
}

/// Where a node's pass stands, as the progress line and bar show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Keys SCAN returned, since the run began.
    pub keys_scanned: u64,
    /// Keys whose name matched a rule.
    pub keys_matched: u64,
    /// Keys acted on.
    pub keys_acted: u64,
    /// Keys scanned per second, since the pass began in this run.
    pub keys_per_second: f64,
    /// The share of the keyspace covered, 0 to 1.
    pub done: f64,
    /// The time left, once the pass has covered something.
    pub left: Option<Duration>,
}

impl Snapshot {
    /// Logs the snapshot as one `progress` event (left out where bars are
    /// shown).
    pub fn log(&self) {
        info!(
            target: LINE_TARGET,
            keys_scanned = self.keys_scanned,
            keys_matched = self.keys_matched,
            keys_acted = self.keys_acted,
            keys_per_second = self.keys_per_second.round(),
            done = (self.done * 1000.0).round() / 1000.0,
            eta_seconds = self.left.map(|left| left.as_secs_f64().round() as u64),
            eta = self.left.map(human).map(tracing::field::display),
            "progress"
        );
    }

    /// Shows the snapshot on the current span's progress bar; nothing when
    /// no bars are shown.
    pub fn show(&self) {
        let span = Span::current();
        span.pb_set_length(BAR_STEPS);
        span.pb_set_position((self.done * BAR_STEPS as f64).round() as u64);
        let left = self.left.map_or_else(|| "?".to_string(), human);
        span.pb_set_message(&format!(
            "{} keys, {}/s, {left} left",
            self.keys_scanned,
            self.keys_per_second.round()
        ));
    }
}

/// The style of a node's progress bar (its span names the node).
pub fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{span_fields} [{bar:30}] {percent:>3}% {msg}")
        .expect("a valid template")
        .progress_chars("=> ")
}

/// The style of the line that counts the nodes whose bars do not fit.
pub fn more_bars_style() -> ProgressStyle {
    ProgressStyle::with_template("... and {pending_progress_bars} more nodes")
        .expect("a valid template")
}

/// The pace of a pass in this run: where and when it began, to tell the
/// rate and the time left.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// When the pass began in this run.
    pub started: Instant,
    /// The share covered when it began (above 0 when it resumed).
    pub from: f64,
    /// Keys scanned when it began (the counts run across retries).
    pub scanned: u64,
}

impl Pace {
    /// Where the pass stands with `counts` done and `done` covered.
    pub fn snapshot(&self, counts: &Counts, done: f64) -> Snapshot {
        let elapsed = self.started.elapsed();
        let scanned = counts.keys_scanned.saturating_sub(self.scanned);
        Snapshot {
            keys_scanned: counts.keys_scanned,
            keys_matched: counts.keys_matched,
            keys_acted: counts.acted(),
            keys_per_second: scanned as f64 / elapsed.as_secs_f64().max(1e-3),
            done,
            left: time_left(self.from, done, elapsed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursors_reversed_bits_are_the_share_of_buckets_visited() {
        assert_eq!(reversed_share(0), 0.0);
        // Reverse-binary order on any table: the top bit first.
        assert_eq!(reversed_share(1), 0.5);
        assert_eq!(reversed_share(0b10), 0.25);
        assert_eq!(reversed_share(0b11), 0.75);
        assert_eq!(reversed_share(1 << 63), 0.5f64.powi(64));
        // The last buckets of a table of 2^20 buckets: nearly all visited.
        assert!(reversed_share((1 << 20) - 1) > 0.999_99);
        assert!(reversed_share(u64::MAX) <= 1.0);
        // A table that doubles mid-pass keeps the order: 0b01 on 4 buckets
        // (half visited) is 0b001 or 0b101 on 8.
        assert_eq!(reversed_share(0b101), 0.625);
        assert!(reversed_share(0b101) > reversed_share(0b01));
    }

    #[test]
    fn on_one_table_the_cursor_is_read_whole() {
        let one = Tables::One;
        assert_eq!(one.share(0), 0.0);
        assert_eq!(one.share(1), 0.5);
        // A Redis 7.0 cluster node: its low bits are no slot.
        let old = Tables::of_cluster_node("Redis", "7.0.15", vec![(0, 5460)]);
        assert_eq!(old, Tables::One);
        assert_eq!(old.share(3), 0.75);
    }

    #[test]
    fn per_slot_tables_come_with_redis_7_4_and_valkey_8() {
        for (software, version, per) in [
            ("Redis", "6.2.14", false),
            ("Redis", "7.0.15", false),
            ("Redis", "7.2.4", false),
            ("Redis", "7.4.0", true),
            ("Redis", "8.2.3", true),
            ("Redis", "10.0.0", true),
            ("Valkey", "7.2.5", false),
            ("Valkey", "8.0.1", true),
            ("Valkey", "8.1.8", true),
            ("Redis", "unknown", false),
        ] {
            assert_eq!(per_slot(software, version), per, "{software} {version}");
        }
    }

    /// A per-slot cursor: `inner` in the slot's table, then the slot.
    fn cursor(slot: u16, inner: u64) -> u64 {
        (inner << SLOT_BITS) | u64::from(slot)
    }

    #[test]
    fn on_per_slot_tables_the_share_is_the_slots_rank_plus_its_tables_share() {
        // Two ranges, 100 slots in all, given out of order.
        let tables = Tables::of_cluster_node("Valkey", "8.1.8", vec![(200, 249), (0, 49)]);
        assert_eq!(tables, Tables::PerSlot(vec![(0, 49), (200, 249)]));
        // Cursor 0: the pass starts at slot 0.
        assert_eq!(tables.share(0), 0.0);
        // Half of slot 0's table.
        assert_eq!(tables.share(cursor(0, 1)), 0.005);
        // The start of the 11th slot served.
        assert_eq!(tables.share(cursor(10, 0)), 0.1);
        // The first slot of the second range: 50 slots below it.
        assert_eq!(tables.share(cursor(200, 0)), 0.5);
        // Three quarters through the last slot.
        assert_eq!(tables.share(cursor(249, 0b11)), 0.9975);
    }

    #[test]
    fn a_slot_the_node_does_not_serve_counts_for_nothing() {
        let tables = Tables::PerSlot(vec![(0, 49), (200, 249)]);
        // Between the ranges: all 50 slots below, nothing of its own.
        assert_eq!(tables.share(cursor(120, 1)), 0.5);
        // Above every range: all served slots are below.
        assert_eq!(tables.share(cursor(16383, 1)), 1.0);
        // Slot 0 not served.
        let high = Tables::PerSlot(vec![(8192, 16383)]);
        assert_eq!(high.share(cursor(0, 1)), 0.0);
        assert_eq!(high.share(cursor(8192, 1)), 0.5 / 8192.0);
        // No slots known: every slot counts.
        let unknown = Tables::PerSlot(Vec::new());
        assert_eq!(unknown.share(cursor(8192, 0)), 0.5);
        assert_eq!(unknown.share(cursor(0, 1)), 0.5 / 16384.0);
    }

    #[test]
    fn the_time_left_is_the_rest_at_the_pace_since_the_pass_began_here() {
        let secs = Duration::from_secs;
        // A quarter in 10 s: three quarters in 30 s.
        assert_eq!(time_left(0.0, 0.25, secs(10)), Some(secs(30)));
        // A resumed pass: from 0.5 to 0.75 in 10 s, 10 s left.
        assert_eq!(time_left(0.5, 0.75, secs(10)), Some(secs(10)));
        // Done: nothing left.
        assert_eq!(time_left(0.2, 1.0, secs(10)), Some(Duration::ZERO));
        // Nothing covered yet, or no time passed: no estimate.
        assert_eq!(time_left(0.5, 0.5, secs(10)), None);
        assert_eq!(time_left(0.0, 0.0, secs(10)), None);
        assert_eq!(time_left(0.0, 0.5, Duration::ZERO), None);
        // A share that went back (a resharding moved slots): no estimate.
        assert_eq!(time_left(0.6, 0.5, secs(10)), None);
    }

    #[test]
    fn the_time_left_reads_in_whole_seconds() {
        assert_eq!(human(Duration::from_millis(3_721_400)), "1h 2m 1s");
        assert_eq!(human(Duration::from_millis(600)), "1s");
        assert_eq!(human(Duration::ZERO), "0s");
    }

    #[test]
    fn a_snapshot_counts_the_rate_since_the_pass_began_here() {
        let pace = Pace {
            started: Instant::now() - Duration::from_secs(10),
            from: 0.5,
            scanned: 1_000,
        };
        let counts = Counts {
            keys_scanned: 11_000,
            keys_matched: 30,
            per_rule: vec![5, 7],
            ..Counts::default()
        };
        let snapshot = pace.snapshot(&counts, 0.75);
        assert_eq!(snapshot.keys_scanned, 11_000);
        assert_eq!(snapshot.keys_matched, 30);
        assert_eq!(snapshot.keys_acted, 12);
        assert!(
            (snapshot.keys_per_second - 1_000.0).abs() < 10.0,
            "{snapshot:?}"
        );
        let left = snapshot.left.expect("an estimate").as_secs_f64();
        assert!((left - 10.0).abs() < 0.1, "{snapshot:?}");
    }
}
