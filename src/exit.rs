//! Exit codes and stop reasons: the leaf every other module may use, and
//! which uses none of them (like fd's `exit_codes.rs`). The README's exit
//! code table is this file, in prose.

use std::process::ExitCode;

/// Every exit code the binary uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The pass completed, or stopped cleanly at `--max-runtime`.
    Success = 0,
    /// A runtime failure: Redis unreachable, permission refused, script
    /// error, an unwritable stdout, the process's own resources.
    Failure = 1,
    /// Bad usage, settings or rules file, found before any connection:
    /// running again cannot help.
    Usage = 2,
    /// Stopped by SIGINT after finishing the call in flight (128 + 2).
    Interrupted = 130,
    /// Stopped by SIGTERM after finishing the call in flight (128 + 15).
    Terminated = 143,
}

/// Why a pass stopped before the end of the keyspace, when it was asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `--max-runtime` elapsed.
    MaxRuntime,
    /// SIGTERM arrived (Kubernetes stopping the Job).
    Sigterm,
    /// SIGINT arrived (Ctrl-C).
    Sigint,
}

impl Stop {
    /// The exit code of a run this stop ended: a requested stop is not a
    /// failure, a signal is reported as the shell would (128 + signal).
    pub fn exit(self) -> Exit {
        match self {
            Stop::MaxRuntime => Exit::Success,
            Stop::Sigterm => Exit::Terminated,
            Stop::Sigint => Exit::Interrupted,
        }
    }

    /// How the JSON report names it.
    pub fn name(self) -> &'static str {
        match self {
            Stop::MaxRuntime => "max_runtime",
            Stop::Sigterm => "sigterm",
            Stop::Sigint => "sigint",
        }
    }

    /// How the report's text names it.
    pub fn describe(self) -> &'static str {
        match self {
            Stop::MaxRuntime => "max runtime reached",
            Stop::Sigterm => "SIGTERM",
            Stop::Sigint => "SIGINT",
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}
