//! The failures that callers branch on, and the one place that maps outcomes
//! to process exit codes.

use std::fmt;

use crate::exit::Exit;
use crate::rules::RulesError;

/// Why a command failed. Each variant maps to one documented exit code.
#[derive(Debug)]
pub enum Error {
    /// The command line or the environment is wrong (exit 2).
    Usage(String),
    /// The rules file is invalid (exit 2).
    Rules(RulesError),
    /// Redis could not be reached or dropped the connection (exit 1).
    Connection(String),
    /// Redis refused our credentials or a command for lack of permission (exit 1).
    Auth(String),
    /// The server cannot run this pass as configured (exit 1).
    Unsupported(String),
    /// A script failed to load, returned an error or an unexpected reply (exit 1).
    Script(String),
    /// Any other error reply from Redis (exit 1).
    Redis(String),
}

impl Error {
    /// Classifies a redis-rs error by its kind, never by its message text.
    pub fn from_redis(context: &str, err: &redis::RedisError) -> Error {
        use redis::{ErrorKind, ServerErrorKind};
        let message = format!("{context}: {}", one_line(&err.to_string()));
        match err.kind() {
            ErrorKind::AuthenticationFailed | ErrorKind::Server(ServerErrorKind::NoPerm) => {
                Error::Auth(message)
            }
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
            Error::Rules(err) => write!(f, "{err}"),
            Error::Usage(m)
            | Error::Connection(m)
            | Error::Auth(m)
            | Error::Unsupported(m)
            | Error::Script(m)
            | Error::Redis(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<RulesError> for Error {
    fn from(err: RulesError) -> Self {
        Error::Rules(err)
    }
}

/// Collapses a possibly multi-line message into one line.
pub fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}
