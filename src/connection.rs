//! Where Redis is and how to reach it: the URL (or `REDIS_HOST`), the password
//! file, a display form that never shows a password, and opening the
//! connection with timeouts, named in `CLIENT LIST`.

use std::path::Path;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionInfo, IntoConnectionInfo};
use tracing::warn;

use crate::error::Error;

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
    info: ConnectionInfo,
    /// PEM CA certificates to trust for `rediss://` instead of the built-in roots.
    tls_ca: Option<Vec<u8>>,
}

impl Target {
    /// Resolves the endpoint. Precedence: `url` (from `--url` or `REDIS_URL`),
    /// then `host` (`REDIS_HOST=host[:port]`, what older manifests set), then
    /// [`DEFAULT_URL`]. A password file replaces the URL's password; a CA
    /// file is trusted for TLS instead of the built-in web roots.
    pub fn resolve(
        url: Option<&str>,
        host: Option<&str>,
        password_file: Option<&Path>,
        tls_ca_file: Option<&Path>,
    ) -> Result<Target, Error> {
        let url = match (non_empty(url), non_empty(host)) {
            (Some(url), _) => url.to_string(),
            (None, Some(host)) if host.contains("://") => host.to_string(),
            (None, Some(host)) => format!("redis://{host}"),
            (None, None) => DEFAULT_URL.to_string(),
        };
        // The URL may hold a password: the message must not repeat it.
        let mut info = url.as_str().into_connection_info().map_err(|err| {
            Error::Usage(format!(
                "invalid Redis URL (expected redis://[user:password@]host[:port][/db] \
                 or rediss://...): {}",
                err.detail().unwrap_or("could not parse it")
            ))
        })?;
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
        let tls_ca = tls_ca_file
            .map(|path| {
                std::fs::read(path).map_err(|err| {
                    Error::Usage(format!(
                        "cannot read the TLS CA file {}: {err}",
                        path.display()
                    ))
                })
            })
            .transpose()?;
        Ok(Target { info, tls_ca })
    }

    /// Opens a connection (redis-rs's multiplexed connection, with its reply
    /// timeout and async I/O) and names it [`CLIENT_NAME`]. A user whose ACL
    /// does not allow `CLIENT SETNAME` gets a warning, not a failure: the
    /// name is for people, the pass does not need it.
    pub async fn connect(&self, timeout: Duration) -> Result<MultiplexedConnection, Error> {
        let client = match &self.tls_ca {
            Some(ca) => redis::Client::build_with_tls(
                self.info.clone(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            ),
            None => redis::Client::open(self.info.clone()),
        }
        .map_err(|err| Error::from_redis(&format!("cannot use {self}"), &err))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|err| Error::from_redis(&format!("cannot connect to {self}"), &err))?;
        let named = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(CLIENT_NAME)
            .exec_async(&mut conn)
            .await;
        match named.map_err(|err| Error::from_redis(&format!("CLIENT SETNAME on {self}"), &err)) {
            Err(Error::Permission(message)) => warn!(%message, "the connection stays unnamed"),
            other => other?,
        }
        Ok(conn)
    }

    /// `host:port`, as shown in the report.
    pub fn address(&self) -> String {
        self.info.addr().to_string()
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

    /// Whether it connects with TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.info.addr(), redis::ConnectionAddr::TcpTls { .. })
    }

    /// The user, password and database it connects with.
    pub fn redis_settings(&self) -> &redis::RedisConnectionInfo {
        self.info.redis_settings()
    }

    /// The same settings (user, password, database, TLS) at another address:
    /// a cluster node, or the primary Sentinel names.
    pub fn at(&self, host: &str, port: u16) -> Target {
        let addr = match self.info.addr() {
            redis::ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => redis::ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => redis::ConnectionAddr::Tcp(host.to_string(), port),
        };
        Target {
            info: self.info.clone().set_addr(addr),
            tls_ca: self.tls_ca.clone(),
        }
    }
}

/// Shows `[user@]host:port/db`, and `rediss://` for TLS; never a password.
impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.info.addr() {
            redis::ConnectionAddr::TcpTls { .. } => "rediss",
            _ => "redis",
        };
        let settings = self.info.redis_settings();
        let user = settings
            .username()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        write!(f, "{scheme}://{user}{}/{}", self.info.addr(), settings.db())
    }
}

/// Reads a password from a file such as a mounted Kubernetes Secret, without
/// its trailing newline.
pub fn read_password(path: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        Error::Usage(format!(
            "cannot read the password file {}: {err}",
            path.display()
        ))
    })?;
    let password = text.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(Error::Usage(format!(
            "the password file {} is empty",
            path.display()
        )));
    }
    Ok(password.to_string())
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_wins_over_redis_host() {
        let target = Target::resolve(Some("redis://a:1"), Some("b:2"), None, None).unwrap();
        assert_eq!(target.address(), "a:1");
    }

    #[test]
    fn redis_host_is_used_when_no_url() {
        let target = Target::resolve(None, Some("cache.example:6380"), None, None).unwrap();
        assert_eq!(target.to_string(), "redis://cache.example:6380/0");
        let target = Target::resolve(Some(""), None, None, None).unwrap();
        assert_eq!(target.address(), "127.0.0.1:6379");
    }

    #[test]
    fn display_never_shows_the_password() {
        let target =
            Target::resolve(Some("redis://janitor:s3cret@h:1/4"), None, None, None).unwrap();
        assert_eq!(target.to_string(), "redis://janitor@h:1/4");
        let err = Target::resolve(Some("redis://u:s3cret@h:notaport"), None, None, None)
            .err()
            .expect("invalid");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn password_file_replaces_the_urls_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "from-file\n").unwrap();
        let target = Target::resolve(Some("redis://u:old@h:1"), None, Some(&path), None).unwrap();
        assert_eq!(target.info.redis_settings().password(), Some("from-file"));
        assert_eq!(target.info.redis_settings().username(), Some("u"));
        std::fs::write(&path, "\n").unwrap();
        assert!(Target::resolve(None, None, Some(&path), None).is_err());
    }
}
