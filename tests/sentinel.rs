//! Sentinel: the job asks real Sentinels (with a password of their own) for
//! the primary of a service and cleans it, before and after a failover
//! between two runs; a dry run may read from the replica; TLS to the data
//! nodes verifies the name given with `--tls-server-name`; the job's ACL
//! user and a least-privilege Sentinel user suffice, with nothing in `ACL
//! LOG`; wrong Sentinel credentials, wrong data-node credentials, dead
//! Sentinels, a Sentinel given as a plain `redis://` URL and malformed URLs
//! fail with a message that names what refused.

use std::path::PathBuf;
use std::time::Duration;

use redis_janitor::script::Dialect;

use crate::support::tls::SERVER_NAME;
use crate::support::*;

/// The password of the ACL users the tests create, on the data nodes and on
/// the Sentinels.
const USER_PASSWORD: &str = "sentinel-acl-test-pw";

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

/// `count` keys `temp:<i>`, which the built-in rules delete.
fn seed_temp_keys(con: &mut redis::Connection, count: usize) {
    let mut pipe = redis::pipe();
    for i in 0..count {
        pipe.set(format!("temp:{i}"), "v").ignore();
    }
    pipe.exec(con).expect("seed temp keys");
}

/// A setup whose primary stays one after a failover (it cannot run
/// `REPLICAOF`, so the Sentinels cannot make it a replica), holding 2,000
/// temp keys its replica has too; the Sentinels' password file, and a
/// connection to that primary.
fn stubborn_primary_with_temp_keys() -> (SentinelSetup, PathBuf, redis::Connection) {
    let setup = SentinelSetup::start_with(&[
        "--rename-command",
        "REPLICAOF",
        "",
        "--rename-command",
        "SLAVEOF",
        "",
    ]);
    let password = write_file(setup.primary.dir(), "sentinel-password", SENTINEL_PASSWORD);
    let mut primary = SentinelSetup::data_conn(&setup.primary);
    seed_temp_keys(&mut primary, 2_000);
    let mut replica = SentinelSetup::data_conn(&setup.replica);
    wait_until(Duration::from_secs(10), "the replica to catch up", || {
        dbsize(&mut replica) == 2_000
    });
    (setup, password, primary)
}

