//! The declared-keys mode's steps, for servers and proxies that refuse
//! scripts touching keys they did not declare: the job runs SCAN itself,
//! keeps the keys whose name some rule's pattern matches (the calls match
//! each name again), groups them by hash slot where slots matter, and sends
//! one call of the declared variant per group. Each call re-checks and acts on
//! its keys atomically, exactly as the scanned variant does with the keys of
//! its own SCAN; the replies merge into one, as if one call had done the
//! step.
//!
//! A step costs one round trip: its calls go out together (the node's
//! connection pipelines them) with the checkpoint of the step before and
//! the SCAN of the step after, so Redis runs the three back to back, about
//! as long as one call of the scanned variant. The keys scanned ahead are
//! only candidates, as SCAN's always are: the calls re-check each one.
//!
//! Slots matter on a cluster node, and behind a proxy that routes each call
//! by its keys: such a proxy looks like one standalone server, so a step
//! first declares all its keys in one call, and the first `CROSSSLOT`
//! refusal (which applies nothing) turns grouping by slot on for the rest of
//! the pass. A group whose slot the node no longer serves (`MOVED`, `ASK`,
//! `TRYAGAIN`) is left as it is and its matching keys counted as moved, as
//! the scanned variant counts a refused key.
//!
//! Grouped by slot, a step gathers the keys of several SCANs when the
//! keys of one would make calls of a key or two: a Redis that keeps one
//! dictionary for all its slots (7.0 and older) answers a SCAN with keys of
//! about as many slots as keys, and a call costs Redis about twenty times
//! what one more key in it does (see [`gather`]).
//!
//! These calls cannot read the lease or save the checkpoint (the job's own
//! keys are in another slot): the checkpoint after a step is saved by a
//! call of its own, which checks and renews the lease first, in the next
//! step's round trip, or alone before the pass waits and when it ends (see
//! `pass`). Each call carries its run's deadline instead, the server time
//! from which the lease may have expired (see `lease::LeaseClock`), and
//! refuses to act from then on.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::future::OptionFuture;
use futures_util::{StreamExt, stream};
use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, RedisError, ServerErrorKind};
use tracing::info;

use crate::cap;
use crate::error::Error;
use crate::lease::key_slot;
use crate::pacer::Limits;
use crate::pass::Calls;
use crate::rules::Rules;
use crate::script::protocol::{Batch, Deadline, Op, RESERVED_PREFIX, Reply, Saved};
use crate::script::{Layout, Script};

/// How a step splits its keys into calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// One call for all the step's keys: a standalone server.
    Whole,
    /// One call per hash slot: a cluster node, or a proxy that refused a
    /// call over keys of several slots.
    BySlot,
}

/// The most keys a step grouped by slot gathers (see [`gather`]): about
/// 4 MiB of the job's memory with names of 20 bytes (measured: a peak RSS
/// of 17 MiB cleaning three Redis 7.0 cluster nodes at once, 7 MiB with
/// steps of one SCAN). A node serving fewer slots gathers fewer: a cluster
/// of any size holds at most about [`KEYS_PER_CALL`] x 16384 keys at once.
const GATHER_KEYS: usize = 32_768;

/// The longest a step grouped by slot gathers SCANs (see [`gather`]),
/// however few keys they return: a step of SCANs back to back holds Redis
/// without a pause (Redis 7.0, about 70% of it busy), and the pass checks
/// its stop signal and its lease between steps. A node where few keys
/// match would otherwise gather until its end (a 2M-key node: 3 s).
const GATHER_TIME: Duration = Duration::from_millis(100);

/// The keys per call, on average, that a step grouped by slot gathers
/// for: a call of one key costs Redis about 21 us (Redis 7.0, the built-in
/// rules), each key more about 1 us, so at 8 a call's own cost is about
/// twice its keys'.
const KEYS_PER_CALL: usize = 8;

/// The most calls of a step in flight at once: enough to keep Redis busy
/// between their round trips, few enough that a step of thousands of
/// calls keeps little pending (sent all at once, with their replies merged
/// after the last, three cluster nodes' steps took 65 MiB, measured).
const IN_FLIGHT: usize = 64;

/// The SCAN COUNT of a step: what the scanned variant's call would look at,
/// its two steps of `batch.step` keys, within `batch.max_keys`.
pub fn count(batch: &Batch) -> usize {
    (batch.step * 2).min(batch.max_keys).max(1)
}

