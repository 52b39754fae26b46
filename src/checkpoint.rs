//! Where a node's pass stands, saved by the clean script in the same atomic
//! call as the work it records (see `lua/v11/clean.lua`, `save`), and read
//! back when the next run takes the node's lease: the cursor the next call
//! starts from, whether the pass is done, which pass it is (the rules' fingerprint, the server
//! process's `run_id`, when the pass began), when it was saved, and the
//! pass's totals so far. This module decides whether a run resumes that
//! pass or starts a new one, and says why.
//!
//! Resuming keeps SCAN's guarantee: a cursor from the same server process
//! (same `run_id`) continues the same walk over its hash tables, so every
//! key present from the pass's start to its end is visited. Another process
//! (a restart, a failover) orders its tables by its own seed: an old cursor
//! would skip keys there, so the pass starts over.

use std::time::Duration;

use serde::Serialize;

/// A checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Where the next call starts.
    pub cursor: u64,
    /// Whether the pass reached the end of the keyspace. (A pass stopped by
    /// a cap in its first `SCAN` step has cursor 0 too, but is not done.)
    pub done: bool,
    /// The rules' fingerprint of the pass (the scanned variant's SHA-1, see
    /// `Script::fingerprint`).
    pub fingerprint: String,
    /// The `run_id` of the server process the pass ran on.
    pub run_id: String,
    /// When the pass began, in ms of the server's clock.
    pub started_ms: u64,
    /// When the checkpoint was last saved, in ms of the server's clock.
    pub saved_ms: u64,
    /// The pass's calls so far, over all its runs.
    pub calls: u64,
    /// The keys its SCAN steps returned so far.
    pub scanned: u64,
    /// The keys its rules acted on so far.
    pub acted: u64,
}

impl Checkpoint {
    /// The checkpoint in `fields` (as HGETALL gives them), if they hold a
    /// whole one.
    pub fn parse(fields: &[(String, String)]) -> Option<Checkpoint> {
        let get = |name: &str| {
            fields
                .iter()
                .find(|(field, _)| field == name)
                .map(|(_, value)| value.as_str())
        };
        let number = |name: &str| get(name)?.parse().ok();
        Some(Checkpoint {
            cursor: number("cursor")?,
            done: get("done")? == "1",
            fingerprint: get("fingerprint")?.to_string(),
            run_id: get("run_id")?.to_string(),
            started_ms: number("started")?,
            saved_ms: number("saved")?,
            calls: number("calls")?,
            scanned: number("scanned")?,
            acted: number("acted")?,
        })
    }
}

/// What the pass about to run is: resumed, or new and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Start {
    /// The cursor the first call starts from.
    pub cursor: u64,
    /// When the pass began, in ms of the server's clock (now, for a new one).
    #[serde(skip)]
    pub started_ms: u64,
    /// When the pass began, in seconds since the Unix epoch.
    pub started_at: f64,
    /// Whether it continues a pass an earlier run began.
    pub resumed: bool,
    /// Why it resumed, or why it starts from cursor 0.
    pub reason: String,
}

/// What the run asks of the stored checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// The fingerprint of the run's rules.
    pub fingerprint: &'a str,
    /// The `run_id` of the server process the run talks to.
    pub run_id: &'a str,
    /// The server's clock now, in ms.
    pub now_ms: u64,
    /// The oldest checkpoint to resume from (`--resume-max-age`).
    pub max_age: Duration,
    /// `--restart`: never resume.
    pub restart: bool,
}

/// Resumes `stored` when it records an unfinished pass of the same rules on
/// the same server process, saved within `max_age`; else a new pass.
/// What a resumed pass's reason adds when the server gives no `run_id`
/// (a proxy may not): a restart since the checkpoint cannot be told.
const NO_RUN_ID: &str = "; the server gives no run_id (a proxy?), so a restart since the \
                         checkpoint cannot be told: keys it moved in its tables may wait \
                         for the next pass";

