//! The failures callers branch on, and the one place that maps them to exit
//! codes. Redis errors are classified by their kind, never by their text.

use std::fmt;

use crate::exit::Exit;

/// Why a command failed. Each variant maps to one documented exit code.
#[derive(Debug)]
pub enum Error {
    /// The command line or the environment is wrong (exit 2).
    Usage(String),
    /// The rules file is invalid (exit 2).
    Rules(String),
    /// Redis could not be reached or dropped the connection (exit 1).
    Connection(String),
    /// Redis refused the credentials (exit 1).
    Auth(String),
    /// Redis refused a command to this user: its ACL lacks a permission
    /// (exit 1).
    Permission(String),
    /// The server cannot run this pass as configured (exit 1).
    Unsupported(String),
    /// A write reached a replica: the node is not (or no longer) a primary,
    /// as after a failover (exit 1).
    Replica(String),
    /// Redis cannot serve for now: loading its data, busy with a script, a
    /// cluster or a primary in flux (exit 1 if it lasts past the retries).
    Unavailable(String),
    /// The run's lease on a node expired, was lost, or another run took it
    /// over: the run may no longer write there (exit 1 if it lasts).
    LeaseLost(String),
    /// A cap on the keys acted on was reached: a rule selects far more than
    /// it should, and an operator must look (exit 1).
    Capped(String),
    /// A script failed to load, returned an error or an unexpected reply (exit 1).
    Script(String),
    /// The server refuses scripts that touch keys they did not declare: the
    /// declared-keys mode is needed (`--key-mode`; exit 1 unless the job
    /// switches to it by itself).
    Undeclared(String),
    /// Any other error reply from Redis (exit 1).
    Redis(String),
    /// The process itself failed: its runtime, its signal handlers, or
    /// writing its output (exit 1).
    System(String),
}