/// What one step did.
#[derive(Debug)]
pub struct Stepped {
    /// The step's merged reply; its `checkpoint` is the answer of the save
    /// that went out with it ('' for none).
    pub reply: Reply,
    /// The calls that had to send the script's text again (a `NOSCRIPT`
    /// reply), the save's included.
    pub reloads: u64,
    /// Whether the round trip checked and renewed the run's lease (its
    /// save did): `Some` of the server's clock as the renewing call read
    /// it, where it says (the default mode's calls do not).
    pub renewed: Option<Option<u64>>,
    /// The SCANs and script calls it sent, for the pacer's measure of
    /// Redis's time (see `pacer`).
    pub commands: u64,
    /// A fault of one of the step's calls (others may have run), or of the
    /// save or the SCAN that went out with them: the step's work stands and
    /// counts, then the pass fails with it (the call's first).
    pub fault: Option<Error>,
}

/// One SCAN's answer.
#[derive(Debug)]
struct Scanned {
    /// The cursor it started from.
    from: u64,
    /// The cursor it answered.
    next: u64,
    /// Its COUNT.
    count: usize,
    /// How many keys it returned.
    returned: u64,
    /// The keys it returned whose name some rule's pattern matches, less
    /// the job's own: the others would cross the network back for nothing.
    keys: Vec<Vec<u8>>,
}

impl Scanned {
    /// `self` and the SCAN that went on from its cursor, as one.
    fn extend(&mut self, more: Scanned) {
        self.next = more.next;
        self.count += more.count;
        self.returned += more.returned;
        self.keys.extend(more.keys);
    }
}

/// The declared-keys mode's state across the steps of one pass.
#[derive(Debug)]
pub struct Declared {
    grouping: Grouping,
    /// Whether a step's round trip also scans the next step's keys: when
    /// the next step follows at once (full speed). A paced pass waits
    /// between steps, and keys scanned before the wait would be cold in
    /// Redis's caches when their calls come: checking them costs Redis
    /// about three times as much (measured at `--max-server-share 0.25`),
    /// so such a pass scans each step's keys just before its calls.
    scan_ahead: bool,
    /// Whether a step grouped by slot may gather the keys of several
    /// SCANs (see [`gather`]): not under `--rate-limit`, which keeps steps
    /// small so that they come often.
    gathers: bool,
    /// How long a step may gather: [`GATHER_TIME`], or less under a share
    /// of Redis's time below a tenth, which holds over any second.
    gather_time: Duration,
    /// The next step's keys, scanned in the last step's round trip.
    ahead: Option<Scanned>,
    /// The checkpoint after the last step, not saved yet.
    pending: Option<Saved>,
}

impl Declared {
    /// A pass on a node of `layout` within `limits`: a cluster node's
    /// steps are grouped by slot from the start.
    pub fn new(layout: Layout, limits: &Limits) -> Declared {
        Declared {
            grouping: match layout {
                Layout::Cluster => Grouping::BySlot,
                Layout::Standalone => Grouping::Whole,
            },
            scan_ahead: limits.full_speed(),
            gathers: limits.rate_limit.is_none(),
            gather_time: GATHER_TIME.min(Duration::from_secs_f64(limits.max_server_share)),
            ahead: None,
            pending: None,
        }
    }

