//! Redis Cluster: every primary of a real 3-primary cluster cleaned at once,
//! each over its own connection, ending in exactly the state one node holding
//! the same keys ends in; seed nodes; a slot moving during a pass (its keys
//! are counted as moved and left for the next run); a failover during a pass
//! (that node's pass starts again from cursor 0 on the new primary); dry runs
//! on replicas.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::support::*;

/// Keys of every default rule's kind, odd and binary names among them,
/// spread over many slots, and keys no rule selects.
fn seed_mixed(con: &mut impl redis::ConnectionLike) {
    seed_all(
        con,
        &[
            (b"cache:\x00", "hash", None),
            (b"cache:\xff\xff", "string", None),
            (b"cache:new\nline", "list", None),
            (b"cache: space", "string", Some(30)),
            (b"cache:{tagged}1", "string", None),
            (b"cache:{tagged}2", "string", Some(20)),
            (b"temp:\xff\xfe\x00bin", "string", None),
            (b"temp:\"quoted\" 'single'", "set", Some(7200)),
            (b"temp:*", "stream", None),
            (b"keep:\xff", "string", None),
            (b"\x00temp:x", "string", None),
            (b"CACHE:upper", "string", None),
            (b"", "string", None),
        ],
    );
    for i in 0..300 {
        let ttl = match i % 3 {
            0 => None,
            1 => Some(30),
            _ => Some(7200),
        };
        seed(con, format!("cache:{i}").as_bytes(), "string", ttl);
        seed(con, format!("temp:{i}").as_bytes(), "hash", ttl);
        seed(con, format!("user:{i}").as_bytes(), "string", None);
    }
}

/// Rule name -> keys, and the other totals, of a report.
fn counts(report: &serde_json::Value) -> BTreeMap<String, u64> {
    let mut counts: BTreeMap<String, u64> = rule_counts(report)
        .into_iter()
        .map(|(name, _, keys)| (name, keys))
        .collect();
    for name in [
        "keys_scanned",
        "keys_matched",
        "vanished",
        "unchanged",
        "moved",
    ] {
        counts.insert(name.to_string(), field(report, name));
    }
    counts
}