/// Fails `setup` over once the job `running` has saved a checkpoint on
/// the primary (`primary`), while the job's writes wait there (`CLIENT
/// PAUSE WRITE`), then does `then`, then lets the writes go on: the pass
/// goes on on the old primary, which the Sentinels no longer name.
fn fail_over_mid_pass(
    setup: &SentinelSetup,
    running: &mut Running,
    primary: &mut redis::Connection,
    then: impl FnOnce(&SentinelSetup),
) {
    crate::resilience::wait_for_checkpoint(running, primary);
    redis::cmd("CLIENT")
        .arg(&["PAUSE", "60000", "WRITE"])
        .exec(primary)
        .unwrap();
    setup.fail_over();
    then(setup);
    // Sentinel drops the data nodes' clients as it reconfigures them.
    redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .exec(&mut SentinelSetup::data_conn(&setup.primary))
        .unwrap();
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

/// After `SENTINEL FAILOVER` the old primary goes on taking writes, with
/// no fault the job could see, until the Sentinels make it a replica of the
/// new one, when it drops them. Here it never does (it cannot run
/// `REPLICAOF`), and the failover happens while the job's writes wait
/// (`CLIENT PAUSE WRITE`): the pass completes on the old primary, the
/// Sentinels name the new one by then, and the job cleans that one too.
#[test]
fn a_pass_that_completes_on_a_primary_the_sentinels_replaced_is_done_again_on_the_new_one() {
    let (setup, password, mut old) = stubborn_primary_with_temp_keys();

    let mut running = run_through(&setup, &password)
        .args(["--rate-limit", "2000"])
        .start();
    fail_over_mid_pass(&setup, &mut running, &mut old, |_| {});
    let out = running.wait();
    out.assert_code(0);
    let report = out.report();
    let server = &report["servers"][0];
    assert_eq!(server["address"], setup.replica.host_port(), "{report:#}");
    assert_eq!(
        server["failovers"][0]["from"],
        setup.primary.host_port(),
        "{report:#}"
    );
    assert_eq!(report["complete"], true, "{report:#}");
    // The new primary holds no temp key: its pass deleted what the old
    // one's deletes, lost with it, left there.
    let mut new = SentinelSetup::data_conn(&setup.replica);
    assert_eq!(dbsize(&mut new), 0, "{}", out.dump());
}

/// A pass completes on a primary the Sentinels replaced, and `--max-runtime`
/// runs out before the job cleans the new one (here while it asks the
/// Sentinels, which stall until then): the old primary's work is lost and
/// the new one was not cleaned, so the run records no success there, as for
/// a retry after a fault that --max-runtime stopped before its first call.
#[test]
fn a_failover_found_after_the_pass_and_cut_by_max_runtime_records_no_success() {
    let (setup, password, mut old) = stubborn_primary_with_temp_keys();
    let max_runtime = Duration::from_secs(10);
    let started = std::time::Instant::now();
    let mut running = run_through(&setup, &password)
        .args([
            "--rate-limit",
            "2000",
            "--max-runtime",
            "10s",
            "--timeout",
            "20s",
        ])
        .start();
    fail_over_mid_pass(&setup, &mut running, &mut old, |setup| {
        for sentinel in &setup.sentinels {
            sentinel.freeze();
        }
    });
    // The pass completes on the old primary, which the job then gives back.
    wait_for_lease_gone(&mut old);
    assert!(
        started.elapsed() < max_runtime,
        "the pass outlasted --max-runtime; the test needs it to complete first"
    );
    wait_until(max_runtime * 2, "--max-runtime to run out", || {
        started.elapsed() > max_runtime + Duration::from_millis(500)
    });
    for sentinel in &setup.sentinels {
        sentinel.thaw();
    }
    let out = running.wait();
    // The node's work failed: its pass on the new primary never ran.
    out.assert_code(1);
    let report = out.report();
    let server = &report["servers"][0];
    assert_eq!(server["address"], setup.replica.host_port(), "{report:#}");
    assert_eq!(report["complete"], false, "{report:#}");
    // Sentinel dropped the new primary's clients as it promoted it.
    let mut new = SentinelSetup::data_conn(&setup.replica);
    let last_success: Option<String> = redis::cmd("HGET")
        .arg(redis_janitor::lease::state_keys(None).history)
        .arg("last_success")
        .query(&mut new)
        .unwrap();
    assert_eq!(
        last_success,
        None,
        "a success was recorded on the new primary, which the run did not clean\n{}",
        out.dump()
    );
    assert!(dbsize(&mut new) > 0, "{}", out.dump());
}

/// After a pass completes the job asks the Sentinels whether they named
/// another primary meanwhile. Sentinels that stall then must not hold a
/// stop: a signal that comes while they are asked ends the run at once,
/// as it does while the job first looks for the primary, not after
/// `--timeout` (Kubernetes kills a pod that outlasts its grace period, and
/// the report and the push are lost).
#[test]
fn a_signal_does_not_wait_for_sentinels_that_stall_after_the_pass() {
    let setup = SentinelSetup::start();
    let password = write_file(setup.primary.dir(), "sentinel-password", SENTINEL_PASSWORD);
    let mut data = SentinelSetup::data_conn(&setup.primary);
    seed_temp_keys(&mut data, 2_000);
    let mut running = run_through(&setup, &password)
        .args(["--rate-limit", "2000", "--timeout", "20s"])
        .start();
    crate::resilience::wait_for_checkpoint(&mut running, &mut data);
    for sentinel in &setup.sentinels {
        sentinel.freeze();
    }
    // The pass ends on the primary, which the job no longer holds: it asks
    // the Sentinels now, or is about to.
    wait_for_lease_gone(&mut data);
    assert!(!running.exited(), "{}", running.stderr_so_far());
    running.signal("TERM");
    let signalled = std::time::Instant::now();
    let out = running.wait();
    let waited = signalled.elapsed();
    for sentinel in &setup.sentinels {
        sentinel.thaw();
    }
    assert!(
        waited < Duration::from_secs(5),
        "the run ended {waited:?} after the signal\n{}",
        out.dump()
    );
    // The pass had completed: the run says so.
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["complete"], true, "{report:#}");
    assert_eq!(
        report["servers"][0]["address"],
        setup.primary.host_port(),
        "{report:#}"
    );
    assert_eq!(dbsize(&mut data), 0, "{}", out.dump());
}

