//! The declared-keys mode's step, for servers and proxies that refuse
//! scripts touching keys they did not declare: the job runs SCAN itself,
//! groups the keys it returns by hash slot where slots matter, and sends one
//! call of the declared variant per group, all at once over the node's
//! connection (which pipelines them). Each call re-checks and acts on its
//! keys atomically, exactly as the scanned variant does with the keys of its
//! own SCAN; the replies merge into one, as if one call had done the step.
//!
//! Slots matter on a cluster node, and behind a proxy that routes each call
//! by its keys: such a proxy looks like one standalone server, so a step
//! first declares all its keys in one call, and the first `CROSSSLOT`
//! refusal (which applies nothing) turns grouping by slot on for the rest of
//! the pass. A group whose slot the node no longer serves (`MOVED`, `ASK`,
//! `TRYAGAIN`) is left as it is and its matching keys counted as moved, as
//! the scanned variant counts a refused key.
//!
//! These calls hold no lease and save no checkpoint (the job's own keys are
//! in another slot): the pass saves the checkpoint with a call of its own
//! after the step, which checks the lease (see `pass`).

use std::collections::BTreeMap;

use futures_util::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, RedisError, ServerErrorKind};
use tracing::info;

use crate::error::Error;
use crate::lease::key_slot;
use crate::rules::Rules;
use crate::script::Script;
use crate::script::protocol::{Batch, Claim, Op, RESERVED_PREFIX, Reply};

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

/// One step from `batch.cursor`: SCAN, then the calls cleaning what it
/// returned. Answers the merged reply, whose cursor is SCAN's (or the
/// step's own start when a cap left keys of the step, so that the next run
/// looks at them again), and whether a call had to send the script's text.
pub async fn step(
    conn: &mut MultiplexedConnection,
    script: &Script,
    claim: &Claim,
    rules: &Rules,
    batch: &Batch,
    grouping: &mut Grouping,
) -> Result<(Reply, bool), Error> {
    let looked_at = count(batch);
    let (next, keys) = scan(conn, script, batch.cursor, looked_at).await?;
    let returned = keys.len() as u64;
    let keys: Vec<Vec<u8>> = keys
        .into_iter()
        .filter(|key| !key.starts_with(RESERVED_PREFIX))
        .collect();
    let mut groups = groups(keys, *grouping);
    let (mut reply, resent) = loop {
        match clean(conn, script, claim, rules, batch, &groups).await {
            Err(err)
                if *grouping == Grouping::Whole
                    && err.kind() == ErrorKind::Server(ServerErrorKind::CrossSlot) =>
            {
                info!(
                    "the server refused a call over keys of several slots (CROSSSLOT); \
                     each call declares the keys of one slot from now on"
                );
                *grouping = Grouping::BySlot;
                groups = self::groups(groups.concat(), Grouping::BySlot);
            }
            called => break called.map_err(|err| script.error("call of", &err))?,
        }
    };
    let capped = reply.capped.iter().sum::<u64>() > 0;
    reply.cursor = if capped { batch.cursor } else { next };
    reply.looked_at = looked_at as u64;
    reply.returned = returned;
    Ok((reply, resent))
}

/// `SCAN cursor [MATCH pattern] COUNT count`, with the script's pattern.
async fn scan(
    conn: &mut MultiplexedConnection,
    script: &Script,
    cursor: u64,
    count: usize,
) -> Result<(u64, Vec<Vec<u8>>), Error> {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor);
    if let Some(pattern) = &script.scan_match {
        cmd.arg("MATCH").arg(pattern);
    }
    cmd.arg("COUNT").arg(count);
    cmd.query_async(conn)
        .await
        .map_err(|err| Error::from_redis("SCAN", &err))
}

/// Cleans `groups` of keys with one call per group, all sent at once, and
/// merges the replies. A group refused for its slot (moved) counts its matching keys
/// as moved; any other error fails the step (nothing of a refused call was
/// applied).
async fn clean(
    conn: &MultiplexedConnection,
    script: &Script,
    claim: &Claim,
    rules: &Rules,
    batch: &Batch,
    groups: &[Vec<Vec<u8>>],
) -> Result<(Reply, bool), RedisError> {
    let calls = groups.iter().map(|group| {
        let mut conn = conn.clone();
        async move {
            script
                .call_raw::<Reply>(&mut conn, claim, Op::Declared(batch, group))
                .await
        }
    });
    let mut merged = Reply::empty(rules);
    let mut resent = false;
    for (group, called) in groups.iter().zip(join_all(calls).await) {
        match called {
            Ok((reply, text)) => {
                merged.absorb(reply);
                resent |= text;
            }
            Err(err) if is_moved(&err) => {
                let moved = group
                    .iter()
                    .filter(|key| rules.rules.iter().any(|rule| rule.pattern.matches(key)))
                    .count() as u64;
                merged.matched += moved;
                merged.moved += moved;
            }
            Err(err) => return Err(err),
        }
    }
    Ok((merged, resent))
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

    #[test]
    fn a_step_scans_what_the_scanned_variant_would_look_at() {
        let batch = Batch {
            cursor: 0,
            step: 300,
            scan_budget: std::time::Duration::from_micros(750),
            max_keys: 10_000,
            report_keys: false,
            cap: None,
            rule_caps: Vec::new(),
            estimate_freed: false,
        };
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