    /// One step from `batch.cursor`, in one round trip at full speed (two
    /// for a pass's first step, whose keys are not scanned yet): the last
    /// step's checkpoint, this step's calls, and the SCAN of the next step;
    /// in two when paced, the step's own SCAN, then its calls. The
    /// merged reply's cursor is SCAN's (or the step's own start when a cap
    /// or a refused call left keys of the step, so that the next run looks
    /// at them again). A step grouped by slot gathers SCANs until `latest`
    /// at the latest (the lease's next renewal, see `pass`).
    pub async fn step(
        &mut self,
        conn: &MultiplexedConnection,
        calls: Calls<'_>,
        rules: &Rules,
        batch: &Batch,
        deadline: Deadline,
        latest: Option<Instant>,
    ) -> Result<Stepped, Error> {
        let scan_from = |cursor| scan(conn.clone(), calls.script, rules, cursor, count(batch));
        let mut commands = 0;
        let mut scanned = match self.ahead.take() {
            Some(ahead) if ahead.from == batch.cursor => ahead,
            _ => {
                commands += 1;
                scan_from(batch.cursor).await?
            }
        };
        if self.grouping == Grouping::BySlot && self.gathers && !capped(batch) {
            let until = Instant::now() + self.gather_time;
            let until = latest.map_or(until, |latest| latest.min(until));
            let (gathered, sent) = gather(scanned, scan_from, until).await?;
            scanned = gathered;
            commands += sent;
        }
        let save = self.pending.take().zip(calls.pass);
        let ahead = (self.scan_ahead && scanned.next != 0).then_some(scanned.next);
        let mut groups = groups(scanned.keys, self.grouping);
        commands +=
            (groups.len() + usize::from(save.is_some()) + usize::from(ahead.is_some())) as u64;
        let (saved, mut cleaned, ahead) = tokio::join!(
            OptionFuture::from(save.map(|(saved, pass)| async move {
                let op = Op::Save(&saved, pass);
                calls
                    .script
                    .call::<(String, u64)>(&mut conn.clone(), calls.claim, op)
                    .await
            })),
            clean(conn, calls, rules, batch, deadline, &groups),
            OptionFuture::from(ahead.map(scan_from)),
        );
        if self.grouping == Grouping::Whole
            && cleaned
                .error
                .as_ref()
                .is_some_and(|err| err.kind() == ErrorKind::Server(ServerErrorKind::CrossSlot))
        {
            // The one call of the step was refused whole: nothing ran.
            info!(
                "the server refused a call over keys of several slots (CROSSSLOT); \
                 each call declares the keys of one slot from now on"
            );
            self.grouping = Grouping::BySlot;
            groups = self::groups(groups.concat(), Grouping::BySlot);
            commands += groups.len() as u64;
            cleaned = clean(conn, calls, rules, batch, deadline, &groups).await;
        }
        let Cleaned {
            mut reply,
            mut reloads,
            error,
        } = cleaned;
        // A call refused after others ran: the step's work so far counts,
        // then the pass fails with the error. Its keys are not all cleaned,
        // so the pass's cursor stays at the step's start.
        let failed = error.map(|err| calls.script.error("call of", &err));
        let capped = reply.capped.iter().sum::<u64>() > 0;
        let whole = !capped && failed.is_none();
        reply.cursor = if whole { scanned.next } else { batch.cursor };
        reply.looked_at = scanned.count as u64;
        reply.returned = scanned.returned;
        self.pending = calls.pass.map(|_| Saved {
            cursor: reply.cursor,
            done: reply.cursor == 0 && whole,
            returned: reply.returned,
            acted: reply.acted.iter().sum(),
        });
        let mut scan_fault = None;
        match ahead {
            Some(Ok(ahead)) if whole => self.ahead = Some(ahead),
            Some(Err(err)) => scan_fault = Some(err),
            _ => {}
        }
        let mut save_fault = None;
        let renewed = match saved {
            Some(Ok(((answer, server_ms), text))) => {
                reply.checkpoint = answer;
                reloads += u64::from(text);
                Some(Some(server_ms))
            }
            Some(Err(err)) => {
                save_fault = Some(err);
                None
            }
            None => None,
        };
        let fault = failed.or(save_fault).or(scan_fault);
        Ok(Stepped {
            reply,
            reloads,
            renewed,
            commands,
            fault,
        })
    }

    /// Saves the checkpoint after the last step, if it is not saved yet,
    /// checking and renewing the lease: its answer ('saved', or the error
    /// that refused the write) with the server's clock as it read it, and
    /// whether the call had to send the script's text again, or `None`
    /// when there was nothing to save.
    pub async fn flush(
        &mut self,
        conn: &mut MultiplexedConnection,
        calls: Calls<'_>,
    ) -> Result<Option<((String, u64), bool)>, Error> {
        let Some((saved, pass)) = self.pending.take().zip(calls.pass) else {
            return Ok(None);
        };
        calls
            .script
            .call::<(String, u64)>(conn, calls.claim, Op::Save(&saved, pass))
            .await
            .map(Some)
    }
}

