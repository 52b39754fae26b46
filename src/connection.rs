//! Where Redis is and how to reach it: the URL (or `REDIS_HOST`), the password
//! file, the TLS settings, a display form that never shows a password, and
//! opening the connection with timeouts, named in `CLIENT LIST`.
//!
//! A [`Target`] keeps the address it connects to apart from the name the
//! server's TLS certificate is verified against, so that [`Target::at`] can
//! point the same credentials and TLS settings at another node.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::io::AsyncDNSResolver;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisFuture,
};
use tracing::warn;

use crate::credentials;
use crate::error::Error;
use crate::file;
use crate::tls::{Tls, TlsOptions};

/// The URL used when neither `--url`/`REDIS_URL` nor `REDIS_HOST` is set.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// The default `--timeout`: for connecting, and for each reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The name every connection of the job gives itself (`CLIENT SETNAME`), so
/// that `CLIENT LIST` shows which connections are the job's.
pub const CLIENT_NAME: &str = "redis-janitor";

/// A resolved Redis endpoint with its credentials.
#[derive(Clone)]
pub struct Target {
    /// The address connected to (host and port as given, never the TLS
    /// server name), the credentials and the db.
    info: ConnectionInfo,
    /// The TLS settings for `rediss://`; `None` for plain TCP.
    tls: Option<Tls>,
}

impl Target {
    /// Resolves the endpoint. Precedence: `url` (from `--url` or `REDIS_URL`),
    /// then `host` (`REDIS_HOST=host[:port]`, what older manifests set), then
    /// [`DEFAULT_URL`], only when neither is set: one set but empty (a
    /// variable that expanded to nothing, a ConfigMap's empty key) is a
    /// mistake, never a wish for whatever server listens on 127.0.0.1:6379.
    /// A password file replaces the URL's password. The TLS
    /// options need a `rediss://` URL; verification is turned off only by
    /// `--tls-insecure`, never by the URL alone.
    pub fn resolve(
        url: Option<&str>,
        host: Option<&str>,
        password_file: Option<&Path>,
        tls: &TlsOptions,
    ) -> Result<Target, Error> {
        let url = match (url.map(str::trim), host.map(str::trim)) {
            (Some(url), _) if !url.is_empty() => url.to_string(),
            (None | Some(""), Some(host)) if host.contains("://") => host.to_string(),
            (None | Some(""), Some(host)) if !host.is_empty() => format!("redis://{host}"),
            (None, None) => DEFAULT_URL.to_string(),
            (None, Some(_)) => {
                return Err(Error::Usage(
                    "REDIS_HOST is empty: give host:port, or leave it unset \
                     to use redis://127.0.0.1:6379"
                        .to_string(),
                ));
            }
            (Some(_), _) => {
                return Err(Error::Usage(
                    "--url (REDIS_URL) is empty: give a Redis URL, or leave it unset \
                     to use REDIS_HOST or redis://127.0.0.1:6379"
                        .to_string(),
                ));
            }
        };
        let mut info = url.as_str().into_connection_info().map_err(|err| {
            // Where the crate parsed the URL, its own words say what is
            // wrong; where it did not, the URL parser's do.
            let why = redis::parse_redis_url(&url).map(|_| refusal(&err));
            invalid_url(&url, why.as_deref())
        })?;
        if let ConnectionAddr::Tcp(_, 0) | ConnectionAddr::TcpTls { port: 0, .. } = info.addr() {
            return Err(invalid_url(&url, Some("port 0")));
        }
        if info.redis_settings().db() < 0 {
            return Err(invalid_url(&url, Some("a database number below 0")));
        }
        if let Some(path) = password_file {
            let password = read_password(path)?;
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        // redis-rs would send CLIENT SETINFO with its own name, one more
        // command for the job's ACL to allow (or for ACL LOG to list); the
        // job names its connections with CLIENT SETNAME instead.
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        info = info.set_redis_settings(settings);
        let tls = tls_of(info.addr(), tls)?;
        Ok(Target { info, tls })
    }

    /// The same credentials, db and TLS settings (CA, client certificate,
    /// server name, verification) for the node at `host:port`: how one
    /// target built from the user's URL reaches every node of a topology.
    pub fn at(&self, host: &str, port: u16) -> Target {
        let addr = match &self.tls {
            Some(tls) => ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: tls.is_insecure(),
                tls_params: None,
            },
            None => ConnectionAddr::Tcp(host.to_string(), port),
        };
        Target {
            info: self.info.clone().set_addr(addr),
            tls: self.tls.clone(),
        }
    }

