//! What the user typed: the command line and its environment variables, with
//! clap, which lives here and nowhere else in the library. Every flag is
//! defined once; its default is the library's own constant. The command line
//! wins over the environment. Turning this into plain settings for the
//! library is [`RunArgs::settings`].

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::connection::{DEFAULT_TIMEOUT, Target, read_password};
use crate::credentials::without_credentials;
use crate::error::Error;
use crate::lease::DEFAULT_LOCK_TTL;
use crate::node::{DEFAULT_RETRIES, Task};
use crate::pacer::{DEFAULT_MAX_CALL_TIME, DEFAULT_MAX_KEYS, DEFAULT_MAX_SERVER_SHARE, Limits};
use crate::pass::{self, DEFAULT_PROGRESS_INTERVAL};
use crate::push::{self, Gateway};
use crate::replica::DEFAULT_MAX_REPLICA_LAG;
use crate::report::Format;
use crate::rules::{MAX_DURATION, Rules};
use crate::run::Settings;
use crate::script::KeyMode;
use crate::tls::TlsOptions;
use crate::topology::{SentinelAuth, Source};

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
        default_value_t = FormatArg::Text
    )]
    pub log_format: FormatArg,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one pass over the keyspace, print the report, exit.
    // Boxed: its options are many times the size of the other subcommands'.
    Run(Box<RunArgs>),
    /// Validate a rules file and print the effective rules; touches no Redis.
    Check(RulesArg),
    /// List the variants of the clean script for the rules, with their
    /// version and SHA-1 (the rules are compiled into the script).
    Scripts(RulesArg),
    /// Print the ACL SETUSER lines for the job's Redis user: one for real
    /// and dry runs, one for dry runs only, for Redis 7+ and for Redis 6.2.
    Acl,
}

/// The rules file option, shared by the subcommands that read rules.
#[derive(Debug, Args)]
pub struct RulesArg {
    /// Rules file (default: the built-in rules; see `check`).
    #[arg(long, env = "JANITOR_RULES", value_name = "FILE")]
    pub rules: Option<PathBuf>,
}

impl RulesArg {
    /// The rules from the file, or the built-in rules.
    pub fn load(&self) -> Result<Rules, Error> {
        Ok(match &self.rules {
            Some(path) => Rules::load(path)?,
            None => Rules::builtin(),
        })
    }
}

