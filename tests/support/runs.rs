//! Many runs over one keyspace, for the tests of the checkpoint and the
//! lease: a seeded mix of keys (every type, odd bytes, keys to delete, to
//! expire and to keep) with the exact state the mix's rules leave, the
//! job's own keys on a node (its lease and checkpoint) read and waited for.

use super::*;

/// Rules for a [`Mix`]: an unconditional delete, a conditional expire and a
/// conditional delete over all of `k:*`. Every key of the mix starts with
/// `k:`, so the pass's SCAN MATCH (`k:*`) returns every one of them and
/// none of the job's own.
pub const MIX_RULES: &str = r#"
[[rule]]
name = "doomed"
pattern = "k:del:*"
action = "delete"

[[rule]]
name = "cache"
pattern = "k:cache:*"
no_ttl = true
action = "expire"
ttl = "1h"

[[rule]]
name = "soon"
pattern = "k:*"
ttl_below = "10m"
action = "delete"
"#;

/// [`MIX_RULES`] without its expire rule: the same keyspace gives another
/// result, and the script another fingerprint.
pub const MIX_RULES_WITHOUT_CACHE: &str = r#"
[[rule]]
name = "doomed"
pattern = "k:del:*"
action = "delete"

[[rule]]
name = "soon"
pattern = "k:*"
ttl_below = "10m"
action = "delete"
"#;

/// The types a mix's keys cycle through.
const KINDS: [&str; 6] = ["string", "list", "set", "zset", "hash", "stream"];

/// One key of a [`Mix`]: how it is seeded, and what [`MIX_RULES`] leave of it.
#[derive(Clone, Debug)]
pub struct Seeded {
    /// Its name (every ninth one with bytes that need escaping).
    pub key: Vec<u8>,
    /// Its type.
    pub kind: &'static str,
    /// Its expiry when seeded, in seconds.
    pub ttl: Option<u64>,
    /// Its state after a complete pass of [`MIX_RULES`]; `None`: deleted.
    pub after: Option<Ttl>,
    /// The rule of [`MIX_RULES`] that acts on it, if one does.
    pub rule: Option<&'static str>,
}

/// A seeded mix of keys and what [`MIX_RULES`] leave of it.
pub struct Mix {
    /// The keys, as seeded.
    pub keys: Vec<Seeded>,
    /// When the mix was made, before it was seeded: the seeded TTLs, and
    /// those a run gave, have gone down by at most the time since.
    pub made: Instant,
}

impl Mix {
    /// `n` keys under `k:`, by `i % 5`: deleted by `doomed`; a hash given
    /// an hour by `cache` (or, every other one, already expiring in 2h and
    /// kept); expiring in 5 min, deleted by `soon`; kept with a 2h expiry;
    /// kept without one. Two fifths are deleted: the keyspace's hash table
    /// never falls below the fill at which Redis shrinks it, so SCAN never
    /// returns a key twice (it may after a shrink).
    pub fn new(n: usize) -> Mix {
        let keys = (0..n)
            .map(|i| {
                let kind = KINDS[(i / 5) % KINDS.len()];
                let (name, kind, ttl, after, rule) = match i % 5 {
                    0 => ("del", kind, [None, Some(7200)][i % 2], None, Some("doomed")),
                    1 if i % 2 == 0 => {
                        ("cache", "hash", None, Some(Ttl::About(3600)), Some("cache"))
                    }
                    1 => ("cache", "hash", Some(7200), Some(Ttl::About(7200)), None),
                    2 => ("soon", kind, Some(300), None, Some("soon")),
                    3 => ("keep", kind, Some(7200), Some(Ttl::About(7200)), None),
                    _ => ("keep", kind, None, Some(Ttl::Persistent), None),
                };
                let mut key = format!("k:{name}:{i}").into_bytes();
                if i % 9 == 0 {
                    key.extend_from_slice(b":\xff\x00 \n\"\\");
                }
                Seeded {
                    key,
                    kind,
                    ttl,
                    after,
                    rule,
                }
            })
            .collect();
        Mix {
            keys,
            made: Instant::now(),
        }
    }

    /// The number of keys.
    pub fn len(&self) -> u64 {
        self.keys.len() as u64
    }

    /// The keys [`MIX_RULES`] act on.
    pub fn acted(&self) -> u64 {
        self.keys.iter().filter(|s| s.rule.is_some()).count() as u64
    }