    /// Opens a connection (redis-rs's multiplexed connection, with its reply
    /// timeout and async I/O) and names it [`CLIENT_NAME`]. A user whose ACL
    /// does not allow `CLIENT SETNAME` gets a warning, not a failure: the
    /// name is for people, the pass does not need it.
    pub async fn connect(&self, timeout: Duration) -> Result<MultiplexedConnection, Error> {
        let client = self.client()?;
        let mut config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        if let Some(resolver) = self.resolver() {
            config = config.set_dns_resolver(resolver);
        }
        // Once per process, which is one run, whatever its number of nodes.
        static INSECURE_WARNING: std::sync::Once = std::sync::Once::new();
        if self.tls.as_ref().is_some_and(Tls::is_insecure) {
            INSECURE_WARNING.call_once(|| {
                warn!(
                    target = %self,
                    "TLS certificate verification is off (--tls-insecure): the connection \
                     is encrypted, but anyone in the path can pose as the server"
                )
            });
        }
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|err| self.failure(&format!("cannot connect to {self}"), &err))?;
        // With TLS 1.3 the server checks the client's certificate after the
        // client's side of the handshake is done: its refusal shows here, as
        // the reply to the first command.
        let named = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(CLIENT_NAME)
            .exec_async(&mut conn)
            .await;
        match named.map_err(|err| self.failure(&format!("CLIENT SETNAME on {self}"), &err)) {
            Err(Error::Permission(message)) => warn!(%message, "the connection stays unnamed"),
            other => other?,
        }
        Ok(conn)
    }

    /// `host:port`, as shown in the report, the logs and the metrics' `node`
    /// label: the address connected to, never the TLS server name; an IPv6
    /// host in brackets (`[::1]:6379`), as in a URL, so that the port stands
    /// apart.
    pub fn address(&self) -> String {
        match self.info.addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. }
                if host.contains(':') =>
            {
                format!("[{}]:{port}", host.trim_matches(['[', ']']))
            }
            other => other.to_string(),
        }
    }

    /// The host it connects to.
    pub fn host(&self) -> String {
        match self.info.addr() {
            redis::ConnectionAddr::Tcp(host, _) | redis::ConnectionAddr::TcpTls { host, .. } => {
                host.clone()
            }
            other => other.to_string(),
        }
    }

    /// Its TLS settings; `None` for plain TCP.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// Whether it connects with TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.info.addr(), redis::ConnectionAddr::TcpTls { .. })
    }

    /// The user, password and database it connects with.
    pub fn redis_settings(&self) -> &redis::RedisConnectionInfo {
        self.info.redis_settings()
    }

    /// The redis-rs client: for TLS, its address holds the name to verify
    /// (rustls sends it as SNI and checks the certificate against it) and
    /// [`Target::resolver`] maps that name to the address connected to.
    fn client(&self) -> Result<redis::Client, Error> {
        let client = match (&self.tls, self.info.addr()) {
            (Some(tls), ConnectionAddr::TcpTls { host, port, .. }) => {
                let addr = ConnectionAddr::TcpTls {
                    host: tls.server_name().unwrap_or(host).to_string(),
                    port: *port,
                    insecure: tls.is_insecure(),
                    tls_params: None,
                };
                let info = self.info.clone().set_addr(addr);
                match tls.certificates() {
                    Some(certificates) => redis::Client::build_with_tls(info, certificates),
                    None => redis::Client::open(info),
                }
            }
            _ => redis::Client::open(self.info.clone()),
        };
        client.map_err(|err| Error::from_redis(&format!("cannot use {self}"), &err))
    }

    /// A resolver from the TLS server name to the address connected to, when
    /// they differ.
    fn resolver(&self) -> Option<ConnectTo> {
        let name = self.tls.as_ref()?.server_name()?;
        match self.info.addr() {
            ConnectionAddr::TcpTls { host, port, .. } if host != name => Some(ConnectTo {
                host: host.clone(),
                port: *port,
            }),
            _ => None,
        }
    }

    /// The failure for a redis-rs error in `context`: a failed TLS
    /// handshake as a failure to connect, in words that name the option to
    /// look at; anything else by its kind.
    fn failure(&self, context: &str, err: &redis::RedisError) -> Error {
        match self.tls.as_ref().and_then(|tls| tls.explain(err)) {
            Some(why) => Error::Connection(format!("cannot connect to {self}: {why}")),
            // A port that serves plain text reads the handshake as the start
            // of a command and never answers it.
            None if self.tls.is_some() && err.is_timeout() => {
                let failed = Error::from_redis(context, err);
                let message = format!(
                    "{failed} (a TLS handshake; a port that serves plain text never answers one: \
                     is {} a TLS port?)",
                    self.address()
                );
                failed.reworded(message)
            }
            None => Error::from_redis(context, err),
        }
    }
}

