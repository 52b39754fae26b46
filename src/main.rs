//! The `redis-janitor` binary: parse the arguments, set up logging, run the
//! subcommand, and turn its result into the exit code.

use std::process::ExitCode;

use clap::Parser;
use redis_janitor::cli::{Cli, Command};
use redis_janitor::{command, logging};

fn main() -> ExitCode {
    // clap exits with code 2 on bad usage, matching our own usage errors.
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let result = match &cli.command {
        Command::Run(args) => command::run(args),
        Command::Check { rules } => command::check(rules.as_deref()),
        Command::Scripts { rules } => command::scripts(rules.as_deref()),
    };
    match result {
        Ok(exit) => exit.into(),
        Err(err) => {
            command::report_failure(&err, cli.log_format);
            err.exit_code().into()
        }
    }
}