#[test]
fn a_cluster_ends_in_exactly_the_state_of_one_node_with_the_same_keys() {
    let single = RedisServer::start();
    let cluster = RedisCluster::start(3, 0);
    seed_mixed(&mut single.conn());
    seed_mixed(&mut cluster.client());
    let before = cluster.keyspace();
    assert_same_keyspace(&keyspace(&mut single.conn()), &before);
    // Every primary holds keys of the rules.
    for node in cluster.primaries() {
        assert!(dbsize(&mut node.conn()) > 100, "{}", cluster.logs());
    }

    let single_dry = run_json(&single.url()).arg("--dry-run").run();
    let cluster_dry = run_json(&cluster.url()).arg("--dry-run").run();
    single_dry.assert_code(0);
    cluster_dry.assert_code(0);
    assert_eq!(counts(&cluster_dry.report()), counts(&single_dry.report()));
    assert_same_keyspace(&before, &cluster.keyspace());

    let single_run = run_json(&single.url()).run();
    let cluster_run = run_json(&cluster.url()).run();
    single_run.assert_code(0);
    cluster_run.assert_code(0);
    let report = cluster_run.report();
    assert_eq!(counts(&report), counts(&single_run.report()));
    assert_eq!(counts(&report), counts(&cluster_dry.report()));
    assert_same_keyspace(&keyspace(&mut single.conn()), &cluster.keyspace());
    assert_matched_accounted(&report);

    // One entry per primary, each complete, adding up to the totals.
    let servers = report["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3, "{report:#}");
    let mut addresses: Vec<String> = cluster.primaries().iter().map(|n| n.host_port()).collect();
    let mut reported: Vec<String> = servers
        .iter()
        .map(|s| s["address"].as_str().unwrap().to_string())
        .collect();
    addresses.sort();
    reported.sort();
    assert_eq!(reported, addresses);
    for server in servers {
        assert_eq!(server["role"], "primary", "{report:#}");
        assert_eq!(server["complete"], true, "{report:#}");
        assert!(server["keys_scanned"].as_u64().unwrap() > 100, "{report:#}");
        assert!(server["duration_seconds"].as_f64().unwrap() > 0.0);
    }
    let scanned: u64 = servers
        .iter()
        .map(|s| s["keys_scanned"].as_u64().unwrap())
        .sum();
    assert_eq!(scanned, field(&report, "keys_scanned"));
}

#[test]
fn seed_nodes_that_are_all_down_are_each_named() {
    let first = dead_url();
    let second = format!("redis://127.0.0.1:{}", free_port());
    let out = janitor()
        .args(["run", "--url", &first, "--url", &second])
        .run();
    out.assert_code(1);
    let line = out.one_line_stderr();
    assert!(line.contains("none of the 2 nodes answered"), "{line}");
    for url in [&first, &second] {
        let address = url.trim_start_matches("redis://");
        assert!(line.contains(address), "{address} is not named: {line}");
    }
    // One seed that does not answer is reported as before: its own
    // failure, not a list of one.
    let out = janitor().args(["run", "--url", &second]).run();
    out.assert_code(1);
    let line = out.one_line_stderr();
    assert!(!line.contains("none of the"), "{line}");
    assert!(
        line.contains(second.trim_start_matches("redis://")),
        "{line}"
    );
}

#[test]
fn a_primary_down_without_a_replica_fails_its_retries_without_waiting_for_an_election() {
    let mut cluster = RedisCluster::start(3, 0);
    cluster.populate("cache", 3_000);
    let down = cluster.nodes[2].host_port();
    cluster.nodes[2].kill9();
    let started = std::time::Instant::now();
    let out = run_json(&cluster.nodes[0].url())
        .args(["--timeout", "10s", "--retries", "2"])
        .run();
    let took = started.elapsed();
    out.assert_code(1);
    assert!(out.stderr.contains(&down), "{}", out.dump());
    // No replica can be elected: each retry went on at once, where it
    // waited for a new primary for the whole --timeout.
    assert!(
        took < Duration::from_secs(8),
        "took {took:?}\n{}",
        out.dump()
    );
}

#[test]
fn seed_nodes_may_be_repeated_comma_separated_and_partly_down() {
    let cluster = RedisCluster::start(3, 0);
    seed_mixed(&mut cluster.client());
    let dead = dead_url();
    let out = janitor()
        .args(["run", "--output", "json", "--dry-run"])
        .args(["--url", &dead, "--url", &cluster.nodes[1].url()])
        .run();
    out.assert_code(0);
    assert_eq!(out.report()["servers"].as_array().unwrap().len(), 3);

    // One URL, several hosts: the later ones take the first's scheme.
    let hosts = format!("{dead},{}", cluster.nodes[2].host_port());
    let out = janitor()
        .args(["run", "--output", "json", "--concurrency", "1"])
        .env("REDIS_URL", &hosts)
        .run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["servers"].as_array().unwrap().len(), 3);
    assert_eq!(rule_keys(&report, "temp"), 303, "{report:#}");
    assert!(!cluster.keyspace().keys().any(|k| k.starts_with(b"temp:")));
}

#[test]
fn several_urls_that_are_not_one_cluster_are_refused() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    seed(&mut a.conn(), b"temp:1", "string", None);
    let out = janitor()
        .args(["run", "--url", &a.url(), "--url", &b.url()])
        .run();
    out.assert_code(1);
    assert!(
        out.stderr.contains("is not a cluster node"),
        "{}",
        out.dump()
    );
    assert_eq!(dbsize(&mut a.conn()), 1);
}

