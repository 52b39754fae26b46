//! The clean script itself, called through the library's own batch protocol
//! against a real server: the cases a whole pass cannot force on demand
//! (keys that vanish between SCAN and the script, a key twice in one batch,
//! an error half-way through a batch).

use redis_janitor::batch::{self, Batch, Reply};
use redis_janitor::report::Counts;
use redis_janitor::rules::Rules;
use redis_janitor::scripts::{self, Dialect, Invoke, Mode, Script};

use crate::support::*;

const RULES: &str = r#"
[[rule]]
name = "idle-cache"
pattern = "cache:*"
idle_above = "100s"
action = "delete"

[[rule]]
name = "cache-missing-ttl"
pattern = "cache:*"
no_ttl = true
action = "expire"
ttl = "1h"

[[rule]]
name = "temp"
pattern = "temp:*"
action = "delete"
"#;

/// Runs one batch of `keys` through the script and returns the counts.
fn call(con: &mut redis::Connection, mode: Mode, keys: &[&[u8]]) -> redis::RedisResult<Counts> {
    let rules = Rules::parse("test rules", RULES).unwrap();
    let script = Script::embedded(scripts::VERSION, scripts::CLEAN, mode, Dialect::Redis7).unwrap();
    let mut batch = Batch::with_capacity(keys.len());
    for key in keys {
        batch.push(key.to_vec(), rules.candidates(key)).unwrap();
    }
    let (outcomes, micros, gone): (Vec<u8>, u64, Vec<u64>) = batch
        .command(&script, Invoke::Text, &batch::rules_arg(&rules))
        .query(con)?;
    let mut counts = Counts::new(&rules);
    let reply = Reply {
        outcomes,
        micros,
        gone,
    };
    batch.tally(&reply, &rules, &mut counts).unwrap();
    Ok(counts)
}

#[test]
fn vanished_keys_are_counted_for_checked_and_unchecked_rules() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_all(
        &mut con,
        &[
            (b"cache:here", "string", None),
            (b"temp:here", "string", None),
        ],
    );
    let keys: [&[u8]; 4] = [b"cache:here", b"cache:gone", b"temp:here", b"temp:gone"];
    let counts = call(&mut con, Mode::Write, &keys).unwrap();
    assert_eq!(counts.per_rule, [0, 1, 1]);
    assert_eq!(counts.vanished, 2);
    assert_eq!(counts.keys_matched, 4);
    assert_keyspace(&mut con, &[(b"cache:here", "string", Ttl::About(3600))]);
}

#[test]
fn a_key_twice_in_a_batch_counts_the_same_in_a_dry_run_and_a_real_run() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_all(&mut con, &[(b"temp:dup", "string", None)]);
    let keys: [&[u8]; 2] = [b"temp:dup", b"temp:dup"];
    let dry = call(&mut con, Mode::ReadOnly, &keys).unwrap();
    assert_eq!(dbsize(&mut con), 1, "a dry run deleted a key");
    let real = call(&mut con, Mode::Write, &keys).unwrap();
    assert_eq!(dry, real);
    assert_eq!(real.per_rule, [0, 0, 1]);
    assert_eq!(real.vanished, 1);
    assert_eq!(dbsize(&mut con), 0);
}

#[test]
fn an_error_in_the_checks_leaves_the_whole_batch_unapplied() {
    // Under an LFU policy OBJECT IDLETIME fails. The temp key comes first in
    // the batch and needs no check, yet it must survive: nothing is written
    // before every key has been checked.
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_all(
        &mut con,
        &[
            (b"temp:first", "string", None),
            (b"cache:then", "string", None),
        ],
    );
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lfu")
        .exec(&mut con)
        .unwrap();
    let before = digest(&mut con);
    let keys: [&[u8]; 2] = [b"temp:first", b"cache:then"];
    let err = call(&mut con, Mode::Write, &keys).expect_err("OBJECT IDLETIME must fail under LFU");
    assert!(err.to_string().contains("LFU"), "{err}");
    assert_eq!(digest(&mut con), before);
}
