//! redis-janitor cleans a Redis keyspace by rules: one SCAN pass, run a
//! stretch at a time by one EVALSHA of a versioned Lua script that re-checks
//! every key and deletes it or sets its TTL atomically in Redis.
//!
//! Layout:
//! - [`cli`]: what the user typed (clap, with environment variables)
//! - [`command`]: the `run`, `check` and `scripts` subcommands
//! - [`job`]: one run: settings, connect, check the server, pass, report
//! - [`rules`]: the rules file: parse, validate, the built-in default
//! - [`glob`]: the Redis-compatible glob matcher, and its Lua translation
//! - [`connection`]: the Redis URL, credentials and connecting
//! - [`scripts`]: the clean script: its variants, SHA-1, SCRIPT LOAD
//! - [`lua`]: the rules compiled into the clean script's Lua template
//! - [`pass`]: one pass over one node: script calls from cursor 0 back to 0
//! - [`batch`]: one script call's arguments and reply
//! - [`pacer`]: SCAN steps sized to a per-call time budget, and the rate limit
//! - [`report`]: the counts and their text/JSON rendering
//! - [`shutdown`]: SIGTERM/SIGINT as a stop request
//! - [`logging`]: text or JSON logs on stderr
//! - [`error`]: the failures callers branch on, and their exit codes
//! - [`exit`]: exit codes and stop reasons (a leaf)

pub mod batch;
pub mod cli;
pub mod command;
pub mod connection;
pub mod error;
pub mod exit;
pub mod glob;
pub mod job;
pub mod logging;
pub mod lua;
pub mod pacer;
pub mod pass;
pub mod report;
pub mod rules;
pub mod scripts;
pub mod shutdown;
