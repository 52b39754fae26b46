//! The deployment files against the binary: only what needs the binary's own
//! values, which no linter knows. The exit code the Job fails on at once is
//! the binary's usage code; every rules file under `k8s/` passes `redis-janitor
//! check` and is mounted where `JANITOR_RULES` points; the job's max runtime
//! leaves the binary's timeout room before Kubernetes kills it; the image's
//! labels and tag name the binary's version and its script version; every
//! environment variable the manifests set is one the binary reads.
//!
//! The rest is checked on the rendered manifests and the Dockerfile by
//! `.ci/deploy-checks`: kubernetes-validate, promtool, hadolint, checkov and
//! our checkov policies (`k8s/checks/checkov`). Values an overlay may patch
//! are collected from every file under `k8s/`, patches included, so an
//! overlay cannot break what the base keeps.

use std::path::{Path, PathBuf};
use std::time::Duration;

use redis_janitor::connection::DEFAULT_TIMEOUT;
use redis_janitor::exit::Exit;
use yaml_rust2::{Yaml, YamlLoader};

use crate::support::janitor;

/// The base CronJob, which every overlay patches.
const BASE_CRONJOB: &str = "k8s/base/cronjob.yaml";
/// The container's name in the CronJob's pod template.
const CONTAINER: &str = "redis-janitor";
/// The ConfigMap the rules file is mounted from.
const RULES_CONFIGMAP: &str = "redis-janitor-rules";
/// Between the job's own stop (`--max-runtime`) and Kubernetes' kill
/// (`activeDeadlineSeconds`), beyond two timeouts (connecting, and the batch
/// in flight when the time is up): scheduling, image pull, container start.
const START_SLACK: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

fn load(rel: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: invalid YAML: {e}"))
}

/// Repo-relative paths of the files under `dir` whose names end with
/// `suffix`, sorted.
fn files_under(dir: &str, suffix: &str) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&repo().join(dir), &mut found);
    let mut rel: Vec<String> = found
        .iter()
        .map(|p| {
            p.strip_prefix(repo())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|p| p.ends_with(suffix))
        .collect();
    rel.sort();
    rel
}

/// The directories under k8s/ holding a kustomization (not a component).
fn kustomizations() -> Vec<String> {
    let dirs: Vec<String> = files_under("k8s", "/kustomization.yaml")
        .into_iter()
        .filter(|k| load(k)[0]["kind"].as_str() != Some("Component"))
        .map(|k| k.trim_end_matches("/kustomization.yaml").to_string())
        .collect();
    assert!(
        dirs.contains(&"k8s/base".to_string()),
        "no k8s/base kustomization: {dirs:?}"
    );
    dirs
}

/// Every YAML document under k8s/ (manifests, patches, kustomizations; not
/// k8s/checks, which holds CI's own files), with its file.
fn k8s_docs() -> Vec<(String, Yaml)> {
    files_under("k8s", ".yaml")
        .into_iter()
        .filter(|f| !f.starts_with("k8s/checks/"))
        .flat_map(|f| load(&f).into_iter().map(move |d| (f.clone(), d)))
        .collect()
}

// ---------------------------------------------------------------------------
// The base CronJob
// ---------------------------------------------------------------------------

fn cronjob() -> Yaml {
    load(BASE_CRONJOB)
        .into_iter()
        .find(|d| d["kind"].as_str() == Some("CronJob"))
        .unwrap_or_else(|| panic!("{BASE_CRONJOB}: no CronJob"))
}

fn pod_spec(cronjob: &Yaml) -> &Yaml {
    &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
}

fn container(cronjob: &Yaml) -> &Yaml {
    pod_spec(cronjob)["containers"]
        .as_vec()
        .expect("containers")
        .iter()
        .find(|c| c["name"].as_str() == Some(CONTAINER))
        .unwrap_or_else(|| panic!("no container {CONTAINER}"))
}

