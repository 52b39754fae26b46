//! One run per node: the lease. A run takes a node's lease (a hash under the
//! reserved prefix holding a random token, with an expiry) with its first
//! call, every writing call checks and renews it inside the clean script,
//! and the run gives it back when its pass ends. The script refuses to act
//! for a run whose token the lease no longer holds, so a run paused past its
//! lease (GC, a stopped VM, a partition) can never act after another took
//! over: the token is the fencing token.
//!
//! On a cluster node the job's keys carry a hash tag of a slot the node
//! serves, so they live on the node they are about.
//!
//! The declared-keys mode's calls cannot read the lease (on a cluster it is
//! in another slot than their keys): they carry a deadline instead, the
//! server time from which the lease, as the run last renewed it, may have
//! expired, which the run reckons with a [`LeaseClock`].

use std::time::{Duration, Instant};

use crate::script::protocol::{RESERVED_PREFIX, StateKeys};

/// The default `--lock-ttl`: how long a crashed run blocks the next one.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(60);

/// The hash tag of the job's own keys on a standalone server.
const STANDALONE_TAG: &str = "{node}:";

/// The number of hash slots of a Redis Cluster.
const SLOTS: u16 = 16384;

/// The lease as the run last renewed it and knew it, from which the run
/// reckons the deadline of its declared calls (see
/// `script::protocol::Deadline`): the server's clock as the renewing call
/// (`acquire`, `renew`, or a `save`) read it, before it set the lease's
/// expiry, so the lease lasts at least its time to live from then, by the
/// same clock the calls read. Nothing of the job's own clock goes into a
/// deadline, so the two clocks' drift over a long run cannot carry one past
/// the lease's expiry.
#[derive(Debug, Clone, Copy)]
pub struct LeaseClock {
    /// The server's clock (ms) as the renewing call read it.
    server_ms: u64,
    /// When the job sent that call.
    sent: Instant,
    /// The lease's time to live.
    ttl: Duration,
}

impl LeaseClock {
    /// The clock of a renewing call sent at `sent` that read the server's
    /// clock as `server_ms`, for a lease of `ttl`.
    pub fn new(server_ms: u64, sent: Instant, ttl: Duration) -> LeaseClock {
        LeaseClock {
            server_ms,
            sent,
            ttl,
        }
    }

    /// The same lease, renewed by a call sent at `sent` that read the
    /// server's clock as `server_ms`.
    pub fn renewed(self, server_ms: u64, sent: Instant) -> LeaseClock {
        LeaseClock::new(server_ms, sent, self.ttl)
    }

    /// When the job sent the call that last renewed the lease.
    pub fn taken(&self) -> Instant {
        self.sent
    }

    /// The server time (ms) from which the lease may have expired: its
    /// time to live after the renewing call read the server's clock.
    pub fn deadline(&self) -> u64 {
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        self.server_ms.saturating_add(ttl)
    }
}

/// A new random token: 128 bits, in hex.
pub fn new_token() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// How a lease names the run that holds it: the pod (its `HOSTNAME`) or the
/// host, and the process.
pub fn holder() -> String {
    holder_named(
        std::env::var("HOSTNAME").ok(),
        || std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
        std::process::id(),
    )
}

/// The holder's name from `HOSTNAME`, else the kernel's host name, and the
/// process id.
fn holder_named(env: Option<String>, kernel: impl FnOnce() -> Option<String>, pid: u32) -> String {
    let named = |host: Option<String>| {
        host.map(|host| host.trim().to_string())
            .filter(|host| !host.is_empty())
    };
    let host = named(env)
        .or_else(|| named(kernel()))
        .unwrap_or_else(|| "unknown host".to_string());
    format!("{host} (pid {pid})")
}

/// The job's own keys on a node, all with one hash tag, so that one call
/// may declare them together: on a cluster node (`slot` given) a tag of
/// that slot; on a standalone server `{node}`, which keeps them together
/// behind a proxy that routes each call by its keys' slot too.
pub fn state_keys(slot: Option<u16>) -> StateKeys {
    let tag = match slot {
        Some(slot) => format!("{{{}}}:", tag_for(slot)),
        None => STANDALONE_TAG.to_string(),
    };
    let key = |name: &str| {
        let mut key = RESERVED_PREFIX.to_vec();
        key.extend_from_slice(tag.as_bytes());
        key.extend_from_slice(name.as_bytes());
        key
    };
    StateKeys {
        lease: key("lease"),
        checkpoint: key("checkpoint"),
        history: key("history"),
    }
}

/// The shortest decimal number whose hash slot is `slot`: a hash tag that
/// puts a key on it. Every slot has one below 100,000.
fn tag_for(slot: u16) -> u32 {
    (0..)
        .find(|n: &u32| key_slot(n.to_string().as_bytes()) == slot % SLOTS)
        .expect("every slot has a decimal tag")
}

/// The hash slot of `key`, as Redis Cluster computes it: CRC16 (XMODEM) of
/// the key's hash tag (the bytes between its first `{` and the next `}`,
/// when not empty), or of the whole key, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_XMODEM);
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    CRC16.checksum(hashed) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_the_lease_s_expiry_by_the_clock_of_its_last_renewal() {
        let sent = Instant::now();
        let clock = LeaseClock::new(1_000_000, sent, Duration::from_secs(60));
        assert_eq!(clock.deadline(), 1_060_000);
        assert_eq!(clock.taken(), sent);
        // A renewal moves it to the server's clock as that call read it,
        // however long the job's own clock says has gone by: the server's
        // clock may have run slower, or been set back.
        let later = sent + Duration::from_secs(3600);
        let renewed = clock.renewed(1_000_500, later);
        assert_eq!(renewed.deadline(), 1_060_500);
        assert_eq!(renewed.taken(), later);
        let short = LeaseClock::new(5, sent, Duration::from_micros(100_900));
        assert_eq!(short.deadline(), 5 + 100);
    }

    #[test]
    fn slots_are_computed_as_redis_does() {
        // Values from CLUSTER KEYSLOT.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // An empty tag is no tag: the whole key is hashed.
        assert_eq!(key_slot(b"foo{}{bar}"), 8363);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn a_nodes_keys_share_a_tag_of_its_slot_under_the_reserved_prefix() {
        for slot in [0, 1, 5460, 5461, 10922, 16383] {
            let keys = state_keys(Some(slot));
            assert_eq!(key_slot(&keys.lease), slot);
            assert_eq!(key_slot(&keys.checkpoint), slot);
            assert_eq!(key_slot(&keys.history), slot);
            assert!(keys.lease.starts_with(RESERVED_PREFIX));
            assert!(keys.checkpoint.starts_with(RESERVED_PREFIX));
        }
        let alone = state_keys(None);
        assert_eq!(alone.lease, b"__redis-janitor__:{node}:lease");
        assert_eq!(alone.checkpoint, b"__redis-janitor__:{node}:checkpoint");
        assert_eq!(alone.history, b"__redis-janitor__:{node}:history");
    }

    #[test]
    fn the_holder_is_the_pod_or_the_host_and_the_process() {
        let kernel = || Some("node-7\n".to_string());
        assert_eq!(
            holder_named(Some("pod-1".into()), kernel, 42),
            "pod-1 (pid 42)"
        );
        assert_eq!(holder_named(None, kernel, 42), "node-7 (pid 42)");
        assert_eq!(
            holder_named(Some(" ".into()), kernel, 42),
            "node-7 (pid 42)"
        );
        assert_eq!(holder_named(None, || None, 42), "unknown host (pid 42)");
        assert!(holder().ends_with(&format!("(pid {})", std::process::id())));
    }

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