/// `SCAN cursor [MATCH pattern] COUNT count`, with the script's pattern;
/// only the keys some rule's pattern matches are kept, never the job's own.
async fn scan(
    mut conn: MultiplexedConnection,
    script: &Script,
    rules: &Rules,
    cursor: u64,
    count: usize,
) -> Result<Scanned, Error> {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor);
    if let Some(pattern) = &script.scan_match {
        cmd.arg("MATCH").arg(pattern);
    }
    cmd.arg("COUNT").arg(count);
    let (next, mut keys): (u64, Vec<Vec<u8>>) = cmd
        .query_async(&mut conn)
        .await
        .map_err(|err| Error::from_redis("SCAN", &err))?;
    let returned = keys.len() as u64;
    keys.retain(|key| rules.matches(key) && !key.starts_with(RESERVED_PREFIX));
    Ok(Scanned {
        from: cursor,
        next,
        count,
        returned,
        keys,
    })
}

/// Scans on from `scanned` (with `scan_from`) while its keys, one call per
/// slot, would make calls of fewer than [`KEYS_PER_CALL`] keys on average,
/// until it holds [`GATHER_KEYS`] keys, the pass reaches the end, or the
/// time is `until`: a
/// Redis that keeps one dictionary for all its slots (7.0 and older) answers a
/// SCAN with keys of about as many slots as keys, where a newer one walks
/// its slots one by one. Answers the keys of all the SCANs, as one from the
/// first's cursor to the last's, and how many SCANs it sent. Each SCAN
/// holds Redis no longer than a step's would; the step's calls go out
/// after the last.
async fn gather<S, F>(
    mut scanned: Scanned,
    scan_from: S,
    until: Instant,
) -> Result<(Scanned, u64), Error>
where
    S: Fn(u64) -> F,
    F: Future<Output = Result<Scanned, Error>>,
{
    let mut slots: HashSet<u16> = scanned.keys.iter().map(|key| key_slot(key)).collect();
    let mut sent = 0;
    while scanned.next != 0 && sparse(scanned.keys.len(), slots.len()) && Instant::now() < until {
        let more = scan_from(scanned.next).await?;
        sent += 1;
        slots.extend(more.keys.iter().map(|key| key_slot(key)));
        scanned.extend(more);
    }
    Ok((scanned, sent))
}

/// Whether `keys` of `slots` slots, one call per slot, would make calls
/// too small to pay for themselves, and a step may hold more keys.
fn sparse(keys: usize, slots: usize) -> bool {
    keys < GATHER_KEYS && keys < KEYS_PER_CALL * slots
}

/// Whether a cap (the run's or a rule's) limits what a step may act on.
fn capped(batch: &Batch) -> bool {
    batch.cap.is_some() || batch.rule_caps.iter().any(Option::is_some)
}

/// What a step's calls did: their merged reply, how many sent the
/// script's text again, and the first error that refused a call (other
/// than for its slot), if any.
struct Cleaned {
    reply: Reply,
    reloads: u64,
    error: Option<RedisError>,
}

/// Cleans `groups` of keys with one call per group, each refusing from
/// `deadline` on, [`IN_FLIGHT`] at a time (one after the other when a cap
/// is set: each call may act on what the calls before it left of the
/// step's grant), and merges the replies as they come. A group refused
/// for its slot (moved) counts its keys as moved. After any other error no
/// call goes out any more, but the calls already sent are waited for and
/// merged: each is atomic, and what they did counts (and is charged to the
/// caps) before the step fails.
async fn clean(
    conn: &MultiplexedConnection,
    calls: Calls<'_>,
    rules: &Rules,
    batch: &Batch,
    deadline: Deadline,
    groups: &[Vec<Vec<u8>>],
) -> Cleaned {
    let mut merged = (Reply::empty(rules), 0);
    let mut error = None;
    if capped(batch) && groups.len() > 1 {
        let mut left = batch.clone();
        for group in groups {
            let called = call(conn, calls, &left, deadline, group).await;
            if let Ok((reply, _)) = &called {
                left = after(left, &reply.acted);
            }
            if let Err(err) = merge(&mut merged, group, called) {
                error = Some(err);
                break;
            }
        }
    } else {
        let failed = Cell::new(false);
        let mut replies = stream::iter(groups)
            .map(|group| {
                let send = !failed.get();
                async move {
                    let called =
                        OptionFuture::from(send.then(|| call(conn, calls, batch, deadline, group)));
                    (group, called.await)
                }
            })
            .buffered(IN_FLIGHT);
        while let Some((group, called)) = replies.next().await {
            let Some(called) = called else { continue };
            if let Err(err) = merge(&mut merged, group, called) {
                failed.set(true);
                error.get_or_insert(err);
            }
        }
    }
    let (reply, reloads) = merged;
    Cleaned {
        reply,
        reloads,
        error,
    }
}