/// Options of `run`. Each has an environment variable, for Kubernetes
/// manifests.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Redis URL: redis://[user[:password]@]host[:port][/db], or rediss:// for
    /// TLS. For a Redis Cluster, seed nodes: repeat --url, or list hosts
    /// comma-separated (redis://u@a:6379,b:6379). For Sentinel:
    /// redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/SERVICE[/db]
    /// (the URL's credentials are the data nodes'). A Unix socket:
    /// unix:///path/redis.sock[?db=N][&user=U][&pass=P]. When this is unset
    /// or empty, REDIS_HOST=host:port is used; when that is unset too,
    /// redis://127.0.0.1:6379.
    #[arg(long, env = "REDIS_URL", value_name = "URL", hide_env_values = true)]
    pub url: Vec<String>,

    /// File holding the password (e.g. a mounted Secret); replaces the URL's.
    #[arg(long, env = "REDIS_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// File holding the Sentinels' own password (sentinel.conf's
    /// requirepass), for redis+sentinel:// URLs.
    #[arg(long, env = "REDIS_SENTINEL_PASSWORD_FILE", value_name = "FILE")]
    pub sentinel_password_file: Option<PathBuf>,

    /// The Sentinels' own ACL user, for redis+sentinel:// URLs (default:
    /// the default user).
    #[arg(long, env = "REDIS_SENTINEL_USERNAME", value_name = "USER")]
    pub sentinel_username: Option<String>,

    /// PEM file of CA certificates to trust for rediss:// (default: the
    /// public web roots).
    #[arg(long, env = "REDIS_TLS_CA_FILE", value_name = "FILE")]
    pub tls_ca_file: Option<PathBuf>,

    /// PEM client certificate for mutual TLS (servers with
    /// tls-auth-clients yes); needs --tls-key-file.
    #[arg(long, env = "REDIS_TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "REDIS_TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// Verify the server's certificate against this name instead of the
    /// URL's host (e.g. when connecting to an IP address).
    #[arg(long, env = "REDIS_TLS_SERVER_NAME", value_name = "NAME")]
    pub tls_server_name: Option<String>,

    /// Verify no server certificate (encrypted, but not authenticated);
    /// warns on every run. A rediss:// URL's #insecure needs it too.
    #[arg(long, env = "REDIS_TLS_INSECURE")]
    pub tls_insecure: bool,

    #[command(flatten)]
    pub rules: RulesArg,

    /// Decide and count exactly as a real run would, but write nothing.
    #[arg(long, env = "JANITOR_DRY_RUN")]
    pub dry_run: bool,

    /// With --dry-run: read from a replica of each cluster primary, or of
    /// the primary Sentinel names, instead of the primary.
    // Its need of --dry-run is checked in `settings`: clap's `requires`
    // would take `JANITOR_FROM_REPLICAS=false` for the flag given.
    #[arg(long, env = "JANITOR_FROM_REPLICAS")]
    pub from_replicas: bool,

    /// How many cluster nodes are cleaned at once, each with its own
    /// connection and pace (default: all primaries).
    #[arg(
        long,
        env = "JANITOR_CONCURRENCY",
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub concurrency: Option<u32>,

    /// The most keys one script call looks at (the COUNTs of its SCAN
    /// steps); calls usually stop sooner, at --max-call-time.
    #[arg(
        long,
        env = "JANITOR_BATCH_SIZE",
        value_name = "N",
        default_value_t = DEFAULT_MAX_KEYS,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub batch_size: u32,

    /// How long one script call may hold Redis: the script stops its SCAN
    /// steps when the budget is spent, by its own stopwatch, so other
    /// clients never wait long behind it.
    #[arg(
        long,
        env = "JANITOR_MAX_CALL_TIME",
        value_name = "DURATION",
        default_value_t = HumanDuration(DEFAULT_MAX_CALL_TIME),
        value_parser = positive_duration
    )]
    pub max_call_time: HumanDuration,

    /// The share of Redis's time the calls may take, from 0.001 to
    /// 1 (full speed): the job pauses between calls so that, over any
    /// second, they hold Redis for at most this share of it, plus one call.
    #[arg(
        long,
        env = "JANITOR_MAX_SERVER_SHARE",
        value_name = "FRACTION",
        default_value_t = DEFAULT_MAX_SERVER_SHARE,
        value_parser = share
    )]
    pub max_server_share: f64,

    /// Scan at most this many keys per second (default: as fast as
    /// --max-server-share allows).
    #[arg(
        long,
        env = "JANITOR_RATE_LIMIT",
        value_name = "KEYS_PER_SECOND",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub rate_limit: Option<u32>,

    /// Pause the calls while a replica lags more than this far behind the
    /// primary (bytes of the replication stream it has not acknowledged:
    /// 16MiB, 512KB, 1GB; MB is 10^6 bytes, MiB 2^20), or `off`. Replicas
    /// acknowledge about once a second, so keep it well above a second of
    /// the pass's writes. Dry runs never pause.
    #[arg(
        long,
        env = "JANITOR_MAX_REPLICA_LAG",
        value_name = "SIZE",
        default_value_t = ReplicaLag(Some(DEFAULT_MAX_REPLICA_LAG)),
        value_parser = replica_lag
    )]
    pub max_replica_lag: ReplicaLag,

    /// Stop cleanly after this long (e.g. 4m30s); the report then says
    /// "complete": false and the exit code is still 0.
    #[arg(long, env = "JANITOR_MAX_RUNTIME", value_name = "DURATION", value_parser = positive_duration)]
    pub max_runtime: Option<HumanDuration>,

    /// Start a new pass, whatever the checkpoint of the last one says.
    #[arg(long, env = "JANITOR_RESTART")]
    pub restart: bool,

    /// Resume a pass from its checkpoint only if it was saved within this
    /// long (also the checkpoint's expiry); set it to a few of the
    /// schedule's intervals, so a pass resumes across runs, even after a
    /// missed one, but never from a stale one.
    #[arg(
        long,
        env = "JANITOR_RESUME_MAX_AGE",
        value_name = "DURATION",
        value_parser = expiry,
        default_value_t = HumanDuration(DEFAULT_RESUME_MAX_AGE)
    )]
    pub resume_max_age: HumanDuration,

    /// The lease's expiry: one run per node holds the lease, renewed while
    /// it runs, and another run skips the node; this is how long a crashed
    /// run blocks the next one (at least 100ms).
    #[arg(
        long,
        env = "JANITOR_LOCK_TTL",
        value_name = "DURATION",
        value_parser = positive_duration,
        default_value_t = HumanDuration(DEFAULT_LOCK_TTL)
    )]
    pub lock_ttl: HumanDuration,

    /// Take no lease: another run may clean the same node at the same time
    /// (each action stays atomic, but the load doubles); --lock-ttl is
    /// then unused.
    #[arg(long, env = "JANITOR_NO_LOCK")]
    pub no_lock: bool,

    /// The most keys the run acts on (deletes or expires), over all rules:
    /// beyond, the run stops and exits 1 (each rule's own cap is `max_keys`
    /// in the rules file).
    #[arg(long, env = "JANITOR_MAX_KEYS", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_keys: Option<u64>,

    /// How many times in a row a node's work is retried after a transient
    /// fault (a lost connection, a timeout, LOADING, BUSY, a failover), with
    /// delays from 100ms doubling to 5s, with jitter; a call that succeeds
    /// starts the count again. 0: fail at the first fault.
    #[arg(long, env = "JANITOR_RETRIES", value_name = "N", default_value_t = DEFAULT_RETRIES)]
    pub retries: usize,

    /// Timeout for connecting and for each reply from Redis.
    #[arg(
        long,
        env = "JANITOR_TIMEOUT",
        value_name = "DURATION",
        value_parser = positive_duration,
        default_value_t = HumanDuration(DEFAULT_TIMEOUT)
    )]
    pub timeout: HumanDuration,

    /// How often to log progress while the pass runs.
    #[arg(
        long,
        env = "JANITOR_PROGRESS_INTERVAL",
        value_name = "DURATION",
        value_parser = positive_duration,
        default_value_t = HumanDuration(DEFAULT_PROGRESS_INTERVAL)
    )]
    pub progress_interval: HumanDuration,

    /// Estimate the memory the deletes give back: the script sums `MEMORY
    /// USAGE` of each key before it deletes it (an extra command per
    /// deleted key; see docs/performance.md for its cost).
    #[arg(long, env = "JANITOR_ESTIMATE_FREED")]
    pub estimate_freed: bool,

    /// How the script calls get their keys: `server`, the script runs SCAN
    /// inside Redis (cheapest); `declared`, the job runs SCAN and each call
    /// declares the keys it cleans, grouped by hash slot, for servers and
    /// proxies that refuse keys a script does not declare; `auto`, `server`
    /// until a server refuses it so, then `declared` on that node.
    #[arg(long, env = "JANITOR_KEY_MODE", value_enum, default_value_t = KeyModeArg::Auto)]
    pub key_mode: KeyModeArg,

    /// Format of the final report on stdout (json: exactly one object).
    #[arg(long, env = "JANITOR_OUTPUT", value_enum, default_value_t = FormatArg::Text)]
    pub output: FormatArg,

    /// Push the run's metrics to this Prometheus Pushgateway at the end of
    /// every run, with one PUT: http[s]://[user[:password]@]host[:port][/path]
    /// (see docs/metrics.md). A failed push is logged, and never changes the
    /// exit code.
    #[arg(
        long,
        env = "JANITOR_PUSHGATEWAY",
        value_name = "URL",
        hide_env_values = true
    )]
    pub pushgateway: Option<String>,

    /// The grouping key's instance the metrics are pushed under (default:
    /// the Redis address without credentials: the first seed's host:port,
    /// or the Sentinel service's name).
    #[arg(
        long,
        env = "JANITOR_PUSHGATEWAY_INSTANCE",
        value_name = "NAME",
        requires = "pushgateway"
    )]
    pub pushgateway_instance: Option<String>,

    /// The Pushgateway's basic auth user; replaces the URL's.
    #[arg(
        long,
        env = "JANITOR_PUSHGATEWAY_USERNAME",
        value_name = "USER",
        requires = "pushgateway"
    )]
    pub pushgateway_username: Option<String>,

    /// File holding the Pushgateway's basic auth password (e.g. a mounted
    /// Secret); replaces the URL's.
    #[arg(
        long,
        env = "JANITOR_PUSHGATEWAY_PASSWORD_FILE",
        value_name = "FILE",
        requires = "pushgateway"
    )]
    pub pushgateway_password_file: Option<PathBuf>,

    /// How long the push may take, from connecting to the Pushgateway's
    /// answer.
    #[arg(
        long,
        env = "JANITOR_PUSHGATEWAY_TIMEOUT",
        value_name = "DURATION",
        value_parser = positive_duration,
        default_value_t = HumanDuration(push::DEFAULT_TIMEOUT),
        requires = "pushgateway"
    )]
    pub pushgateway_timeout: HumanDuration,
}

