//! The ways of cleaning the keyspace that the benchmark compares, each
//! applying the built-in rules (cache keys without TTL: PEXPIRE 1 h; cache
//! keys with a TTL under 60 s: UNLINK; `temp:*`: UNLINK): the job itself (at
//! full speed, or capped at a share of Redis's time; in its default mode,
//! whose script runs SCAN inside Redis, or in its declared-keys mode, where
//! the job runs SCAN and each call declares its keys), a careful client-side
//! pipeline, the floor of a declared-keys script (the least such a script
//! can do), the server-side bound (one EVAL looping SCAN), the bare SCAN
//! floor, and the usual KEYS-and-a-loop script.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use serde_json::Value as Json;

use crate::keyspace::EXPIRE_TO_MS;
use crate::measure::{Timed, run_child};

/// SCAN COUNT of the pipeline, the bound and the bare SCAN.
const SCAN_COUNT: u64 = 1000;
/// The built-in rules' threshold: cache keys due in less than this are deleted.
const BELOW_MS: i64 = 60_000;

/// A way of cleaning the keyspace, as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `redis-janitor run` (release build) at full speed (`--max-server-share
    /// 1.0` when the binary has that flag), plus --job-args.
    Janitor,
    /// `janitor@S`: the job capped at share S of Redis's time, that is with
    /// --share-args (default `--max-server-share {}`) with S for `{}`, plus
    /// --job-args. S is kept as typed, so that any flag can stand in for the
    /// cap (`--share-args "--rate-limit {}"` makes `janitor@50000` a job
    /// scanning 50k keys/s).
    JanitorAt(String),
    /// `janitor+freed`: the job at full speed estimating the memory its
    /// deletes give back (`--estimate-freed`: a `MEMORY USAGE` per deleted
    /// key), plus --job-args: what the estimate costs.
    JanitorFreed,
    /// `janitor+declared`: the job at full speed in its declared-keys mode
    /// (`--key-mode declared`: the job runs SCAN itself and sends the keys
    /// of each batch in KEYS to the declared script variant, then saves the
    /// checkpoint with a call of its own), plus --job-args.
    JanitorDeclared,
    /// `declared@S`: `janitor@S` in the declared-keys mode: --share-args
    /// with S for `{}`, `--key-mode declared`, then --job-args.
    DeclaredAt(String),
    /// Client-side pipeline: SCAN 1000, pipelined PTTL, pipelined UNLINK/PEXPIRE.
    Pipeline,
    /// `declared-floor`: the least a declared-keys script can do, a floor
    /// for the job's declared-keys mode: SCAN 1000 with the job's MATCH, and
    /// per batch one EVALSHA of a minimal script over the batch's keys,
    /// which the client sorted by rule, sent with the next SCAN.
    DeclaredFloor,
    /// Server-side bound: one EVAL whose Lua loops SCAN 1000 over the keyspace.
    Bound,
    /// Bare SCAN COUNT 1000 loop, no work: the floor for enumerating.
    Scan,
    /// The usual script: KEYS, then one TTL and one EXPIRE/DEL round trip per key.
    Naive,
}

impl Method {
    pub fn name(&self) -> String {
        match self {
            Method::Janitor => "janitor".into(),
            Method::JanitorAt(share) => format!("janitor@{share}"),
            Method::JanitorFreed => "janitor+freed".into(),
            Method::JanitorDeclared => "janitor+declared".into(),
            Method::DeclaredAt(share) => format!("declared@{share}"),
            Method::Pipeline => "pipeline".into(),
            Method::DeclaredFloor => "declared-floor".into(),
            Method::Bound => "bound".into(),
            Method::Scan => "scan".into(),
            Method::Naive => "naive".into(),
        }
    }

    /// Whether it applies the rules (the bare SCAN changes nothing).
    pub fn cleans(&self) -> bool {
        *self != Method::Scan
    }

