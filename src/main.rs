//! The `redis-janitor` binary: parse the arguments, set up logging, run the
//! subcommand, exit with its code.

use std::process::ExitCode;

use clap::Parser;
use redis_janitor::cli::Cli;
use redis_janitor::{command, logging};

fn main() -> ExitCode {
    // clap exits with code 2 on bad usage, matching our own usage errors.
    let cli = Cli::parse();
    logging::init(cli.log_format.into());
    command::main(&cli).into()
}
