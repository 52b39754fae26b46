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
//! These calls cannot read the lease or save the checkpoint (the job's own
//! keys are in another slot): the checkpoint after a step is saved by a
//! call of its own, which checks and renews the lease first, in the next
//! step's round trip, or alone before the pass waits and when it ends (see
//! `pass`). Each call carries its run's deadline instead, the server time
//! from which the lease may have expired (see `lease::LeaseClock`), and
//! refuses to act from then on.

use std::collections::BTreeMap;

use futures_util::future::{OptionFuture, join_all};
use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, RedisError, ServerErrorKind};
use tracing::info;

use crate::cap;
use crate::error::Error;
use crate::lease::key_slot;
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
    /// save did).
    pub confirmed: bool,
    /// The SCANs and script calls it sent, for the pacer's measure of
    /// Redis's time (see `pacer`).
    pub commands: u64,
    /// A fault of the save or the SCAN that went out with the step's calls:
    /// the step's work stands and counts, then the pass fails with it.
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
    /// The next step's keys, scanned in the last step's round trip.
    ahead: Option<Scanned>,
    /// The checkpoint after the last step, not saved yet.
    pending: Option<Saved>,
}

impl Declared {
    /// A pass on a node of `layout`, at full speed or not (`scan_ahead`):
    /// a cluster node's steps are grouped by slot from the start.
    pub fn new(layout: Layout, scan_ahead: bool) -> Declared {
        Declared {
            grouping: match layout {
                Layout::Cluster => Grouping::BySlot,
                Layout::Standalone => Grouping::Whole,
            },
            scan_ahead,
            ahead: None,
            pending: None,
        }
    }

    /// One step from `batch.cursor`, in one round trip at full speed (two
    /// for a pass's first step, whose keys are not scanned yet): the last
    /// step's checkpoint, this step's calls, and the SCAN of the next step;
    /// in two when paced, the step's own SCAN, then its calls. The
    /// merged reply's cursor is SCAN's (or the step's own start when a cap
    /// left keys of the step, so that the next run looks at them again).
    pub async fn step(
        &mut self,
        conn: &MultiplexedConnection,
        calls: Calls<'_>,
        rules: &Rules,
        batch: &Batch,
        deadline: Deadline,
    ) -> Result<Stepped, Error> {
        let scan_from = |cursor| scan(conn.clone(), calls.script, rules, cursor, count(batch));
        let mut commands = 0;
        let scanned = match self.ahead.take() {
            Some(ahead) if ahead.from == batch.cursor => ahead,
            _ => {
                commands += 1;
                scan_from(batch.cursor).await?
            }
        };
        let save = self.pending.take().zip(calls.pass);
        let ahead = (self.scan_ahead && scanned.next != 0).then_some(scanned.next);
        let mut groups = groups(scanned.keys, self.grouping);
        commands +=
            (groups.len() + usize::from(save.is_some()) + usize::from(ahead.is_some())) as u64;
        let (saved, cleaned, ahead) = tokio::join!(
            OptionFuture::from(save.map(|(saved, pass)| async move {
                let op = Op::Save(&saved, pass);
                calls
                    .script
                    .call::<String>(&mut conn.clone(), calls.claim, op)
                    .await
            })),
            clean(conn, calls, rules, batch, deadline, &groups),
            OptionFuture::from(ahead.map(scan_from)),
        );
        let (mut reply, mut reloads) = match cleaned {
            Err(err)
                if self.grouping == Grouping::Whole
                    && err.kind() == ErrorKind::Server(ServerErrorKind::CrossSlot) =>
            {
                info!(
                    "the server refused a call over keys of several slots (CROSSSLOT); \
                     each call declares the keys of one slot from now on"
                );
                self.grouping = Grouping::BySlot;
                groups = self::groups(groups.concat(), Grouping::BySlot);
                commands += groups.len() as u64;
                clean(conn, calls, rules, batch, deadline, &groups).await
            }
            cleaned => cleaned,
        }
        .map_err(|err| calls.script.error("call of", &err))?;
        let capped = reply.capped.iter().sum::<u64>() > 0;
        reply.cursor = if capped { batch.cursor } else { scanned.next };
        reply.looked_at = scanned.count as u64;
        reply.returned = scanned.returned;
        self.pending = calls.pass.map(|_| Saved {
            cursor: reply.cursor,
            done: reply.cursor == 0 && !capped,
            returned: reply.returned,
            acted: reply.acted.iter().sum(),
        });
        let mut fault = None;
        match ahead {
            Some(Ok(ahead)) if !capped => self.ahead = Some(ahead),
            Some(Err(err)) => fault = Some(err),
            _ => {}
        }
        let confirmed = match saved {
            Some(Ok((answer, text))) => {
                reply.checkpoint = answer;
                reloads += u64::from(text);
                true
            }
            Some(Err(err)) => {
                fault = Some(err);
                false
            }
            None => false,
        };
        Ok(Stepped {
            reply,
            reloads,
            confirmed,
            commands,
            fault,
        })
    }

    /// Saves the checkpoint after the last step, if it is not saved yet,
    /// checking and renewing the lease: its answer ('saved', or the error
    /// that refused the write) and whether the call had to send the
    /// script's text again, or `None` when there was nothing to save.
    pub async fn flush(
        &mut self,
        conn: &mut MultiplexedConnection,
        calls: Calls<'_>,
    ) -> Result<Option<(String, bool)>, Error> {
        let Some((saved, pass)) = self.pending.take().zip(calls.pass) else {
            return Ok(None);
        };
        calls
            .script
            .call::<String>(conn, calls.claim, Op::Save(&saved, pass))
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

/// Cleans `groups` of keys with one call per group, each refusing from
/// `deadline` on, all sent at once (one
/// after the other when a cap is set: each call may act on what the calls
/// before it left of the step's grant), and merges the replies. A group
/// refused for its slot (moved) counts its keys as moved; any
/// other error fails the step (nothing of a refused call was applied).
/// Answers the merged reply and how many calls sent the script's text
/// again.
async fn clean(
    conn: &MultiplexedConnection,
    calls: Calls<'_>,
    rules: &Rules,
    batch: &Batch,
    deadline: Deadline,
    groups: &[Vec<Vec<u8>>],
) -> Result<(Reply, u64), RedisError> {
    let capped = batch.cap.is_some() || batch.rule_caps.iter().any(Option::is_some);
    let replies = if capped && groups.len() > 1 {
        let mut left = batch.clone();
        let mut replies = Vec::with_capacity(groups.len());
        for group in groups {
            let reply = call(conn, calls, &left, deadline, group).await;
            if let Ok((reply, _)) = &reply {
                left = after(left, &reply.acted);
            }
            replies.push(reply);
        }
        replies
    } else {
        join_all(
            groups
                .iter()
                .map(|group| call(conn, calls, batch, deadline, group)),
        )
        .await
    };
    let mut merged = Reply::empty(rules);
    let mut reloads = 0;
    for (group, called) in groups.iter().zip(replies) {
        match called {
            Ok((reply, text)) => {
                merged.absorb(reply);
                reloads += u64::from(text);
            }
            Err(err) if is_moved(&err) => {
                let moved = group.len() as u64;
                merged.matched += moved;
                merged.moved += moved;
            }
            Err(err) => return Err(err),
        }
    }
    Ok((merged, reloads))
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
