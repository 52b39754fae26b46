//! Sentinel: the job asks real Sentinels (with a password of their own) for
//! the primary of a service and cleans it, before and after a failover
//! between two runs; a dry run may read from the replica; wrong Sentinel
//! credentials, dead Sentinels and malformed URLs fail with a clear message.

use std::time::Duration;

use crate::support::*;

fn seed_keys(con: &mut redis::Connection, prefix: &str) {
    seed_all(
        con,
        &[
            (format!("temp:{prefix}").as_bytes(), "string", None),
            (format!("cache:{prefix}").as_bytes(), "hash", None),
            (format!("keep:{prefix}").as_bytes(), "string", None),
        ],
    );
}

fn run_through(setup: &SentinelSetup, password_file: &std::path::Path) -> Janitor {
    run_json(&setup.url())
        .arg("--sentinel-password-file")
        .arg(password_file)
}

#[test]
fn the_job_cleans_the_primary_sentinel_names_before_and_after_a_failover() {
    let setup = SentinelSetup::start();
    let password = write_file(setup.primary.dir(), "sentinel-password", SENTINEL_PASSWORD);
    seed_keys(&mut SentinelSetup::data_conn(&setup.primary), "1");

    let out = run_through(&setup, &password).run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["servers"][0]["address"], setup.primary.host_port());
    assert_eq!(report["servers"][0]["role"], "primary");
    assert_eq!(rule_keys(&report, "temp"), 1, "{report:#}");
    let mut primary = SentinelSetup::data_conn(&setup.primary);
    assert_keyspace(
        &mut primary,
        &[
            (b"cache:1", "hash", Ttl::About(3600)),
            (b"keep:1", "string", Ttl::Persistent),
        ],
    );

    // A forced failover does not wait for the replica to catch up.
    let mut replica = SentinelSetup::data_conn(&setup.replica);
    wait_until(Duration::from_secs(10), "the replica to catch up", || {
        keyspace(&mut replica).len() == 2
    });
    setup.fail_over();
    let mut new_primary = SentinelSetup::data_conn(&setup.replica);
    seed_keys(&mut new_primary, "2");
    let out = run_through(&setup, &password).run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["servers"][0]["address"], setup.replica.host_port());
    assert_eq!(rule_keys(&report, "temp"), 1, "{report:#}");
    // The first run's keys came over with the failover, as it left them.
    let after = keyspace(&mut new_primary);
    assert_eq!(after.len(), 4, "{after:?}");
    assert!(
        (1..=3_600_000).contains(&after[&b"cache:1"[..]].pttl),
        "{after:?}"
    );
    assert_eq!(after[&b"keep:1"[..]].pttl, -1);
    assert!(after[&b"cache:2"[..]].pttl > 3_590_000, "{after:?}");
    assert_eq!(after[&b"keep:2"[..]].pttl, -1);
}

#[test]
fn a_dry_run_through_sentinel_may_read_from_the_replica() {
    let setup = SentinelSetup::start();
    let password = write_file(setup.primary.dir(), "sentinel-password", SENTINEL_PASSWORD);
    seed_keys(&mut SentinelSetup::data_conn(&setup.primary), "1");
    let mut replica = SentinelSetup::data_conn(&setup.replica);
    wait_until(
        Duration::from_secs(10),
        "the keys to reach the replica",
        || dbsize(&mut replica) == 3,
    );
    let before = keyspace(&mut replica);

    let out = run_through(&setup, &password)
        .args(["--dry-run", "--from-replicas"])
        .run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["servers"][0]["address"], setup.replica.host_port());
    assert_eq!(report["servers"][0]["role"], "replica");
    assert_eq!(rule_keys(&report, "temp"), 1, "{report:#}");
    assert_same_keyspace(
        &before,
        &keyspace(&mut SentinelSetup::data_conn(&setup.primary)),
    );
}

#[test]
fn sentinel_credentials_are_their_own_and_a_wrong_one_is_a_clear_failure() {
    let setup = SentinelSetup::start();
    seed_keys(&mut SentinelSetup::data_conn(&setup.primary), "1");
    let wrong = write_file(setup.primary.dir(), "wrong", "not-it\n");
    for out in [
        run_json(&setup.url()).run(),
        run_through(&setup, &wrong).run(),
    ] {
        out.assert_code(1);
        assert!(
            out.stderr.contains("Sentinels of mymaster"),
            "{}",
            out.dump()
        );
        assert!(!out.stderr.contains(SENTINEL_PASSWORD), "{}", out.dump());
        assert!(!out.stderr.contains(DATA_PASSWORD), "{}", out.dump());
    }
    assert_eq!(dbsize(&mut SentinelSetup::data_conn(&setup.primary)), 3);
}

#[test]
fn dead_sentinels_and_malformed_sentinel_urls_fail_clearly() {
    let dead = dead_url().replace("redis://", "");
    let out = janitor()
        .args(["run", "--url", &format!("redis+sentinel://{dead}/mymaster")])
        .run();
    out.assert_code(1);
    assert!(
        out.stderr.contains("Sentinels of mymaster"),
        "{}",
        out.dump()
    );

    for url in [
        "redis+sentinel://127.0.0.1:26379",
        "redis+sentinel://127.0.0.1:26379/",
        "redis-sentinel:///mymaster",
    ] {
        let out = janitor().args(["run", "--url", url]).run();
        out.assert_code(2);
        assert!(out.stderr.contains("Sentinel URL"), "{url}: {}", out.dump());
    }
    let out = janitor()
        .args([
            "run",
            "--url",
            "redis+sentinel://h:1/m",
            "--url",
            "redis://h:2",
        ])
        .run();
    out.assert_code(2);
}
