//! The clean script, one concept in three parts:
//! - [`compile`]: its template, embedded from `lua/<version>/`, filled in
//!   for a set of rules;
//! - [`protocol`]: what a call sends and what it answers;
//! - this module: the variants for each server generation and mode, their
//!   SHA-1, loading with SCRIPT LOAD (checking that Redis computed the same
//!   SHA) and calling, with the fallback to the script's text on NOSCRIPT.

pub mod compile;
pub mod protocol;

use include_dir::{Dir, include_dir};
use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, ServerErrorKind};
use tracing::warn;

use serde::Serialize;

use crate::error::Error;
use crate::rules::Rules;

use compile::Template;
use protocol::{Claim, Op};

/// The `lua/` tree, compiled into the binary: an image carries its scripts.
static LUA: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/lua");

/// The script version this binary runs.
pub const VERSION: &str = "v11";

/// The script that checks and acts on one stretch of the keyspace.
pub const CLEAN: &str = "clean";

/// What a script variant may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deletes or expires keys. On Redis 7 it carries `allow-oom`: a cleanup
    /// is needed most when Redis is at maxmemory, and a shebang script
    /// without that flag is refused then.
    Write,
    /// Decides exactly like `Write` but writes nothing (`--dry-run`). On Redis 7
    /// it carries `no-writes`, so EVALSHA_RO runs it, on replicas too.
    ReadOnly,
}

/// Which server generation a variant is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Redis 7.0+: a `#!lua flags=...` shebang declares the script's flags.
    Redis7,
    /// Redis 6.2 and older accept no shebang at all.
    Legacy,
}

impl Dialect {
    /// The dialect for a server reporting `version` (e.g. "7.0.15").
    pub fn for_version(version: &str) -> Dialect {
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major >= 7 {
            Dialect::Redis7
        } else {
            Dialect::Legacy
        }
    }
}

/// How the server holds its keys, which decides how the script may touch
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One keyspace: a command may name many keys.
    Standalone,
    /// A Redis Cluster node: each command names one key, a key whose slot
    /// is moving may be refused (and is counted as moved), and on Redis 7
    /// the script declares `allow-cross-slot-keys`, since its keys are of
    /// many slots.
    Cluster,
}

/// Where a call's keys come from: the two variants the template makes of
/// one source (see `lua/<version>/clean.lua`), chosen with `--key-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyMode {
    /// The script runs SCAN itself, from the cursor the call carries, and
    /// touches keys it never declared: the default, cheapest mode.
    Server,
    /// The job runs SCAN and each call declares the keys it cleans in KEYS,
    /// all of one slot where slots matter: for servers and proxies that
    /// refuse scripts touching undeclared keys.
    Declared,
}

impl KeyMode {
    /// Its name in flags, logs and reports: "server" or "declared".
    pub fn name(self) -> &'static str {
        match self {
            KeyMode::Server => "server",
            KeyMode::Declared => "declared",
        }
    }
}

/// Whether an error `message` from the server says it refuses scripts that
/// touch keys they did not declare, which the declared-keys mode avoids.
/// The one place the job reads an error's text rather than its kind: no
/// server gives this refusal a kind of its own. The known messages:
/// - Alibaba Cloud's proxy: `ERR bad lua script for redis cluster, all the
///   keys that the script uses should be passed using the KEYS array`;
/// - Dragonfly: `... script tried accessing undeclared key, key: k`;
/// - servers in the same spirit (FrogDB and others): `... Script attempted
///   to access undeclared key`.
pub fn refuses_undeclared_keys(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("should be passed using the keys array") || message.contains("undeclared key")
}

/// How a call names its script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invoke {
    /// By SHA: the usual, cheap way once the script is loaded.
    Sha,
    /// By sending the whole text: the fallback after NOSCRIPT, which loads
    /// and runs in one step, so a cache flush cannot slip in between.
    Text,
}