#[test]
fn seeds_of_two_clusters_or_of_a_cluster_and_a_standalone_server_are_refused() {
    let one = RedisCluster::start(3, 0);
    let other = RedisCluster::start(3, 0);
    let standalone = RedisServer::start();
    let slot = redis_janitor::lease::key_slot(b"temp:{a}");
    for cluster in [&one, &other] {
        seed(&mut cluster.owner(slot).conn(), b"temp:{a}", "string", None);
    }
    seed(&mut standalone.conn(), b"temp:1", "string", None);
    let urls = [
        vec!["--url".into(), one.url(), "--url".into(), other.url()],
        // One URL, a second host: a standalone server after a cluster node.
        vec![
            "--url".into(),
            format!("{},{}", one.url(), standalone.host_port()),
        ],
    ];
    for args in urls {
        let out = janitor().arg("run").args(&args).run();
        out.assert_code(1);
        assert!(
            out.one_line_stderr().contains("is not a node of"),
            "{}",
            out.dump()
        );
        // Refused before anything is touched, on any of them.
        assert_eq!(one.keyspace().len(), 1);
        assert_eq!(other.keyspace().len(), 1);
        assert_eq!(dbsize(&mut standalone.conn()), 1);
    }
    // Seeds of one cluster, a replica's among them, are one cluster.
    let out = janitor()
        .args(["run", "--url", &one.url(), "--url", &one.nodes[2].url()])
        .run();
    out.assert_code(0);
    assert!(one.keyspace().is_empty());
}

/// Puts `slot` half-way from its owner to `to`: MIGRATING there, IMPORTING
/// here, and the first `moved` of `keys` already migrated.
fn start_migration(cluster: &RedisCluster, slot: u16, to: usize, keys: &[Vec<u8>], moved: usize) {
    let from = cluster.owner(slot);
    let target = &cluster.nodes[to];
    let from_id: String = redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut from.conn())
        .unwrap();
    let to_id = cluster.id(to);
    redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(&from_id)
        .exec(&mut target.conn())
        .unwrap();
    redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(&to_id)
        .exec(&mut from.conn())
        .unwrap();
    migrate(from, target, &keys[..moved]);
}

fn migrate(from: &RedisServer, to: &RedisServer, keys: &[Vec<u8>]) {
    redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(to.port())
        .arg("")
        .arg(0)
        .arg(5000)
        .arg("KEYS")
        .arg(keys)
        .exec(&mut from.conn())
        .unwrap();
}

/// Migrates the rest of `slot`'s keys from `from` to node `to`, then gives
/// the slot to `to` on every node (a node that loses a slot while holding
/// keys of it deletes them).
fn finish_migration(cluster: &RedisCluster, from: &RedisServer, slot: u16, to: usize) {
    loop {
        let rest: Vec<Vec<u8>> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(100)
            .query(&mut from.conn())
            .unwrap();
        if rest.is_empty() {
            break;
        }
        migrate(from, &cluster.nodes[to], &rest);
    }
    let to_id = cluster.id(to);
    for node in &cluster.nodes {
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&to_id)
            .exec(&mut node.conn())
            .unwrap();
    }
}

/// `count` keys `temp:{moving}:i`, written to the cluster: their one slot,
/// the keys, and a node that does not serve the slot, to move it to.
fn keys_of_one_slot(cluster: &RedisCluster, count: usize) -> (u16, Vec<Vec<u8>>, usize) {
    let keys: Vec<Vec<u8>> = (0..count)
        .map(|i| format!("temp:{{moving}}:{i}").into_bytes())
        .collect();
    let mut client = cluster.client();
    for key in &keys {
        seed(&mut client, key, "string", None);
    }
    let slot = key_slot(&mut cluster.nodes[0].conn(), &keys[0]);
    let owner = cluster.owner(slot).port();
    let to = cluster
        .nodes
        .iter()
        .position(|n| n.port() != owner)
        .unwrap();
    (slot, keys, to)
}

