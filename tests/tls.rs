//! TLS, against a `redis-server` that requires a client certificate (mutual
//! TLS) or one that does not: the right certificate, or with the latter a
//! private CA alone, cleans like plain TCP; a missing or foreign client
//! certificate, or a server certificate from an unknown CA, stops the run
//! before anything is touched; the server name is verified instead of the IP
//! address connected to, and verification is turned off only by
//! `--tls-insecure`, with a warning.

use crate::support::tls::{
    Certificates, SERVER_NAME, start_mtls, start_tls, start_tls_without_common_cipher,
};
use crate::support::*;

/// The keys every test seeds: the built-in rules set a TTL on `cache:a`,
/// delete `temp:b` and leave `keep:c` alone.
const KEYS: &[(&[u8], &str, Option<u64>)] = &[
    (b"cache:a", "string", None),
    (b"temp:b", "string", None),
    (b"keep:c", "string", None),
];

/// The keyspace after a run over [`KEYS`].
const CLEANED: &[(&[u8], &str, Ttl)] = &[
    (b"cache:a", "string", Ttl::About(3600)),
    (b"keep:c", "string", Ttl::Persistent),
];

/// A TLS server seeded with [`KEYS`], and what a test needs of it.
struct Seeded {
    /// The CA, the server's and the clients' certificates.
    certs: Certificates,
    /// The server; killed when the fixture is dropped.
    _server: RedisServer,
    /// Its TLS port, the one the job is pointed at.
    tls_port: u16,
    /// The test's own connection, on the plain port.
    con: redis::Connection,
    /// The keyspace's digest once seeded.
    before: String,
}

impl Seeded {
    /// `rediss://{host}:{tls_port}`.
    fn url(&self, host: &str) -> String {
        format!("rediss://{host}:{}", self.tls_port)
    }
}

/// Generates certificates, starts a server with `start` ([`start_mtls`] or
/// [`start_tls`]) and seeds it with [`KEYS`].
fn seeded(start: fn(&Certificates) -> (RedisServer, u16)) -> Seeded {
    let certs = Certificates::generate();
    let (server, tls_port) = start(&certs);
    let mut con = server.conn();
    seed_all(&mut con, KEYS);
    let before = digest(&mut con);
    Seeded {
        certs,
        _server: server,
        tls_port,
        con,
        before,
    }
}

/// `run --output json` at `url` with the CA and the client certificate
/// `client` (`client` or `rogue-client`) given by their variables.
fn run_with_client(certs: &Certificates, url: &str, client: &str) -> Janitor {
    janitor()
        .args(["run", "--output", "json", "--url", url])
        .env("REDIS_TLS_CA_FILE", certs.path("ca.pem"))
        .env("REDIS_TLS_CERT_FILE", certs.path(&format!("{client}.pem")))
        .env("REDIS_TLS_KEY_FILE", certs.path(&format!("{client}.key")))
}

/// Asserts a clean run over [`KEYS`]: exit 0, complete, the keyspace cleaned.
#[track_caller]
fn assert_cleaned(outcome: &Outcome, con: &mut redis::Connection) {
    outcome.assert_code(0);
    let report = outcome.report();
    assert_eq!(report["complete"], true, "{}", outcome.dump());
    assert_eq!(rule_keys(&report, "temp"), 1, "{}", outcome.dump());
    assert_keyspace(con, CLEANED);
}

/// Asserts a run that failed before touching anything: exit 1, one line on
/// stderr containing each of `words`, no script call, the same keyspace.
#[track_caller]
fn assert_refused(outcome: &Outcome, con: &mut redis::Connection, before: &str, words: &[&str]) {
    outcome.assert_code(1);
    let line = outcome.one_line_stderr();
    for word in words {
        assert!(line.contains(word), "lacks {word:?}:\n{}", outcome.dump());
    }
    assert_eq!(script_calls(con), 0);
    assert_eq!(digest(con), before, "the keyspace was touched");
}

