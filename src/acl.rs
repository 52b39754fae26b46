//! The Redis commands the job sends, each with the ACL permission that
//! allows it: the one list from which the ACL lines for the job's Redis user
//! are written (`redis-janitor acl`, and the operator's guide), and the
//! probes that check, before a pass, that the user may run every command the
//! pass will send. A call that lacked a permission halfway through its writes
//! would be half-applied; a probe refuses the pass before anything is
//! written, and its message names the command and the permission to add.
//!
//! A probe is a direct call with harmless arguments: on a key of the job's
//! own that never exists ([`PROBE_KEY`]), or a script that returns at once.
//! On a cluster node that does not serve the key's slot the probe is
//! answered with a redirection, which Redis sends only once the ACL allowed
//! the command.
//! A command that Redis does not know (renamed or disabled with
//! `rename-command`) fails its probe with Redis's own message, which names
//! it.

use redis::{ErrorKind, ServerErrorKind};

use crate::error::Error;
use crate::rules::{Action, Rules};
use crate::script::protocol::RESERVED_PREFIX;
use crate::script::{Dialect, Mode};

/// The key the probes name: the job's own, under the reserved prefix that
/// no rule selects; only the `HSET` probe writes it, and deletes it at once.
pub const PROBE_KEY: &str = "__redis-janitor__:probe";

/// SHA-1 of the empty script: probing `EVALSHA` with it gets `NOSCRIPT` (or
/// runs the empty script), either way after Redis checked the permission.
const EMPTY_SCRIPT_SHA: &str = "da39a3ee5e6b4b0d3255bfef95601890afd80709";

/// Every command the job sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Info,
    Dbsize,
    ClientSetname,
    Select,
    ClusterShards,
    ClusterSlots,
    Readonly,
    ScriptLoad,
    Evalsha,
    EvalshaRo,
    Eval,
    EvalRo,
    Scan,
    Time,
    Pttl,
    Type,
    ObjectIdletime,
    MemoryUsage,
    Exists,
    Unlink,
    Pexpire,
    Hget,
    Hmget,
    Hgetall,
    Del,
    Hset,
}

impl Command {
    /// Every command, in the order the ACL lines list them.
    pub const ALL: [Command; 26] = [
        Command::Info,
        Command::Dbsize,
        Command::ClientSetname,
        Command::Select,
        Command::ClusterShards,
        Command::ClusterSlots,
        Command::Readonly,
        Command::ScriptLoad,
        Command::Evalsha,
        Command::EvalshaRo,
        Command::Eval,
        Command::EvalRo,
        Command::Scan,
        Command::Time,
        Command::Pttl,
        Command::Type,
        Command::ObjectIdletime,
        Command::MemoryUsage,
        Command::Exists,
        Command::Unlink,
        Command::Pexpire,
        Command::Hget,
        Command::Hmget,
        Command::Hgetall,
        Command::Del,
        Command::Hset,
    ];

