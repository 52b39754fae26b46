//! What the user typed: the command line and its environment variables
//! (clap). Turning this into validated settings is `job::Settings`' job.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Cleans a Redis keyspace by rules: one SCAN pass, one atomic Lua script
/// call per batch of keys.
#[derive(Debug, Parser)]
#[command(name = "redis-janitor", version, about, max_term_width = 100)]
pub struct Cli {
    /// Log format on stderr; the level comes from RUST_LOG (default: info).
    #[arg(
        long,
        global = true,
        env = "JANITOR_LOG_FORMAT",
        value_enum,
        default_value_t = Format::Text
    )]
    pub log_format: Format,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one pass over the keyspace, print the report, exit.
    Run(RunArgs),
    /// Validate a rules file and print the effective rules; touches no Redis.
    Check {
        /// The rules file to check (default: the built-in rules).
        #[arg(long, env = "JANITOR_RULES", value_name = "FILE")]
        rules: Option<PathBuf>,
    },
    /// List the variants of the clean script for the rules, with their
    /// version and SHA-1 (the rules are compiled into the script).
    Scripts {
        /// The rules file (default: the built-in rules).
        #[arg(long, env = "JANITOR_RULES", value_name = "FILE")]
        rules: Option<PathBuf>,
    },
}

/// Options of `run`. Each has an environment variable, for Kubernetes
/// manifests; the command line wins over the environment.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Redis URL: redis://[user[:password]@]host[:port][/db], or rediss:// for
    /// TLS. When neither this nor REDIS_URL is set, REDIS_HOST=host:port is
    /// used, then redis://127.0.0.1:6379.
    #[arg(long, env = "REDIS_URL", value_name = "URL", hide_env_values = true)]
    pub url: Option<String>,

    /// File holding the password (e.g. a mounted Secret); replaces the URL's.
    #[arg(long, env = "REDIS_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// PEM file of CA certificates to trust for rediss:// (default: the
    /// public web roots).
    #[arg(long, env = "REDIS_TLS_CA_FILE", value_name = "FILE")]
    pub tls_ca_file: Option<PathBuf>,

    /// Rules file (default: the built-in rules; see `check`).
    #[arg(long, env = "JANITOR_RULES", value_name = "FILE")]
    pub rules: Option<PathBuf>,

    /// Decide and count exactly as a real run would, but write nothing.
    #[arg(long, env = "JANITOR_DRY_RUN")]
    pub dry_run: bool,

    /// The most keys one script call looks at (the COUNTs of its SCAN
    /// steps); calls usually stop sooner, at --max-call-time.
    #[arg(
        long,
        env = "JANITOR_BATCH_SIZE",
        value_name = "N",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub batch_size: u32,

    /// How long one script call may hold Redis: the script stops its SCAN
    /// steps when the budget is spent, by the server's clock, so other
    /// clients never wait long behind it.
    #[arg(
        long,
        env = "JANITOR_MAX_CALL_TIME",
        value_name = "DURATION",
        default_value = "1ms",
        value_parser = positive_duration
    )]
    pub max_call_time: Duration,

    /// Scan at most this many keys per second (default: as fast as the
    /// --max-call-time budget allows).
    #[arg(
        long,
        env = "JANITOR_RATE_LIMIT",
        value_name = "KEYS_PER_SECOND",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub rate_limit: Option<u32>,

    /// Stop cleanly after this long (e.g. 4m30s); the report then says
    /// "complete": false and the exit code is still 0.
    #[arg(long, env = "JANITOR_MAX_RUNTIME", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_runtime: Option<Duration>,

    /// Timeout for connecting and for each reply from Redis.
    #[arg(
        long,
        env = "JANITOR_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    pub timeout: Duration,

    /// How often to log progress while the pass runs.
    #[arg(
        long,
        env = "JANITOR_PROGRESS_INTERVAL",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub progress_interval: Duration,

    /// Format of the final report on stdout (json: exactly one object).
    #[arg(long, env = "JANITOR_OUTPUT", value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// Text for people, JSON for machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Text,
    /// JSON.
    Json,
}

/// A humantime duration greater than zero.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be greater than 0".into()),
        Ok(duration) => Ok(duration),
        Err(err) => Err(err.to_string()),
    }
}
