//! The single integration-test binary of `redis-janitor`: every module runs
//! the real binary against its own private `redis-server` (see `support`).

mod acl;
mod brakes;
mod cli;
mod cluster;
mod declared;
mod deploy;
mod faults;
mod fuzz;
mod glob;
mod keys;
mod lease;
mod metrics;
mod model;
mod pass;
mod progress;
mod replica;
mod report;
mod resilience;
mod resume;
mod rules;
mod script;
mod sentinel;
mod server;
mod support;
mod tls;

/// The harness itself: a private server starts, answers, and dies with its
/// handle; the script-checking proxy relays, refuses and hides as asked.
mod harness {
    use std::sync::atomic::{AtomicU16, Ordering};

    use crate::support::*;

    #[test]
    fn a_private_server_starts_answers_and_is_gone_after_drop() {
        let server = RedisServer::start();
        let port = server.port();
        assert_ne!(port, 6379);
        let mut con = server.conn();
        redis::cmd("SET").arg("k").arg("v").exec(&mut con).unwrap();
        let v: String = redis::cmd("GET").arg("k").query(&mut con).unwrap();
        assert_eq!(v, "v");
        seed(&mut con, b"h", "hash", Some(100));
        assert_keyspace(
            &mut con,
            &[
                (b"k", "string", Ttl::Persistent),
                (b"h", "hash", Ttl::About(100)),
            ],
        );
        drop(con);
        drop(server);
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "server still listening on {port} after drop"
        );
    }

    /// The port a [`RedisServer`] is offered first, then free ones.
    static OFFERED: AtomicU16 = AtomicU16::new(0);

    fn offered_then_free() -> u16 {
        match OFFERED.swap(0, Ordering::SeqCst) {
            0 => free_port(),
            port => port,
        }
    }

    #[test]
    fn a_server_that_loses_its_port_to_another_is_started_again_on_a_free_one() {
        // Two tests may pick the same free port; the one whose server fails
        // to bind must not take the winner, which answers PING there, for
        // its own.
        let winner = RedisServer::start();
        OFFERED.store(winner.port(), Ordering::SeqCst);
        let server = RedisServer::start_bin(&server_bin(), &[], offered_then_free);
        assert_ne!(server.port(), winner.port());
        let pid = info_field(&mut server.conn(), "server", "process_id");
        assert_eq!(pid, Some(server.pid().to_string()));
    }

    #[test]
    fn keyspace_diff_names_missing_unexpected_and_changed_keys_escaped() {
        use std::collections::BTreeMap;
        let actual: BTreeMap<Vec<u8>, KeyState> = [
            (
                b"a\n\xff".to_vec(),
                KeyState {
                    kind: "string".into(),
                    pttl: -1,
                },
            ),
            (
                b"b".to_vec(),
                KeyState {
                    kind: "hash".into(),
                    pttl: 100_000,
                },
            ),
            (
                b"c".to_vec(),
                KeyState {
                    kind: "set".into(),
                    pttl: 3_600_000,
                },
            ),
        ]
        .into_iter()
        .collect();
        let expected: BTreeMap<Vec<u8>, Want> = [
            (b"b".to_vec(), Want::new("hash", Ttl::About(3600))),
            (b"c".to_vec(), Want::new("set", Ttl::About(3600))),
            (b"d".to_vec(), Want::new("list", Ttl::Persistent)),
        ]
        .into_iter()
        .collect();
        let diff = keyspace_diff(&actual, &expected).join("\n");
        assert!(diff.contains("missing    \"d\""), "{diff}");
        assert!(diff.contains("unexpected \"a\\n\\xff\""), "{diff}");
        assert!(diff.contains("different  \"b\""), "{diff}");
        assert!(!diff.contains("\"c\""), "{diff}");
    }

    fn outcome(stdout: &str) -> Outcome {
        Outcome {
            code: 0,
            stdout: stdout.into(),
            stderr: String::new(),
            raw_stdout: stdout.as_bytes().to_vec(),
            raw_stderr: Vec::new(),
        }
    }

    #[test]
    #[should_panic(expected = "more than one JSON value")]
    fn report_rejects_two_json_objects() {
        outcome("{} {}").report();
    }

    #[test]
    #[should_panic(expected = "not JSON")]
    fn report_rejects_text() {
        outcome("pass complete").report();
    }

    #[test]
    #[should_panic(expected = "missing or of the wrong type")]
    fn report_rejects_an_object_without_the_report_fields() {
        outcome(r#"{"complete": true}"#).report();
    }

    #[test]
    fn make_idle_sets_the_idle_time_without_sleeping() {
        let server = RedisServer::start();
        let mut con = server.conn();
        seed(&mut con, b"k", "string", Some(500));
        make_idle(&mut con, b"k", 1000);
        assert!(idle_time(&mut con, b"k") >= 1000);
        assert_keyspace(&mut con, &[(b"k", "string", Ttl::About(500))]);
    }

    /// Alibaba Cloud's refusal of a script that touches undeclared keys.
    const REFUSAL: &str = "ERR bad lua script for redis cluster, all the keys that \
                           the script uses should be passed using the KEYS array";

    /// A proxy in front of `server` with every behaviour on.
    fn strict_proxy(server: &RedisServer) -> ScriptProxy {
        let behaviour = Behaviour {
            refuse_scan_scripts: Some(REFUSAL.to_string()),
            check_slots: true,
            hide_run_id: true,
            ..Behaviour::default()
        };
        ScriptProxy::start(server, behaviour)
    }

    #[test]
    fn the_proxy_relays_commands_and_pipelines_in_order() {
        let server = RedisServer::start();
        let proxy = strict_proxy(&server);
        let mut con = proxy.conn();
        redis::cmd("SET")
            .arg(b"k\xff")
            .arg(b"v\x00")
            .exec(&mut con)
            .unwrap();
        let v: Vec<u8> = redis::cmd("GET").arg(b"k\xff").query(&mut con).unwrap();
        assert_eq!(v, b"v\x00");
        let (a, n, list, missing): (String, i64, Vec<String>, Option<String>) = redis::pipe()
            .set("a", "1")
            .ignore()
            .get("a")
            .incr("n", 5)
            .rpush("l", &["x", "y"])
            .ignore()
            .lrange("l", 0, -1)
            .get("missing")
            .query(&mut con)
            .unwrap();
        assert_eq!(
            (a.as_str(), n, list, missing),
            ("1", 5, vec!["x".into(), "y".into()], None)
        );
        assert_eq!(
            (proxy.scripts(), proxy.refused(), proxy.cross_slot()),
            (0, 0, 0)
        );
    }

    #[test]
    fn the_proxy_refuses_a_loaded_script_that_calls_scan() {
        let server = RedisServer::start();
        let proxy = strict_proxy(&server);
        let mut con = proxy.conn();
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg("return redis.call('scan', ARGV[1])")
            .query(&mut con)
            .unwrap();
        let err = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(0)
            .arg(0)
            .exec(&mut con)
            .unwrap_err();
        assert_eq!(err.code(), Some("ERR"), "{err}");
        assert_eq!(err.detail(), REFUSAL.strip_prefix("ERR "), "{err}");
        assert_eq!((proxy.refused(), proxy.scripts()), (1, 0));
        // A SHA the proxy never saw loaded is the server's to answer.
        let err = redis::cmd("EVALSHA")
            .arg("0".repeat(40))
            .arg(0)
            .exec(&mut con)
            .unwrap_err();
        assert_eq!(err.code(), Some("NOSCRIPT"), "{err}");
        assert_eq!((proxy.refused(), proxy.scripts()), (1, 1));
    }

    #[test]
    fn the_proxy_answers_crossslot_to_keys_of_two_slots() {
        let server = RedisServer::start();
        let proxy = strict_proxy(&server);
        let mut con = proxy.conn();
        let slot = redis_janitor::lease::key_slot;
        assert_ne!(slot(b"a"), slot(b"b"));
        let err = redis::cmd("EVAL")
            .arg("return 1")
            .arg(2)
            .arg("a")
            .arg("b")
            .exec(&mut con)
            .unwrap_err();
        assert_eq!(err.code(), Some("CROSSSLOT"), "{err}");
        assert_eq!((proxy.cross_slot(), proxy.scripts()), (1, 0));
    }

    #[test]
    fn the_proxy_runs_a_script_whose_keys_share_a_slot() {
        let server = RedisServer::start();
        let proxy = strict_proxy(&server);
        let mut con = proxy.conn();
        let script = "redis.call('SET', KEYS[1], ARGV[1]) \
                      redis.call('SET', KEYS[2], ARGV[2]) \
                      return {1, {2, ARGV[1]}, ARGV[2]}";
        // A nested reply comes back whole.
        let reply: (i64, (i64, String), String) = redis::cmd("EVAL")
            .arg(script)
            .arg(2)
            .arg("{t}a")
            .arg("{t}b")
            .arg("x")
            .arg("y")
            .query(&mut con)
            .unwrap();
        assert_eq!(reply, (1, (2, "x".into()), "y".into()));
        let mut direct = server.conn();
        let values: (String, String) = redis::cmd("MGET")
            .arg("{t}a")
            .arg("{t}b")
            .query(&mut direct)
            .unwrap();
        assert_eq!(values, ("x".into(), "y".into()));
        assert_eq!(
            (proxy.scripts(), proxy.cross_slot(), proxy.refused()),
            (1, 0, 0)
        );
    }

    #[test]
    fn the_proxy_hides_the_run_id_from_info_in_resp2_and_resp3() {
        let server = RedisServer::start();
        let proxy = strict_proxy(&server);
        let info = |con: &mut redis::Connection| -> String {
            redis::cmd("INFO").arg("server").query(con).unwrap()
        };
        assert!(info(&mut server.conn()).contains("run_id:"));
        let resp3 = redis::Client::open(format!("{}/?protocol=resp3", proxy.url())).unwrap();
        for mut con in [proxy.conn(), resp3.get_connection().unwrap()] {
            let text = info(&mut con);
            assert!(!text.contains("run_id:"), "{text}");
            assert!(text.contains("redis_version:"), "{text}");
        }
    }
}