    /// The keys [`MIX_RULES`] leave.
    pub fn kept(&self) -> u64 {
        self.keys.iter().filter(|s| s.after.is_some()).count() as u64
    }

    /// Seeds the mix on a standalone server, then waits for its keyspace's
    /// hash table to finish growing (see [`wait_for_rehash`]).
    pub fn seed(&self, con: &mut redis::Connection) {
        for chunk in self.keys.chunks(500) {
            let mut pipe = redis::pipe();
            for cmd in chunk.iter().flat_map(create) {
                pipe.add_command(cmd).ignore();
            }
            pipe.exec(con).expect("seed the mix");
        }
        wait_for_rehash(con);
    }

    /// Seeds the mix on a cluster, each key on its slot's primary, then
    /// waits for every primary's hash table to finish growing.
    pub fn seed_cluster(&self, cluster: &RedisCluster) {
        let mut con = cluster.client();
        for chunk in self.keys.chunks(500) {
            let mut pipe = redis::cluster::cluster_pipe();
            for cmd in chunk.iter().flat_map(create) {
                pipe.add_command(cmd).ignore();
            }
            pipe.exec(&mut con).expect("seed the mix on the cluster");
        }
        for node in cluster.primaries() {
            wait_for_rehash(&mut node.conn());
        }
    }

    /// Asserts that `actual` is exactly what [`MIX_RULES`] leave of the
    /// mix: the same keys, each of its type, and each TTL the seeded or
    /// the rule's one, less at most the time since the mix was made (and
    /// [`TTL_TOLERANCE_MS`]).
    #[track_caller]
    pub fn assert_cleaned(&self, actual: &BTreeMap<Vec<u8>, KeyState>, what: &str) {
        let since = self.made.elapsed().as_millis() as i64 + TTL_TOLERANCE_MS;
        let state = |s: &KeyState| format!("{} (pttl {} ms)", s.kind, s.pttl);
        let mut diff = Vec::new();
        for s in &self.keys {
            match (s.after, actual.get(&s.key)) {
                (None, None) => {}
                (None, Some(got)) => {
                    diff.push(format!("+ unexpected {}: {}", show(&s.key), state(got)))
                }
                (Some(want), None) => {
                    diff.push(format!("- missing    {}: want {want:?}", show(&s.key)))
                }
                (Some(want), Some(got)) => {
                    let ttl_ok = match want {
                        Ttl::Persistent => got.pttl == -1,
                        Ttl::About(secs) => {
                            let full = secs as i64 * 1000;
                            (full - since..=full).contains(&got.pttl)
                        }
                    };
                    if got.kind != s.kind || !ttl_ok {
                        diff.push(format!(
                            "~ different  {}: want {} {want:?}, got {}",
                            show(&s.key),
                            s.kind,
                            state(got)
                        ));
                    }
                }
            }
        }
        let seeded: BTreeSet<&[u8]> = self.keys.iter().map(|s| s.key.as_slice()).collect();
        for (key, got) in actual {
            if !seeded.contains(key.as_slice()) {
                diff.push(format!("+ unexpected {}: {}", show(key), state(got)));
            }
        }
        assert!(
            diff.is_empty(),
            "{what}: the keyspace is not what the rules leave ({} keys present, {} ms after the \
             mix was made):\n{}",
            actual.len(),
            self.made.elapsed().as_millis(),
            diff.join("\n")
        );
    }

    /// How many keys no run has acted on yet, as the server shows them:
    /// those to delete still there, those to expire still without a TTL.
    pub fn left_to_act(&self, con: &mut redis::Connection) -> u64 {
        let now = keyspace(con);
        self.keys
            .iter()
            .filter(|s| s.rule.is_some())
            .filter(|s| match (s.after, now.get(&s.key)) {
                (None, Some(_)) => true,
                (Some(_), Some(state)) => state.pttl == -1,
                (_, None) => false,
            })
            .count() as u64
    }
}

