//! The replicas' lag, as a primary sees it: how many bytes of its
//! replication stream its slowest online replica has not yet acknowledged,
//! read from `INFO replication` (`master_repl_offset` minus each replica's
//! `offset`). A writing pass pauses its calls while this exceeds
//! `--max-replica-lag` (see `pass`), so that a mass deletion, which
//! replicates one `UNLINK` per call and its keys, never runs away from the
//! replicas.
//!
//! A replica acknowledges its offset about once a second (`REPLCONF ACK`,
//! from its replication cron), so the lag read here includes up to a second
//! of the primary's writes even when the replica keeps up: the bound must
//! be well above what the primary writes in a second.

use std::time::Duration;

use crate::topology::field;

/// The default `--max-replica-lag`: 16 MiB. A quarter of Redis's default
/// soft output-buffer limit for replicas (`client-output-buffer-limit
/// replica 256mb 64mb 60`, past which the primary drops the replica and it
/// must resynchronise in full), and well above the lag a replica that
/// keeps up shows, its last second of writes included (at most 3.2 MB at
/// the default `--max-server-share`, 7 MB at full speed, measured in
/// docs/operations.md), so such a replica is never waited for, while one
/// that falls seconds behind is.
pub const DEFAULT_MAX_REPLICA_LAG: u64 = 16 * 1024 * 1024;

/// How often a paused pass reads the replicas' lag again.
pub const RECHECK_INTERVAL: Duration = Duration::from_millis(100);

/// The slowest online replica of a primary, and how far behind it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lag {
    /// Its `ip:port`, as the primary lists it.
    pub replica: String,
    /// The bytes of the replication stream it has not acknowledged.
    pub bytes: u64,
}

impl Lag {
    /// The largest lag among the online replicas that `INFO replication`
    /// lists; `None` on a replica, or on a primary without an online
    /// replica that has acknowledged anything yet (one that just finished
    /// its full sync reports offset 0 until its first acknowledgement, a
    /// second later at most).
    pub fn worst(replication: &str) -> Option<Lag> {
        let primary: u64 = field(replication, "master_repl_offset")?.parse().ok()?;
        replication
            .lines()
            .filter_map(replica_line)
            .filter_map(|fields| {
                let value = |name: &str| {
                    fields
                        .split(',')
                        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                };
                let offset: u64 = value("offset")?.parse().ok()?;
                if value("state")? != "online" || offset == 0 {
                    return None;
                }
                Some(Lag {
                    replica: format!("{}:{}", value("ip")?, value("port")?),
                    bytes: primary.saturating_sub(offset),
                })
            })
            .max_by_key(|lag| lag.bytes)
    }
}

/// The fields of a `slaveN:ip=...,port=...,state=...,offset=...,lag=...`
/// line, or `None` for any other line.
fn replica_line(line: &str) -> Option<&str> {
    let (name, fields) = line.trim_end().split_once(':')?;
    let index = name.strip_prefix("slave")?;
    (!index.is_empty() && index.bytes().all(|b| b.is_ascii_digit())).then_some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_lag_is_the_slowest_online_replicas() {
        // As Valkey 8.1 writes it; Redis's lines lack `type=`.
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:3\r\n\
                    slave0:ip=10.0.0.1,port=6380,state=online,offset=9000,lag=0,type=replica\r\n\
                    slave1:ip=10.0.0.2,port=6381,state=online,offset=4000,lag=1\r\n\
                    slave2:ip=10.0.0.3,port=6382,state=wait_bgsave,offset=0,lag=0\r\n\
                    slave_read_repl_offset:1\r\n\
                    master_replid:abc\r\nmaster_repl_offset:10000\r\n";
        assert_eq!(
            Lag::worst(info),
            Some(Lag {
                replica: "10.0.0.2:6381".into(),
                bytes: 6000
            })
        );
    }

    #[test]
    fn no_lag_without_an_online_replica_that_acknowledged() {
        let none = "role:master\r\nconnected_slaves:0\r\nmaster_repl_offset:500\r\n";
        assert_eq!(Lag::worst(none), None);
        // Online, but its first acknowledgement has not come yet.
        let fresh = "role:master\r\nslave0:ip=h,port=1,state=online,offset=0,lag=0\r\n\
                     master_repl_offset:500\r\n";
        assert_eq!(Lag::worst(fresh), None);
        let syncing = "role:master\r\nslave0:ip=h,port=1,state=send_bulk,offset=20,lag=0\r\n\
                       master_repl_offset:500\r\n";
        assert_eq!(Lag::worst(syncing), None);
        // A replica itself lists no replicas of its own here.
        let replica = "role:slave\r\nmaster_host:h\r\nslave_repl_offset:400\r\n\
                       master_repl_offset:400\r\n";
        assert_eq!(Lag::worst(replica), None);
        assert_eq!(Lag::worst(""), None);
    }

    #[test]
    fn a_replica_ahead_of_the_offset_read_lags_by_nothing() {
        // The primary's offset and its replicas' are not read atomically
        // with the writes in between; a lag never goes below zero.
        let info = "slave0:ip=h,port=1,state=online,offset=700,lag=0\r\nmaster_repl_offset:600\r\n";
        assert_eq!(Lag::worst(info).map(|lag| lag.bytes), Some(0));
    }
}