/// A dry run changes nothing that a failover could lose: one whose pass
/// completes on a primary the Sentinels replaced meanwhile is not done
/// again on the new one (a writing pass is, see above). Its report names
/// the primary it read, and no failover.
#[test]
fn a_dry_run_that_completes_on_a_primary_the_sentinels_replaced_is_not_done_again() {
    let (setup, password, mut old) = stubborn_primary_with_temp_keys();
    let mut running = run_through(&setup, &password)
        .args(["--dry-run", "--rate-limit", "400", "--batch-size", "100"])
        .start();
    wait_until(Duration::from_secs(20), "the dry run's first call", || {
        running.exited() || script_calls(&mut old) >= 2
    });
    assert!(!running.exited(), "{}", running.stderr_so_far());
    setup.fail_over();
    let out = running.wait();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["complete"], true, "{report:#}");
    let servers = report["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{report:#}");
    assert_eq!(
        servers[0]["address"],
        setup.primary.host_port(),
        "{report:#}"
    );
    assert!(
        servers[0]["failovers"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    assert_eq!(rule_keys(&report, "temp"), 2_000, "{report:#}");
    // Nothing was written on either.
    assert_eq!(dbsize(&mut old), 2_000);
    assert_eq!(dbsize(&mut SentinelSetup::data_conn(&setup.replica)), 2_000);
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
        let line = out.one_line_stderr();
        // The Sentinels, each of them, and their own credentials' option.
        for words in ["Sentinels of mymaster", "--sentinel-password-file"] {
            assert!(line.contains(words), "lacks {words:?}: {}", out.dump());
        }
        for sentinel in &setup.sentinels {
            assert!(line.contains(&sentinel.host_port()), "{}", out.dump());
        }
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

#[test]
fn the_sentinels_are_asked_in_turn_and_a_failure_names_each_one_asked() {
    let setup = SentinelSetup::start();
    seed_keys(&mut SentinelSetup::data_conn(&setup.primary), "1");
    let password = write_file(setup.primary.dir(), "sentinel-password", SENTINEL_PASSWORD);
    let dead = dead_url().replace("redis://", "");
    let live: Vec<String> = setup.sentinels.iter().map(|s| s.host_port()).collect();
    let hosts = format!("{dead},{}", live.join(","));
    let url = |service: &str| format!("redis+sentinel://:{DATA_PASSWORD}@{hosts}/{service}");

    // The first Sentinel is dead: the next one names the primary.
    let out = run_json(&url(SERVICE))
        .arg("--sentinel-password-file")
        .arg(&password)
        .run();
    out.assert_code(0);
    assert_eq!(
        out.report()["servers"][0]["address"],
        setup.primary.host_port()
    );

    // None knows the service: each one asked is named, with why.
    let out = run_json(&url("nosuch"))
        .arg("--sentinel-password-file")
        .arg(&password)
        .run();
    out.assert_code(1);
    let line = out.one_line_stderr();
    for words in [
        "Sentinels of nosuch",
        dead.as_str(),
        &format!("{}: does not know the service nosuch", live[0]),
        &format!("{}: does not know the service nosuch", live[1]),
    ] {
        assert!(line.contains(words), "lacks {words:?}: {}", out.dump());
    }
}

#[test]
fn a_primary_that_says_it_is_a_replica_is_asked_about_again_then_refused() {
    let setup = SentinelSetup::start();
    seed_keys(&mut SentinelSetup::data_conn(&setup.primary), "1");
    let (sentinel, _config) = sentinel_watching(&setup.replica);
    let password = write_file(setup.primary.dir(), "sentinel-password", SENTINEL_PASSWORD);
    let url = format!(
        "redis+sentinel://:{DATA_PASSWORD}@{}/{SERVICE}",
        sentinel.host_port()
    );

    let started = std::time::Instant::now();
    let out = run_json(&url)
        .arg("--sentinel-password-file")
        .arg(&password)
        .run();
    out.assert_code(1);
    let line = out.one_line_stderr();
    for words in [
        setup.replica.host_port().as_str(),
        "as its primary, but it says it is a replica",
        "failover",
    ] {
        assert!(line.contains(words), "lacks {words:?}: {}", out.dump());
    }
    // Asked again for about 2 s, not at once and not for --timeout (30 s).
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(20)).contains(&took),
        "{took:?}"
    );
    assert_eq!(dbsize(&mut SentinelSetup::data_conn(&setup.replica)), 3);
}