#[test]
fn mutual_tls_with_the_right_client_certificate_cleans_like_plain_tcp() {
    let mut server = seeded(start_mtls);

    let outcome = run_with_client(&server.certs, &server.url("localhost"), "client").run();
    assert_cleaned(&outcome, &mut server.con);
    assert_eq!(
        outcome.report()["server"]["address"],
        format!("localhost:{}", server.tls_port)
    );
}

#[test]
fn without_a_client_certificate_the_run_says_the_server_requires_one() {
    let mut server = seeded(start_mtls);

    let outcome = janitor()
        .args(["run", "--url", &server.url("localhost")])
        .arg("--tls-ca-file")
        .arg(server.certs.path("ca.pem"))
        .run();
    assert_refused(
        &outcome,
        &mut server.con,
        &server.before,
        &[
            "TLS handshake failed",
            "client certificate",
            "--tls-cert-file",
        ],
    );
}

#[test]
fn a_server_without_a_cipher_in_common_is_not_said_to_require_a_certificate() {
    let mut server = seeded(start_tls_without_common_cipher);

    let outcome = janitor()
        .args(["run", "--url", &server.url("localhost")])
        .arg("--tls-ca-file")
        .arg(server.certs.path("ca.pem"))
        .run();
    assert_refused(
        &outcome,
        &mut server.con,
        &server.before,
        &["TLS handshake failed", "no TLS version or cipher in common"],
    );
}

#[test]
fn a_client_certificate_from_another_ca_is_refused_before_anything_is_touched() {
    let mut server = seeded(start_mtls);

    let outcome = run_with_client(&server.certs, &server.url("localhost"), "rogue-client").run();
    assert_refused(
        &outcome,
        &mut server.con,
        &server.before,
        &["TLS handshake failed", "refused the client certificate"],
    );
}

#[test]
fn the_server_name_is_verified_instead_of_the_ip_address_connected_to() {
    let mut server = seeded(start_mtls);
    // The certificate names redis.test and localhost, not 127.0.0.1.
    let url = server.url("127.0.0.1");

    let unnamed = run_with_client(&server.certs, &url, "client").run();
    assert_refused(
        &unnamed,
        &mut server.con,
        &server.before,
        &["certificate", "not valid for", "--tls-server-name"],
    );

    let named = run_with_client(&server.certs, &url, "client")
        .args(["--tls-server-name", SERVER_NAME])
        .run();
    assert_cleaned(&named, &mut server.con);
    // The report names the address connected to, not the name verified.
    assert_eq!(
        named.report()["server"]["address"],
        format!("127.0.0.1:{}", server.tls_port)
    );
}

#[test]
fn a_server_name_that_the_certificate_lacks_is_refused() {
    let mut server = seeded(start_mtls);

    let outcome = run_with_client(&server.certs, &server.url("localhost"), "client")
        .env("REDIS_TLS_SERVER_NAME", "other.test")
        .run();
    assert_refused(
        &outcome,
        &mut server.con,
        &server.before,
        &["not valid for the --tls-server-name"],
    );
}