    /// Whether it runs the job (and so has a log, an RSS and a report).
    pub fn is_job(&self) -> bool {
        matches!(
            self,
            Method::Janitor
                | Method::JanitorAt(_)
                | Method::JanitorFreed
                | Method::JanitorDeclared
                | Method::DeclaredAt(_)
        )
    }

    /// Whether it runs the job in its declared-keys mode (`--key-mode
    /// declared`): the job's SCANs are then commands of their own, outside
    /// its script calls, and count in its share of Redis's time.
    pub fn declares(&self) -> bool {
        matches!(self, Method::JanitorDeclared | Method::DeclaredAt(_))
    }

    /// The S of a capped job, `janitor@S` or `declared@S`, as typed.
    pub fn cap_arg(&self) -> Option<&str> {
        match self {
            Method::JanitorAt(s) | Method::DeclaredAt(s) => Some(s),
            _ => None,
        }
    }

    /// The cap of a `janitor@S` or `declared@S` whose S reads as a share of
    /// Redis's time (above 0, at most 1).
    pub fn share(&self) -> Option<f64> {
        self.cap_arg()?
            .parse::<f64>()
            .ok()
            .filter(|v| *v > 0.0 && *v <= 1.0)
    }

    /// The seconds the job held Redis during a run, from the deltas of its
    /// command statistics: its script calls and, in the declared-keys mode,
    /// its own SCANs (in the default mode the script's SCANs are part of
    /// its calls already: Redis counts them in both).
    pub fn own_secs(&self, scripts: f64, scans: f64) -> f64 {
        if self.declares() {
            scripts + scans
        } else {
            scripts
        }
    }

    /// Where it goes in a table: the job first (full speed, then by cap,
    /// `declared@S` right after `janitor@S`), then the others in a fixed
    /// order.
    pub fn rank(&self) -> (u8, f64) {
        match self {
            Method::Janitor => (0, 0.0),
            Method::JanitorFreed => (0, 1.0),
            Method::JanitorDeclared => (0, 2.0),
            Method::JanitorAt(s) => (1, s.parse().unwrap_or(f64::MAX)),
            Method::DeclaredAt(s) => (1, s.parse::<f64>().map_or(f64::MAX, |v| v + 1e-9)),
            Method::Pipeline => (2, 0.0),
            Method::DeclaredFloor => (2, 1.0),
            Method::Bound => (3, 0.0),
            Method::Scan => (4, 0.0),
            Method::Naive => (5, 0.0),
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> Result<Method, String> {
        Ok(match s {
            "janitor" => Method::Janitor,
            "janitor+freed" => Method::JanitorFreed,
            "janitor+declared" => Method::JanitorDeclared,
            "pipeline" => Method::Pipeline,
            "declared-floor" => Method::DeclaredFloor,
            "bound" => Method::Bound,
            "scan" => Method::Scan,
            "naive" => Method::Naive,
            _ => {
                let cap = |prefix: &str| {
                    s.strip_prefix(prefix)
                        .filter(|cap| cap.parse::<f64>().is_ok_and(|v| v > 0.0))
                        .map(String::from)
                };
                match (cap("janitor@"), cap("declared@")) {
                    (Some(cap), _) => Method::JanitorAt(cap),
                    (_, Some(cap)) => Method::DeclaredAt(cap),
                    _ => {
                        return Err(format!(
                            "unknown method {s:?}: one of janitor, janitor+freed, janitor+declared, janitor@SHARE, \
                             declared@SHARE, pipeline, declared-floor, bound, scan, naive"
                        ));
                    }
                }
            }
        })
    }
}

/// What a method did, in the terms of the built-in rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Acted {
    /// Cache keys without TTL that got one (rule cache-missing-ttl).
    pub expired: u64,
    /// Cache keys due within 60 s that were deleted (rule cache-expiring-soon).
    pub deleted_cache: u64,
    /// `temp:*` keys deleted (rule temp).
    pub deleted_temp: u64,
}

/// The result of one method run, besides its timing.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Keys the method enumerated (SCAN may return a key twice).
    pub scanned: u64,
    /// What it did.
    pub acted: Acted,
    /// Peak RSS of the job process, in KiB.
    pub rss_kib: Option<u64>,
    /// CPU seconds of the job process.
    pub job_cpu: Option<f64>,
    /// The job's report: each node's pass, in seconds, in the report's order
    /// (one for a standalone server, one per primary of a cluster).
    pub node_secs: Vec<f64>,
    /// A line of method-specific facts (the job's report).
    pub detail: String,
    /// What went wrong, if anything (the run is then marked failed).
    pub problems: Vec<String>,
}