/// Shows `[user@]host:port/db`, and `rediss://` for TLS; never a password.
/// The host is the one connected to; a TLS server name is not shown.
impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.tls {
            Some(_) => "rediss",
            None => "redis",
        };
        let settings = self.info.redis_settings();
        if let ConnectionAddr::Unix(path) = self.info.addr() {
            return write!(f, "unix://{}?db={}", path.display(), settings.db());
        }
        let user = settings
            .username()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        write!(f, "{scheme}://{user}{}/{}", self.address(), settings.db())
    }
}

/// Resolves any name to one host and port: with `--tls-server-name`, the
/// connection's address holds the name to verify, and the socket must go to
/// the address the user gave.
struct ConnectTo {
    /// The host connected to: a DNS name or an IP address.
    host: String,
    /// Its port.
    port: u16,
}

impl AsyncDNSResolver for ConnectTo {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        _name: &'b str,
        _port: u16,
    ) -> RedisFuture<'a, Box<dyn Iterator<Item = SocketAddr> + Send + 'a>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((self.host.as_str(), self.port)).await?;
            Ok(Box::new(addrs) as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}

/// The TLS settings for the URL's address: `None` for plain TCP, where no
/// TLS option may be given; for `rediss://`, the options read and checked.
/// The URL's `#insecure`, which turns verification off in redis-rs, needs
/// `--tls-insecure` too, so that verification never turns off silently.
fn tls_of(addr: &ConnectionAddr, options: &TlsOptions) -> Result<Option<Tls>, Error> {
    match addr {
        ConnectionAddr::TcpTls { insecure, .. } => {
            if *insecure && !options.insecure {
                return Err(Error::Usage(
                    "the URL's #insecure would turn TLS certificate verification off: \
                     remove it, or turn verification off explicitly with --tls-insecure \
                     (REDIS_TLS_INSECURE=true)"
                        .into(),
                ));
            }
            Tls::load(options).map(Some)
        }
        _ if options.flags().is_empty() => Ok(None),
        _ => Err(Error::Usage(format!(
            "{}: the TLS options need a rediss:// URL, and the URL is plain redis://",
            options.flags().join(", ")
        ))),
    }
}

