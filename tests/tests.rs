//! The single integration-test binary of `redis-janitor`: every module runs
//! the real binary against its own private `redis-server` (see `support`).

mod acl;
mod brakes;
mod cli;
mod cluster;
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
/// handle.
mod harness {
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
}