/// What the job method needs besides a connection.
pub struct JobSetup<'a> {
    pub bin: &'a Path,
    pub url: String,
    pub args: &'a [String],
    /// Where its stderr (logs) goes.
    pub log: &'a Path,
    pub timeout: Duration,
}

/// Runs `method` once. `conn` is opened before the clock starts; the job opens
/// its own connection (its start-up is part of its wall time).
pub fn run(
    method: &Method,
    conn: &mut redis::Connection,
    job: &JobSetup,
) -> Result<Outcome, String> {
    match method {
        Method::Janitor
        | Method::JanitorAt(_)
        | Method::JanitorFreed
        | Method::JanitorDeclared
        | Method::DeclaredAt(_) => janitor(job),
        Method::Pipeline => pipeline(conn).map_err(|e| format!("pipeline: {e}")),
        Method::DeclaredFloor => declared_floor(conn).map_err(|e| format!("declared-floor: {e}")),
        Method::Bound => bound(conn).map_err(|e| format!("bound: {e}")),
        Method::Scan => scan(conn).map_err(|e| format!("scan: {e}")),
        Method::Naive => naive(conn).map_err(|e| format!("naive: {e}")),
    }
}

/// Job environment variables that would override the command line's defaults.
const JOB_ENV: [&str; 37] = [
    "REDIS_URL",
    "REDIS_HOST",
    "REDIS_PASSWORD_FILE",
    "REDIS_SENTINEL_PASSWORD_FILE",
    "REDIS_SENTINEL_USERNAME",
    "REDIS_TLS_CA_FILE",
    "REDIS_TLS_CERT_FILE",
    "REDIS_TLS_KEY_FILE",
    "REDIS_TLS_SERVER_NAME",
    "REDIS_TLS_INSECURE",
    "JANITOR_RULES",
    "JANITOR_DRY_RUN",
    "JANITOR_FROM_REPLICAS",
    "JANITOR_CONCURRENCY",
    "JANITOR_BATCH_SIZE",
    "JANITOR_MAX_CALL_TIME",
    "JANITOR_RATE_LIMIT",
    "JANITOR_MAX_SERVER_SHARE",
    "JANITOR_MAX_RUNTIME",
    "JANITOR_TIMEOUT",
    "JANITOR_PROGRESS_INTERVAL",
    "JANITOR_LOG_FORMAT",
    "JANITOR_OUTPUT",
    "JANITOR_ESTIMATE_FREED",
    "JANITOR_RESUME_MAX_AGE",
    "JANITOR_RESTART",
    "JANITOR_LOCK_TTL",
    "JANITOR_NO_LOCK",
    "JANITOR_MAX_KEYS",
    "JANITOR_PUSHGATEWAY",
    "JANITOR_PUSHGATEWAY_INSTANCE",
    "JANITOR_PUSHGATEWAY_USERNAME",
    "JANITOR_PUSHGATEWAY_PASSWORD_FILE",
    "JANITOR_PUSHGATEWAY_TIMEOUT",
    "JANITOR_KEY_MODE",
    "JANITOR_MAX_REPLICA_LAG",
    "JANITOR_RETRIES",
];