/// Adds what the call over `group` answered to the step's `merged` reply
/// and count of calls that sent the script's text again: its reply, or,
/// refused for its slot, its keys as moved; any other error fails the step.
fn merge(
    (merged, reloads): &mut (Reply, u64),
    group: &[Vec<u8>],
    called: Result<(Reply, bool), RedisError>,
) -> Result<(), RedisError> {
    match called {
        Ok((reply, text)) => {
            merged.absorb(reply);
            *reloads += u64::from(text);
        }
        Err(err) if is_moved(&err) => {
            let moved = group.len() as u64;
            merged.matched += moved;
            merged.moved += moved;
        }
        Err(err) => return Err(err),
    }
    Ok(())
}

/// One call of the declared variant over `group`.
async fn call(
    conn: &MultiplexedConnection,
    calls: Calls<'_>,
    batch: &Batch,
    deadline: Deadline,
    group: &[Vec<u8>],
) -> Result<(Reply, bool), RedisError> {
    let op = Op::Declared(batch, group, deadline);
    calls
        .script
        .call_raw(&mut conn.clone(), calls.claim, op)
        .await
}

/// `batch` with its caps less what a call acted on, per rule: what is left
/// of the step's grant for its next call.
fn after(mut batch: Batch, acted: &[u64]) -> Batch {
    cap::spend(&mut batch.cap, &mut batch.rule_caps, acted);
    batch
}

/// `keys` as the calls declare them: all in one, or one call per slot.
fn groups(keys: Vec<Vec<u8>>, grouping: Grouping) -> Vec<Vec<Vec<u8>>> {
    if keys.is_empty() {
        return Vec::new();
    }
    match grouping {
        Grouping::Whole => vec![keys],
        Grouping::BySlot => {
            let mut by_slot: BTreeMap<u16, Vec<Vec<u8>>> = BTreeMap::new();
            for key in keys {
                by_slot.entry(key_slot(&key)).or_default().push(key);
            }
            by_slot.into_values().collect()
        }
    }
}

