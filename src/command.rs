//! The subcommands, each printing its output to stdout, and the one place
//! where a failure becomes its one-line message on stderr and its exit code.
//! Output that cannot be written (a full disk, a closed pipe) is a failure
//! too, never a panic.

use std::io::Write;
use std::time::SystemTime;

use tracing::error;

use crate::acl::{self, Access};
use crate::cli::{Cli, Command, RulesArg, RunArgs};
use crate::credentials::without_credentials;
use crate::error::Error;
use crate::exit::Exit;
use crate::pass::End;
use crate::push::Gateway;
use crate::report::{Format, Report};
use crate::script::protocol::RESERVED_PREFIX;
use crate::script::{Dialect, Script};
use crate::{metrics, push, run, shutdown};

/// Runs the subcommand `cli` names and returns the exit code; a failure is
/// reported on stderr first.
pub fn main(cli: &Cli) -> Exit {
    let result = match &cli.command {
        Command::Run(args) => run(args),
        Command::Check(rules) => check(rules),
        Command::Scripts(rules) => scripts(rules),
        Command::Acl => acl(),
    };
    match result {
        Ok(exit) => exit,
        Err(err) => {
            report_failure(&err, cli.log_format.into());
            err.exit_code()
        }
    }
}

/// `redis-janitor run`: one pass, then the report, then the push; a failed
/// run's cause is returned after its report is printed.
fn run(args: &RunArgs) -> Result<Exit, Error> {
    let redis_host = std::env::var("REDIS_HOST").ok();
    let settings = args.settings(redis_host.as_deref())?;
    let pushgateway = args.pushgateway(&settings.source)?;
    // One thread is enough: the job mostly waits on its connections, and on
    // a shared node the other cores are better left to Redis and its clients.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Error::System(format!("cannot start the async runtime: {err}")))?;
    let ended = runtime.block_on(run_and_push(&settings, args, pushgateway.as_ref()));
    // A push a signal abandoned may still hold its thread: the process
    // exits without waiting for it.
    runtime.shutdown_background();
    ended
}

/// The run, its report and its push, with the signals listened to
/// throughout: during the run a signal stops the pass (see [`shutdown`]),
/// and during the push it ends the push (the run's exit code stays its own).
async fn run_and_push(
    settings: &run::Settings,
    args: &RunArgs,
    pushgateway: Option<&Gateway>,
) -> Result<Exit, Error> {
    let signals = shutdown::listen()
        .map_err(|err| Error::System(format!("cannot install signal handlers: {err}")))?;
    let outcome = run::run(settings, signals.stop()).await;
    // Taken now, so that a signal while the report is printed counts as one
    // after the run.
    let signal = signals.after_run();
    let report = Report::new(&outcome, &settings.task);
    let printed = print(&match args.output.into() {
        Format::Json => format!("{}\n", report.to_json()),
        Format::Text => report.to_text(),
    });
    // Every run that got this far pushes its metrics, after its report,
    // whatever its ending: the push's own failure is only logged.
    if let Some(gateway) = pushgateway {
        let exit = match &printed {
            Ok(()) => outcome.exit(),
            Err(err) => err.exit_code(),
        };
        let run = metrics::Run {
            outcome: &outcome,
            task: &settings.task,
            exit,
            ended: SystemTime::now(),
        };
        // The run is over and reported: a signal during the push only ends
        // the push, and the run's exit code is its own.
        push::push(gateway, &run, signal).await;
    }
    printed?;
    match outcome.into_end() {
        End::Failed(err) => Err(err),
        end => Ok(end.exit()),
    }
}

/// `redis-janitor check`: validate the rules, compile every variant of the
/// script for them, and print the effective rules. It accepts exactly what
/// `run` accepts before it connects.
fn check(rules: &RulesArg) -> Result<Exit, Error> {
    let rules = rules.load()?;
    Script::variants(&rules)?;
    print(&format!(
        "# {}: {} rules, valid\n# keys under {} are the job's own (its lease and checkpoint): \
         no rule ever selects them, not even pattern = \"*\"\n{}",
        rules.source,
        rules.rules.len(),
        RESERVED_PREFIX.escape_ascii(),
        rules.to_toml()
    ))?;
    Ok(Exit::Success)
}

/// `redis-janitor scripts`: the clean script's variants for the rules, and
/// their SHA-1.
fn scripts(rules: &RulesArg) -> Result<Exit, Error> {
    let rules = rules.load()?;
    let mut text = String::new();
    for script in Script::variants(&rules)? {
        text += &format!(
            "{} {} {:<20} {}\n",
            script.name,
            script.version,
            script.variant(),
            script.sha
        );
    }
    print(&text)?;
    Ok(Exit::Success)
}

/// `redis-janitor acl`: the `ACL SETUSER` lines for the job's users.
fn acl() -> Result<Exit, Error> {
    let mut text = String::new();
    for (dialect, servers) in [
        (Dialect::Redis7, "Redis 7 and later, Valkey"),
        (Dialect::Legacy, "Redis 6.2"),
    ] {
        for (name, access, what) in [
            ("janitor", Access::Clean, "runs and dry runs"),
            ("janitor-ro", Access::DryRun, "dry runs only"),
        ] {
            text += &format!(
                "# {servers}: {what}\n{}\n",
                acl::setuser_line(name, access, dialect)
            );
        }
    }
    print(&text)?;
    Ok(Exit::Success)
}

/// Writes `text` to stdout, all of it, or fails with why.
fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|err| Error::System(format!("cannot write to stdout: {err}")))
}

/// Reports a failure on stderr, as one line: plain text, or a JSON log event
/// when logs are JSON so that stderr stays machine-readable.
fn report_failure(err: &Error, log_format: Format) {
    // A message may quote what the user gave, a URL with its password
    // where a file was expected, say.
    let err = without_credentials(&err.to_string());
    match log_format {
        Format::Text => eprintln!("redis-janitor: error: {err}"),
        Format::Json => error!(error = %err, "run failed"),
    }
}
