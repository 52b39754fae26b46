//! What a pass did: the running counts, and the final report rendered as text
//! or as one JSON object (its fields are documented in the README).

use std::time::Duration;

use serde::Serialize;

use crate::exit::Stop;
use crate::rules::Rules;
use crate::scripts::Script;

/// The counters a pass keeps as it goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Keys SCAN returned.
    pub keys_scanned: u64,
    /// Keys whose name matched a rule's pattern and went to the script.
    pub keys_matched: u64,
    /// Script calls that completed.
    pub batches: u64,
    /// Keys gone between SCAN and the script.
    pub vanished: u64,
    /// Keys whose name matched but whose state no rule's conditions took.
    pub unchanged: u64,
    /// Keys each rule acted on (or would have, in a dry run), in rule order.
    pub per_rule: Vec<u64>,
    /// Times a NOSCRIPT reply made the pass load its script again.
    pub script_reloads: u64,
}

impl Counts {
    /// Zeroed counts for `rules`.
    pub fn new(rules: &Rules) -> Counts {
        Counts {
            per_rule: vec![0; rules.rules.len()],
            ..Counts::default()
        }
    }

    /// Keys acted on by any rule.
    pub fn acted(&self) -> u64 {
        self.per_rule.iter().sum()
    }
}

/// The final report of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The pass reached the end of the keyspace.
    pub complete: bool,
    /// Nothing was written: counts are what a real run would do.
    pub dry_run: bool,
    /// Why the pass stopped early, if it was asked to.
    pub stopped_by: Option<Stop>,
    /// The one-line cause, when the run failed.
    pub error: Option<String>,
    /// Keys SCAN returned.
    pub keys_scanned: u64,
    /// Keys whose name matched a rule's pattern and went to the script.
    pub keys_matched: u64,
    /// Script calls that completed.
    pub batches: u64,
    /// Wall time of the run, in seconds.
    pub duration_seconds: f64,
    /// Keys gone between SCAN and the script.
    pub vanished: u64,
    /// Keys that matched a pattern but that no rule's conditions took.
    pub unchanged: u64,
    /// Per rule, in rule order: how many keys it deleted or gave a TTL.
    pub rules: Vec<RuleCount>,
    /// The script the pass ran, once it was chosen for the server.
    pub script: Option<ScriptInfo>,
    /// Times a NOSCRIPT reply made the pass load its script again.
    pub script_reloads: u64,
    /// The server cleaned, when the connection got that far.
    pub server: Option<ServerInfo>,
}

/// One rule's line in the report.
#[derive(Debug, Clone, Serialize)]
pub struct RuleCount {
    /// The rule's name.
    pub name: String,
    /// "delete" or "expire".
    pub action: &'static str,
    /// Keys it acted on (or would have, in a dry run).
    pub keys: u64,
}

/// The script named in the report and the log.
#[derive(Debug, Clone, Serialize)]
pub struct ScriptInfo {
    /// Script name, e.g. "clean".
    pub name: String,
    /// Script version, e.g. "v1".
    pub version: String,
    /// SHA-1 of the exact text loaded.
    pub sha: String,
}

/// The server the pass ran against.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    /// `redis_version` from INFO.
    pub version: String,
    /// `host:port`.
    pub address: String,
}

impl Report {
    /// Builds the report from a pass's counts.
    pub fn new(
        rules: &Rules,
        script: Option<&Script>,
        counts: &Counts,
        duration: Duration,
        dry_run: bool,
    ) -> Report {
        Report {
            complete: false,
            dry_run,
            stopped_by: None,
            error: None,
            keys_scanned: counts.keys_scanned,
            keys_matched: counts.keys_matched,
            batches: counts.batches,
            duration_seconds: duration.as_secs_f64(),
            vanished: counts.vanished,
            unchanged: counts.unchanged,
            rules: rules
                .rules
                .iter()
                .zip(&counts.per_rule)
                .map(|(rule, &keys)| RuleCount {
                    name: rule.name.clone(),
                    action: rule.action.name(),
                    keys,
                })
                .collect(),
            script: script.map(|script| ScriptInfo {
                name: script.name.clone(),
                version: script.version.clone(),
                sha: script.sha.clone(),
            }),
            script_reloads: counts.script_reloads,
            server: None,
        }
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("the report serializes")
    }

    /// The report as aligned text for a person.
    pub fn to_text(&self) -> String {
        let status = match (&self.error, self.stopped_by, self.complete) {
            (Some(_), _, _) => "failed".to_string(),
            (None, Some(stop), _) => format!("stopped early ({})", stop.describe()),
            (None, None, true) => "complete".to_string(),
            (None, None, false) => "incomplete".to_string(),
        };
        let verb = if self.dry_run {
            "would act on"
        } else {
            "acted on"
        };
        let mut text = format!(
            "redis-janitor {}: pass {status}{}\n",
            if self.dry_run { "dry run" } else { "run" },
            self.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
        if let Some(server) = &self.server {
            text += &format!(
                "  server          {} (Redis {})\n",
                server.address, server.version
            );
        }
        if let Some(script) = &self.script {
            text += &format!(
                "  script          {} {} {}\n",
                script.name, script.version, script.sha
            );
        }
        text += &format!("  keys scanned    {}\n", self.keys_scanned);
        text += &format!("  keys matched    {}\n", self.keys_matched);
        text += &format!("  batches         {}\n", self.batches);
        text += &format!("  duration        {:.3}s\n", self.duration_seconds);
        for rule in &self.rules {
            text += &format!(
                "  rule {:<24} {verb} {} keys ({})\n",
                rule.name, rule.keys, rule.action
            );
        }
        text += &format!("  unchanged       {}\n", self.unchanged);
        text += &format!("  vanished        {}\n", self.vanished);
        if self.script_reloads > 0 {
            text += &format!("  script reloads  {}\n", self.script_reloads);
        }
        text
    }
}