/// The literal value of environment variable `name` in `container`.
fn env<'a>(container: &'a Yaml, name: &str) -> Option<&'a str> {
    container["env"]
        .as_vec()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
        .and_then(|e| e["value"].as_str())
}

// ---------------------------------------------------------------------------
// Values anywhere under k8s/, overlays and patches included
// ---------------------------------------------------------------------------

/// Visits every node of `y`, with the key it sits under (if any).
fn walk<'a>(y: &'a Yaml, key: Option<&'a str>, visit: &mut dyn FnMut(Option<&'a str>, &'a Yaml)) {
    visit(key, y);
    match y {
        Yaml::Hash(h) => h.iter().for_each(|(k, v)| walk(v, k.as_str(), visit)),
        Yaml::Array(a) => a.iter().for_each(|v| walk(v, None, visit)),
        _ => {}
    }
}

/// Every value set for `field` under k8s/: as a mapping key (manifests,
/// strategic-merge patches) or as the target of a JSON 6902 patch op
/// (`path: .../field`).
fn field_values(field: &str) -> Vec<(String, Yaml)> {
    let mut out = Vec::new();
    for (file, doc) in k8s_docs() {
        walk(&doc, None, &mut |key, node| {
            if key == Some(field) {
                out.push((file.clone(), node.clone()));
            }
            if node["op"].as_str().is_some()
                && !node["value"].is_badvalue()
                && node["path"].as_str().and_then(|p| p.rsplit('/').next()) == Some(field)
            {
                out.push((file.clone(), node["value"].clone()));
            }
        });
    }
    out
}

/// Fails unless the base CronJob itself is among the files setting `what`:
/// overlays may change a value, the base must have one.
fn assert_set_in_base<T>(values: &[(String, T)], what: &str) {
    assert!(
        values.iter().any(|(file, _)| file == BASE_CRONJOB),
        "{BASE_CRONJOB} must set {what}"
    );
}

/// Every whole-seconds value set for `field` under k8s/ (see `field_values`).
fn seconds_values(field: &str) -> Vec<(String, Duration)> {
    field_values(field)
        .into_iter()
        .map(|(file, y)| {
            let n = y.as_i64().and_then(|n| u64::try_from(n).ok());
            let n = n.unwrap_or_else(|| panic!("{file}: {field}: whole seconds, not {y:?}"));
            (file, Duration::from_secs(n))
        })
        .collect()
}

/// Every value given to a duration setting of the binary under k8s/: its
/// environment variable `env` (an `env` entry, or a configMapGenerator
/// literal `NAME=value`) and its flag `flag` in a container's `args` or
/// `command` (`--flag value` or `--flag=value`).
fn duration_settings(env: &str, flag: &str) -> Vec<(String, Duration)> {
    let (literal, joined) = (format!("{env}="), format!("{flag}="));
    let mut out = Vec::new();
    for (file, doc) in k8s_docs() {
        let mut values: Vec<String> = Vec::new();
        walk(&doc, None, &mut |key, node| {
            if node["name"].as_str() == Some(env)
                && let Some(v) = node["value"].as_str()
            {
                values.push(v.into());
            }
            if let Some(v) = node.as_str().and_then(|s| s.strip_prefix(&literal)) {
                values.push(v.into());
            }
            if let (Some("args" | "command"), Some(items)) = (key, node.as_vec()) {
                let words: Vec<&str> = items.iter().filter_map(Yaml::as_str).collect();
                for (i, word) in words.iter().enumerate() {
                    if let Some(v) = word.strip_prefix(&joined) {
                        values.push(v.into());
                    } else if *word == flag {
                        let v = words.get(i + 1);
                        let v = v.unwrap_or_else(|| panic!("{file}: {flag} without a value"));
                        values.push(v.to_string());
                    }
                }
            }
        });
        for v in values {
            let d = humantime::parse_duration(&v)
                .unwrap_or_else(|e| panic!("{file}: {env}/{flag}: bad duration {v:?}: {e}"));
            out.push((file.clone(), d));
        }
    }
    out
}