/// One loadable script text and its SHA-1.
#[derive(Debug, Clone)]
pub struct Script {
    /// The script's file name without `.lua`.
    pub name: String,
    /// The `lua/` directory its template came from, e.g. "v11".
    pub version: String,
    /// What it may do.
    pub mode: Mode,
    /// The server generation it targets.
    pub dialect: Dialect,
    /// How the server holds its keys.
    pub layout: Layout,
    /// Where its calls' keys come from.
    pub key_mode: KeyMode,
    /// The SCAN MATCH pattern of its scans (`None`: every key), which the
    /// job's own SCAN uses with the declared variant.
    pub scan_match: Option<Vec<u8>>,
    /// The exact text sent to SCRIPT LOAD.
    pub text: String,
    /// SHA-1 of `text`, lowercase hex: what SCRIPT LOAD returns.
    pub sha: String,
    /// The identity of its passes in the checkpoint: the SHA-1 of the
    /// scanned variant's text, the same in both key modes. Their passes
    /// walk the same cursor with the same rules, so a run in either mode
    /// resumes a pass cut in the other (as `--key-mode auto` does each run
    /// on a server that refuses the scanned variant only once a call
    /// touches a key).
    pub fingerprint: String,
}

impl Script {
    /// The clean script for `rules`, in the variant for `mode`, `dialect`,
    /// `layout` and `key_mode`, with the SCAN MATCH the rules allow.
    pub fn clean(
        rules: &Rules,
        mode: Mode,
        dialect: Dialect,
        layout: Layout,
        key_mode: KeyMode,
    ) -> Result<Script, Error> {
        let scan_match = rules.scan_match();
        Script::clean_scanning(
            rules,
            scan_match.as_deref(),
            mode,
            dialect,
            layout,
            key_mode,
        )
    }

    /// The clean script for `rules` with `scan_match` as its SCAN MATCH;
    /// `None` makes it match every key's name in Lua, which tests of the Lua
    /// matchers need.
    pub fn clean_scanning(
        rules: &Rules,
        scan_match: Option<&[u8]>,
        mode: Mode,
        dialect: Dialect,
        layout: Layout,
        key_mode: KeyMode,
    ) -> Result<Script, Error> {
        let path = format!("{VERSION}/{CLEAN}.lua");
        let template = LUA
            .get_file(&path)
            .and_then(|f| f.contents_utf8())
            .ok_or_else(|| Error::Script(format!("no embedded script lua/{path}")))?;
        let template =
            Template::parse(template).map_err(|err| Error::Script(format!("lua/{path}: {err}")))?;
        let text_for = |key_mode| {
            let body = template.compile(rules, scan_match, layout, key_mode);
            format!("{}{body}", header(mode, dialect, layout, key_mode))
        };
        let text = text_for(key_mode);
        let sha = sha1_smol::Sha1::from(&text).digest().to_string();
        let fingerprint = match key_mode {
            KeyMode::Server => sha.clone(),
            KeyMode::Declared => sha1_smol::Sha1::from(text_for(KeyMode::Server))
                .digest()
                .to_string(),
        };
        Ok(Script {
            name: CLEAN.to_string(),
            version: VERSION.to_string(),
            mode,
            dialect,
            layout,
            key_mode,
            scan_match: scan_match.map(<[u8]>::to_vec),
            sha,
            fingerprint,
            text,
        })
    }

    /// Every variant of the clean script for `rules`, for
    /// `redis-janitor scripts`.
    pub fn variants(rules: &Rules) -> Result<Vec<Script>, Error> {
        let mut all = Vec::new();
        for key_mode in [KeyMode::Server, KeyMode::Declared] {
            for layout in [Layout::Standalone, Layout::Cluster] {
                for dialect in [Dialect::Redis7, Dialect::Legacy] {
                    for mode in [Mode::Write, Mode::ReadOnly] {
                        all.push(Script::clean(rules, mode, dialect, layout, key_mode)?);
                    }
                }
            }
        }
        Ok(all)
    }

    /// Loads the script into the server's script cache and checks that Redis
    /// hashed the same text to the same SHA.
    pub async fn load(&self, conn: &mut MultiplexedConnection) -> Result<(), Error> {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(&self.text)
            .query_async(conn)
            .await
            .map_err(|err| self.error("SCRIPT LOAD of", &err))?;
        if sha != self.sha {
            return Err(Error::Script(format!(
                "SCRIPT LOAD of {} {} returned SHA {sha}, expected {}",
                self.name, self.version, self.sha
            )));
        }
        Ok(())
    }

