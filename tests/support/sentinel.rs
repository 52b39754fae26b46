//! Real Redis Sentinel for the tests: a primary and its replica, both with
//! a password, watched by two Sentinels (`redis-server CONF --sentinel`, each
//! with a generated config and a password of its own), and a failover
//! forced with `SENTINEL FAILOVER`; a TLS primary watched over TLS by a
//! Sentinel that announces it at an address its certificate does not name;
//! and a lone Sentinel that watches nothing.

use super::tls::{Certificates, start_tls};
use super::*;

/// The service name the Sentinels watch.
pub const SERVICE: &str = "mymaster";
/// The data nodes' password.
pub const DATA_PASSWORD: &str = "data-secret";
/// The Sentinels' own password.
pub const SENTINEL_PASSWORD: &str = "sentinel-secret";
/// How long Sentinel may take to learn the replica, or to fail over.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(30);

/// A primary, its replica and two Sentinels, killed when dropped.
pub struct SentinelSetup {
    /// The primary when the setup started.
    pub primary: RedisServer,
    /// Its replica.
    pub replica: RedisServer,
    /// The Sentinels.
    pub sentinels: Vec<RedisServer>,
    /// Holds the Sentinels' config files (Sentinel rewrites them).
    _configs: Vec<tempfile::TempDir>,
}

impl SentinelSetup {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A setup whose primary also gets `primary_args`.
    pub fn start_with(primary_args: &[&str]) -> Self {
        // Without the diskless sync's default 5 s delay (Redis 7+), the
        // replica is in sync at once.
        let auth = [
            "--requirepass",
            DATA_PASSWORD,
            "--masterauth",
            DATA_PASSWORD,
            "--repl-diskless-sync-delay",
            "0",
        ];
        let primary = RedisServer::start_with(&[&auth[..], primary_args].concat());
        let port = primary.port().to_string();
        let mut args = auth.to_vec();
        args.extend(["--replicaof", "127.0.0.1", &port]);
        let replica = RedisServer::start_with(&args);
        let mut configs = Vec::new();
        let sentinels = (0..2)
            .map(|_| {
                let (sentinel, dir) = spawn_sentinel(
                    &server_bin(),
                    &format!(
                        "sentinel monitor {SERVICE} 127.0.0.1 {port} 1\n\
                         sentinel auth-pass {SERVICE} {DATA_PASSWORD}\n\
                         sentinel down-after-milliseconds {SERVICE} 1000\n\
                         sentinel failover-timeout {SERVICE} 3000\n\
                         requirepass {SENTINEL_PASSWORD}\n"
                    ),
                );
                configs.push(dir);
                sentinel
            })
            .collect();
        let setup = SentinelSetup {
            primary,
            replica,
            sentinels,
            _configs: configs,
        };
        setup.wait_for_replica();
        setup
    }

    /// A connection to the data node `node`.
    pub fn data_conn(node: &RedisServer) -> redis::Connection {
        node.conn_with_password(DATA_PASSWORD)
    }

    /// A connection to Sentinel `i`.
    pub fn sentinel_conn(&self, i: usize) -> redis::Connection {
        self.sentinels[i].conn_with_password(SENTINEL_PASSWORD)
    }

    /// `redis+sentinel://` URL of the Sentinels, with the data password.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|s| s.host_port()).collect();
        format!(
            "redis+sentinel://:{DATA_PASSWORD}@{}/{SERVICE}",
            hosts.join(",")
        )
    }

    /// The address the Sentinel `i` names for the primary.
    pub fn primary_address(&self, i: usize) -> String {
        let (host, port): (String, String) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(SERVICE)
            .query(&mut self.sentinel_conn(i))
            .expect("SENTINEL GET-MASTER-ADDR-BY-NAME");
        format!("{host}:{port}")
    }

    /// Waits until the replica's link is up and every Sentinel knows it.
    fn wait_for_replica(&self) {
        wait_until(SENTINEL_TIMEOUT, "the replica's link to be up", || {
            info_field(
                &mut Self::data_conn(&self.replica),
                "replication",
                "master_link_status",
            )
            .as_deref()
                == Some("up")
        });
        // A replica Sentinel may promote: known, up, its link to the primary
        // ok, and its own INFO read recently (Sentinel reads it every 10 s,
        // and promotes no replica whose INFO it has not read).
        for i in 0..self.sentinels.len() {
            wait_until(SENTINEL_TIMEOUT, "Sentinel to know the replica", || {
                let replicas: Vec<Vec<String>> = redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(SERVICE)
                    .query(&mut self.sentinel_conn(i))
                    .expect("SENTINEL REPLICAS");
                replicas.iter().any(|fields| {
                    let field = |name: &str| {
                        fields
                            .chunks(2)
                            .find(|pair| pair[0] == name)
                            .map(|pair| pair[1].as_str())
                    };
                    field("flags") == Some("slave")
                        && field("master-link-status") == Some("ok")
                        && field("info-refresh")
                            .and_then(|ms| ms.parse::<u64>().ok())
                            .is_some_and(|ms| ms < 10_000)
                })
            });
        }
    }

    /// Forces a failover and waits until the replica is the primary every
    /// Sentinel names.
    pub fn fail_over(&self) {
        redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(SERVICE)
            .exec(&mut self.sentinel_conn(0))
            .expect("SENTINEL FAILOVER");
        let new = self.replica.host_port();
        for i in 0..self.sentinels.len() {
            wait_until(
                SENTINEL_TIMEOUT,
                "every Sentinel to name the new primary",
                || self.primary_address(i) == new,
            );
        }
    }
}