impl RunArgs {
    /// The run's settings; `redis_host` is the `REDIS_HOST` variable.
    pub fn settings(&self, redis_host: Option<&str>) -> Result<Settings, Error> {
        if self.from_replicas && !self.dry_run {
            return Err(Error::Usage(
                "--from-replicas needs --dry-run: a real run writes, on the primaries".into(),
            ));
        }
        let rules = self.rules.load()?;
        let tls = self.tls_options();
        let target = |url: Option<&str>| {
            Target::resolve(url, redis_host, self.password_file.as_deref(), &tls)
        };
        let sentinel_auth = SentinelAuth {
            username: self.sentinel_username.clone(),
            password: self
                .sentinel_password_file
                .as_deref()
                .map(read_password)
                .transpose()?,
        };
        let source = Source::resolve(&self.url, target, &sentinel_auth)?;
        if !matches!(source, Source::Sentinel(_))
            && (self.sentinel_username.is_some() || self.sentinel_password_file.is_some())
        {
            return Err(Error::Usage(
                "--sentinel-username and --sentinel-password-file (REDIS_SENTINEL_USERNAME, \
                 REDIS_SENTINEL_PASSWORD_FILE) apply to redis+sentinel:// URLs only"
                    .into(),
            ));
        }
        Ok(Settings {
            source,
            concurrency: self.concurrency.map(|n| n as usize),
            from_replicas: self.from_replicas,
            task: Task {
                timeout: self.timeout.0,
                rules,
                dry_run: self.dry_run,
                pass: pass::Options {
                    limits: Limits {
                        max_keys: self.batch_size as usize,
                        max_call_time: self.max_call_time()?,
                        rate_limit: self.rate_limit,
                        max_server_share: self.max_server_share,
                    },
                    max_runtime: self.max_runtime.map(|d| d.0),
                    progress_interval: self.progress_interval.0,
                    estimate_freed: self.estimate_freed,
                    max_replica_lag: self.max_replica_lag.0,
                },
                // A dry run takes no lease: its --lock-ttl is not read.
                lock_ttl: (!self.no_lock && !self.dry_run)
                    .then(|| self.lock_ttl())
                    .transpose()?,
                resume_max_age: self.resume_max_age.0,
                restart: self.restart,
                max_keys: self.max_keys,
                retries: self.retries,
                key_mode: self.key_mode.into(),
            },
        })
    }