impl Error {
    /// Classifies a redis-rs error by its kind, never by its message text.
    pub fn from_redis(context: &str, err: &redis::RedisError) -> Error {
        use redis::{ErrorKind, ServerErrorKind};
        let message = format!("{context}: {}", one_line(&err.to_string()));
        match err.kind() {
            ErrorKind::Server(ServerErrorKind::NoPerm) => Error::Permission(message),
            ErrorKind::AuthenticationFailed => Error::Auth(message),
            ErrorKind::Server(ServerErrorKind::ReadOnly) => Error::Replica(message),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask,
            ) => Error::Unavailable(message),
            // The redis crate has no kind for these codes.
            _ if err.code() == Some("BUSY") => Error::Unavailable(message),
            _ if err.code() == Some(LEASE_LOST) => Error::LeaseLost(message),
            _ if err.code() == Some("WRONGPASS") || err.code() == Some("NOAUTH") => {
                Error::Auth(message)
            }
            _ if err.is_io_error()
                || err.is_connection_refusal()
                || err.is_connection_dropped()
                || err.is_timeout() =>
            {
                Error::Connection(message)
            }
            _ => Error::Redis(message),
        }
    }

    /// Whether the failure may pass by itself, so the node's work is tried
    /// again (after a backoff, from its checkpoint): a lost connection or
    /// timeout, a node that is loading, busy, demoted or failing over, a
    /// cluster in flux, a lost lease. Everything else (credentials,
    /// permissions, script errors, OOM, a cap) fails at once.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Connection(_) | Error::Replica(_) | Error::Unavailable(_) | Error::LeaseLost(_)
        )
    }

    /// The same failure, said by `message`.
    pub fn reworded(self, message: String) -> Error {
        match self {
            Error::Usage(_) => Error::Usage(message),
            Error::Rules(_) => Error::Rules(message),
            Error::Connection(_) => Error::Connection(message),
            Error::Auth(_) => Error::Auth(message),
            Error::Permission(_) => Error::Permission(message),
            Error::Unsupported(_) => Error::Unsupported(message),
            Error::Replica(_) => Error::Replica(message),
            Error::Unavailable(_) => Error::Unavailable(message),
            Error::LeaseLost(_) => Error::LeaseLost(message),
            Error::Capped(_) => Error::Capped(message),
            Error::Script(_) => Error::Script(message),
            Error::Undeclared(_) => Error::Undeclared(message),
            Error::Redis(_) => Error::Redis(message),
            Error::System(_) => Error::System(message),
        }
    }

    /// The exit code this failure ends the process with.
    pub fn exit_code(&self) -> Exit {
        match self {
            Error::Usage(_) | Error::Rules(_) => Exit::Usage,
            _ => Exit::Failure,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m)
            | Error::Rules(m)
            | Error::Connection(m)
            | Error::Auth(m)
            | Error::Permission(m)
            | Error::Unsupported(m)
            | Error::Replica(m)
            | Error::Unavailable(m)
            | Error::LeaseLost(m)
            | Error::Capped(m)
            | Error::Script(m)
            | Error::Undeclared(m)
            | Error::Redis(m)
            | Error::System(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// The error code the clean script answers when its run does not hold the
/// node's lease.
pub const LEASE_LOST: &str = "LEASELOST";

/// Collapses a possibly multi-line message into one line.
pub fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_usage_and_rules_errors_exit_2() {
        let all = [
            Error::Usage(String::new()),
            Error::Rules(String::new()),
            Error::Connection(String::new()),
            Error::Auth(String::new()),
            Error::Permission(String::new()),
            Error::Unsupported(String::new()),
            Error::Unavailable(String::new()),
            Error::LeaseLost(String::new()),
            Error::Capped(String::new()),
            Error::Script(String::new()),
            Error::Undeclared(String::new()),
            Error::Redis(String::new()),
            Error::System(String::new()),
        ];
        let codes: Vec<Exit> = all.iter().map(Error::exit_code).collect();
        let mut expected = vec![Exit::Failure; all.len()];
        expected[..2].fill(Exit::Usage);
        assert_eq!(codes, expected);
    }

    #[test]
    fn redis_errors_are_classified_by_kind() {
        use redis::{ErrorKind, RedisError};
        let auth = RedisError::from((ErrorKind::AuthenticationFailed, "no password"));
        let err = Error::from_redis("AUTH", &auth);
        assert!(
            matches!(&err, Error::Auth(m) if m.starts_with("AUTH: ")),
            "{err:?}"
        );
        let other = RedisError::from((ErrorKind::Client, "bad reply"));
        assert!(matches!(Error::from_redis("x", &other), Error::Redis(_)));
    }

    /// The error Redis answers with `reply` (a RESP error line), as the
    /// redis crate gives it to the job.
    fn server_error(reply: &str) -> redis::RedisError {
        match redis::parse_redis_value(format!("-{reply}\r\n").as_bytes()).unwrap() {
            redis::Value::ServerError(err) => err.into(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_server_error_is_transient_or_fails_fast_by_its_code() {
        let transient = [
            (
                "LOADING Redis is loading the dataset in memory",
                "Unavailable",
            ),
            ("BUSY Redis is busy running a script.", "Unavailable"),
            (
                "TRYAGAIN Multiple keys request during rehashing of slot",
                "Unavailable",
            ),
            ("MASTERDOWN Link with MASTER is down", "Unavailable"),
            ("CLUSTERDOWN The cluster is down", "Unavailable"),
            ("MOVED 3999 127.0.0.1:6381", "Unavailable"),
            ("ASK 3999 127.0.0.1:6381", "Unavailable"),
            (
                "READONLY You can't write against a read only replica.",
                "Replica",
            ),
            ("LEASELOST the lease expired or was lost", "LeaseLost"),
        ];
        for (reply, kind) in transient {
            let err = Error::from_redis("call", &server_error(reply));
            assert!(err.is_transient(), "{reply}: {err:?}");
            assert!(format!("{err:?}").starts_with(kind), "{reply}: {err:?}");
        }
        let fatal = [
            "OOM command not allowed when used memory > 'maxmemory'.",
            "NOPERM this user has no permissions to run the 'hset' command",
            "WRONGPASS invalid username-password pair or user is disabled.",
            "NOAUTH Authentication required.",
            "ERR Error running script: user_script:1: Script killed by user with SCRIPT KILL",
            "NOSCRIPT No matching script.",
        ];
        for reply in fatal {
            let err = Error::from_redis("call", &server_error(reply));
            assert!(!err.is_transient(), "{reply}: {err:?}");
        }
        let io = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(Error::from_redis("call", &io).is_transient());
        assert!(!Error::Capped(String::new()).is_transient());
    }

    #[test]
    fn messages_are_one_line() {
        assert_eq!(one_line("a\n  b\r\n\tc "), "a b c");
    }
}