/// Whether a call was refused because its slot is not served here (now).
fn is_moved(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Server(
            ServerErrorKind::Moved | ServerErrorKind::Ask | ServerErrorKind::TryAgain
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_grouped_by_slot_only_when_asked() {
        let keys: Vec<Vec<u8>> = [&b"{a}1"[..], b"{b}1", b"{a}2", b"\xff{b}"]
            .iter()
            .map(|k| k.to_vec())
            .collect();
        assert_eq!(groups(keys.clone(), Grouping::Whole), vec![keys.clone()]);
        let by_slot = groups(keys, Grouping::BySlot);
        assert_eq!(by_slot.len(), 2);
        for group in &by_slot {
            let slot = key_slot(&group[0]);
            assert!(group.iter().all(|key| key_slot(key) == slot));
        }
        assert_eq!(by_slot.iter().map(Vec::len).sum::<usize>(), 4);
        assert!(groups(Vec::new(), Grouping::BySlot).is_empty());
    }

    /// A SCAN over `keys` in their order, `per_scan` keys a call, its
    /// cursor the index of the next key.
    fn scanner(
        keys: &[Vec<u8>],
        per_scan: usize,
    ) -> impl Fn(u64) -> std::future::Ready<Result<Scanned, Error>> + '_ {
        move |cursor| {
            let from = cursor as usize;
            let to = (from + per_scan).min(keys.len());
            std::future::ready(Ok(Scanned {
                from: cursor,
                next: if to == keys.len() { 0 } else { to as u64 },
                count: per_scan,
                returned: (to - from) as u64,
                keys: keys[from..to].to_vec(),
            }))
        }
    }

    /// `n` keys, the `i`th with the hash tag `{i % tags}`.
    fn tagged(n: usize, tags: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("{{{}}}:{i}", i % tags).into_bytes())
            .collect()
    }

    #[tokio::test]
    async fn a_step_gathers_scans_while_its_calls_would_hold_few_keys() {
        // Keys of thousands of slots: SCANs until the step holds
        // GATHER_KEYS keys.
        let keys = tagged(40_000, 40_000);
        let scan = scanner(&keys, 100);
        let (step, sent) = gather(scan(0).await.unwrap(), &scan, later())
            .await
            .unwrap();
        assert_eq!(step.keys, keys[..GATHER_KEYS.div_ceil(100) * 100]);
        assert_eq!(sent, GATHER_KEYS.div_ceil(100) as u64 - 1);
        assert_eq!((step.from, step.next), (0, step.keys.len() as u64));
        assert_eq!(
            (step.count, step.returned),
            (step.keys.len(), step.keys.len() as u64)
        );

        // Keys of 40 tags (slots): SCANs until the calls would hold
        // KEYS_PER_CALL keys on average,
        let keys = tagged(10_000, 40);
        let scan = scanner(&keys, 100);
        let (step, sent) = gather(scan(0).await.unwrap(), &scan, later())
            .await
            .unwrap();
        // from the first SCAN that takes the step there (400 keys).
        assert_eq!(
            (step.keys.len(), sent),
            ((KEYS_PER_CALL * 40).div_ceil(100) * 100, 3)
        );

        // Or to the end of the keyspace.
        let keys = tagged(250, 250);
        let scan = scanner(&keys, 100);
        let (step, sent) = gather(scan(0).await.unwrap(), &scan, later())
            .await
            .unwrap();
        assert_eq!((&step.keys, step.next, sent), (&keys, 0, 2));
    }

    /// An hour from now: no time limit on gathering.
    fn later() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test]
    async fn a_step_gathers_no_longer_than_it_may() {
        let keys = tagged(10_000, 10_000);
        let scan = scanner(&keys, 100);
        let (step, sent) = gather(scan(0).await.unwrap(), &scan, Instant::now())
            .await
            .unwrap();
        assert_eq!((step.keys.len(), step.next, sent), (100, 100, 0));
    }

    #[test]
    fn a_step_gathers_for_a_shorter_time_under_a_small_share() {
        let limits = |max_server_share| Limits {
            max_keys: 1000,
            max_call_time: Duration::from_millis(1),
            rate_limit: None,
            max_server_share,
        };
        let gather_time = |share| Declared::new(Layout::Cluster, &limits(share)).gather_time;
        assert_eq!(gather_time(1.0), GATHER_TIME);
        assert_eq!(gather_time(0.1), GATHER_TIME);
        assert_eq!(gather_time(0.02), Duration::from_millis(20));
    }

    #[test]
    fn a_step_stops_gathering_exactly_at_its_limits() {
        // Calls of KEYS_PER_CALL keys on average are enough,
        assert!(sparse(KEYS_PER_CALL * 10 - 1, 10));
        assert!(!sparse(KEYS_PER_CALL * 10, 10));
        // and so are GATHER_KEYS keys, however many slots they hold.
        assert!(sparse(GATHER_KEYS - 1, GATHER_KEYS));
        assert!(!sparse(GATHER_KEYS, GATHER_KEYS));
    }

    #[tokio::test]
    async fn a_step_whose_keys_share_few_slots_gathers_nothing() {
        let keys = tagged(1_000, 10);
        let scan = scanner(&keys, 100);
        let (step, sent) = gather(scan(0).await.unwrap(), &scan, later())
            .await
            .unwrap();
        assert_eq!((step.keys.len(), step.next, sent), (100, 100, 0));
    }

    /// A batch of 300-key steps, without caps.
    fn batch() -> Batch {
        Batch {
            cursor: 0,
            step: 300,
            scan_budget: std::time::Duration::from_micros(750),
            max_keys: 10_000,
            report_keys: false,
            cap: None,
            rule_caps: Vec::new(),
            estimate_freed: false,
        }
    }

    #[test]
    fn each_capped_call_gets_what_the_calls_before_it_left() {
        let batch = Batch {
            cap: Some(100),
            rule_caps: vec![None, Some(10), Some(5)],
            ..batch()
        };
        let left = after(batch, &[40, 7, 9]);
        assert_eq!(left.cap, Some(44));
        assert_eq!(left.rule_caps, vec![None, Some(3), Some(0)]);
    }

    #[test]
    fn a_step_scans_what_the_scanned_variant_would_look_at() {
        let batch = batch();
        assert_eq!(count(&batch), 600);
        assert_eq!(
            count(&Batch {
                max_keys: 50,
                ..batch
            }),
            50
        );
    }
}