    /// Where to push the run's metrics, checked before any connection;
    /// `None` without `--pushgateway`. The instance defaults to `source`'s
    /// address.
    pub fn pushgateway(&self, source: &Source) -> Result<Option<Gateway>, Error> {
        let Some(url) = &self.pushgateway else {
            return Ok(None);
        };
        let options = push::Options {
            url,
            instance: self.pushgateway_instance.clone(),
            username: self.pushgateway_username.clone(),
            password: self
                .pushgateway_password_file
                .as_deref()
                .map(read_password)
                .transpose()
                .map_err(|err| Error::Usage(format!("--pushgateway-password-file: {err}")))?,
            timeout: self.pushgateway_timeout.0,
        };
        Gateway::new(options, source).map(Some)
    }

    /// `--lock-ttl`, at least [`MIN_LOCK_TTL`] and three calls long.
    fn lock_ttl(&self) -> Result<Duration, Error> {
        match self.lock_ttl.0 {
            ttl if ttl < MIN_LOCK_TTL => Err(Error::Usage(format!(
                "--lock-ttl {} is too short: at least {} (the lease is renewed with \
                 every call, and at least every third of it)",
                self.lock_ttl,
                HumanDuration(MIN_LOCK_TTL)
            ))),
            ttl if ttl < self.max_call_time.0 * 3 => Err(Error::Usage(format!(
                "--lock-ttl {} is too short for --max-call-time {}: at least three times it \
                 (a call renews the lease as it begins, and must end well within it)",
                self.lock_ttl, self.max_call_time
            ))),
            ttl => Ok(ttl),
        }
    }