/// Runs the job once (`redis-janitor run --url URL --output json` and its
/// arguments, under GNU time) and reads its report.
pub fn janitor(job: &JobSetup) -> Result<Outcome, String> {
    let log = File::create(job.log).map_err(|e| format!("create {}: {e}", job.log.display()))?;
    let mut timed = Timed::new(job.bin, &job.log.with_extension("rusage"));
    let cmd = &mut timed.cmd;
    cmd.args(["run", "--url", &job.url, "--output", "json"])
        .args(job.args)
        .stderr(log);
    for var in JOB_ENV {
        cmd.env_remove(var);
    }
    let child = run_child(timed, job.timeout)?;
    let mut out = Outcome {
        rss_kib: Some(child.max_rss_kib),
        job_cpu: Some(child.cpu),
        ..Outcome::default()
    };
    if child.timed_out {
        out.problems.push(format!(
            "the job ran longer than {:?} and was killed",
            job.timeout
        ));
    }
    match (child.code, child.signal) {
        (Some(0), _) => {}
        (Some(code), _) => out.problems.push(format!("the job exited {code}")),
        (None, Some(sig)) => out.problems.push(format!("the job died of signal {sig}")),
        (None, None) => out.problems.push("the job ended oddly".into()),
    }
    let report: Json = match serde_json::from_str(child.stdout.trim()) {
        Ok(report) => report,
        Err(e) => {
            out.problems.push(format!(
                "the job's stdout is not one JSON object ({e}): {:?}",
                child.stdout.chars().take(300).collect::<String>()
            ));
            return Ok(out);
        }
    };
    if report["complete"] != Json::Bool(true) {
        out.problems.push("the report says complete: false".into());
    }
    if !report["error"].is_null() {
        out.problems
            .push(format!("the report has an error: {}", report["error"]));
    }
    let rule = |name: &str| -> Option<u64> {
        report["rules"]
            .as_array()?
            .iter()
            .find(|r| r["name"] == name)?["keys"]
            .as_u64()
    };
    match (
        rule("cache-missing-ttl"),
        rule("cache-expiring-soon"),
        rule("temp"),
    ) {
        (Some(expired), Some(deleted_cache), Some(deleted_temp)) => {
            out.acted = Acted {
                expired,
                deleted_cache,
                deleted_temp,
            }
        }
        _ => out.problems.push(format!(
            "the report lacks the built-in rules' counts: {}",
            report["rules"]
        )),
    }
    let n = |k: &str| report[k].as_u64().unwrap_or(0);
    out.scanned = n("keys_scanned");
    out.node_secs = report["servers"]
        .as_array()
        .map_or_else(Vec::new, |servers| {
            servers
                .iter()
                .map(|s| s["duration_seconds"].as_f64().unwrap_or(f64::NAN))
                .collect()
        });
    out.detail = format!(
        "report: scanned {} matched {} batches {} unchanged {} vanished {} reloads {} duration {:.3}s script {}",
        n("keys_scanned"),
        n("keys_matched"),
        n("batches"),
        n("unchanged"),
        n("vanished"),
        n("script_reloads"),
        report["duration_seconds"].as_f64().unwrap_or(f64::NAN),
        report["script"]["version"].as_str().unwrap_or("?"),
    );
    Ok(out)
}

/// One SCAN step.
fn scan_step(conn: &mut redis::Connection, cursor: u64) -> redis::RedisResult<(u64, Vec<Vec<u8>>)> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("COUNT")
        .arg(SCAN_COUNT)
        .query(conn)
}

