//! redis-janitor cleans a Redis keyspace by rules: one SCAN pass, run a
//! stretch at a time by one EVALSHA of a versioned Lua script that re-checks
//! every key and deletes it or sets its TTL atomically in Redis.
//!
//! Layout, each module using only those above it (data flows down the list:
//! settings -> rules -> script -> pass per node -> run -> report -> exit code):
//! - [`exit`]: exit codes and stop reasons (a leaf)
//! - [`error`]: the failures callers branch on, and their exit codes
//! - [`file`]: the small files the job is given, read with a bound
//! - [`credentials`]: credentials hidden in the text the job prints
//! - [`glob`]: the Redis-compatible glob matcher, and its Lua translation
//! - [`rules`]: the rules file: read, bound, validate, the built-in default
//! - [`script`]: the clean script: compiled for the rules, its protocol,
//!   its variants, SHA-1, SCRIPT LOAD and calls
//! - [`acl`]: the Redis commands the job sends: ACL lines, and the probes
//!   that check them before a pass
//! - [`tls`]: the TLS options (CA, client certificate, server name,
//!   verification), read and checked, and why a handshake failed
//! - [`connection`]: the Redis URL, credentials and connecting
//! - [`topology`]: standalone, cluster or Sentinel -> the nodes to clean,
//!   and a shard's new primary after a failover
//! - [`lease`]: one run per node: the lease, its token, the job's own keys
//! - [`checkpoint`]: where a node's pass stands, and whether a run resumes it
//! - [`cap`]: the caps on the keys a run acts on, shared by its nodes
//! - [`pacer`]: the size of each call, and the pauses between calls (share
//!   of Redis's time, rate limit)
//! - [`progress`]: the share of the keyspace a SCAN cursor has covered,
//!   the time left, and the progress lines or bars that show them
//! - [`replica`]: the replicas' lag behind a primary, which pauses a
//!   writing pass (`--max-replica-lag`)
//! - [`declared`]: the declared-keys mode's step: the job's SCAN, its keys
//!   grouped by slot, a call per group
//! - [`pass`]: one pass over one node: script calls (or declared-keys
//!   steps) from its start cursor back to 0, under the lease
//! - [`node`]: one node's work: INFO checks, variant, probes, load, lease,
//!   checkpoint, pass, transient faults retried and failovers followed
//! - [`run`]: one run: its nodes cleaned at once, and how their outcomes
//!   merge
//! - [`report`]: the run's report, as text or JSON
//! - [`metrics`]: the run's metrics for Prometheus, in the text format
//! - [`push`]: the one PUT of those metrics to a Pushgateway
//! - [`shutdown`]: SIGTERM/SIGINT as a stop request
//! - [`logging`]: text or JSON logs on stderr
//! - [`cli`], [`command`]: the command line (clap lives there only), the
//!   subcommands and their output

pub mod acl;
pub mod cap;
pub mod checkpoint;
pub mod cli;
pub mod command;
pub mod connection;
pub mod credentials;
pub mod declared;
pub mod error;
pub mod exit;
pub mod file;
pub mod glob;
pub mod lease;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod pacer;
pub mod pass;
pub mod progress;
pub mod push;
pub mod replica;
pub mod report;
pub mod rules;
pub mod run;
pub mod script;
pub mod shutdown;
pub mod tls;
pub mod topology;