#[test]
fn a_wrong_data_node_password_names_the_data_node_not_the_sentinels() {
    let setup = SentinelSetup::start();
    seed_keys(&mut SentinelSetup::data_conn(&setup.primary), "1");
    let sentinel_password = write_file(setup.primary.dir(), "sentinel-password", SENTINEL_PASSWORD);
    let url = setup.url().replace(DATA_PASSWORD, "not-it");

    // (the arguments, the node the message must name)
    let cases: [(&[&str], String); 2] = [
        (&[], setup.primary.host_port()),
        (&["--dry-run", "--from-replicas"], setup.replica.host_port()),
    ];
    for (args, node) in cases {
        let out = run_json(&url)
            .arg("--sentinel-password-file")
            .arg(&sentinel_password)
            .args(args)
            .run();
        out.assert_code(1);
        // One line: no warning that no replica answered, either.
        let line = out.one_line_stderr();
        for words in [node.as_str(), "data node", "--password-file"] {
            assert!(line.contains(words), "lacks {words:?}: {}", out.dump());
        }
        assert!(!line.contains("Sentinels of"), "{}", out.dump());
        assert!(!out.stderr.contains("not-it"), "{}", out.dump());
    }
    assert_eq!(dbsize(&mut SentinelSetup::data_conn(&setup.primary)), 3);
}

#[test]
fn a_sentinel_given_as_a_redis_url_is_refused_with_the_url_to_give() {
    let (sentinel, _config) = lone_sentinel();
    let url = format!("redis://:{SENTINEL_PASSWORD}@{}", sentinel.host_port());

    let out = janitor().args(["run", "--url", &url]).run();
    out.assert_code(1);
    let line = out.one_line_stderr();
    for words in [
        sentinel.host_port().as_str(),
        "is a Redis Sentinel",
        "redis+sentinel://HOST[:PORT]/SERVICE",
    ] {
        assert!(line.contains(words), "lacks {words:?}: {}", out.dump());
    }
    assert!(!line.contains("DBSIZE"), "{}", out.dump());
}

#[test]
fn tls_behind_sentinel_verifies_the_server_name_given() {
    let setup = TlsSentinelSetup::start();
    let mut con = setup.primary.conn();
    seed_keys(&mut con, "1");
    let ca = setup.certs.path("ca.pem");
    let run = || run_json(&setup.url()).arg("--tls-ca-file").arg(&ca);

    // The Sentinel announces 127.0.0.1, which the certificate does not name.
    let unnamed = run().run();
    unnamed.assert_code(1);
    let line = unnamed.one_line_stderr();
    assert!(line.contains("--tls-server-name"), "{}", unnamed.dump());
    assert_eq!(dbsize(&mut con), 3);

    let named = run().args(["--tls-server-name", SERVER_NAME]).run();
    named.assert_code(0);
    let report = named.report();
    assert_eq!(
        report["servers"][0]["address"],
        format!("127.0.0.1:{}", setup.tls_port),
        "{report:#}"
    );
    assert_eq!(rule_keys(&report, "temp"), 1, "{report:#}");
    assert_keyspace(
        &mut con,
        &[
            (b"cache:1", "hash", Ttl::About(3600)),
            (b"keep:1", "string", Ttl::Persistent),
        ],
    );
}

#[test]
fn the_jobs_acl_user_and_a_least_privilege_sentinel_user_leave_acl_log_empty() {
    let setup = SentinelSetup::start();
    let mut primary = SentinelSetup::data_conn(&setup.primary);
    seed_keys(&mut primary, "1");
    let mut replica = SentinelSetup::data_conn(&setup.replica);
    wait_until(
        Duration::from_secs(10),
        "the keys to reach the replica",
        || dbsize(&mut replica) == 3,
    );
    let data_line = janitor_acl_line(dialect(&mut primary));
    let sentinel_line = sentinel_acl_line();
    for con in [&mut primary, &mut replica] {
        acl_setuser(con, &data_line, USER_PASSWORD);
        reset_acl_log(con);
    }
    for i in 0..setup.sentinels.len() {
        let mut con = setup.sentinel_conn(i);
        acl_setuser(&mut con, &sentinel_line, USER_PASSWORD);
        reset_acl_log(&mut con);
    }
    let password = write_file(setup.primary.dir(), "user-password", USER_PASSWORD);
    let url = setup
        .url()
        .replace(&format!(":{DATA_PASSWORD}@"), "janitor@");
    let run = || {
        run_json(&url)
            .arg("--password-file")
            .arg(&password)
            .args(["--sentinel-username", "janitor", "--sentinel-password-file"])
            .arg(&password)
    };

    let dry = run().args(["--dry-run", "--from-replicas"]).run();
    dry.assert_code(0);
    assert_eq!(
        dry.report()["servers"][0]["role"],
        "replica",
        "{}",
        dry.dump()
    );
    let real = run().run();
    real.assert_code(0);
    assert_eq!(rule_keys(&real.report(), "temp"), 1, "{}", real.dump());
    assert_keyspace(
        &mut primary,
        &[
            (b"cache:1", "hash", Ttl::About(3600)),
            (b"keep:1", "string", Ttl::Persistent),
        ],
    );
    for (name, con) in [("primary", &mut primary), ("replica", &mut replica)] {
        let log = acl_log(con);
        assert!(log.is_empty(), "the {name}'s ACL LOG: {log:?}");
    }
    for i in 0..setup.sentinels.len() {
        let log = acl_log(&mut setup.sentinel_conn(i));
        assert!(log.is_empty(), "Sentinel {i}'s ACL LOG: {log:?}");
    }
}

