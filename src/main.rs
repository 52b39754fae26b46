//! The `redis-janitor` binary: parse the arguments, set up logging, run the
//! subcommand, exit with its code.

use std::process::ExitCode;

use redis_janitor::cli::Cli;
use redis_janitor::{command, logging};

fn main() -> ExitCode {
    // Bad usage exits with code 2, matching our own usage errors.
    let cli = Cli::parse_or_exit();
    logging::init(cli.log_format.into());
    command::main(&cli).into()
}