/// The commands that create `s`.
fn create(s: &Seeded) -> Vec<redis::Cmd> {
    let mut c = match s.kind {
        "string" => redis::cmd("SET"),
        "list" => redis::cmd("RPUSH"),
        "set" => redis::cmd("SADD"),
        "zset" => redis::cmd("ZADD"),
        "hash" => redis::cmd("HSET"),
        "stream" => redis::cmd("XADD"),
        other => panic!("unknown type {other}"),
    };
    c.arg(&s.key);
    match s.kind {
        "zset" => c.arg(1).arg("a"),
        "hash" => c.arg("f").arg("v"),
        "stream" => c.arg("*").arg("f").arg("v"),
        _ => c.arg("v"),
    };
    let mut cmds = vec![c];
    if let Some(secs) = s.ttl {
        let mut e = redis::cmd("EXPIRE");
        e.arg(&s.key).arg(secs);
        cmds.push(e);
    }
    cmds
}

/// Waits (bounded) until the keyspace's hash table of db 0 is not being
/// rehashed (`DEBUG HTSTATS` shows no "rehashing target"; Redis finishes an
/// incremental rehash in the background within about 100 ms), so the tests
/// that count the keys a pass returns start from a settled table. (SCAN
/// never misses a key present throughout, and returns one twice only when a
/// table shrinks: a [`Mix`] never deletes enough for that.)
pub fn wait_for_rehash(con: &mut redis::Connection) {
    wait_until(Duration::from_secs(10), "the keyspace's rehash", || {
        let stats: String = redis::cmd("DEBUG")
            .arg("HTSTATS")
            .arg(0)
            .query(con)
            .expect("DEBUG HTSTATS");
        !stats.contains("rehashing")
    });
}

/// The standalone lease's name.
pub fn lease_key() -> Vec<u8> {
    lease::state_keys(None).lease
}

/// Makes the standalone lease another run's, as the clean script writes
/// it: held by `holder` since `since_ms` (server time), for another minute.
pub fn hold_lease_for_another_run(con: &mut redis::Connection, holder: &str, since_ms: u64) {
    redis::cmd("HSET")
        .arg(lease_key())
        .arg(&["token", "0123456789abcdef0123456789abcdef"])
        .arg(&["holder", holder])
        .arg("since")
        .arg(since_ms)
        .exec(con)
        .unwrap();
    redis::cmd("PEXPIRE")
        .arg(lease_key())
        .arg(60_000)
        .exec(con)
        .unwrap();
}

/// The standalone checkpoint's name.
pub fn checkpoint_key() -> Vec<u8> {
    lease::state_keys(None).checkpoint
}

/// The standalone history key (the last success).
pub fn history_key() -> Vec<u8> {
    lease::state_keys(None).history
}

/// Whether the standalone lease exists.
pub fn lease_held(con: &mut redis::Connection) -> bool {
    redis::cmd("EXISTS")
        .arg(lease_key())
        .query::<bool>(con)
        .expect("EXISTS lease")
}

/// The standalone lease's fields (empty when there is none).
pub fn lease_fields(con: &mut redis::Connection) -> BTreeMap<String, String> {
    redis::cmd("HGETALL")
        .arg(lease_key())
        .query(con)
        .expect("HGETALL lease")
}

/// Polls until the standalone lease is gone: released, or expired after
/// its `--lock-ttl` when its run died.
#[track_caller]
pub fn wait_for_lease_gone(con: &mut redis::Connection) {
    wait_until(Duration::from_secs(10), "the lease to be gone", || {
        !lease_held(con)
    });
}

/// A numeric field of a checkpoint (or lease) hash.
#[track_caller]
pub fn hash_u64(fields: &BTreeMap<String, String>, name: &str) -> u64 {
    fields
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {name} in {fields:?}"))
}

/// The standalone checkpoint, which must exist.
#[track_caller]
pub fn the_checkpoint(con: &mut redis::Connection) -> BTreeMap<String, String> {
    checkpoint(con).expect("a checkpoint on the server")
}

/// The server's clock (`TIME`), in milliseconds.
pub fn server_time_ms(con: &mut redis::Connection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(con).expect("TIME");
    secs * 1000 + micros / 1000
}

/// The only entry of a standalone run's `servers`.
#[track_caller]
pub fn only_server(report: &Json) -> &Json {
    let servers = report["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 1, "{report:#}");
    &servers[0]
}

/// The keys a report's rules acted on, all rules together.
pub fn keys_acted(report: &Json) -> u64 {
    rule_counts(report).iter().map(|(_, _, keys)| keys).sum()
}