#[test]
fn the_urls_insecure_needs_tls_insecure_which_warns() {
    let mut server = seeded(start_mtls);
    // No CA: with verification on, the server's certificate is refused.
    let url = format!("{}/#insecure", server.url("127.0.0.1"));
    let insecure_run = || {
        janitor()
            .args(["run", "--output", "json", "--url", &url])
            .arg("--tls-cert-file")
            .arg(server.certs.path("client.pem"))
            .arg("--tls-key-file")
            .arg(server.certs.path("client.key"))
    };

    let refused = insecure_run().run();
    refused.assert_code(2);
    let line = refused.one_line_stderr();
    assert!(
        line.contains("#insecure") && line.contains("--tls-insecure"),
        "{}",
        refused.dump()
    );
    assert_eq!(digest(&mut server.con), server.before);

    let outcome = insecure_run().env("REDIS_TLS_INSECURE", "true").run();
    assert_cleaned(&outcome, &mut server.con);
    let warnings: Vec<String> = outcome
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("WARN") && l.contains("verification is off"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", outcome.dump());
}

#[test]
fn without_mutual_tls_a_private_ca_alone_cleans_like_plain_tcp() {
    let mut server = seeded(start_tls);

    let outcome = janitor()
        .args(["run", "--output", "json", "--url", &server.url("localhost")])
        .env("REDIS_TLS_CA_FILE", server.certs.path("ca.pem"))
        .run();
    assert_cleaned(&outcome, &mut server.con);
}

#[test]
fn a_server_certificate_from_an_unknown_ca_is_refused() {
    let mut server = seeded(start_tls);

    // No CA given: the private CA is not among the system's roots.
    let outcome = janitor()
        .args(["run", "--url", &server.url("localhost")])
        .run();
    outcome.assert_code(1);
    let line = outcome.one_line_stderr();
    assert!(line.contains("certificate"), "{}", outcome.dump());
    assert_eq!(digest(&mut server.con), server.before);
}

#[test]
fn tls_to_a_plain_text_port_times_out_with_a_hint() {
    let server = RedisServer::start();
    let out = janitor()
        .args(["run", "--url"])
        .arg(format!("rediss://127.0.0.1:{}", server.port()))
        .args(["--tls-insecure", "--timeout", "1s", "--retries", "0"])
        .run();
    out.assert_code(1);
    let hint = format!("is 127.0.0.1:{} a TLS port?", server.port());
    assert!(out.stderr.contains(&hint), "{}", out.dump());
}

#[test]
fn tls_usage_errors_exit_2_before_connecting() {
    let certs = Certificates::generate();
    // Nothing listens here: had the binary tried to connect it would exit 1.
    let rediss = dead_url().replace("redis://", "rediss://");
    let [ca, cert, key, rogue_key, missing] = [
        "ca.pem",
        "client.pem",
        "client.key",
        "rogue-client.key",
        "missing.pem",
    ]
    .map(|name| certs.path(name).to_str().unwrap().to_string());
    // PEM framing around bytes that are no certificate.
    let corrupt = certs.path("corrupt.pem").to_str().unwrap().to_string();
    std::fs::write(
        &corrupt,
        "-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let both = ["--tls-cert-file", "--tls-key-file"];
    // (arguments, words the message must hold)
    let cases: &[(&[&str], &[&str])] = &[
        (&["--tls-cert-file", &cert], &both),
        (&["--tls-key-file", &key], &both),
        (
            &["--tls-cert-file", &missing, "--tls-key-file", &key],
            &[&missing],
        ),
        // A certificate where the key should be.
        (
            &["--tls-cert-file", &cert, "--tls-key-file", &cert],
            &[&cert, "private key"],
        ),
        // Another certificate's key.
        (
            &["--tls-cert-file", &cert, "--tls-key-file", &rogue_key],
            &["is not the key of the client certificate"],
        ),
        (
            &["--tls-insecure", "--tls-ca-file", &ca],
            &["--tls-insecure"],
        ),
        (&["--tls-server-name", "not a name"], &["--tls-server-name"]),
        (
            &["--tls-ca-file", &corrupt],
            &[&corrupt, "not a valid X.509 certificate"],
        ),
        (
            &["--tls-cert-file", &corrupt, "--tls-key-file", &key],
            &[&corrupt, "not a valid X.509 certificate"],
        ),
    ];
    let mut failures = Vec::new();
    for (args, words) in cases {
        let out = janitor().args(["run", "--url", &rediss]).args(*args).run();
        let line = out.stderr_lines().last().cloned().unwrap_or_default();
        if out.code != 2 || !words.iter().all(|w| line.contains(w)) {
            failures.push(format!("{args:?} (want {words:?}): {}", out.dump()));
        }
    }
    // Any TLS option with a plain redis:// URL.
    let plain = janitor()
        .args(["run", "--url", &dead_url()])
        .env("REDIS_TLS_CERT_FILE", &cert)
        .env("REDIS_TLS_KEY_FILE", &key)
        .run();
    if plain.code != 2 || !plain.one_line_stderr().contains("rediss://") {
        failures.push(format!(
            "redis:// with a client certificate: {}",
            plain.dump()
        ));
    }
    assert!(
        failures.is_empty(),
        "not exit 2 with the words:\n{}",
        failures.join("\n\n")
    );
}
