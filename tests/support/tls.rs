//! TLS for the integration tests: a private CA and the certificates signed by
//! it, written with the `openssl` command line tool, and a `redis-server`
//! serving them, either requiring a client certificate (mutual TLS) or not.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{RedisServer, free_port};

/// The DNS name the server's certificate is issued for, besides `localhost`;
/// never 127.0.0.1, so that connecting to the IP address needs
/// `--tls-server-name` to verify.
pub const SERVER_NAME: &str = "redis.test";

/// A directory of PEM files, removed when dropped:
/// - `ca.pem`: the CA the server trusts for client certificates, and the
///   client for the server's;
/// - `server.pem`, `server.key`: the server's, for `redis.test` and
///   `localhost`, signed by the CA;
/// - `client.pem`, `client.key`: a client certificate signed by the CA;
/// - `rogue-client.pem`, `rogue-client.key`: a client certificate signed by
///   another CA (`rogue-ca.pem`), which the server does not trust.
pub struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    /// Writes the CAs and the certificates (EC P-256 keys: fast to make).
    pub fn generate() -> Self {
        let certs = Certificates {
            dir: tempfile::Builder::new()
                .prefix("janitor-tls")
                .tempdir()
                .expect("create tempdir for certificates"),
        };
        certs.ca("ca");
        certs.ca("rogue-ca");
        certs.signed(
            "server",
            "ca",
            &format!("subjectAltName=DNS:{SERVER_NAME},DNS:localhost\n"),
        );
        let client = "extendedKeyUsage=clientAuth\n";
        certs.signed("client", "ca", client);
        certs.signed("rogue-client", "rogue-ca", client);
        certs
    }

    /// The file `name` (e.g. `client.pem`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A self-signed CA: `{name}.pem`, `{name}.key`.
    fn ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=janitor-test-{name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    /// A certificate `{name}.pem`, `{name}.key` signed by the CA `ca`, with
    /// the extensions `ext` (one per line, `openssl x509 -extfile` form).
    fn signed(&self, name: &str, ca: &str, ext: &str) {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let ext_file = format!("{name}.ext");
        std::fs::write(self.path(&ext_file), ext).expect("write the extensions file");
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN=janitor-test-{name}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext_file,
            "-out",
            &pem,
        ]);
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl (install it with `apt-get install openssl`)");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A TLS server that requires a client certificate signed by `certs`'s CA
/// (`--tls-auth-clients yes`), and its TLS port; see [`start`].
pub fn start_mtls(certs: &Certificates) -> (RedisServer, u16) {
    start(certs, "yes")
}

/// A TLS server that does not ask for a client certificate
/// (`--tls-auth-clients no`), and its TLS port; see [`start`].
pub fn start_tls(certs: &Certificates) -> (RedisServer, u16) {
    start(certs, "no")
}

/// A TLS server that does not ask for a client certificate and speaks only
/// TLS 1.2 with a cipher the job does not offer (CBC, no ECDHE), and its
/// TLS port; see [`start`].
pub fn start_tls_without_common_cipher(certs: &Certificates) -> (RedisServer, u16) {
    start_with(
        certs,
        "no",
        &[
            "--tls-protocols",
            "TLSv1.2",
            "--tls-ciphers",
            "ECDHE-ECDSA-AES128-SHA",
        ],
    )
}

/// A server presenting `server.pem` on a TLS port, with `--tls-auth-clients
/// auth_clients`, and that port. Its plain port stays open on loopback for
/// the test's own client (seeding, reading the keyspace), which is also how
/// the harness knows it is ready; the job is only ever pointed at the TLS
/// port.
fn start(certs: &Certificates, auth_clients: &str) -> (RedisServer, u16) {
    start_with(certs, auth_clients, &[])
}

/// [`start`], with `more` arguments for the server.
fn start_with(certs: &Certificates, auth_clients: &str, more: &[&str]) -> (RedisServer, u16) {
    let tls_port = free_port().to_string();
    let [cert, key, ca] = ["server.pem", "server.key", "ca.pem"].map(|name| certs.path(name));
    let mut args = vec![
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        path_str(&cert),
        "--tls-key-file",
        path_str(&key),
        "--tls-ca-cert-file",
        path_str(&ca),
        "--tls-auth-clients",
        auth_clients,
    ];
    args.extend_from_slice(more);
    let server = RedisServer::start_tls(&args);
    (server, tls_port.parse().unwrap())
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}