    /// The command as Redis names it, e.g. `OBJECT IDLETIME`.
    pub fn name(self) -> &'static str {
        match self {
            Command::Info => "INFO",
            Command::Dbsize => "DBSIZE",
            Command::ClientSetname => "CLIENT SETNAME",
            Command::Select => "SELECT",
            Command::ClusterShards => "CLUSTER SHARDS",
            Command::ClusterSlots => "CLUSTER SLOTS",
            Command::Readonly => "READONLY",
            Command::ScriptLoad => "SCRIPT LOAD",
            Command::Evalsha => "EVALSHA",
            Command::EvalshaRo => "EVALSHA_RO",
            Command::Eval => "EVAL",
            Command::EvalRo => "EVAL_RO",
            Command::Scan => "SCAN",
            Command::Time => "TIME",
            Command::Pttl => "PTTL",
            Command::Type => "TYPE",
            Command::ObjectIdletime => "OBJECT IDLETIME",
            Command::MemoryUsage => "MEMORY USAGE",
            Command::Exists => "EXISTS",
            Command::Unlink => "UNLINK",
            Command::Pexpire => "PEXPIRE",
            Command::Hget => "HGET",
            Command::Hmget => "HMGET",
            Command::Hgetall => "HGETALL",
            Command::Hset => "HSET",
            Command::Del => "DEL",
        }
    }

    /// The ACL permission that allows it, e.g. `+object|idletime`.
    pub fn permission(self) -> String {
        format!("+{}", self.name().to_lowercase().replace(' ', "|"))
    }

    /// Why the job sends it, for the messages of [`Command::refused`]: the
    /// commands the job probes, and `INFO`. (A refused `CLIENT SETNAME` is
    /// only a warning, and `SELECT` and `SCRIPT LOAD` name themselves in
    /// their own errors.)
    fn purpose(self) -> &'static str {
        match self {
            Command::Info => "which the job reads the server's version and settings with",
            Command::Dbsize => "which the job counts the keys for its report with",
            Command::MemoryUsage => {
                "which the clean script estimates the memory its deletes give back with"
            }
            Command::ClusterShards | Command::ClusterSlots => {
                "which the job finds the cluster's nodes with"
            }
            Command::Readonly => "which lets a dry run read from a cluster replica",
            Command::Evalsha | Command::EvalshaRo => "which runs the clean script",
            Command::Eval | Command::EvalRo => {
                "which sends the clean script again after a NOSCRIPT reply"
            }
            Command::Hget | Command::Hmget | Command::Hgetall | Command::Hset | Command::Del => {
                "which the job keeps the node's lease, checkpoint and last success with"
            }
            _ => "which the clean script calls",
        }
    }

    /// Whether the script variant for `mode` on `dialect` may send it at
    /// all, whatever the rules.
    fn used_by(self, mode: Mode, dialect: Dialect) -> bool {
        let read_only = mode == Mode::ReadOnly && dialect == Dialect::Redis7;
        match self {
            Command::Evalsha | Command::Eval => !read_only,
            Command::EvalshaRo | Command::EvalRo => read_only,
            // On Redis 6.2 a real run's script reads the keys of its
            // unconditional deletes first (see `writable` in the script).
            Command::Exists => mode == Mode::ReadOnly || dialect == Dialect::Legacy,
            Command::Readonly => mode == Mode::ReadOnly,
            Command::ClusterShards => dialect == Dialect::Redis7,
            Command::ClusterSlots => dialect == Dialect::Legacy,
            Command::Unlink
            | Command::Pexpire
            | Command::Hmget
            | Command::Hgetall
            | Command::Hset
            | Command::Del => mode == Mode::Write,
            _ => true,
        }
    }

    /// A direct call of the command that changes nothing, to check the user
    /// may run it; `None` for the commands the job checks by using them.
    fn probe(self) -> Option<redis::Cmd> {
        let mut cmd = redis::cmd(self.name().split(' ').next().unwrap_or_default());
        match self {
            Command::Info
            | Command::ClientSetname
            | Command::Select
            | Command::ClusterShards
            | Command::ClusterSlots
            | Command::Readonly
            | Command::ScriptLoad => {
                return None;
            }
            Command::Evalsha | Command::EvalshaRo => cmd.arg(EMPTY_SCRIPT_SHA).arg(0),
            Command::Eval | Command::EvalRo => cmd.arg("return 0").arg(0),
            Command::Scan => cmd.arg(0).arg("MATCH").arg(PROBE_KEY).arg("COUNT").arg(1),
            Command::Time | Command::Dbsize => &mut cmd,
            Command::MemoryUsage => cmd.arg("USAGE").arg(PROBE_KEY),
            Command::ObjectIdletime => cmd.arg("IDLETIME").arg(PROBE_KEY),
            Command::Pexpire => cmd.arg(PROBE_KEY).arg(1),
            Command::Pttl
            | Command::Type
            | Command::Exists
            | Command::Unlink
            | Command::Hgetall
            | Command::Del => cmd.arg(PROBE_KEY),
            Command::Hget | Command::Hmget => cmd.arg(PROBE_KEY).arg("token"),
            // The one probe that writes: [`probe`] deletes the key after it
            // (DEL is probed before).
            Command::Hset => cmd.arg(PROBE_KEY).arg("probe").arg(1),
        };
        Some(cmd)
    }

    /// The error for a reply of Redis refusing this command to the job:
    /// a missing permission names the one to add.
    pub fn refused(self, server: &str, err: &redis::RedisError) -> Error {
        let unanswered = Error::from_redis("", err);
        if unanswered.is_transient() && !matches!(unanswered, Error::Replica(_)) {
            // Not refused: unanswered, or not yet (a timeout, LOADING...).
            let context = format!("{server}: {}, {}", self.name(), self.purpose());
            return Error::from_redis(&context, err);
        }
        let context = format!("{server} refused {}, {}", self.name(), self.purpose());
        match self.advise(Error::from_redis(&context, err)) {
            Error::Replica(message) => Error::Unsupported(format!(
                "{message}: a real run needs the primary (a dry run works on a replica)"
            )),
            Error::Redis(message) => Error::Unsupported(message),
            other => other,
        }
    }

    /// `err` from sending this command, with the permission to add when it
    /// is a missing one: the command's, or, when Redis refused the key (a
    /// probe's, [`PROBE_KEY`]: the job's own), the key pattern of the job's
    /// own keys.
    pub fn advise(self, err: Error) -> Error {
        match err {
            Error::Permission(message) if refuses_a_key(&message) => Error::Permission(format!(
                "{message}; the Redis user's key patterns must allow the job's own keys: add ~{}* \
                     to its ACL (`redis-janitor acl` prints the lines)",
                String::from_utf8_lossy(RESERVED_PREFIX)
            )),
            Error::Permission(message) => Error::Permission(format!(
                "{message}; add {} to the Redis user's ACL",
                self.permission()
            )),
            other => other,
        }
    }
}