#[test]
fn keys_of_a_slot_being_moved_are_counted_as_moved_and_left_for_the_next_run() {
    let cluster = RedisCluster::start(3, 0);
    let (slot, keys, to) = keys_of_one_slot(&cluster, 40);
    seed_mixed(&mut cluster.client());
    start_migration(&cluster, slot, to, &keys, 15);

    let out = run_json(&cluster.url()).run();
    out.assert_code(0);
    let report = out.report();
    // The 15 keys on the importing node are refused there; the 25 still on
    // the migrating node are served by it.
    assert_eq!(field(&report, "moved"), 15, "{report:#}");
    assert_eq!(rule_keys(&report, "temp"), 303 + 25, "{report:#}");
    assert_matched_accounted(&report);
    let left: BTreeSet<Vec<u8>> = cluster
        .keyspace()
        .into_keys()
        .filter(|k| k.starts_with(b"temp:{moving}"))
        .collect();
    assert_eq!(left, keys[..15].iter().cloned().collect());

    let from = cluster.owner(slot);
    finish_migration(&cluster, from, slot, to);
    let out = run_json(&cluster.url()).run();
    out.assert_code(0);
    assert_eq!(field(&out.report(), "moved"), 0);
    assert_eq!(rule_keys(&out.report(), "temp"), 15);
    let single = RedisServer::start();
    seed_mixed(&mut single.conn());
    run_json(&single.url()).run().assert_code(0);
    assert_same_keyspace(&keyspace(&mut single.conn()), &cluster.keyspace());
}

#[test]
fn a_slot_resharded_during_a_pass_never_fails_it_and_the_next_run_finishes() {
    let cluster = RedisCluster::start(3, 0);
    let (slot, keys, to) = keys_of_one_slot(&cluster, 200);
    cluster.populate("cache", 30_000);
    assert_eq!(cluster.dbsize(), 30_200);

    let running = run_json(&cluster.url())
        .args(["--rate-limit", "5000"])
        .start();
    let from = cluster.owner(slot);
    wait_until(Duration::from_secs(20), "the pass to start", || {
        script_calls(&mut from.conn()) > 0
    });
    start_migration(&cluster, slot, to, &keys, 0);
    // One chunk of keys moves between two of the pass's calls on the node.
    for chunk in keys.chunks(50) {
        let calls = script_calls(&mut from.conn());
        wait_until(Duration::from_secs(20), "the pass's next call", || {
            script_calls(&mut from.conn()) > calls
        });
        migrate(from, &cluster.nodes[to], chunk);
    }
    finish_migration(&cluster, from, slot, to);
    let out = running.wait();
    out.assert_code(0);
    assert_matched_accounted(&out.report());

    run_json(&cluster.url()).run().assert_code(0);
    assert_only_cache_keys_each_with_a_ttl(&cluster, 30_000);
}

