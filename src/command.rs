//! The three subcommands, each printing its output to stdout and returning the
//! exit code; failures come back as typed errors for `main` to report.

use tracing::error;

use crate::cli::{Format, RunArgs};
use crate::error::Error;
use crate::exit::{Exit, Stop};
use crate::job::{self, Settings};
use crate::scripts::Script;
use crate::shutdown;

/// `redis-janitor run`: one pass, then the report.
pub fn run(args: &RunArgs) -> Result<Exit, Error> {
    let redis_host = std::env::var("REDIS_HOST").ok();
    let settings = Settings::new(args, redis_host.as_deref())?;
    // One thread is enough: the job mostly waits on one connection, and on a
    // shared node the other cores are better left to Redis and its clients.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Error::Usage(format!("cannot start the async runtime: {err}")))?;
    let (report, failure) = runtime.block_on(async {
        let stop = shutdown::listen()
            .map_err(|err| Error::Usage(format!("cannot install signal handlers: {err}")))?;
        Ok::<_, Error>(job::run(&settings, stop).await)
    })?;
    match settings.output {
        Format::Json => println!("{}", report.to_json()),
        Format::Text => print!("{}", report.to_text()),
    }
    match failure {
        Some(err) => Err(err),
        None => Ok(report.stopped_by.map_or(Exit::Success, Stop::exit)),
    }
}

/// `redis-janitor check`: validate and print the effective rules.
pub fn check(path: Option<&std::path::Path>) -> Result<Exit, Error> {
    let rules = job::load_rules(path)?;
    println!("# {}: {} rules, valid", rules.source, rules.rules.len());
    print!("{}", rules.to_toml());
    Ok(Exit::Success)
}

/// `redis-janitor scripts`: the clean script's variants for the rules, and
/// their SHA-1.
pub fn scripts(path: Option<&std::path::Path>) -> Result<Exit, Error> {
    let rules = job::load_rules(path)?;
    for script in Script::variants(&rules)? {
        println!(
            "{} {} {:<20} {}",
            script.name,
            script.version,
            script.variant(),
            script.sha
        );
    }
    Ok(Exit::Success)
}

/// Reports a failure on stderr, as one line: plain text, or a JSON log event
/// when logs are JSON so that stderr stays machine-readable.
pub fn report_failure(err: &Error, log_format: Format) {
    match log_format {
        Format::Text => eprintln!("redis-janitor: error: {err}"),
        Format::Json => error!(error = %err, "run failed"),
    }
}