/// The `ACL SETUSER janitor` line `redis-janitor acl` prints for servers of
/// `dialect` (runs and dry runs).
fn janitor_acl_line(dialect: Dialect) -> String {
    let out = janitor().arg("acl").run();
    out.assert_code(0);
    let heading = match dialect {
        Dialect::Redis7 => "# Redis 7",
        Dialect::Legacy => "# Redis 6.2",
    };
    let lines: Vec<&str> = out.stdout.lines().collect();
    lines
        .windows(2)
        .find(|pair| pair[0].starts_with(heading) && pair[1].starts_with("ACL SETUSER janitor "))
        .map(|pair| pair[1].to_string())
        .unwrap_or_else(|| panic!("no janitor line under {heading:?}\n{}", out.dump()))
}

/// The Sentinels' user as docs/topologies.md gives it: its one `ACL
/// SETUSER` line that grants `SENTINEL` subcommands.
fn sentinel_acl_line() -> String {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/topologies.md"))
        .expect("read docs/topologies.md");
    let lines: Vec<&str> = guide
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ACL SETUSER") && l.contains("+sentinel|"))
        .collect();
    assert_eq!(lines.len(), 1, "docs/topologies.md: {lines:?}");
    lines[0].to_string()
}

fn reset_acl_log(con: &mut redis::Connection) {
    redis::cmd("ACL")
        .arg("LOG")
        .arg("RESET")
        .exec(con)
        .expect("ACL LOG RESET");
}

/// `ACL LOG`: one entry per refusal.
fn acl_log(con: &mut redis::Connection) -> Vec<redis::Value> {
    redis::cmd("ACL").arg("LOG").query(con).expect("ACL LOG")
}

/// After a fault, the job asks the Sentinels where the primary went: when
/// they stall, a stop does not wait for them (it used to wait for each in
/// turn, the timeout twice over per Sentinel).
#[test]
fn a_stop_does_not_wait_for_stalled_sentinels_after_a_fault() {
    let setup = SentinelSetup::start();
    let password = write_file(setup.primary.dir(), "sentinel-password", SENTINEL_PASSWORD);
    let mut con = SentinelSetup::data_conn(&setup.primary);
    populate(&mut con, "cache", 100_000);
    let mut running = run_through(&setup, &password)
        .args(["--timeout", "3s", "--max-server-share", "0.05"])
        .start();
    wait_until(Duration::from_secs(30), "the first checkpoint", || {
        running.exited() || checkpoint(&mut con).is_some()
    });
    assert!(!running.exited(), "{}", running.stderr_so_far());
    for sentinel in &setup.sentinels {
        sentinel.freeze();
    }
    // The job's connection drops: a transient fault, after which it asks
    // the (frozen) Sentinels.
    let _: redis::Value = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
        .query(&mut con)
        .unwrap();
    running
        .wait_for_stderr(Duration::from_secs(10), |line| {
            line.contains("a transient fault")
        })
        .unwrap_or_else(|| panic!("no retry:\n{}", running.stderr_so_far()));
    // Past the first retry's delay (at most 200 ms): asking the Sentinels,
    // which nothing outside the job can see.
    std::thread::sleep(Duration::from_secs(1));
    let signalled = std::time::Instant::now();
    running.signal("TERM");
    let out = running.wait();
    let took = signalled.elapsed();
    for sentinel in &setup.sentinels {
        sentinel.thaw();
    }
    out.assert_code(143);
    assert!(
        took < Duration::from_secs(2),
        "took {took:?}: {}",
        out.dump()
    );
}