    /// `--max-call-time`, at most half of `--timeout`: a call's reply must
    /// come within the timeout, or every call would fail after its work was
    /// done, and be retried.
    fn max_call_time(&self) -> Result<Duration, Error> {
        match self.max_call_time.0 {
            time if time * 2 > self.timeout.0 => Err(Error::Usage(format!(
                "--max-call-time {} is too long for --timeout {}: at most half of it \
                 (a call's reply must come within the timeout)",
                self.max_call_time, self.timeout
            ))),
            time => Ok(time),
        }
    }

    /// The TLS options, as given.
    fn tls_options(&self) -> TlsOptions {
        TlsOptions {
            ca_file: self.tls_ca_file.clone(),
            cert_file: self.tls_cert_file.clone(),
            key_file: self.tls_key_file.clone(),
            server_name: self.tls_server_name.clone(),
            insecure: self.tls_insecure,
        }
    }
}

impl Cli {
    /// The arguments, or the process exits: after `--help` or `--version`
    /// with 0, after bad usage with clap's message and 2 (in the JSON log
    /// format, its first line as the one JSON line of a failed run). A URL
    /// the message quotes (an argument given without `--url`, say) shows
    /// without its credentials.
    pub fn parse_or_exit() -> Cli {
        use clap::error::ErrorKind;
        match Cli::try_parse() {
            Ok(cli) => cli,
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::DisplayHelp
                        | ErrorKind::DisplayVersion
                        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                ) =>
            {
                err.exit()
            }
            Err(err) => {
                let message = without_credentials(&err.render().to_string());
                match requested_log_format() {
                    Format::Json => {
                        crate::logging::init(Format::Json);
                        let first = message.lines().next().unwrap_or_default();
                        let error = first.strip_prefix("error: ").unwrap_or(first);
                        tracing::error!(error, "run failed");
                    }
                    Format::Text => eprint!("{message}"),
                }
                std::process::exit(2)
            }
        }
    }
}

/// The log format the arguments or the environment ask for, read without
/// clap, whose parse failed: `--log-format json` (or `=json`), else
/// `JANITOR_LOG_FORMAT`.
fn requested_log_format() -> Format {
    let args: Vec<String> = std::env::args().collect();
    let given = args
        .iter()
        .enumerate()
        .find_map(|(i, arg)| match arg.as_str() {
            "--log-format" => args.get(i + 1).cloned(),
            _ => arg.strip_prefix("--log-format=").map(str::to_string),
        });
    match given
        .or_else(|| std::env::var("JANITOR_LOG_FORMAT").ok())
        .as_deref()
    {
        Some("json") => Format::Json,
        _ => Format::Text,
    }
}

/// `--key-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyModeArg {
    /// `server`, until a server refuses undeclared keys: then `declared`.
    Auto,
    /// The script runs SCAN inside Redis.
    Server,
    /// The job runs SCAN and each call declares its keys.
    Declared,
}

impl From<KeyModeArg> for Option<KeyMode> {
    fn from(mode: KeyModeArg) -> Option<KeyMode> {
        match mode {
            KeyModeArg::Auto => None,
            KeyModeArg::Server => Some(KeyMode::Server),
            KeyModeArg::Declared => Some(KeyMode::Declared),
        }
    }
}

/// `--output` and `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Human-readable text.
    Text,
    /// JSON.
    Json,
}

impl From<FormatArg> for Format {
    fn from(format: FormatArg) -> Format {
        match format {
            FormatArg::Text => Format::Text,
            FormatArg::Json => Format::Json,
        }
    }
}

/// The default `--resume-max-age`: a day, which covers any schedule up to
/// daily; the manifests set a few of their schedule's intervals.
pub const DEFAULT_RESUME_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The shortest `--lock-ttl`.
const MIN_LOCK_TTL: Duration = Duration::from_millis(100);

