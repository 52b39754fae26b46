//! Servers of other kinds: TLS (`rediss://` with a private CA) and a Redis
//! Cluster node, which the job must refuse before touching anything.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// Writes a CA and a server certificate for 127.0.0.1/localhost signed by it,
/// with the `openssl` command line tool.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (install it with `apt-get install openssl`)");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=janitor-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
}

/// A server with a plain port (for the test's own client) and a TLS port.
fn tls_server(certs: &Path) -> (RedisServer, u16) {
    let tls_port = free_port().to_string();
    let cert = certs.join("server.pem");
    let key = certs.join("server.key");
    let server = RedisServer::start_tls(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ]);
    (server, tls_port.parse().unwrap())
}

#[test]
fn tls_with_a_private_ca_cleans_like_plain_tcp() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let (server, tls_port) = tls_server(certs.path());
    let mut con = server.conn();
    seed_all(
        &mut con,
        &[
            (b"cache:a", "string", None),
            (b"temp:b", "string", None),
            (b"keep:c", "string", None),
        ],
    );

    let outcome = janitor()
        .args(["run", "--output", "json", "--url"])
        .arg(format!("rediss://localhost:{tls_port}"))
        .env("REDIS_TLS_CA_FILE", certs.path().join("ca.pem"))
        .run();
    outcome.assert_code(0);
    let report = outcome.report();
    assert_eq!(report["complete"], true, "{}", outcome.dump());
    assert_eq!(rule_keys(&report, "temp"), 1);
    assert_keyspace(
        &mut con,
        &[
            (b"cache:a", "string", Ttl::About(3600)),
            (b"keep:c", "string", Ttl::Persistent),
        ],
    );
}

#[test]
fn tls_refuses_a_certificate_from_an_unknown_ca() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let (server, tls_port) = tls_server(certs.path());
    let mut con = server.conn();
    seed_all(&mut con, &[(b"temp:b", "string", None)]);
    let before = digest(&mut con);

    let outcome = janitor()
        .args(["run", "--url"])
        .arg(format!("rediss://localhost:{tls_port}"))
        .run();
    outcome.assert_code(1);
    let line = outcome.one_line_stderr();
    assert!(line.contains("certificate"), "{}", outcome.dump());
    assert_eq!(digest(&mut con), before);
}

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
