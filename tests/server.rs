//! Servers in a state other than a writable primary with memory to spare:
//! one at its `maxmemory` with `noeviction`, which must still be cleaned (the
//! lease taken and given back, the checkpoint saved), and a replica, where a
//! dry run works and a real run is refused.

use std::time::Duration;

use crate::support::*;

#[test]
fn a_server_at_maxmemory_is_still_cleaned() {
    // With noeviction and memory over the limit Redis refuses writes that may
    // grow memory; the job's script declares allow-oom and must still run.
    let server = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    let mut con = server.conn();
    seed_all(
        &mut con,
        &[
            (b"cache:a", "string", None),
            (b"temp:b", "list", None),
            (b"keep:c", "string", None),
        ],
    );
    // The lease's keyspace events show it taken (HSET) and given back (DEL).
    redis::cmd("CONFIG")
        .arg(&["SET", "notify-keyspace-events", "Kgh"])
        .exec(&mut con)
        .unwrap();
    let mut channel = b"__keyspace@0__:".to_vec();
    channel.extend(redis_janitor::lease::state_keys(None).lease);
    let mut events_con = server.conn();
    let mut events = events_con.as_pubsub();
    events.subscribe(&channel).unwrap();
    events
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .exec(&mut con)
        .unwrap();
    let refused = redis::cmd("SET").arg("probe").arg("x").exec(&mut con);
    assert!(refused.is_err(), "the server should be out of memory");

    let outcome = janitor()
        .args(["run", "--output", "json", "--url", &server.url()])
        .run();
    outcome.assert_code(0);
    let report = outcome.report();
    assert_eq!(rule_keys(&report, "temp"), 1, "{}", outcome.dump());
    assert_eq!(rule_keys(&report, "cache-missing-ttl"), 1);
    assert_keyspace(
        &mut con,
        &[
            (b"cache:a", "string", Ttl::About(3600)),
            (b"keep:c", "string", Ttl::Persistent),
        ],
    );

    // The run took its lease, renewed it (PEXPIRE) and gave it back.
    let mut seen: Vec<String> = Vec::new();
    while seen.last().is_none_or(|event| event != "del") {
        let message = events
            .get_message()
            .unwrap_or_else(|e| panic!("lease events {seen:?}, then: {e}"));
        seen.push(message.get_payload().unwrap());
    }
    assert_eq!(seen.first().map(String::as_str), Some("hset"), "{seen:?}");
    assert!(
        seen[1..seen.len() - 1]
            .iter()
            .all(|event| event == "expire"),
        "{seen:?}"
    );
    // The pass saved its checkpoint: complete (cursor 0), on this server
    // process, with what it did.
    let saved = checkpoint(&mut con).expect("a checkpoint at maxmemory");
    assert_eq!(
        (&*saved["cursor"], &*saved["done"]),
        ("0", "1"),
        "{saved:?}"
    );
    assert_eq!(saved["acted"], "2", "{saved:?}");
    assert_eq!(
        Some(&saved["run_id"]),
        info_field(&mut con, "server", "run_id").as_ref()
    );
    assert!(
        !outcome.stderr.contains("refused"),
        "no write of the job's was refused\n{}",
        outcome.dump()
    );
}

#[test]
fn a_dry_run_works_on_a_replica_and_a_real_run_is_refused_there() {
    let primary = RedisServer::start();
    let mut con = primary.conn();
    seed_all(
        &mut con,
        &[(b"temp:a", "string", None), (b"cache:b", "string", None)],
    );
    let port = primary.port().to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    let mut replica_con = replica.conn();
    wait_until(Duration::from_secs(10), "replica in sync", || {
        info_field(&mut replica_con, "replication", "master_link_status").as_deref() == Some("up")
            && dbsize(&mut replica_con) == 2
    });

    let dry = janitor()
        .args([
            "run",
            "--dry-run",
            "--output",
            "json",
            "--url",
            &replica.url(),
        ])
        .run();
    dry.assert_code(0);
    let report = dry.report();
    assert_eq!(report["complete"], true, "{}", dry.dump());
    assert_eq!(rule_keys(&report, "temp"), 1);
    assert_eq!(rule_keys(&report, "cache-missing-ttl"), 1);

    let real = janitor()
        .args(["run", "--output", "json", "--url", &replica.url()])
        .run();
    real.assert_code(1);
    assert!(
        real.one_line_stderr()
            .contains("a real run needs the primary (a dry run works on a replica)"),
        "{}",
        real.dump()
    );
    assert_eq!(dbsize(&mut con), 2, "the primary was touched");
}