/// Whether an error's `message` says Redis refused a key rather than the
/// command: the one place the job tells them apart by their text, since
/// both have the one error kind (a command's `NOPERM`: Redis 6.2 and 7.0
/// "no permissions to access one of the keys used as arguments", 7.2 and
/// later, Valkey "No permissions to access a key"; a script's `ERR`: 6.2
/// and 7.0 "The user executing the script can't access at least one of the
/// keys mentioned in the command arguments", 8.2, Valkey "ACL failure in
/// script: No permissions to access a key"; a command refused: "... to run
/// the '...' command").
pub fn refuses_a_key(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("no permissions to access")
        || message.contains("can't access at least one of the keys")
}

/// The commands a pass with `rules` sends with the script variant for
/// `mode` on `dialect`, in the order it first sends them. (The commands
/// that find a cluster's nodes, and READONLY, come before the pass and are
/// checked by sending them.)
pub fn needed(rules: &Rules, mode: Mode, dialect: Dialect) -> Vec<Command> {
    let any = |take: &dyn Fn(&crate::rules::Rule) -> bool| rules.rules.iter().any(take);
    Command::ALL
        .into_iter()
        .filter(|command| command.used_by(mode, dialect))
        .filter(|command| match command {
            Command::Select
            | Command::ClusterShards
            | Command::ClusterSlots
            | Command::Readonly => false,
            Command::Pttl => any(&|r| !r.is_unconditional_delete()),
            Command::Type => any(&|r| r.conditions.key_type.is_some()),
            Command::ObjectIdletime => rules.uses_idle_time(),
            // Only with --estimate-freed: the pass adds it then.
            Command::MemoryUsage => false,
            Command::Exists => any(&|r| r.is_unconditional_delete()),
            Command::Unlink => any(&|r| r.action == Action::Delete),
            _ => true,
        })
        .collect()
}

/// Probes each command of `commands` on `conn` and returns the first
/// refusal, as [`Command::refused`] words it.
pub async fn probe(
    conn: &mut redis::aio::MultiplexedConnection,
    server: &str,
    commands: &[Command],
) -> Result<(), Error> {
    for &command in commands {
        let Some(cmd) = command.probe() else {
            continue;
        };
        match cmd.query_async::<redis::Value>(conn).await {
            Ok(_) if command == Command::Hset => {
                redis::cmd("DEL")
                    .arg(PROBE_KEY)
                    .exec_async(conn)
                    .await
                    .map_err(|err| Command::Del.refused(server, &err))?;
            }
            Ok(_) => {}
            // Redis checks the ACL first: a cluster node that redirects the
            // probe's key to another node, or refuses a write at maxmemory,
            // has let the user run the command.
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::Server(
                        ServerErrorKind::NoScript | ServerErrorKind::Moved | ServerErrorKind::Ask
                    )
                ) || err.code() == Some("OOM") => {}
            Err(err) => return Err(command.refused(server, &err)),
        }
    }
    Ok(())
}

/// Who a Redis user is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Real runs and dry runs.
    Clean,
    /// Dry runs only: reads, and runs only the read-only script variants.
    DryRun,
}