/// A duration written the humantime way (`90s`, `4m30s`), which is also how
/// `--help` shows the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = humantime::DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(text).map(HumanDuration)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

/// A duration greater than zero, and at most 100 years.
fn positive_duration(text: &str) -> Result<HumanDuration, String> {
    match text.parse::<HumanDuration>() {
        Ok(HumanDuration(d)) if d.is_zero() => Err("must be greater than 0".into()),
        // Redis refuses an expiry too far out (the lease's and the
        // checkpoint's are these), and a deadline must fit the clock.
        Ok(HumanDuration(d)) if d > MAX_DURATION => Err("must be at most 100 years".into()),
        Ok(duration) => Ok(duration),
        Err(err) => Err(err.to_string()),
    }
}

/// An expiry Redis keeps: a [`positive_duration`] of at least a
/// millisecond (a shorter one would be an expiry of 0, which deletes).
fn expiry(text: &str) -> Result<HumanDuration, String> {
    match positive_duration(text)? {
        HumanDuration(d) if d < Duration::from_millis(1) => Err("must be at least 1ms".into()),
        duration => Ok(duration),
    }
}

/// `--max-replica-lag`: a size in bytes, or `off` (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaLag(pub Option<u64>);

impl fmt::Display for ReplicaLag {
    /// `off`, or the size as it is written: in the largest binary unit
    /// that divides it (`16MiB`), else in bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(bytes) = self.0 else {
            return f.write_str("off");
        };
        let units = [
            ("GiB", bytesize::GIB),
            ("MiB", bytesize::MIB),
            ("KiB", bytesize::KIB),
        ];
        match units
            .iter()
            .find(|(_, size)| bytes >= *size && bytes % size == 0)
        {
            Some((unit, size)) => write!(f, "{}{unit}", bytes / size),
            None => write!(f, "{bytes}"),
        }
    }
}

/// A replica lag bound: `off`, or a size of at least one byte (`16MiB`,
/// `512KB`, `1048576`).
fn replica_lag(text: &str) -> Result<ReplicaLag, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(ReplicaLag(None));
    }
    match text.trim().parse::<ByteSize>() {
        Ok(ByteSize(0)) => Err("must be at least 1 byte, or off".into()),
        Ok(ByteSize(bytes)) => Ok(ReplicaLag(Some(bytes))),
        Err(_) => Err("a size like 16MiB, 512KB or 1048576 (bytes), or off".into()),
    }
}

/// The smallest share of Redis's time the job takes: a call that held Redis
/// 1 ms is then followed by a pause of about a second. Far smaller ones
/// would make pauses that overflow the clock.
const MIN_SHARE: f64 = 0.001;