/// The careful client-side pipeline: per SCAN batch, one pipeline of PTTL for
/// the cache keys, then one pipeline of UNLINK / PEXPIRE: three round trips.
fn pipeline(conn: &mut redis::Connection) -> redis::RedisResult<Outcome> {
    let mut out = Outcome::default();
    let mut cursor = 0;
    loop {
        let (next, keys) = scan_step(conn, cursor)?;
        out.scanned += keys.len() as u64;
        let cache: Vec<&Vec<u8>> = keys.iter().filter(|k| k.starts_with(b"cache:")).collect();
        let pttls: Vec<i64> = if cache.is_empty() {
            Vec::new()
        } else {
            let mut pipe = redis::pipe();
            for key in &cache {
                pipe.cmd("PTTL").arg(key.as_slice());
            }
            pipe.query(conn)?
        };
        let mut writes = redis::pipe();
        let mut any = false;
        for key in keys.iter().filter(|k| k.starts_with(b"temp:")) {
            writes.cmd("UNLINK").arg(key.as_slice()).ignore();
            out.acted.deleted_temp += 1;
            any = true;
        }
        for (key, pttl) in cache.iter().zip(pttls) {
            if pttl == -1 {
                writes
                    .cmd("PEXPIRE")
                    .arg(key.as_slice())
                    .arg(EXPIRE_TO_MS)
                    .ignore();
                out.acted.expired += 1;
                any = true;
            } else if (0..BELOW_MS).contains(&pttl) {
                writes.cmd("UNLINK").arg(key.as_slice()).ignore();
                out.acted.deleted_cache += 1;
                any = true;
            }
        }
        if any {
            writes.query::<()>(conn)?;
        }
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// The SCAN MATCH pattern the job derives from the built-in rules (`cache:*`,
/// `temp:*`): the job's SCANs return only keys that may match.
const RULES_MATCH: &str = "[ct][ae][cm][hp][:e]*";

/// The declared-keys floor's script. KEYS: a batch's `temp:*` keys, then its
/// `cache:*` keys; ARGV: how many `temp:*` keys, the TTL to give, the TTL
/// below which a cache key goes. One UNLINK for all the `temp:*` keys and
/// one for the cache keys due soon, a PTTL per cache key and a PEXPIRE per
/// cache key without TTL: the fewest commands a script checking each key
/// can run, and no more Lua than that takes. It is no cleaner to use: it
/// writes before it has checked every key, and it has no lease, checkpoint,
/// cap, pace or report.
const DECLARED_FLOOR_LUA: &str = r#"
local call, ntemp, expire_to, below = redis.call, tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local deleted_temp, due, ndue, expired = 0, {}, 0, 0
if ntemp > 0 then
  deleted_temp = call('UNLINK', unpack(KEYS, 1, ntemp))
end
for i = ntemp + 1, #KEYS do
  local key = KEYS[i]
  local pttl = call('PTTL', key)
  if pttl == -1 then
    call('PEXPIRE', key, expire_to)
    expired = expired + 1
  elseif pttl >= 0 and pttl < below then
    ndue = ndue + 1
    due[ndue] = key
  end
end
if ndue > 0 then
  call('UNLINK', unpack(due))
end
return {expired, ndue, deleted_temp}
"#;

/// The floor of a declared-keys script: SCAN with the job's MATCH, then per
/// batch one EVALSHA of [`DECLARED_FLOOR_LUA`] over its keys, which this
/// client sorted by rule, with the next batch's SCAN in the same round trip,
/// as the job's full-speed steps go. What Redis spends here, any script that
/// declares its keys and checks each of them spends at least.
fn declared_floor(conn: &mut redis::Connection) -> redis::RedisResult<Outcome> {
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(DECLARED_FLOOR_LUA)
        .query(conn)?;
    let scan = |pipe: &mut redis::Pipeline, cursor: u64| {
        pipe.cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(RULES_MATCH)
            .arg("COUNT")
            .arg(SCAN_COUNT);
    };
    let mut out = Outcome::default();
    let mut first = redis::pipe();
    scan(&mut first, 0);
    let ((mut cursor, mut keys),): ((u64, Vec<Vec<u8>>),) = first.query(conn)?;
    loop {
        out.scanned += keys.len() as u64;
        let temp = keys.iter().filter(|k| k.starts_with(b"temp:"));
        let cache = keys.iter().filter(|k| k.starts_with(b"cache:"));
        let ntemp = temp.clone().count();
        let declared: Vec<&Vec<u8>> = temp.chain(cache).collect();
        let mut pipe = redis::pipe();
        if !declared.is_empty() {
            let call = pipe.cmd("EVALSHA").arg(&sha).arg(declared.len());
            for key in &declared {
                call.arg(key.as_slice());
            }
            call.arg(ntemp).arg(EXPIRE_TO_MS).arg(BELOW_MS);
        }
        if cursor != 0 {
            scan(&mut pipe, cursor);
        }
        let mut replies = pipe.query::<Vec<redis::Value>>(conn)?.into_iter();
        if !declared.is_empty() {
            let (expired, deleted_cache, deleted_temp): (u64, u64, u64) =
                redis::from_redis_value(replies.next().unwrap_or(redis::Value::Nil))?;
            out.acted.expired += expired;
            out.acted.deleted_cache += deleted_cache;
            out.acted.deleted_temp += deleted_temp;
        }
        if cursor == 0 {
            return Ok(out);
        }
        (cursor, keys) = redis::from_redis_value(replies.next().unwrap_or(redis::Value::Nil))?;
    }
}

/// The server-side bound: the whole pass in one script, no network at all.
const BOUND_LUA: &str = r#"
local cursor, scanned, expired, del_cache, del_temp = '0', 0, 0, 0, 0
local expire_to, below = tonumber(ARGV[1]), tonumber(ARGV[2])
repeat
  local reply = redis.call('SCAN', cursor, 'COUNT', ARGV[3])
  cursor = reply[1]
  local keys = reply[2]
  scanned = scanned + #keys
  for i = 1, #keys do
    local key = keys[i]
    if string.sub(key, 1, 6) == 'cache:' then
      local pttl = redis.call('PTTL', key)
      if pttl == -1 then
        redis.call('PEXPIRE', key, expire_to)
        expired = expired + 1
      elseif pttl >= 0 and pttl < below then
        redis.call('UNLINK', key)
        del_cache = del_cache + 1
      end
    elseif string.sub(key, 1, 5) == 'temp:' then
      redis.call('UNLINK', key)
      del_temp = del_temp + 1
    end
  end
until cursor == '0'
return {scanned, expired, del_cache, del_temp}
"#;

fn bound(conn: &mut redis::Connection) -> redis::RedisResult<Outcome> {
    // The connection's reply timeout (server.rs) is long enough for this call.
    let (scanned, expired, deleted_cache, deleted_temp): (u64, u64, u64, u64) = redis::cmd("EVAL")
        .arg(BOUND_LUA)
        .arg(0)
        .arg(EXPIRE_TO_MS)
        .arg(BELOW_MS)
        .arg(SCAN_COUNT)
        .query(conn)?;
    Ok(Outcome {
        scanned,
        acted: Acted {
            expired,
            deleted_cache,
            deleted_temp,
        },
        ..Outcome::default()
    })
}

fn scan(conn: &mut redis::Connection) -> redis::RedisResult<Outcome> {
    let mut out = Outcome::default();
    let mut cursor = 0;
    loop {
        let (next, keys) = scan_step(conn, cursor)?;
        out.scanned += keys.len() as u64;
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// The usual script: KEYS for each pattern, then per key one TTL and one
/// EXPIRE or DEL round trip (`temp:*` keys need no TTL: one DEL each).
fn naive(conn: &mut redis::Connection) -> redis::RedisResult<Outcome> {
    let mut out = Outcome::default();
    let cache: Vec<Vec<u8>> = redis::cmd("KEYS").arg("cache:*").query(conn)?;
    out.scanned += cache.len() as u64;
    for key in &cache {
        let ttl: i64 = redis::cmd("TTL").arg(key.as_slice()).query(conn)?;
        if ttl == -1 {
            redis::cmd("EXPIRE")
                .arg(key.as_slice())
                .arg(EXPIRE_TO_MS / 1000)
                .query::<()>(conn)?;
            out.acted.expired += 1;
        } else if ttl >= 0 && ttl * 1000 < BELOW_MS {
            redis::cmd("DEL").arg(key.as_slice()).query::<()>(conn)?;
            out.acted.deleted_cache += 1;
        }
    }
    let temp: Vec<Vec<u8>> = redis::cmd("KEYS").arg("temp:*").query(conn)?;
    out.scanned += temp.len() as u64;
    for key in &temp {
        redis::cmd("DEL").arg(key.as_slice()).query::<()>(conn)?;
        out.acted.deleted_temp += 1;
    }
    Ok(out)
}