/// `node`'s entry in `report`: retried after a transient fault, on the
/// same node (no failover), and complete.
#[track_caller]
fn assert_retried_in_place(report: &serde_json::Value, node: &RedisServer) {
    let server = report["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == node.host_port().as_str())
        .unwrap();
    assert!(server["retries"].as_u64().unwrap() >= 1, "{report:#}");
    assert!(server["failovers"].as_array().unwrap().is_empty());
    assert_eq!(server["complete"], true, "{report:#}");
}

/// The cluster holds exactly `cache:0`.. `cache:{count - 1}`, each with a
/// TTL: the built-in rules were applied to every key of a populated
/// keyspace, none lost.
fn assert_only_cache_keys_each_with_a_ttl(cluster: &RedisCluster, count: u64) {
    let after = cluster.keyspace();
    let missing: Vec<String> = (0..count)
        .map(|i| format!("cache:{i}"))
        .filter(|k| !after.contains_key(k.as_bytes()))
        .collect();
    assert_eq!(missing, Vec::<String>::new(), "{}", cluster.logs());
    assert_eq!(after.len() as u64, count, "keys other than the cache keys");
    assert!(
        after.values().all(|s| s.pttl > 0),
        "a cache key kept no TTL"
    );
}

#[test]
fn a_failover_during_a_pass_restarts_that_shard_from_cursor_0_on_the_new_primary() {
    let cluster = RedisCluster::start(3, 1);
    cluster.populate("cache", 30_000);
    let old = &cluster.nodes[0];
    let replica = &cluster.nodes[3];

    let running = run_json(&cluster.url())
        .args(["--rate-limit", "5000"])
        .start();
    wait_until(Duration::from_secs(20), "the pass to start", || {
        script_calls(&mut old.conn()) > 2
    });
    redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .exec(&mut replica.conn())
        .unwrap();
    wait_until(Duration::from_secs(20), "the failover", || {
        info_field(&mut replica.conn(), "replication", "role").as_deref() == Some("master")
    });
    let out = running.wait();
    out.assert_code(0);
    let report = out.report();
    let servers = report["servers"].as_array().unwrap();
    let failed_over: Vec<&serde_json::Value> = servers
        .iter()
        .filter(|s| !s["failovers"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(failed_over.len(), 1, "{report:#}");
    let server = failed_over[0];
    assert_eq!(server["address"], replica.host_port(), "{report:#}");
    assert_eq!(server["failovers"][0]["from"], old.host_port());
    assert_eq!(server["failovers"][0]["to"], replica.host_port());
    assert_eq!(server["complete"], true, "{report:#}");
    assert!(
        out.stderr
            .contains("a new pass starts from cursor 0 on the new one"),
        "{}",
        out.dump()
    );

    // Every key got its TTL, on the new primary too.
    cluster.wait_ready();
    assert_only_cache_keys_each_with_a_ttl(&cluster, 30_000);
}

#[test]
fn a_dry_run_may_read_from_the_replicas() {
    let cluster = RedisCluster::start(3, 1);
    seed_mixed(&mut cluster.client());
    cluster.wait_ready();
    let before = cluster.keyspace();
    let on_primaries = run_json(&cluster.url()).arg("--dry-run").run();
    on_primaries.assert_code(0);

    let out = run_json(&cluster.url())
        .args(["--dry-run", "--from-replicas"])
        .run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(counts(&report), counts(&on_primaries.report()));
    let replicas: Vec<String> = cluster.nodes[3..].iter().map(|n| n.host_port()).collect();
    for server in report["servers"].as_array().unwrap() {
        assert_eq!(server["role"], "replica", "{report:#}");
        assert!(replicas.contains(&server["address"].as_str().unwrap().to_string()));
    }
    assert_same_keyspace(&before, &cluster.keyspace());

    let refused = janitor()
        .args(["run", "--from-replicas", "--url", &cluster.url()])
        .run();
    refused.assert_code(2);
}

#[test]
fn concurrency_bounds_the_nodes_cleaned_at_once_and_max_runtime_counts_for_all() {
    let cluster = RedisCluster::start(3, 0);
    cluster.populate("cache", 60_000);
    let out = run_json(&cluster.url())
        .args(["--concurrency", "1", "--max-runtime", "300ms"])
        .args(["--rate-limit", "10000", "--progress-interval", "100ms"])
        .run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["stopped_by"], "max_runtime", "{report:#}");
    let servers = report["servers"].as_array().unwrap();
    // The first node ran until --max-runtime; the others' turn came after
    // it, so they were only looked at, for the report: not one call.
    assert!(
        servers[0]["keys_scanned"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    for server in &servers[1..] {
        assert_eq!(server["stopped_by"], "max_runtime", "{report:#}");
        assert_eq!(server["keys_scanned"], 0, "{report:#}");
        assert_eq!(server["batches"], 0, "{report:#}");
        assert!(server["software"].is_string(), "{report:#}");
        assert!(
            server["db_keys"]["start"].as_u64().unwrap() > 0,
            "{report:#}"
        );
        assert_eq!(server["db_keys"]["start"], server["db_keys"]["end"]);
    }
    // Progress lines name their node.
    let first = servers[0]["address"].as_str().unwrap();
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains("progress") && l.contains(&format!("address={first}"))),
        "{}",
        out.dump()
    );
}

#[test]
fn a_seed_primary_killed_during_a_pass_is_followed_to_its_promoted_replica() {
    let mut cluster = RedisCluster::start(3, 1);
    cluster.populate("cache", 30_000);
    let replica = cluster.nodes[3].host_port();
    let killed = cluster.nodes[0].host_port();

    // The only seed is the node killed: the job asks the other primaries.
    let running = run_json(&cluster.url())
        .args(["--rate-limit", "5000"])
        .start();
    wait_until(Duration::from_secs(20), "the pass to start", || {
        script_calls(&mut cluster.nodes[0].conn()) > 2
    });
    cluster.nodes[0].kill9();
    let out = running.wait();
    out.assert_code(0);
    assert_followed_to_the_promoted_replica(&out, &replica, &killed);

    // While the cluster was down its nodes refused keys (moved); the next
    // run, through a live seed, gets them.
    let out = run_json(&cluster.nodes[1].url()).run();
    out.assert_code(0);
    assert_eq!(field(&out.report(), "moved"), 0);
    assert_only_cache_keys_each_with_a_ttl(&cluster, 30_000);
}

#[test]
fn a_primary_killed_during_a_pass_is_waited_for_while_the_cluster_still_calls_it_online() {
    let mut cluster = RedisCluster::start(3, 1);
    cluster.populate("cache", 30_000);
    let replica = cluster.nodes[3].host_port();
    let killed = cluster.nodes[0].host_port();

    // One retry: the first comes before the cluster marks the node failed
    // (--cluster-node-timeout 1000), and the node it goes to must be the
    // replica it promotes, not the killed node the cluster still lists.
    let running = run_json(&cluster.nodes[1].url())
        .args(["--rate-limit", "5000", "--retries", "1", "--timeout", "10s"])
        .start();
    wait_until(Duration::from_secs(20), "the pass to start", || {
        script_calls(&mut cluster.nodes[0].conn()) > 2
    });
    cluster.nodes[0].kill9();
    // The other primaries' one retry may meet the cluster down during the
    // election: the run's code is theirs, the killed node's shard is not.
    let out = running.wait();
    assert_followed_to_the_promoted_replica(&out, &replica, &killed);
}

/// Asserts that the run's report has an entry for `replica` whose pass
/// followed the failover from `killed` and completed.
#[track_caller]
fn assert_followed_to_the_promoted_replica(out: &Outcome, replica: &str, killed: &str) {
    let report = out.report();
    let server = report["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == replica)
        .unwrap_or_else(|| panic!("no entry for the promoted replica: {}", out.dump()));
    assert_eq!(server["failovers"][0]["from"], killed, "{report:#}");
    assert_eq!(server["complete"], true, "{report:#}");
}

#[test]
fn a_node_that_cannot_run_the_rules_fails_the_run_at_once_and_the_others_are_cleaned() {
    let cluster = RedisCluster::start(3, 0);
    seed_mixed(&mut cluster.client());
    let lfu = &cluster.nodes[1];
    redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory-policy", "allkeys-lfu"])
        .exec(&mut lfu.conn())
        .unwrap();
    let rules = write_rules(
        lfu.dir(),
        "[[rule]]\nname = \"idle\"\npattern = \"temp:*\"\nidle_above = \"1s\"\naction = \"delete\"\n\
         [[rule]]\nname = \"temp\"\npattern = \"temp:*\"\naction = \"delete\"\n",
    );
    let before = keyspace(&mut lfu.conn());

    // No failover can help a refusal: the run does not wait for one (a
    // --timeout longer than the harness's patience would show it).
    let out = run_json(&cluster.url())
        .arg("--rules")
        .arg(&rules)
        .args(["--timeout", "120s"])
        .run();
    out.assert_code(1);
    let report = out.report();
    assert!(out.stderr.contains("LFU"), "{}", out.dump());
    assert!(!out.stderr.contains("failed over"), "{}", out.dump());
    for server in report["servers"].as_array().unwrap() {
        if server["address"] == lfu.host_port().as_str() {
            assert!(
                server["error"].as_str().unwrap().contains("LFU"),
                "{report:#}"
            );
        } else {
            assert_eq!(server["complete"], true, "{report:#}");
        }
    }
    assert_same_keyspace(&before, &keyspace(&mut lfu.conn()));
    let temp_left = cluster
        .keyspace()
        .into_keys()
        .filter(|k| k.starts_with(b"temp:"))
        .count();
    assert_eq!(
        temp_left,
        before.keys().filter(|k| k.starts_with(b"temp:")).count()
    );
}

#[test]
fn a_lost_connection_to_a_primary_that_is_still_one_is_retried_there_from_the_checkpoint() {
    let cluster = RedisCluster::start(3, 1);
    cluster.populate("cache", 30_000);
    let node = &cluster.nodes[0];
    let running = run_json(&cluster.url())
        .args(["--rate-limit", "5000"])
        .start();
    wait_until(
        Duration::from_secs(20),
        "the node's first checkpoint",
        || {
            state_keys(&mut node.conn())
                .values()
                .any(|fields| fields.get("cursor").is_some_and(|c| c != "0"))
        },
    );
    // The job's connection drops, but the node is still the primary: no
    // failover, the node's work is retried on it, from its checkpoint.
    let killed: u64 = redis::cmd("CLIENT")
        .arg(&["KILL", "USER", "default", "SKIPME", "yes"])
        .query(&mut node.conn())
        .unwrap();
    assert!(killed >= 1);
    let out = running.wait();
    out.assert_code(0);
    assert!(!out.stderr.contains("failed over"), "{}", out.dump());
    let report = out.report();
    assert_retried_in_place(&report, node);
    // The retry went on with the run's pass from the node's checkpoint.
    assert!(
        out.stderr_lines()
            .iter()
            .any(|l| l.contains(&node.host_port())
                && l.contains("pass resumed")
                && l.contains("reason=resumed the pass begun")),
        "{}",
        out.dump()
    );
    assert_only_cache_keys_each_with_a_ttl(&cluster, 30_000);
}

#[test]
fn the_slot_of_a_nodes_lease_and_checkpoint_moving_away_is_followed_to_another_slot() {
    let cluster = RedisCluster::start(3, 0);
    cluster.populate("cache", 30_000);
    let node = &cluster.nodes[0];
    let running = run_json(&cluster.url())
        .args(["--rate-limit", "5000", "--lock-ttl", "1s"])
        .start();
    let mut checkpoint_key = Vec::new();
    wait_until(
        Duration::from_secs(20),
        "the node's first checkpoint",
        || {
            let saved = state_keys(&mut node.conn());
            match saved
                .iter()
                .find(|(_, fields)| fields.get("cursor").is_some_and(|c| c != "0"))
            {
                Some((key, _)) => {
                    checkpoint_key = key.clone();
                    true
                }
                None => false,
            }
        },
    );
    // The whole slot moves to another node, the job's own keys with it:
    // the node's next call names keys it no longer serves.
    let slot = key_slot(&mut node.conn(), &checkpoint_key);
    assert_eq!(cluster.owner(slot).port(), node.port());
    let to = 1;
    start_migration(&cluster, slot, to, &[], 0);
    finish_migration(&cluster, node, slot, to);
    let out = running.wait();
    out.assert_code(0);
    let report = out.report();
    assert_retried_in_place(&report, node);
    // The node keeps its lease and checkpoint under a slot it still serves,
    // and its pass started anew there (the old checkpoint left with its
    // slot).
    let now: Vec<Vec<u8>> = state_keys(&mut node.conn()).into_keys().collect();
    assert!(!now.is_empty(), "no checkpoint on the node after the move");
    for key in &now {
        let slot_now = key_slot(&mut node.conn(), key);
        assert_ne!(slot_now, slot);
        assert_eq!(cluster.owner(slot_now).port(), node.port());
    }
    // The node answered ASK while the slot was migrating, MOVED after:
    // which of the two the call met depends on when it came.
    assert!(
        ["Moved", "MOVED", "Ask:"]
            .iter()
            .any(|redirect| out.stderr.contains(redirect)),
        "{}",
        out.dump()
    );
    // The lease went with its slot, still held by the run's token: like a
    // crashed run's, it is free again after `--lock-ttl`. Until then a run
    // whose node serves that slot first would be skipped as `locked`.
    let moved_lease = redis_janitor::lease::state_keys(Some(slot)).lease;
    let target = &cluster.nodes[to];
    wait_until(Duration::from_secs(10), "the moved lease to expire", || {
        !redis::cmd("EXISTS")
            .arg(&moved_lease)
            .query::<bool>(&mut target.conn())
            .unwrap()
    });
    // The keys that moved mid-pass may have been behind the other node's
    // cursor: the next run gets them.
    run_json(&cluster.url()).run().assert_code(0);
    assert_only_cache_keys_each_with_a_ttl(&cluster, 30_000);
}