    /// Runs one call, `op` with `claim`, by SHA. On NOSCRIPT (cache
    /// flushed, restart, failover) it sends the call again with the
    /// script's text, which loads and runs it in one step, so a flush cannot
    /// slip in between. Returns the reply and whether the text had to be
    /// sent.
    pub async fn call<T: redis::FromRedisValue>(
        &self,
        conn: &mut MultiplexedConnection,
        claim: &Claim,
        op: Op<'_>,
    ) -> Result<(T, bool), Error> {
        self.call_raw(conn, claim, op)
            .await
            .map_err(|err| self.error("call of", &err))
    }

    /// [`Script::call`], answering Redis's error as it came, for callers
    /// that decide by its kind.
    pub async fn call_raw<T: redis::FromRedisValue>(
        &self,
        conn: &mut MultiplexedConnection,
        claim: &Claim,
        op: Op<'_>,
    ) -> Result<(T, bool), redis::RedisError> {
        match claim.command(self, Invoke::Sha, op).query_async(conn).await {
            Ok(reply) => Ok((reply, false)),
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                warn!(
                    sha = %self.sha,
                    "the script is no longer in Redis's cache (flushed, restarted \
                     or failed over); sending it again"
                );
                let reply = claim
                    .command(self, Invoke::Text, op)
                    .query_async(conn)
                    .await?;
                Ok((reply, true))
            }
            Err(err) => Err(err),
        }
    }

    /// A failed `what` of this script: connection and permission problems
    /// keep their kind, any other error reply is the script's.
    pub fn error(&self, what: &str, err: &redis::RedisError) -> Error {
        let context = format!("{what} script {} {}", self.name, self.version);
        if refuses_undeclared_keys(&err.to_string()) {
            return Error::Undeclared(format!(
                "{context}: {err} (the server refuses scripts that touch keys they do not \
                 declare: --key-mode declared runs them)"
            ));
        }
        if crate::acl::refuses_a_key(&err.to_string()) {
            // Refused at a key's check or at the keys it declares, before any
            // write (see `writable` in the script).
            return Error::Permission(format!(
                "{context}: the Redis user may not read every key the rules select (its ACL key \
                 patterns are narrower than the rules' patterns): the call changed none of them ({err})"
            ));
        }
        match Error::from_redis(&context, err) {
            Error::Redis(message) => Error::Script(message),
            other => other,
        }
    }

    /// The command and its first argument that run the script: EVALSHA and
    /// the SHA, or EVAL and the text (which also puts the script back into
    /// Redis's cache). Read-only variants on Redis 7 use the `_RO` forms.
    pub fn invocation(&self, by: Invoke) -> (&'static str, &str) {
        let read_only = self.mode == Mode::ReadOnly && self.dialect == Dialect::Redis7;
        match (by, read_only) {
            (Invoke::Sha, false) => ("EVALSHA", &self.sha),
            (Invoke::Sha, true) => ("EVALSHA_RO", &self.sha),
            (Invoke::Text, false) => ("EVAL", &self.text),
            (Invoke::Text, true) => ("EVAL_RO", &self.text),
        }
    }

    /// A short label: "write, redis7", "read-only, legacy, cluster",
    /// "write, redis7, declared" and the like.
    pub fn variant(&self) -> String {
        let mode = match self.mode {
            Mode::Write => "write",
            Mode::ReadOnly => "read-only",
        };
        let dialect = match self.dialect {
            Dialect::Redis7 => "redis7",
            Dialect::Legacy => "legacy",
        };
        let layout = match self.layout {
            Layout::Standalone => "",
            Layout::Cluster => ", cluster",
        };
        let declared = match self.key_mode {
            KeyMode::Server => "",
            KeyMode::Declared => ", declared",
        };
        format!("{mode}, {dialect}{layout}{declared}")
    }
}