/// The `ACL SETUSER` line for a user `name` with `access`, on servers of
/// `dialect`. `reset` first makes the line safe to repeat.
pub fn setuser_line(name: &str, access: Access, dialect: Dialect) -> String {
    let modes: &[Mode] = match access {
        Access::Clean => &[Mode::Write, Mode::ReadOnly],
        Access::DryRun => &[Mode::ReadOnly],
    };
    let keys = match (access, dialect) {
        (Access::DryRun, Dialect::Redis7) => "%R~*",
        _ => "~*",
    };
    let permissions: Vec<String> = Command::ALL
        .into_iter()
        .filter(|c| modes.iter().any(|&mode| c.used_by(mode, dialect)))
        .map(Command::permission)
        .collect();
    format!(
        "ACL SETUSER {name} reset on >PASSWORD {keys} resetchannels -@all {}",
        permissions.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::Script;

    #[test]
    fn a_refused_key_is_told_from_a_refused_command_on_every_server() {
        for key in [
            "NOPERM this user has no permissions to access one of the keys used as arguments",
            "NOPERM No permissions to access a key",
            "ERR The user executing the script can't access at least one of the keys mentioned in \
             the command arguments script: e3ed90b7151e6400c8541039b81ad5abed486bed, on @user_script:1.",
            "ERR Error running script (call to f_e3ed): @user_script:1: @user_script: 1: The user \
             executing the script can't access at least one of the keys mentioned in the command arguments",
            "ERR ACL failure in script: No permissions to access a key script: e3ed90b7, on @user_script:1.",
        ] {
            assert!(refuses_a_key(key), "{key}");
        }
        for command in [
            "NOPERM this user has no permissions to run the 'type' command",
            "NOPERM this user has no permissions to run the 'type' command or its subcommand",
            "NOPERM User j has no permissions to run the 'type' command",
        ] {
            assert!(!refuses_a_key(command), "{command}");
        }
    }

    #[test]
    fn a_refused_key_is_advised_the_job_s_key_pattern_and_a_refused_command_its_permission() {
        let key = Command::Type.advise(Error::Permission(
            "NOPERM No permissions to access a key".to_string(),
        ));
        let message = key.to_string();
        assert!(message.contains("add ~__redis-janitor__:*"), "{message}");
        assert!(!message.contains("+type"), "{message}");
        let command = Command::Type.advise(Error::Permission(
            "NOPERM User j has no permissions to run the 'type' command".to_string(),
        ));
        let message = command.to_string();
        assert!(
            message.contains("add +type to the Redis user's ACL"),
            "{message}"
        );
        assert!(!message.contains("~__redis-janitor__"), "{message}");
    }

    fn rules(text: &str) -> Rules {
        Rules::parse("test rules", text).unwrap()
    }

    fn names(commands: &[Command]) -> Vec<&'static str> {
        commands.iter().map(|c| c.name()).collect()
    }

    #[test]
    fn permissions_name_subcommands_with_a_bar() {
        assert_eq!(Command::ObjectIdletime.permission(), "+object|idletime");
        assert_eq!(Command::EvalshaRo.permission(), "+evalsha_ro");
    }

    #[test]
    fn a_pass_needs_only_what_its_rules_and_variant_use() {
        let temp = rules("[[rule]]\nname = \"t\"\npattern = \"temp:*\"\naction = \"delete\"\n");
        assert_eq!(
            names(&needed(&temp, Mode::Write, Dialect::Redis7)),
            [
                "INFO",
                "DBSIZE",
                "CLIENT SETNAME",
                "SCRIPT LOAD",
                "EVALSHA",
                "EVAL",
                "SCAN",
                "TIME",
                "UNLINK",
                "PEXPIRE",
                "HGET",
                "HMGET",
                "HGETALL",
                "DEL",
                "HSET"
            ]
        );
        assert_eq!(
            names(&needed(&temp, Mode::ReadOnly, Dialect::Redis7))[4..],
            ["EVALSHA_RO", "EVAL_RO", "SCAN", "TIME", "EXISTS", "HGET"]
        );
        assert_eq!(
            names(&needed(&temp, Mode::ReadOnly, Dialect::Legacy))[4..],
            ["EVALSHA", "EVAL", "SCAN", "TIME", "EXISTS", "HGET"]
        );
        let every_kind = rules(
            "[[rule]]\nname = \"a\"\npattern = \"a:*\"\ntype = \"hash\"\nidle_above = \"1h\"\naction = \"delete\"\n\
             [[rule]]\nname = \"b\"\npattern = \"b:*\"\nno_ttl = true\naction = \"expire\"\nttl = \"1h\"\n",
        );
        assert_eq!(
            names(&needed(&every_kind, Mode::Write, Dialect::Redis7))[6..],
            [
                "SCAN",
                "TIME",
                "PTTL",
                "TYPE",
                "OBJECT IDLETIME",
                "UNLINK",
                "PEXPIRE",
                "HGET",
                "HMGET",
                "HGETALL",
                "DEL",
                "HSET"
            ]
        );
        assert_eq!(
            names(&needed(&every_kind, Mode::ReadOnly, Dialect::Redis7))[6..],
            ["SCAN", "TIME", "PTTL", "TYPE", "OBJECT IDLETIME", "HGET"]
        );
        let expire_only = rules(
            "[[rule]]\nname = \"b\"\npattern = \"b:*\"\nno_ttl = true\naction = \"expire\"\nttl = \"1h\"\n",
        );
        assert_eq!(
            names(&needed(&expire_only, Mode::Write, Dialect::Redis7))[6..11],
            ["SCAN", "TIME", "PTTL", "PEXPIRE", "HGET"]
        );
    }

    #[test]
    fn the_script_calls_no_command_missing_from_the_list() {
        // Every quoted upper-case word of every variant is a command of the
        // list, or an argument of one.
        let rules = rules(
            "[[rule]]\nname = \"a\"\npattern = \"a:*\"\ntype = \"hash\"\nidle_above = \"1h\"\naction = \"delete\"\n\
             [[rule]]\nname = \"b\"\npattern = \"b:*\"\nno_ttl = true\naction = \"expire\"\nttl = \"1h\"\n\
             [[rule]]\nname = \"c\"\npattern = \"c:*\"\naction = \"delete\"\n",
        );
        let known: Vec<&str> = Command::ALL.iter().map(|c| c.name()).collect();
        let arguments = ["MATCH", "COUNT", "IDLETIME", "USAGE"];
        for script in Script::variants(&rules).unwrap() {
            let quotes: Vec<usize> = script.text.match_indices('\'').map(|(at, _)| at).collect();
            let words: Vec<&str> = quotes
                .windows(2)
                .map(|pair| &script.text[pair[0] + 1..pair[1]])
                .filter(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
                .collect();
            assert!(words.len() >= 10, "{words:?}");
            for word in words {
                let command = match word {
                    "OBJECT" => "OBJECT IDLETIME",
                    "MEMORY" => "MEMORY USAGE",
                    word => word,
                };
                assert!(
                    known.contains(&command) || arguments.contains(&word),
                    "{} calls {word}",
                    script.variant()
                );
            }
        }
    }

    #[test]
    fn acl_lines_grant_each_generation_what_it_has() {
        assert_eq!(
            setuser_line("janitor", Access::Clean, Dialect::Redis7),
            "ACL SETUSER janitor reset on >PASSWORD ~* resetchannels -@all +info +dbsize +client|setname \
             +select +cluster|shards +readonly +script|load +evalsha +evalsha_ro +eval +eval_ro \
             +scan +time +pttl +type +object|idletime +memory|usage +exists +unlink +pexpire +hget +hmget \
             +hgetall +del +hset"
        );
        assert_eq!(
            setuser_line("janitor-ro", Access::DryRun, Dialect::Redis7),
            "ACL SETUSER janitor-ro reset on >PASSWORD %R~* resetchannels -@all +info \
             +dbsize +client|setname +select +cluster|shards +readonly +script|load +evalsha_ro +eval_ro \
             +scan +time +pttl +type +object|idletime +memory|usage +exists +hget"
        );
        assert_eq!(
            setuser_line("janitor", Access::Clean, Dialect::Legacy),
            "ACL SETUSER janitor reset on >PASSWORD ~* resetchannels -@all +info +dbsize +client|setname \
             +select +cluster|slots +readonly +script|load +evalsha +eval +scan +time +pttl +type \
             +object|idletime +memory|usage +exists +unlink +pexpire +hget +hmget +hgetall +del +hset"
        );
        assert_eq!(
            setuser_line("janitor-ro", Access::DryRun, Dialect::Legacy),
            "ACL SETUSER janitor-ro reset on >PASSWORD ~* resetchannels -@all +info \
             +dbsize +client|setname +select +cluster|slots +readonly +script|load +evalsha +eval +scan \
             +time +pttl +type +object|idletime +memory|usage +exists +hget"
        );
    }
}
