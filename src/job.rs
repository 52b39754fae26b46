//! One run of the job: validate the settings, connect, check what the server
//! supports, load the script, run the pass and build the report.
//!
//! Data flows one way: arguments -> [`Settings`] -> connection and script ->
//! pass -> [`Report`].

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::sync::watch;
use tracing::info;

use crate::cli::{Format, RunArgs};
use crate::connection::Target;
use crate::error::Error;
use crate::exit::Stop;
use crate::pass;
use crate::report::{Counts, Report, ServerInfo};
use crate::rules::Rules;
use crate::scripts::{Dialect, Mode, Script};

/// Everything a run needs, validated before any connection is made.
pub struct Settings {
    /// Where Redis is.
    pub target: Target,
    /// The rules to apply.
    pub rules: Rules,
    /// Write nothing, count what would be done.
    pub dry_run: bool,
    /// Connect and reply timeout.
    pub timeout: Duration,
    /// Pass settings.
    pub pass: pass::Options,
    /// Report format.
    pub output: Format,
}

impl Settings {
    /// Resolves the arguments; `redis_host` is the `REDIS_HOST` variable.
    pub fn new(args: &RunArgs, redis_host: Option<&str>) -> Result<Settings, Error> {
        let rules = load_rules(args.rules.as_deref())?;
        let target = Target::resolve(
            args.url.as_deref(),
            redis_host,
            args.password_file.as_deref(),
            args.tls_ca_file.as_deref(),
        )?;
        Ok(Settings {
            target,
            rules,
            dry_run: args.dry_run,
            timeout: args.timeout,
            pass: pass::Options {
                batch_size: args.batch_size as usize,
                max_call_time: args.max_call_time,
                rate_limit: args.rate_limit,
                max_runtime: args.max_runtime,
                progress_interval: args.progress_interval,
            },
            output: args.output,
        })
    }
}

/// The rules from `path`, or the built-in rules.
pub fn load_rules(path: Option<&std::path::Path>) -> Result<Rules, Error> {
    Ok(match path {
        Some(path) => Rules::load(path)?,
        None => Rules::builtin(),
    })
}

/// Runs the job. Always returns a report, partial when the run failed, and
/// the failure itself for the exit code.
pub async fn run(
    settings: &Settings,
    stop: watch::Receiver<Option<Stop>>,
) -> (Report, Option<Error>) {
    let started = Instant::now();
    let mut server = None;
    let mut script = None;
    let result = async {
        let (conn, info) = prepare(settings).await?;
        server = Some(info.clone());
        let mode = if settings.dry_run {
            Mode::ReadOnly
        } else {
            Mode::Write
        };
        let dialect = Dialect::for_version(&info.version);
        let loaded = script.insert(Script::clean(&settings.rules, mode, dialect)?);
        let mut load_conn = conn.clone();
        loaded.load(&mut load_conn).await?;
        info!(
            server = %settings.target,
            redis_version = %info.version,
            script = %loaded.name,
            script_version = %loaded.version,
            script_sha = %loaded.sha,
            variant = %loaded.variant(),
            rules = %settings.rules.source,
            dry_run = settings.dry_run,
            "pass started"
        );
        Ok(pass::run(conn, &settings.rules, loaded, &settings.pass, stop).await)
    }
    .await;
    let (counts, complete, stopped_by, error) = match result {
        Ok(outcome) => (
            outcome.counts,
            outcome.complete,
            outcome.stopped_by,
            outcome.error,
        ),
        Err(error) => (Counts::new(&settings.rules), false, None, Some(error)),
    };
    let mut report = Report::new(
        &settings.rules,
        script.as_ref(),
        &counts,
        started.elapsed(),
        settings.dry_run,
    );
    report.complete = complete;
    report.stopped_by = stopped_by;
    report.error = error.as_ref().map(Error::to_string);
    report.server = server;
    log_finished(&report);
    (report, error)
}

/// One log event with the outcome of a run that did not fail, so log
/// pipelines see how it ended (the report itself goes to stdout; a failure is
/// logged by `main` as its one-line cause).
fn log_finished(report: &Report) {
    if report.error.is_some() {
        return;
    }
    let acted: u64 = report.rules.iter().map(|rule| rule.keys).sum();
    info!(
        complete = report.complete,
        stopped_by = ?report.stopped_by,
        keys_scanned = report.keys_scanned,
        keys_matched = report.keys_matched,
        keys_acted = acted,
        vanished = report.vanished,
        seconds = report.duration_seconds,
        "pass finished"
    );
}

/// Connects and checks that the server can run this pass.
async fn prepare(settings: &Settings) -> Result<(MultiplexedConnection, ServerInfo), Error> {
    let mut conn = settings.target.connect(settings.timeout).await?;
    let server = info_section(&mut conn, "server").await?;
    if field(&server, "redis_mode") == Some("cluster") {
        return Err(Error::Unsupported(format!(
            "{} is a Redis Cluster node; cluster mode is not supported yet",
            settings.target
        )));
    }
    if let Some(rule) = settings
        .rules
        .rules
        .iter()
        .find(|r| r.conditions.idle_above.is_some())
    {
        let memory = info_section(&mut conn, "memory").await?;
        let policy = field(&memory, "maxmemory_policy").unwrap_or_default();
        if policy.contains("lfu") {
            return Err(Error::Unsupported(format!(
                "rule {:?} uses idle_above, but {} has maxmemory-policy {policy}: \
                 Redis does not track idle time under an LFU policy; nothing was touched",
                rule.name, settings.target
            )));
        }
    }
    let info = ServerInfo {
        version: field(&server, "redis_version")
            .unwrap_or("unknown")
            .to_string(),
        address: settings.target.address(),
    };
    Ok((conn, info))
}

/// One section of INFO.
async fn info_section(conn: &mut MultiplexedConnection, section: &str) -> Result<String, Error> {
    redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .map_err(|err| Error::from_redis(&format!("INFO {section} failed"), &err))
}

/// The value of `name` in INFO output (`name:value` lines).
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_found_by_exact_name() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n";
        assert_eq!(field(info, "redis_version"), Some("7.0.15"));
        assert_eq!(field(info, "redis_mode"), Some("standalone"));
        assert_eq!(field(info, "redis"), None);
    }
}