/// A Sentinel started with `bin` and the config `conf`, and the temp dir
/// that holds its config file (Sentinel rewrites it).
fn spawn_sentinel(bin: &str, conf: &str) -> (RedisServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temp dir for sentinel.conf");
    let path = dir.path().join("sentinel.conf");
    std::fs::write(&path, conf).expect("write sentinel.conf");
    let path = path.to_str().expect("a UTF-8 path").to_string();
    let sentinel = RedisServer::spawn(bin, &[&path, "--sentinel"], &[], free_port);
    (sentinel, dir)
}

/// A Sentinel that watches no service, with [`SENTINEL_PASSWORD`]; killed
/// when dropped, with its config's temp dir.
pub fn lone_sentinel() -> (RedisServer, tempfile::TempDir) {
    spawn_sentinel(&server_bin(), &format!("requirepass {SENTINEL_PASSWORD}\n"))
}

/// A Sentinel, with [`SENTINEL_PASSWORD`], told that the data node `node`
/// is the primary of [`SERVICE`], whatever it is: given a replica, it names
/// a primary that says it is a replica, as in a failover under way.
pub fn sentinel_watching(node: &RedisServer) -> (RedisServer, tempfile::TempDir) {
    spawn_sentinel(
        &server_bin(),
        &format!(
            "sentinel monitor {SERVICE} 127.0.0.1 {} 1\n\
             sentinel auth-pass {SERVICE} {DATA_PASSWORD}\n\
             requirepass {SENTINEL_PASSWORD}\n",
            node.port()
        ),
    )
}

/// A primary that serves TLS (no client certificate asked, no password),
/// watched by one Sentinel without a password, which reaches it over TLS
/// (`tls-replication yes`) and announces it at 127.0.0.1 and its TLS port:
/// an address its certificate, issued for [`tls::SERVER_NAME`] and
/// `localhost`, does not name.
pub struct TlsSentinelSetup {
    /// The CA and the server's certificate.
    pub certs: Certificates,
    /// The primary; its plain port is the test's own.
    pub primary: RedisServer,
    /// The primary's TLS port, the one the Sentinel announces.
    pub tls_port: u16,
    /// The Sentinel.
    pub sentinel: RedisServer,
    /// Holds the Sentinel's config file.
    _config: tempfile::TempDir,
}

impl TlsSentinelSetup {
    /// Starts the primary and the Sentinel, and waits until the Sentinel
    /// has read the primary's INFO over TLS.
    pub fn start() -> Self {
        let certs = Certificates::generate();
        let (primary, tls_port) = start_tls(&certs);
        let file = |name: &str| certs.path(name).to_str().expect("a UTF-8 path").to_string();
        let (sentinel, config) = spawn_sentinel(
            &tls_server_bin(),
            &format!(
                "sentinel monitor {SERVICE} 127.0.0.1 {tls_port} 1\n\
                 sentinel down-after-milliseconds {SERVICE} 1000\n\
                 tls-replication yes\n\
                 tls-cert-file {}\n\
                 tls-key-file {}\n\
                 tls-ca-cert-file {}\n",
                file("server.pem"),
                file("server.key"),
                file("ca.pem"),
            ),
        );
        let setup = TlsSentinelSetup {
            certs,
            primary,
            tls_port,
            sentinel,
            _config: config,
        };
        wait_until(
            SENTINEL_TIMEOUT,
            "Sentinel to read the primary's INFO",
            || {
                let fields: Vec<String> = redis::cmd("SENTINEL")
                    .arg("MASTER")
                    .arg(SERVICE)
                    .query(&mut setup.sentinel.conn())
                    .expect("SENTINEL MASTER");
                fields
                    .chunks(2)
                    .find(|pair| pair[0] == "info-refresh")
                    .and_then(|pair| pair[1].parse::<u64>().ok())
                    .is_some_and(|ms| ms < 10_000)
            },
        );
        setup
    }

    /// `rediss+sentinel://` URL of the Sentinel.
    pub fn url(&self) -> String {
        format!("rediss+sentinel://{}/{SERVICE}", self.sentinel.host_port())
    }
}