pub fn start(stored: Option<&Checkpoint>, wanted: Wanted<'_>) -> Start {
    let new = |reason: String| Start {
        cursor: 0,
        started_ms: wanted.now_ms,
        started_at: wanted.now_ms as f64 / 1000.0,
        resumed: false,
        reason,
    };
    let Some(stored) = stored else {
        return new("no checkpoint: no pass to resume (none ran, or it expired)".into());
    };
    let age = Duration::from_millis(wanted.now_ms.saturating_sub(stored.saved_ms));
    let reason = if wanted.restart {
        "--restart: a new pass was asked for"
    } else if stored.done {
        "the last pass completed"
    } else if stored.fingerprint != wanted.fingerprint {
        "the rules (or the script) changed since the checkpoint"
    } else if stored.run_id != wanted.run_id {
        "the server restarted or failed over since the checkpoint (another run_id): \
         an old cursor would skip keys"
    } else if age > wanted.max_age {
        "the checkpoint is older than --resume-max-age"
    } else {
        return Start {
            cursor: stored.cursor,
            started_ms: stored.started_ms,
            started_at: stored.started_ms as f64 / 1000.0,
            resumed: true,
            reason: format!(
                "resumed the pass begun {}s earlier, at cursor {} ({} keys scanned so far){}",
                wanted.now_ms.saturating_sub(stored.started_ms) / 1000,
                stored.cursor,
                stored.scanned,
                if wanted.run_id.is_empty() {
                    NO_RUN_ID
                } else {
                    ""
                }
            ),
        };
    };
    new(reason.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Checkpoint {
        Checkpoint {
            cursor: 1234,
            done: false,
            fingerprint: "sha".into(),
            run_id: "run".into(),
            started_ms: 1_000_000,
            saved_ms: 1_050_000,
            calls: 7,
            scanned: 700,
            acted: 70,
        }
    }

    fn wanted() -> Wanted<'static> {
        Wanted {
            fingerprint: "sha",
            run_id: "run",
            now_ms: 1_060_000,
            max_age: Duration::from_secs(60),
            restart: false,
        }
    }

    #[test]
    fn a_checkpoint_parses_from_its_fields_only_when_whole() {
        let fields: Vec<(String, String)> = [
            ("cursor", "1234"),
            ("done", "0"),
            ("fingerprint", "sha"),
            ("run_id", "run"),
            ("started", "1000000"),
            ("saved", "1050000"),
            ("calls", "7"),
            ("scanned", "700"),
            ("acted", "70"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(Checkpoint::parse(&fields), Some(stored()));
        assert_eq!(Checkpoint::parse(&fields[1..]), None);
        assert_eq!(Checkpoint::parse(&[]), None);
    }

    #[test]
    fn the_same_pass_resumes_where_it_stopped() {
        let start = start(Some(&stored()), wanted());
        assert!(start.resumed, "{start:?}");
        assert_eq!(start.cursor, 1234);
        assert_eq!(start.started_ms, 1_000_000);
        assert_eq!(start.started_at, 1000.0);
        assert!(start.reason.contains("begun 60s earlier"), "{start:?}");
    }

    #[test]
    fn a_checkpoint_exactly_as_old_as_the_limit_is_resumed() {
        let limit = Wanted {
            max_age: Duration::from_secs(10),
            ..wanted()
        };
        assert!(start(Some(&stored()), limit).resumed);
        let past = Wanted {
            max_age: Duration::from_millis(9_999),
            ..wanted()
        };
        assert!(!start(Some(&stored()), past).resumed);
    }

    #[test]
    fn anything_else_starts_a_new_pass_and_says_why() {
        let cases = [
            (None, wanted(), "no checkpoint"),
            (
                Some(stored()),
                Wanted {
                    restart: true,
                    ..wanted()
                },
                "--restart",
            ),
            (
                Some(Checkpoint {
                    cursor: 0,
                    done: true,
                    ..stored()
                }),
                wanted(),
                "completed",
            ),
            (
                Some(stored()),
                Wanted {
                    fingerprint: "other",
                    ..wanted()
                },
                "rules",
            ),
            (
                Some(stored()),
                Wanted {
                    run_id: "other",
                    ..wanted()
                },
                "restarted or failed over",
            ),
            (
                Some(stored()),
                Wanted {
                    max_age: Duration::from_secs(9),
                    ..wanted()
                },
                "older than --resume-max-age",
            ),
        ];
        for (stored, wanted, why) in cases {
            let start = start(stored.as_ref(), wanted);
            assert!(!start.resumed, "{why}: {start:?}");
            assert_eq!(start.cursor, 0);
            assert_eq!(start.started_ms, 1_060_000);
            assert_eq!(start.started_at, 1060.0);
            assert!(start.reason.contains(why), "{why}: {start:?}");
        }
    }

    #[test]
    fn without_a_run_id_a_pass_resumes_and_says_a_restart_cannot_be_told() {
        let stored = Checkpoint {
            run_id: String::new(),
            ..stored()
        };
        let start = super::start(
            Some(&stored),
            Wanted {
                run_id: "",
                ..wanted()
            },
        );
        assert!(start.resumed, "{start:?}");
        assert!(start.reason.ends_with(NO_RUN_ID), "{start:?}");
        let start = super::start(Some(&super::tests::stored()), wanted());
        assert!(
            start.resumed && !start.reason.contains("run_id"),
            "{start:?}"
        );
    }
}