/// The lines prepended to a script body for its variant: the shebang with
/// its flags (Redis 7+), and the three constants the template reads.
fn header(mode: Mode, dialect: Dialect, layout: Layout, key_mode: KeyMode) -> String {
    let (flag, dry_run) = match mode {
        Mode::Write => ("allow-oom", "false"),
        Mode::ReadOnly => ("no-writes", "true"),
    };
    let (cross_slot, cluster) = match layout {
        Layout::Standalone => ("", "false"),
        Layout::Cluster => (",allow-cross-slot-keys", "true"),
    };
    let shebang = match dialect {
        Dialect::Redis7 => format!("#!lua flags={flag}{cross_slot}\n"),
        Dialect::Legacy => String::new(),
    };
    let declared = key_mode == KeyMode::Declared;
    format!("{shebang}local DRY_RUN, CLUSTER, DECLARED = {dry_run}, {cluster}, {declared}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_known_refusals_of_undeclared_keys_are_recognised() {
        for refusal in [
            "ERR bad lua script for redis cluster, all the keys that the script uses should be \
             passed using the KEYS array",
            "ERR Error running script (call to f_5c4d62f4e30c54fb15935b5892148e5ce7374077): \
             @user_script:2: script tried accessing undeclared key, key: k",
            "ERR Error running script: Script attempted to access undeclared key",
        ] {
            assert!(refuses_undeclared_keys(refusal), "{refusal}");
        }
        for other in [
            "ERR Script attempted to access a non local key in a cluster node",
            "CROSSSLOT Keys in request don't hash to the same slot",
            "NOSCRIPT No matching script. Please use EVAL.",
            "ERR unknown command 'EVALSHA'",
        ] {
            assert!(!refuses_undeclared_keys(other), "{other}");
        }
    }

    #[test]
    fn dialect_follows_the_major_version() {
        assert_eq!(Dialect::for_version("7.0.15"), Dialect::Redis7);
        assert_eq!(Dialect::for_version("7.2.4"), Dialect::Redis7);
        assert_eq!(Dialect::for_version("8.0.0"), Dialect::Redis7);
        assert_eq!(Dialect::for_version("6.2.14"), Dialect::Legacy);
        assert_eq!(Dialect::for_version("garbage"), Dialect::Legacy);
    }

    #[test]
    fn both_key_modes_share_the_fingerprint_of_their_passes_and_nothing_else_does() {
        let rules = Rules::builtin();
        let all = Script::variants(&rules).unwrap();
        for script in &all {
            let other_mode = all
                .iter()
                .find(|s| {
                    (s.mode, s.dialect, s.layout) == (script.mode, script.dialect, script.layout)
                        && s.key_mode != script.key_mode
                })
                .unwrap();
            assert_ne!(script.sha, other_mode.sha);
            assert_eq!(script.fingerprint, other_mode.fingerprint);
            let scanned = if script.key_mode == KeyMode::Server {
                script
            } else {
                other_mode
            };
            assert_eq!(script.fingerprint, scanned.sha);
        }
        let fingerprints: HashSet<&str> = all.iter().map(|s| s.fingerprint.as_str()).collect();
        assert_eq!(fingerprints.len(), all.len() / 2);
    }

    #[test]
    fn variants_differ_only_in_their_header() {
        let rules = Rules::builtin();
        let write = Script::clean(
            &rules,
            Mode::Write,
            Dialect::Redis7,
            Layout::Standalone,
            KeyMode::Server,
        )
        .unwrap();
        let legacy = Script::clean(
            &rules,
            Mode::ReadOnly,
            Dialect::Legacy,
            Layout::Standalone,
            KeyMode::Server,
        )
        .unwrap();
        assert!(write.text.starts_with("#!lua flags=allow-oom\n"));
        assert!(!legacy.text.starts_with("#!"));
        assert_eq!(
            write
                .text
                .split_once("local DRY_RUN")
                .unwrap()
                .1
                .split_once('\n')
                .unwrap()
                .1,
            legacy
                .text
                .split_once("local DRY_RUN")
                .unwrap()
                .1
                .split_once('\n')
                .unwrap()
                .1
        );
        assert_ne!(write.sha, legacy.sha);
        assert_eq!(write.sha.len(), 40);
        assert_eq!(Script::variants(&rules).unwrap().len(), 16);
        let cluster = Script::clean(
            &rules,
            Mode::Write,
            Dialect::Redis7,
            Layout::Cluster,
            KeyMode::Server,
        )
        .unwrap();
        assert!(cluster.text.starts_with(
            "#!lua flags=allow-oom,allow-cross-slot-keys\n\
             local DRY_RUN, CLUSTER, DECLARED = false, true, false\n"
        ));
        let cluster = Script::clean(
            &rules,
            Mode::ReadOnly,
            Dialect::Legacy,
            Layout::Cluster,
            KeyMode::Server,
        )
        .unwrap();
        assert!(
            cluster
                .text
                .starts_with("local DRY_RUN, CLUSTER, DECLARED = true, true, false\n")
        );
        assert_eq!(cluster.variant(), "read-only, legacy, cluster");
    }

    /// Compiles `script` as Redis would, without a server: Lua 5.1, the
    /// shebang line left out (Redis strips it before it compiles the rest).
    fn assert_parses(script: &Script) {
        let code = match script.text.strip_prefix("#!") {
            Some(_) => &script.text[script.text.find('\n').unwrap()..],
            None => &script.text[..],
        };
        let lua = mlua::Lua::new();
        if let Err(err) = lua.load(code).set_name("@user_script").into_function() {
            panic!(
                "{} does not parse: {err}\n{}",
                script.variant(),
                script.text
            );
        }
    }

    #[test]
    fn every_variant_of_the_builtin_rules_parses_as_lua() {
        let variants = Script::variants(&Rules::builtin()).unwrap();
        assert_eq!(variants.len(), 16);
        for script in &variants {
            assert_parses(script);
        }
    }

    /// A random valid rules file: patterns over glob syntax and bytes that
    /// Lua literals must escape, every condition and action, names with
    /// quotes and newlines.
    fn random_rules(rng: &mut fastrand::Rng) -> Rules {
        let alphabet: Vec<char> = "ab:*?[]^-\\\"'\n\u{0}\u{ff}%.]]--".chars().collect();
        let mut text =
            String::from("[[rule]]\nname = \"first\"\npattern = \"*\"\naction = \"delete\"\n");
        for i in 1..rng.usize(1..=crate::rules::MAX_RULES) {
            let pattern: String = (0..rng.usize(1..12))
                .map(|_| format!("\\u{:04x}", alphabet[rng.usize(..alphabet.len())] as u32))
                .collect();
            let mut rule =
                format!("[[rule]]\nname = \"r{i} \\\" ]] \\n\"\npattern = \"{pattern}\"\n");
            rule += match rng.u8(..4) {
                0 => "no_ttl = true\n",
                1 => "ttl_below = \"1h\"\nttl_above = \"2s\"\n",
                2 => "type = \"hash\"\nidle_above = \"10m\"\n",
                _ => "",
            };
            rule += match rng.u8(..2) {
                0 => "action = \"delete\"\n",
                _ => "action = \"expire\"\nttl = \"1s\"\n",
            };
            // Keep the rules whose pattern is a valid glob.
            if Rules::parse("one rule", &rule).is_ok() {
                text += &rule;
            }
        }
        Rules::parse("random rules", &text).unwrap()
    }

    #[test]
    fn every_variant_of_random_rules_parses_as_lua() {
        let mut rng = fastrand::Rng::with_seed(0x1a45_5c41);
        for _ in 0..100 {
            for script in Script::variants(&random_rules(&mut rng)).unwrap() {
                assert_parses(&script);
            }
        }
    }

    #[test]
    fn the_rules_are_part_of_the_script() {
        let builtin = Script::clean(
            &Rules::builtin(),
            Mode::Write,
            Dialect::Redis7,
            Layout::Standalone,
            KeyMode::Server,
        )
        .unwrap();
        let text = "[[rule]]\nname = \"t\"\npattern = \"temp:*\"\naction = \"delete\"\n";
        let other = Rules::parse("test rules", text).unwrap();
        let other = Script::clean(
            &other,
            Mode::Write,
            Dialect::Redis7,
            Layout::Standalone,
            KeyMode::Server,
        )
        .unwrap();
        assert!(builtin.text.contains("cache-missing-ttl"));
        assert!(!other.text.contains("cache-missing-ttl"));
        assert_ne!(builtin.sha, other.sha);
    }
}