/// A share of Redis's time: at least [`MIN_SHARE`], at most 1.
fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (MIN_SHARE..=1.0).contains(&share) => Ok(share),
        Ok(_) => Err(format!(
            "must be at least {MIN_SHARE} and at most 1 (1 is full speed)"
        )),
        Err(err) => Err(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_librarys_and_show_as_written() {
        let cli = Cli::parse_from(["redis-janitor", "run"]);
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        let settings = args.settings(None).unwrap();
        assert_eq!(settings.task.timeout, DEFAULT_TIMEOUT);
        let pass = settings.task.pass;
        assert_eq!(pass.limits.max_call_time, DEFAULT_MAX_CALL_TIME);
        assert_eq!(pass.limits.max_server_share, DEFAULT_MAX_SERVER_SHARE);
        assert_eq!(pass.limits.max_keys, DEFAULT_MAX_KEYS as usize);
        assert_eq!(pass.progress_interval, DEFAULT_PROGRESS_INTERVAL);
        assert_eq!(HumanDuration(DEFAULT_TIMEOUT).to_string(), "30s");
        assert_eq!(settings.task.lock_ttl, Some(DEFAULT_LOCK_TTL));
        assert_eq!(settings.task.resume_max_age, DEFAULT_RESUME_MAX_AGE);
        assert!(!settings.task.restart);
        assert_eq!(settings.task.max_keys, None);
        assert_eq!(settings.task.retries, DEFAULT_RETRIES);
        assert_eq!(pass.max_replica_lag, Some(DEFAULT_MAX_REPLICA_LAG));
        assert_eq!(
            ReplicaLag(Some(DEFAULT_MAX_REPLICA_LAG)).to_string(),
            "16MiB"
        );
    }

    /// The settings of `redis-janitor run ARGS`, or the usage error.
    fn settings_of(args: &[&str]) -> Result<crate::run::Settings, String> {
        let cli = Cli::parse_from(["redis-janitor", "run"].iter().chain(args));
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        args.settings(None).map_err(|err| err.to_string())
    }

    #[test]
    fn a_call_fits_twice_in_the_timeout_and_three_times_in_the_lease() {
        let accepted = settings_of(&[
            "--timeout",
            "2s",
            "--max-call-time",
            "1s",
            "--lock-ttl",
            "3s",
        ]);
        let settings = accepted.unwrap();
        assert_eq!(
            settings.task.pass.limits.max_call_time,
            Duration::from_secs(1)
        );
        assert_eq!(settings.task.lock_ttl, Some(Duration::from_secs(3)));
        let refusal = |args: &[&str]| settings_of(args).err().expect("refused");
        let long_call = refusal(&["--timeout", "2s", "--max-call-time", "1001ms"]);
        assert!(long_call.contains("at most half"), "{long_call}");
        let short_lease = ["--max-call-time", "1s", "--lock-ttl", "2999ms"];
        assert!(refusal(&short_lease).contains("three times"));
        // A dry run takes no lease.
        assert!(settings_of(&[&short_lease[..], &["--dry-run"]].concat()).is_ok());
        let dry_run = settings_of(&["--dry-run", "--lock-ttl", "1ms"]).unwrap();
        assert_eq!(dry_run.task.lock_ttl, None);
    }

    #[test]
    fn a_replica_lag_shows_as_it_is_written_and_reads_back() {
        for (bytes, shown) in [
            (Some(16 << 20), "16MiB"),
            (Some(512 * 1024), "512KiB"),
            (Some(3 << 30), "3GiB"),
            (Some(1536 * 1024 * 1024), "1536MiB"),
            (Some(16_000_000), "15625KiB"),
            (Some(1000), "1000"),
            (None, "off"),
        ] {
            assert_eq!(ReplicaLag(bytes).to_string(), shown);
            assert_eq!(replica_lag(shown), Ok(ReplicaLag(bytes)), "{shown}");
        }
    }

    #[test]
    fn a_replica_lag_is_a_size_in_si_or_binary_units_or_off() {
        let lag = |text| replica_lag(text).map(|lag| lag.0);
        assert_eq!(lag("16MB"), Ok(Some(16_000_000)));
        assert_eq!(lag("16mb"), Ok(Some(16_000_000)));
        assert_eq!(lag("512KiB"), Ok(Some(512 * 1024)));
        assert_eq!(lag("1.5 GiB"), Ok(Some(3 << 29)));
        assert_eq!(lag("1048576"), Ok(Some(1 << 20)));
        assert_eq!(lag("off"), Ok(None));
        assert_eq!(lag("OFF"), Ok(None));
        for bad in ["0", "0MB", "-1MB", "16 parsecs", "", "lots"] {
            assert!(lag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_duration_is_above_0_and_at_most_100_years() {
        assert_eq!(
            positive_duration("1ms"),
            Ok(HumanDuration(Duration::from_millis(1)))
        );
        assert_eq!(positive_duration("100y"), Ok(HumanDuration(MAX_DURATION)));
        for bad in ["0s", "100y 1s", "soon"] {
            assert!(positive_duration(bad).is_err(), "{bad}");
        }
        // An expiry of less than a millisecond would be 0 in Redis.
        assert_eq!(expiry("999us"), Err("must be at least 1ms".into()));
        assert_eq!(expiry("1ms"), Ok(HumanDuration(Duration::from_millis(1))));
    }

    #[test]
    fn a_share_is_at_least_a_thousandth_and_at_most_1() {
        assert_eq!(share("1"), Ok(1.0));
        assert_eq!(share("0.1"), Ok(0.1));
        assert_eq!(share("0.001"), Ok(0.001));
        for bad in ["0", "0.0009", "1e-30", "-0.5", "1.01", "NaN", "half"] {
            assert!(share(bad).is_err(), "{bad}");
        }
    }
}