/// The usage error for `url` (`why`: what is wrong with it, if known): the
/// URL without its credentials, and why, from the URL parser where `why`
/// says nothing (a URL that does not parse, or whose scheme is not Redis's).
pub fn invalid_url(url: &str, why: Option<&str>) -> Error {
    let why = match (why, url::Url::parse(url)) {
        (Some(why), _) => why.to_string(),
        (None, Err(err)) => err.to_string(),
        (None, Ok(parsed)) => format!("the scheme {}:// is not a Redis one", parsed.scheme()),
    };
    refused_url(
        "Redis URL",
        url,
        &why,
        "redis://host[:port][/db], with user:password@ before the host if needed, \
         rediss://... or unix:///path",
    )
}

/// The usage error for `url`, a `what` ("Redis URL", "Sentinel URL"): the
/// URL without its credentials, `why` it is refused and the form `expected`.
/// A value without `://` is not shown at all: where a URL's parts cannot be
/// told apart, none can be hidden, and the value may be a password given
/// in the URL's place or a query such as `?pass=` after a scheme without
/// its `//`.
pub fn refused_url(what: &str, url: &str, why: &str, expected: &str) -> Error {
    let shown = match url.contains("://") {
        true => credentials::quoted(url),
        false => "(not shown: without \"://\" it may hold a password)".to_string(),
    };
    Error::Usage(format!(
        "invalid {what} {shown}: {why} (expected {expected})"
    ))
}

/// Why the redis crate refused a URL it parsed, in its words (`Missing
/// hostname`, `Invalid protocol version: 4`): its message without the error
/// kind that it adds (` - InvalidClientConfig`).
fn refusal(err: &redis::RedisError) -> String {
    err.to_string()
        .replacen(&format!(" - {:?}", err.kind()), "", 1)
}