/// The interval of a simple cron schedule (every N minutes, every N hours,
/// daily); `None` for anything else.
fn schedule_interval(schedule: &str) -> Option<Duration> {
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    let &[minute, hour, "*", "*", "*"] = fields.as_slice() else {
        return None;
    };
    let every = |field: &str| match field {
        "*" => Some(1),
        f => f.strip_prefix("*/")?.parse::<u64>().ok(),
    };
    let fixed = |field: &str| field.parse::<u64>().is_ok();
    match (minute, hour) {
        (m, h) if fixed(m) && fixed(h) => Some(Duration::from_secs(86_400)),
        (m, h) if fixed(m) => Some(Duration::from_secs(3600 * every(h)?)),
        (m, "*") => Some(Duration::from_secs(60 * every(m)?)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Exit codes and the Job
// ---------------------------------------------------------------------------

#[test]
fn pod_failure_policy_fails_the_job_on_the_usage_exit_code_only() {
    let usage = Exit::Usage as i64;
    let policies = field_values("podFailurePolicy");
    assert_set_in_base(&policies, "a podFailurePolicy");
    for (file, policy) in &policies {
        let rules = policy["rules"]
            .as_vec()
            .unwrap_or_else(|| panic!("{file}: podFailurePolicy.rules"));
        let fail_job: Vec<&Yaml> = rules
            .iter()
            .filter(|r| r["action"].as_str() == Some("FailJob"))
            .collect();
        assert_eq!(fail_job.len(), 1, "{file}: expected one FailJob rule");
        let on = &fail_job[0]["onExitCodes"];
        assert_eq!(on["operator"].as_str(), Some("In"), "{file}");
        assert_eq!(on["containerName"].as_str(), Some(CONTAINER), "{file}");
        let codes: Vec<i64> = on["values"]
            .as_vec()
            .unwrap_or_else(|| panic!("{file}: onExitCodes.values"))
            .iter()
            .filter_map(Yaml::as_i64)
            .collect();
        assert_eq!(
            codes,
            vec![usage],
            "{file}: only the usage exit code ({usage}: bad rules or settings) fails the Job at \
             once; runtime failures ({}) must be retried",
            Exit::Failure as i64
        );

        // A disruption (eviction, preemption, drain) is not the job's fault.
        let disruption = |c: &Yaml| {
            c["type"].as_str() == Some("DisruptionTarget") && c["status"].as_str() == Some("True")
        };
        assert!(
            rules.iter().any(|r| r["action"].as_str() == Some("Ignore")
                && r["onPodConditions"]
                    .as_vec()
                    .is_some_and(|c| c.iter().any(disruption))),
            "{file}: an Ignore rule for the pod condition DisruptionTarget, status \"True\""
        );
    }

    // What the policy relies on: exit codes are seen by the Job (pods are not
    // restarted in place), and runtime failures get retries.
    let cronjob = cronjob();
    assert_eq!(
        pod_spec(&cronjob)["restartPolicy"].as_str(),
        Some("Never"),
        "podFailurePolicy needs restartPolicy: Never"
    );
    let backoff = &cronjob["spec"]["jobTemplate"]["spec"]["backoffLimit"];
    assert!(
        backoff.as_i64().is_some_and(|n| n >= 1),
        "runtime failures (exit {}) are retried: backoffLimit {backoff:?}",
        Exit::Failure as i64
    );
}

// ---------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------

#[test]
fn every_rules_file_passes_check_and_is_mounted_where_janitor_rules_points() {
    let cronjob = cronjob();
    let c = container(&cronjob);
    let rules_path = env(c, "JANITOR_RULES").expect("JANITOR_RULES in the base CronJob");
    let (mount_dir, file_name) = rules_path
        .rsplit_once('/')
        .expect("JANITOR_RULES is a path");

    // The rules ConfigMap is mounted where JANITOR_RULES points.
    let volume = pod_spec(&cronjob)["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == Some(RULES_CONFIGMAP))
        .unwrap_or_else(|| panic!("a volume of ConfigMap {RULES_CONFIGMAP}"));
    let mount = c["volumeMounts"]
        .as_vec()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the rules volume is mounted");
    assert_eq!(
        mount["mountPath"].as_str(),
        Some(mount_dir),
        "rules mount vs JANITOR_RULES"
    );

    // Every kustomization that generates the ConfigMap names its one file as
    // JANITOR_RULES expects.
    let mut rules_files = Vec::new();
    for dir in kustomizations() {
        let k = &load(&format!("{dir}/kustomization.yaml"))[0];
        for generator in k["configMapGenerator"].as_vec().into_iter().flatten() {
            if generator["name"].as_str() != Some(RULES_CONFIGMAP) {
                continue;
            }
            let files = generator["files"].as_vec().expect("files");
            assert_eq!(files.len(), 1, "{dir}: the rules ConfigMap holds one file");
            let entry = files[0].as_str().unwrap();
            // `key=path`, or `path` whose file name is the key.
            let (key, path) = entry
                .split_once('=')
                .unwrap_or((entry.rsplit('/').next().unwrap(), entry));
            assert_eq!(
                key, file_name,
                "{dir}: ConfigMap key vs JANITOR_RULES {rules_path}"
            );
            rules_files.push(format!("{dir}/{path}"));
        }
    }
    assert!(
        rules_files.contains(&"k8s/base/rules.toml".to_string()),
        "{rules_files:?}"
    );

    // Every rules file under k8s/, generated or lying around, passes check.
    for file in files_under("k8s", ".toml") {
        if !rules_files.contains(&file) {
            rules_files.push(file);
        }
    }
    for file in &rules_files {
        let out = janitor()
            .args(["check", "--rules"])
            .arg(repo().join(file))
            .run();
        assert_eq!(
            out.code,
            Exit::Success as i32,
            "redis-janitor check --rules {file} failed:\n{}",
            out.dump()
        );
    }
}

// ---------------------------------------------------------------------------
// The job stops itself before Kubernetes kills it
// ---------------------------------------------------------------------------

#[test]
fn max_runtime_and_timeouts_fit_the_deadline_the_grace_period_and_the_schedule() {
    let deadlines = seconds_values("activeDeadlineSeconds");
    let runtimes = duration_settings("JANITOR_MAX_RUNTIME", "--max-runtime");
    assert_set_in_base(&deadlines, "activeDeadlineSeconds");
    // Without it the job runs until Kubernetes kills it, and never reports.
    assert_set_in_base(&runtimes, "JANITOR_MAX_RUNTIME (or --max-runtime)");

    // The longest timeout any file sets, else the binary's default.
    let timeout = duration_settings("JANITOR_TIMEOUT", "--timeout")
        .into_iter()
        .map(|(_, d)| d)
        .max()
        .unwrap_or(DEFAULT_TIMEOUT);

    // The job stops and reports before Kubernetes kills it.
    let margin = 2 * timeout + START_SLACK;
    for (deadline_file, deadline) in &deadlines {
        for (runtime_file, runtime) in &runtimes {
            assert!(
                *runtime + margin <= *deadline,
                "max runtime {runtime:?} ({runtime_file}) + {margin:?} (2 x timeout {timeout:?} \
                 + {START_SLACK:?} to start) must not exceed activeDeadlineSeconds {deadline:?} \
                 ({deadline_file}): the job must stop and report before Kubernetes kills it"
            );
        }
    }

    // SIGTERM (deadline, drain) lets the call in flight finish: the grace
    // period must outlast one reply timeout.
    let grace_periods = seconds_values("terminationGracePeriodSeconds");
    assert_set_in_base(&grace_periods, "terminationGracePeriodSeconds");
    for (file, grace) in &grace_periods {
        assert!(
            *grace > timeout,
            "terminationGracePeriodSeconds {grace:?} ({file}) must exceed the timeout {timeout:?}"
        );
    }

    // A run ends before the next one is due.
    let schedules = field_values("schedule");
    assert!(
        schedules
            .iter()
            .any(|(f, s)| f == BASE_CRONJOB && s.as_str().and_then(schedule_interval).is_some()),
        "{BASE_CRONJOB}: a schedule that schedule_interval reads"
    );
    for (file, schedule) in schedules {
        let schedule = schedule
            .as_str()
            .unwrap_or_else(|| panic!("{file}: schedule"));
        let Some(interval) = schedule_interval(schedule) else {
            continue; // nothing simple to compare
        };
        for (deadline_file, deadline) in &deadlines {
            assert!(
                *deadline < interval,
                "activeDeadlineSeconds {deadline:?} ({deadline_file}) must be below the interval \
                 {interval:?} of schedule {schedule:?} ({file})"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The image
// ---------------------------------------------------------------------------

/// The value of `key="value"` in a LABEL of the Dockerfile, found by a line
/// search: the Dockerfile sets one label a line.
fn dockerfile_label(key: &str) -> String {
    let prefix = format!("{key}=");
    let values: Vec<String> = read("Dockerfile")
        .lines()
        .map(|line| line.trim().trim_start_matches("LABEL").trim_start())
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(|value| {
            value
                .trim_end_matches('\\')
                .trim()
                .trim_matches('"')
                .to_string()
        })
        .collect();
    assert_eq!(
        values.len(),
        1,
        "Dockerfile: expected one LABEL {key}=..., found {values:?}"
    );
    values.into_iter().next().unwrap()
}

#[test]
fn the_image_names_the_binarys_version_and_script_version() {
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        dockerfile_label("io.github.redis-janitor.script-version"),
        redis_janitor::script::VERSION,
        "the image's script-version label must be the Lua script version the binary embeds"
    );
    assert_eq!(
        dockerfile_label("org.opencontainers.image.version"),
        version,
        "the image's version label must be the binary's version (`redis-janitor --version`)"
    );

    // The base deploys the release this tree builds.
    let cronjob = cronjob();
    let image = container(&cronjob)["image"].as_str().expect("image");
    let base = &load("k8s/base/kustomization.yaml")[0];
    let entry = base["images"]
        .as_vec()
        .expect("k8s/base/kustomization.yaml: images")
        .iter()
        .find(|e| e["name"].as_str() == Some(image))
        .unwrap_or_else(|| panic!("k8s/base/kustomization.yaml: no images entry for {image}"));
    assert_eq!(
        entry["newTag"].as_str(),
        Some(version),
        "k8s/base newTag vs the binary's version"
    );
}

/// Every environment variable the manifests give the container (an `env`
/// entry, or a configMapGenerator literal `NAME=value`) is one the binary
/// reads: a misspelt name would be ignored without a word.
#[test]
fn every_environment_variable_in_the_manifests_is_one_the_binary_reads() {
    let help = janitor().args(["run", "--help"]).run();
    help.assert_code(0);
    let mut known: Vec<&str> = help
        .stdout
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .collect();
    known.push("RUST_LOG");
    assert!(known.contains(&"REDIS_SENTINEL_PASSWORD_FILE"), "{known:?}");
    let mut given = Vec::new();
    for (file, doc) in k8s_docs() {
        walk(&doc, None, &mut |key, node| match (key, node) {
            (Some("env"), Yaml::Array(entries)) => {
                for entry in entries {
                    given.extend(
                        entry["name"]
                            .as_str()
                            .map(|n| (file.clone(), n.to_string())),
                    );
                }
            }
            (Some("literals"), Yaml::Array(literals)) => {
                for literal in literals.iter().filter_map(Yaml::as_str) {
                    given.extend(
                        literal
                            .split_once('=')
                            .map(|(n, _)| (file.clone(), n.to_string())),
                    );
                }
            }
            _ => {}
        });
    }
    assert!(given.len() > 10, "{given:?}");
    for (file, name) in given {
        assert!(
            known.contains(&name.as_str()),
            "{file}: {name} is no variable the binary reads"
        );
    }
}
