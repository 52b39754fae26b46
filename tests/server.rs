//! Servers in a state other than a writable primary with memory to spare:
//! one at its `maxmemory` with `noeviction`, which must still be cleaned, and
//! a replica, where a dry run works and a real run is refused.

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