/// Reads a password from a file such as a mounted Kubernetes Secret, without
/// its trailing newline: one line of UTF-8 text.
pub fn read_password(path: &Path) -> Result<String, Error> {
    let refused = |why: &str| Error::Usage(format!("the password file {}: {why}", path.display()));
    let bytes = file::read(path).map_err(|why| refused(&format!("cannot read it: {why}")))?;
    let text = String::from_utf8(bytes).map_err(|_| refused("not UTF-8 text"))?;
    let password = text.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(refused("it is empty"));
    }
    if password.contains(['\r', '\n']) {
        return Err(refused(
            "it holds more than one line; a password is one line",
        ));
    }
    Ok(password.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No TLS option given.
    const NO_TLS: TlsOptions = TlsOptions {
        ca_file: None,
        cert_file: None,
        key_file: None,
        server_name: None,
        insecure: false,
    };

    #[test]
    fn url_wins_over_redis_host() {
        let target = Target::resolve(Some("redis://a:1"), Some("b:2"), None, &NO_TLS).unwrap();
        assert_eq!(target.address(), "a:1");
    }

    #[test]
    fn an_ipv6_address_is_in_brackets() {
        let target = Target::resolve(Some("redis://[::1]:31411"), None, None, &NO_TLS).unwrap();
        assert_eq!(target.address(), "[::1]:31411");
        assert_eq!(target.at("fe80::2", 7000).address(), "[fe80::2]:7000");
        let target = Target::resolve(Some("redis://[::ffff:10.0.0.1]"), None, None, &NO_TLS);
        assert_eq!(target.unwrap().address(), "[::ffff:10.0.0.1]:6379");
        let target = Target::resolve(Some("redis://[::1]:31411/2"), None, None, &NO_TLS).unwrap();
        assert_eq!(target.to_string(), "redis://[::1]:31411/2");
    }

    #[test]
    fn an_invalid_url_is_refused_for_what_is_wrong_with_it() {
        for (url, why) in [
            ("redis://u:pw@h:1/abc", "Invalid database number"),
            (
                "redis://u:pw@0.0.0.0:1",
                "Cannot connect to a wildcard address",
            ),
            ("redis:///0", "Missing hostname"),
            ("rediss://u:pw@h:1/#x", "only #insecure"),
            ("redis://h:1/?protocol=4", "Invalid protocol version: 4"),
            ("unix://relative.sock?pass=pw", "Missing path"),
            ("redis://h:1:2", "invalid port number"),
            ("http://u:pw@h:1", "the scheme http:// is not a Redis one"),
        ] {
            let err = Target::resolve(Some(url), None, None, &NO_TLS)
                .err()
                .expect("refused")
                .to_string();
            assert!(err.contains(&format!(": {why}")), "{url}: {err}");
            assert!(!err.contains("InvalidClientConfig"), "{err}");
            assert!(!err.contains("pw"), "{err}");
        }
    }

    #[test]
    fn a_unix_socket_is_named_by_its_path() {
        let url = Some("unix:///run/redis.sock?db=3&pass=s3cret");
        let target = Target::resolve(url, None, None, &NO_TLS).unwrap();
        assert_eq!(target.address(), "/run/redis.sock");
        assert_eq!(target.to_string(), "unix:///run/redis.sock?db=3");
    }

    #[test]
    fn redis_host_is_used_when_no_url() {
        let target = Target::resolve(None, Some("cache.example:6380"), None, &NO_TLS).unwrap();
        assert_eq!(target.to_string(), "redis://cache.example:6380/0");
        // An empty URL (REDIS_URL= in a manifest) leaves REDIS_HOST to it.
        let target = Target::resolve(Some(""), Some("h:1"), None, &NO_TLS).unwrap();
        assert_eq!(target.address(), "h:1");
        let target = Target::resolve(None, None, None, &NO_TLS).unwrap();
        assert_eq!(target.address(), "127.0.0.1:6379");
        // Set but empty, either is a mistake, not the default server.
        for (url, host) in [(Some(" "), None), (None, Some(" ")), (Some(""), Some(""))] {
            let err = Target::resolve(url, host, None, &NO_TLS)
                .err()
                .expect("refused");
            assert!(err.to_string().contains("is empty"), "{err}");
        }
    }

    #[test]
    fn display_never_shows_the_password() {
        let target =
            Target::resolve(Some("redis://janitor:s3cret@h:1/4"), None, None, &NO_TLS).unwrap();
        assert_eq!(target.to_string(), "redis://janitor@h:1/4");
        let err = Target::resolve(Some("redis://u:s3cret@h:notaport"), None, None, &NO_TLS)
            .err()
            .expect("invalid");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn password_file_replaces_the_urls_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "from-file\n").unwrap();
        let target =
            Target::resolve(Some("redis://u:old@h:1"), None, Some(&path), &NO_TLS).unwrap();
        assert_eq!(target.info.redis_settings().password(), Some("from-file"));
        assert_eq!(target.info.redis_settings().username(), Some("u"));
        std::fs::write(&path, "pass word\r\n").unwrap();
        assert_eq!(read_password(&path).unwrap(), "pass word");
        let refusal = |contents: &[u8]| {
            std::fs::write(&path, contents).unwrap();
            let err = Target::resolve(None, None, Some(&path), &NO_TLS)
                .err()
                .expect("refused");
            assert!(matches!(err, Error::Usage(_)), "{err:?}");
            err.to_string()
        };
        assert!(refusal(b"\n").contains("is empty"));
        let two_lines = refusal(b"first-secret\nsecond\n");
        assert!(two_lines.contains("more than one line"), "{two_lines}");
        assert!(!two_lines.contains("secret"), "{two_lines}");
        assert!(refusal(b"\xff\xfe").contains("not UTF-8"));
        let huge = vec![b'x'; 2 << 20];
        assert!(refusal(&huge).contains("larger than 1024 KiB"));
    }

    #[test]
    fn tls_options_need_a_rediss_url() {
        let options = TlsOptions {
            cert_file: Some("c.pem".into()),
            key_file: Some("k.pem".into()),
            ..TlsOptions::default()
        };
        let err = Target::resolve(Some("redis://h:1"), None, None, &options)
            .err()
            .expect("refused");
        assert!(matches!(err, Error::Usage(_)), "{err:?}");
        assert!(err.to_string().contains("--tls-cert-file"), "{err}");
        assert!(err.to_string().contains("rediss://"), "{err}");
    }

    #[test]
    fn the_urls_insecure_needs_tls_insecure() {
        let url = Some("rediss://h:1/#insecure");
        let err = Target::resolve(url, None, None, &NO_TLS)
            .err()
            .expect("refused");
        assert!(matches!(err, Error::Usage(_)), "{err:?}");
        assert!(err.to_string().contains("--tls-insecure"), "{err}");
        let insecure = TlsOptions {
            insecure: true,
            ..TlsOptions::default()
        };
        let target = Target::resolve(url, None, None, &insecure).unwrap();
        assert!(target.tls.as_ref().is_some_and(Tls::is_insecure));
        // --tls-insecure alone is enough: the URL need not say it too.
        let target = Target::resolve(Some("rediss://h:1"), None, None, &insecure).unwrap();
        assert!(target.tls.as_ref().is_some_and(Tls::is_insecure));
    }

    #[test]
    fn only_a_tls_connection_that_times_out_asks_whether_the_port_is_a_tls_one() {
        let timeout =
            || redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        let refused =
            || redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let plain = Target::resolve(Some("redis://h:1"), None, None, &NO_TLS).unwrap();
        let tls = Target::resolve(Some("rediss://h:1"), None, None, &NO_TLS).unwrap();
        let hint = "is h:1 a TLS port?";
        let message = tls.failure("cannot connect", &timeout()).to_string();
        assert!(message.contains(hint), "{message}");
        for (target, err) in [(&plain, timeout()), (&tls, refused()), (&plain, refused())] {
            let message = target.failure("cannot connect", &err).to_string();
            assert!(!message.contains("TLS"), "{message}");
        }
    }

    #[test]
    fn the_address_is_the_one_connected_to_not_the_tls_name() {
        let options = TlsOptions {
            server_name: Some("redis.test".into()),
            ..TlsOptions::default()
        };
        let target =
            Target::resolve(Some("rediss://u:pw@10.0.0.1:7000/2"), None, None, &options).unwrap();
        assert_eq!(target.address(), "10.0.0.1:7000");
        assert_eq!(target.to_string(), "rediss://u@10.0.0.1:7000/2");
        let resolver = target.resolver().expect("a resolver for the name");
        assert_eq!((resolver.host.as_str(), resolver.port), ("10.0.0.1", 7000));
        let client = target.client().unwrap();
        let addr = client.get_connection_info().addr().clone();
        assert!(
            matches!(addr, ConnectionAddr::TcpTls { ref host, port: 7000, insecure: false, .. } if host == "redis.test"),
            "{addr:?}"
        );
    }

    #[test]
    fn at_keeps_credentials_db_and_tls_for_another_address() {
        let options = TlsOptions {
            server_name: Some("redis.test".into()),
            ..TlsOptions::default()
        };
        let url = Some("rediss://u:pw@10.0.0.1:7000/2");
        let target = Target::resolve(url, None, None, &options).unwrap();
        let node = target.at("10.0.0.2", 7001);
        assert_eq!(node.address(), "10.0.0.2:7001");
        assert_eq!(node.to_string(), "rediss://u@10.0.0.2:7001/2");
        assert_eq!(node.info.redis_settings().password(), Some("pw"));
        assert_eq!(
            node.tls.as_ref().and_then(Tls::server_name),
            Some("redis.test")
        );
        let plain = Target::resolve(Some("redis://h:1/3"), None, None, &NO_TLS)
            .unwrap()
            .at("h2", 2);
        assert_eq!(plain.to_string(), "redis://h2:2/3");
        assert!(plain.tls.is_none());
    }
}
