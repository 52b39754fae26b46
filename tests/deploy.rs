//! The deployment files against each other and against the binary: the
//! Dockerfile, `.dockerignore` and `k8s/` (the kustomize base, the overlays
//! and their patches, the rules files). It only reads files, so it runs
//! wherever `cargo test` does, without kubectl or Docker; `.ci/deploy-checks`
//! renders and validates the same files with the real tools.
//!
//! Values that overlays may patch (the deadline, the max runtime, the exit
//! codes, the image) are collected from every file under `k8s/`, patches
//! included, so an overlay cannot break an invariant the base keeps.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use redis_janitor::exit::Exit;
use yaml_rust2::{Yaml, YamlLoader};

/// The container's name in the CronJob's pod template.
const CONTAINER: &str = "redis-janitor";
/// The janitor's default for `--timeout` (connect and per reply).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
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

/// Repo-relative paths of the files under `dir` whose names end with one of
/// `suffixes`, sorted.
fn files_under(dir: &str, suffixes: &[&str]) -> Vec<String> {
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
                .replace('\\', "/")
        })
        .filter(|p| suffixes.iter().any(|s| p.ends_with(s)))
        .collect();
    rel.sort();
    rel
}

/// The directories under k8s/ holding a kustomization.yaml (not components).
fn kustomizations() -> Vec<String> {
    let dirs: Vec<String> = files_under("k8s", &["/kustomization.yaml"])
        .into_iter()
        .filter(|k| load(k)[0]["kind"].as_str() != Some("Component"))
        .map(|k| k.trim_end_matches("/kustomization.yaml").to_string())
        .collect();
    assert!(
        dirs.contains(&"k8s/base".to_string()),
        "no k8s/base kustomization: {dirs:?}"
    );
    assert!(
        dirs.len() >= 2,
        "expected the base and at least one overlay: {dirs:?}"
    );
    dirs
}

/// Every YAML document of every manifest, patch and kustomization under
/// k8s/ (not k8s/checks, which holds the CI's own files), with its file.
fn k8s_docs() -> Vec<(String, Yaml)> {
    files_under("k8s", &[".yaml", ".yml"])
        .into_iter()
        .filter(|f| !f.starts_with("k8s/checks/"))
        .flat_map(|f| load(&f).into_iter().map(move |d| (f.clone(), d)))
        .collect()
}

/// The one document of kind `kind` in `rel`.
fn object(rel: &str, kind: &str) -> Yaml {
    let mut found: Vec<Yaml> = load(rel)
        .into_iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "{rel}: expected one {kind}");
    found.pop().unwrap()
}

fn cronjob() -> Yaml {
    object("k8s/base/cronjob.yaml", "CronJob")
}

fn pod_spec(cronjob: &Yaml) -> &Yaml {
    &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
}

fn container(cronjob: &Yaml) -> &Yaml {
    let containers = pod_spec(cronjob)["containers"]
        .as_vec()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container expected");
    let c = &containers[0];
    assert_eq!(c["name"].as_str(), Some(CONTAINER));
    c
}

/// The literal value of environment variable `name` in `container`.
fn env<'a>(container: &'a Yaml, name: &str) -> Option<&'a str> {
    container["env"]
        .as_vec()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
        .and_then(|e| e["value"].as_str())
}

/// Visits every node of `y`, with the key it sits under (if any).
fn walk<'a>(y: &'a Yaml, key: Option<&'a str>, visit: &mut dyn FnMut(Option<&'a str>, &'a Yaml)) {
    visit(key, y);
    match y {
        Yaml::Hash(h) => {
            for (k, v) in h {
                walk(v, k.as_str(), visit);
            }
        }
        Yaml::Array(a) => {
            for v in a {
                walk(v, None, visit);
            }
        }
        _ => {}
    }
}

/// Every value set for field `field` anywhere under k8s/: as a mapping key
/// (manifests, strategic-merge patches) or as the target of a JSON 6902
/// patch op (`path: .../field`).
fn field_values(field: &str) -> Vec<(String, Yaml)> {
    let mut out = Vec::new();
    for (file, doc) in k8s_docs() {
        walk(&doc, None, &mut |key, node| {
            if key == Some(field) {
                out.push((file.clone(), node.clone()));
            }
            if let (Some(path), false) = (node["path"].as_str(), node["value"].is_badvalue())
                && node["op"].as_str().is_some()
                && path.rsplit('/').next() == Some(field)
            {
                out.push((file.clone(), node["value"].clone()));
            }
        });
    }
    out
}

/// Every value given to environment variable `name` anywhere under k8s/:
/// `env` entries, and `NAME=value` literals of configMapGenerators.
fn env_values(name: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (file, doc) in k8s_docs() {
        walk(&doc, None, &mut |_, node| {
            if node["name"].as_str() == Some(name)
                && let Some(v) = node["value"].as_str()
            {
                out.push((file.clone(), v.to_string()));
            }
            if let Some(s) = node.as_str()
                && let Some(v) = s.strip_prefix(&format!("{name}="))
            {
                out.push((file.clone(), v.to_string()));
            }
        });
    }
    out
}

/// Every value of command-line flag `flag` in any container's args or
/// command under k8s/ (`--flag value` or `--flag=value`).
fn flag_values(flag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (file, doc) in k8s_docs() {
        walk(&doc, None, &mut |key, node| {
            if !matches!(key, Some("args") | Some("command")) {
                return;
            }
            let Some(items) = node.as_vec() else { return };
            let words: Vec<&str> = items.iter().filter_map(Yaml::as_str).collect();
            for (i, w) in words.iter().enumerate() {
                if let Some(v) = w.strip_prefix(&format!("{flag}=")) {
                    out.push((file.clone(), v.to_string()));
                } else if *w == flag {
                    let v = words
                        .get(i + 1)
                        .unwrap_or_else(|| panic!("{file}: {flag} without value"));
                    out.push((file.clone(), v.to_string()));
                }
            }
        });
    }
    out
}

fn duration(file: &str, text: &str) -> Duration {
    humantime::parse_duration(text).unwrap_or_else(|e| panic!("{file}: bad duration {text:?}: {e}"))
}

fn seconds(file: &str, y: &Yaml) -> Duration {
    let n = y
        .as_i64()
        .unwrap_or_else(|| panic!("{file}: expected whole seconds, got {y:?}"));
    Duration::from_secs(u64::try_from(n).unwrap())
}

fn cargo_toml() -> toml::Table {
    read("Cargo.toml").parse().expect("Cargo.toml")
}

fn package(field: &str) -> String {
    cargo_toml()["package"][field]
        .as_str()
        .unwrap_or_else(|| panic!("Cargo.toml: package.{field}"))
        .to_string()
}

// ---------------------------------------------------------------------------
// Dockerfile
// ---------------------------------------------------------------------------

/// One Dockerfile instruction, continuation lines joined, comments dropped.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

fn dockerfile() -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let (keyword, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push(Instruction {
            keyword: keyword.to_uppercase(),
            args: args.trim().to_string(),
        });
        current.clear();
    }
    assert!(
        current.is_empty(),
        "Dockerfile ends inside a continuation line"
    );
    out
}

/// Splits on whitespace outside double quotes, dropping the quotes.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// The stages, each with its instructions (the first entry holds the ARGs
/// before the first FROM).
fn stages() -> Vec<Vec<Instruction>> {
    let mut stages = vec![Vec::new()];
    for i in dockerfile() {
        if i.keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages.last_mut().unwrap().push(i);
    }
    assert!(stages.len() >= 3, "expected a builder and a runtime stage");
    stages
}

fn instructions<'a>(stage: &'a [Instruction], keyword: &str) -> Vec<&'a Instruction> {
    stage.iter().filter(|i| i.keyword == keyword).collect()
}

/// `COPY` split into its flags, sources and destination.
fn copy_parts(i: &Instruction) -> (Vec<String>, Vec<String>, String) {
    assert!(
        !i.args.starts_with('['),
        "use the plain COPY form: {}",
        i.args
    );
    let words = words(&i.args);
    let (flags, rest): (Vec<String>, Vec<String>) =
        words.into_iter().partition(|w| w.starts_with("--"));
    let (dest, sources) = rest
        .split_last()
        .expect("COPY needs a source and a destination");
    (flags, sources.to_vec(), dest.clone())
}

fn exec_form(i: &Instruction) -> Vec<String> {
    serde_json::from_str(&i.args).unwrap_or_else(|e| {
        panic!(
            "{} must use the exec (JSON) form: {}: {e}",
            i.keyword, i.args
        )
    })
}

fn labels() -> Vec<(String, String)> {
    let runtime = stages().pop().unwrap();
    instructions(&runtime, "LABEL")
        .iter()
        .flat_map(|i| words(&i.args))
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("LABEL {kv}: expected key=value"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn label(key: &str) -> String {
    let found: Vec<String> = labels()
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "the runtime stage must set LABEL {key} once"
    );
    found[0].clone()
}

/// `.dockerignore` as (re-include?, pattern), in order.
fn dockerignore() -> Vec<(bool, String)> {
    read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.strip_prefix('!') {
            Some(p) => (true, p.trim_matches('/').to_string()),
            None => (false, l.trim_matches('/').to_string()),
        })
        .collect()
}

/// One path segment against one pattern segment: `*` and `?` wildcards.
fn segment_matches(pattern: &[char], name: &[char]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some('*'), _) => {
            segment_matches(&pattern[1..], name)
                || (!name.is_empty() && segment_matches(pattern, &name[1..]))
        }
        (Some('?'), Some(_)) => segment_matches(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => segment_matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

fn path_matches(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            path_matches(&pattern[1..], path)
                || (!path.is_empty() && path_matches(pattern, &path[1..]))
        }
        (Some(p), Some(n)) => {
            let (p, n): (Vec<char>, Vec<char>) = (p.chars().collect(), n.chars().collect());
            segment_matches(&p, &n) && path_matches(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

/// Docker's rule: a pattern excludes a path if it matches the path or one of
/// its parent directories; the last pattern that matches decides.
fn dockerignored(patterns: &[(bool, String)], path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    let mut excluded = false;
    for (reinclude, pattern) in patterns {
        assert!(
            !pattern.contains('['),
            "tests/deploy.rs does not implement [..] in .dockerignore"
        );
        let pattern: Vec<&str> = pattern.split('/').collect();
        if (1..=segments.len()).any(|n| path_matches(&pattern, &segments[..n])) {
            excluded = !reinclude;
        }
    }
    excluded
}

fn version_numbers(v: &str) -> Vec<u64> {
    let mut n: Vec<u64> = v
        .split('.')
        .map(|p| p.parse().unwrap_or_else(|_| panic!("version {v}")))
        .collect();
    n.resize(3, 0);
    n
}

// ---------------------------------------------------------------------------
// The job stops itself before Kubernetes kills it
// ---------------------------------------------------------------------------

#[test]
fn max_runtime_is_below_active_deadline_seconds_with_margin() {
    let deadlines: Vec<(String, Duration)> = field_values("activeDeadlineSeconds")
        .into_iter()
        .map(|(f, v)| {
            let d = seconds(&f, &v);
            (f, d)
        })
        .collect();
    let mut runtimes: Vec<(String, Duration)> = env_values("JANITOR_MAX_RUNTIME")
        .into_iter()
        .chain(flag_values("--max-runtime"))
        .map(|(f, v)| {
            let d = duration(&f, &v);
            (f, d)
        })
        .collect();
    assert!(
        deadlines.iter().any(|(f, _)| f == "k8s/base/cronjob.yaml"),
        "the base CronJob must set activeDeadlineSeconds"
    );
    assert!(
        runtimes.iter().any(|(f, _)| f == "k8s/base/cronjob.yaml"),
        "the base CronJob must set JANITOR_MAX_RUNTIME (or --max-runtime): without it the job \
         runs until Kubernetes kills it and never reports"
    );
    runtimes.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
    let timeout = env_values("JANITOR_TIMEOUT")
        .into_iter()
        .chain(flag_values("--timeout"))
        .map(|(f, v)| duration(&f, &v))
        .max()
        .unwrap_or(DEFAULT_TIMEOUT);
    let margin = 2 * timeout + START_SLACK;
    for (deadline_file, deadline) in &deadlines {
        for (runtime_file, runtime) in &runtimes {
            assert!(
                *runtime + margin <= *deadline,
                "max runtime {runtime:?} ({runtime_file}) + margin {margin:?} (2 x timeout {timeout:?} \
                 + {START_SLACK:?} to start) must not exceed activeDeadlineSeconds {deadline:?} \
                 ({deadline_file}): the job must stop and report before Kubernetes kills it"
            );
        }
    }

    // SIGTERM (deadline, drain) lets the call in flight finish: the grace
    // period must outlast one reply timeout.
    let cronjob = cronjob();
    let grace = seconds(
        "k8s/base/cronjob.yaml",
        &pod_spec(&cronjob)["terminationGracePeriodSeconds"],
    );
    assert!(
        grace > timeout,
        "terminationGracePeriodSeconds {grace:?} must exceed the janitor's timeout {timeout:?}"
    );

    // A run ends before the next one is due, so none is skipped by Forbid.
    assert_eq!(
        cronjob["spec"]["concurrencyPolicy"].as_str(),
        Some("Forbid")
    );
    for (file, schedule) in field_values("schedule") {
        let schedule = schedule
            .as_str()
            .unwrap_or_else(|| panic!("{file}: schedule"))
            .to_string();
        let fields: Vec<&str> = schedule.split_whitespace().collect();
        assert_eq!(fields.len(), 5, "{file}: schedule {schedule:?}");
        let step = |field: &str| match field {
            "*" => Some(1),
            f => f.strip_prefix("*/").and_then(|n| n.parse::<u64>().ok()),
        };
        let fixed = |field: &str| field.parse::<u64>().is_ok();
        let period = match (fields[0], fields[1], &fields[2..]) {
            // M */N * * *: every N hours
            (m, h, ["*", "*", "*"]) if fixed(m) && step(h).is_some() => {
                Duration::from_secs(3600 * step(h).unwrap())
            }
            // */N * * * *: every N minutes
            (m, "*", ["*", "*", "*"]) if step(m).is_some() => {
                Duration::from_secs(60 * step(m).unwrap())
            }
            // M H * * *: daily
            (m, h, ["*", "*", "*"]) if fixed(m) && fixed(h) => Duration::from_secs(86_400),
            _ => continue, // nothing simple to compare
        };
        for (deadline_file, deadline) in &deadlines {
            assert!(
                deadline < &period,
                "activeDeadlineSeconds {deadline:?} ({deadline_file}) must be below the interval \
                 {period:?} of schedule {schedule:?} ({file})"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Exit codes and the Job
// ---------------------------------------------------------------------------

#[test]
fn pod_failure_policy_fails_the_job_on_the_usage_exit_code() {
    let usage = Exit::Usage as i64;
    assert_eq!(usage, 2, "README documents 2 as the usage exit code");
    let policies = field_values("podFailurePolicy");
    assert!(
        policies.iter().any(|(f, _)| f == "k8s/base/cronjob.yaml"),
        "the base CronJob must have a podFailurePolicy"
    );
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
            .expect("values")
            .iter()
            .filter_map(Yaml::as_i64)
            .collect();
        assert_eq!(
            codes,
            vec![usage],
            "{file}: only the usage exit code ({usage}: bad rules or settings) fails the Job at once; \
             runtime failures ({}) must be retried",
            Exit::Failure as i64
        );
        // A disruption (eviction, preemption, drain) is not the job's fault.
        assert!(
            rules.iter().any(|r| r["action"].as_str() == Some("Ignore")
                && r["onPodConditions"].as_vec().is_some_and(|c| c
                    .iter()
                    .any(|c| c["type"].as_str() == Some("DisruptionTarget")))),
            "{file}: a DisruptionTarget pod must not count as a failure"
        );
    }
    let cronjob = cronjob();
    let job = &cronjob["spec"]["jobTemplate"]["spec"];
    assert_eq!(
        pod_spec(&cronjob)["restartPolicy"].as_str(),
        Some("Never"),
        "podFailurePolicy needs it"
    );
    assert!(
        job["backoffLimit"].as_i64().is_some_and(|n| n >= 1),
        "runtime failures are retried"
    );
    assert!(
        job["ttlSecondsAfterFinished"].as_i64().is_some(),
        "manual Jobs must be cleaned up too"
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

    // The ConfigMap the rules come from is mounted where JANITOR_RULES points.
    let volumes = pod_spec(&cronjob)["volumes"].as_vec().expect("volumes");
    let volume = volumes
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == Some("redis-janitor-rules"))
        .expect("a volume of ConfigMap redis-janitor-rules");
    let mounts = c["volumeMounts"].as_vec().expect("volumeMounts");
    let mount = mounts
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the rules volume is mounted");
    assert_eq!(
        mount["mountPath"].as_str(),
        Some(mount_dir),
        "rules mount vs JANITOR_RULES"
    );
    assert_eq!(mount["readOnly"].as_bool(), Some(true));

    // Every kustomization that generates the ConfigMap names the file as
    // JANITOR_RULES expects, and the file passes `redis-janitor check`.
    let mut checked = Vec::new();
    for dir in kustomizations() {
        let k = &load(&format!("{dir}/kustomization.yaml"))[0];
        for generator in k["configMapGenerator"].as_vec().into_iter().flatten() {
            if generator["name"].as_str() != Some("redis-janitor-rules") {
                continue;
            }
            let files = generator["files"].as_vec().expect("files");
            assert_eq!(files.len(), 1, "{dir}: the rules ConfigMap holds one file");
            let entry = files[0].as_str().unwrap();
            let (key, path) = entry
                .split_once('=')
                .unwrap_or((entry.rsplit('/').next().unwrap(), entry));
            assert_eq!(
                key, file_name,
                "{dir}: ConfigMap key vs JANITOR_RULES {rules_path}"
            );
            checked.push(format!("{dir}/{path}"));
        }
    }
    assert!(
        checked.contains(&"k8s/base/rules.toml".to_string()),
        "{checked:?}"
    );
    // Rules files lying around under k8s/ are checked too.
    for file in files_under("k8s", &[".toml"]) {
        if !checked.contains(&file) {
            checked.push(file);
        }
    }
    for file in &checked {
        let out = Command::new(env!("CARGO_BIN_EXE_redis-janitor"))
            .args(["check", "--rules"])
            .arg(repo().join(file))
            .env_remove("JANITOR_RULES")
            .output()
            .expect("run redis-janitor check");
        assert_eq!(
            out.status.code(),
            Some(Exit::Success as i32),
            "redis-janitor check --rules {file} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------------------
// Image
// ---------------------------------------------------------------------------

#[test]
fn image_is_pinned_by_tag_in_one_place_and_never_latest() {
    let cronjob = cronjob();
    let image = container(&cronjob)["image"]
        .as_str()
        .expect("image")
        .to_string();
    let last = image.rsplit('/').next().unwrap();
    assert!(
        !last.contains(':') && !image.contains('@'),
        "the CronJob names the image without tag or digest ({image}): kustomize `images:` pins it"
    );
    // No manifest or patch sets an image itself.
    for (file, value) in field_values("image") {
        assert_eq!(
            value.as_str(),
            Some(image.as_str()),
            "{file}: set the image in kustomization `images:`, not in a manifest or patch"
        );
    }
    for dir in kustomizations() {
        let k = &load(&format!("{dir}/kustomization.yaml"))[0];
        let entries: Vec<&Yaml> = k["images"]
            .as_vec()
            .into_iter()
            .flatten()
            .filter(|e| e["name"].as_str() == Some(image.as_str()))
            .collect();
        assert_eq!(
            entries.len(),
            1,
            "{dir}: exactly one `images:` entry for {image}"
        );
        let entry = entries[0];
        let tag = match &entry["newTag"] {
            Yaml::String(s) => s.clone(),
            Yaml::BadValue => String::new(),
            other => panic!("{dir}: quote newTag ({other:?}): YAML would read 1.10 as 1.1"),
        };
        let digest = entry["digest"].as_str().unwrap_or("");
        assert!(
            !tag.is_empty() || !digest.is_empty(),
            "{dir}: {image} needs newTag (or digest)"
        );
        assert_ne!(tag.to_ascii_lowercase(), "latest", "{dir}: never `latest`");
        assert!(
            !tag.contains(':') && !tag.contains('@'),
            "{dir}: newTag {tag:?}"
        );
        if let Some(name) = entry["newName"].as_str() {
            assert!(
                !name.contains('@') && !name.rsplit('/').next().unwrap().contains(':'),
                "{dir}: newName {name}"
            );
        }
        if dir == "k8s/base" {
            // The base deploys the release this tree builds.
            assert_eq!(
                tag,
                package("version"),
                "k8s/base newTag vs Cargo.toml version"
            );
        }
    }
}

#[test]
fn dockerfile_copy_sources_exist_and_pass_dockerignore() {
    let ignore = dockerignore();
    let mut copied = 0;
    for stage in stages() {
        for i in instructions(&stage, "COPY")
            .into_iter()
            .chain(instructions(&stage, "ADD"))
        {
            assert_eq!(i.keyword, "COPY", "use COPY, not ADD: {}", i.args);
            let (flags, sources, _) = copy_parts(i);
            if flags.iter().any(|f| f.starts_with("--from=")) {
                continue;
            }
            for source in sources {
                let path = repo().join(&source);
                assert!(path.exists(), "COPY source {source} does not exist");
                assert!(
                    !dockerignored(&ignore, &source),
                    "COPY source {source} is excluded by .dockerignore"
                );
                if path.is_dir() {
                    // Its contents are in the context too.
                    for entry in std::fs::read_dir(&path).unwrap() {
                        let name = entry.unwrap().file_name();
                        let inner = format!("{source}/{}", name.to_string_lossy());
                        assert!(
                            !dockerignored(&ignore, &inner),
                            "{inner} is excluded by .dockerignore"
                        );
                    }
                }
                copied += 1;
            }
        }
    }
    // What the build needs is all there: the manifest, the lock file (for
    // --locked), the sources and the Lua scripts they embed.
    assert!(
        copied >= 4,
        "expected Cargo.toml, Cargo.lock, src and lua to be copied"
    );
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src/main.rs",
        "src/lib.rs",
        "lua/v3/clean.lua",
    ] {
        assert!(
            !dockerignored(&ignore, needed),
            "{needed} must be in the build context"
        );
    }
    // And nothing that must stay out.
    for unwanted in [
        "target/release/redis-janitor",
        ".git/config",
        "tests/tests.rs",
        "k8s/base/rules.toml",
    ] {
        assert!(
            dockerignored(&ignore, unwanted),
            "{unwanted} should be excluded by .dockerignore"
        );
    }
}

#[test]
fn dockerfile_builds_and_runs_the_crates_binary() {
    let cargo = cargo_toml();
    let name = package("name");
    // Without [[bin]] sections the binary is named after the package.
    let bin = match cargo.get("bin").and_then(|b| b.as_array()) {
        Some(bins) => {
            assert_eq!(bins.len(), 1, "one binary expected");
            bins[0]["name"].as_str().unwrap().to_string()
        }
        None => name.clone(),
    };
    assert_eq!(
        Path::new(env!("CARGO_BIN_EXE_redis-janitor"))
            .file_stem()
            .unwrap()
            .to_string_lossy(),
        bin
    );

    let stages = stages();
    let builder = &stages[1];
    let runtime = stages.last().unwrap();
    let builder_from = words(&builder[0].args);
    assert!(
        builder_from.len() == 3 && builder_from[1].eq_ignore_ascii_case("AS"),
        "name the builder stage: {:?}",
        builder_from
    );
    let builder_name = &builder_from[2];

    // Builds with the lock file, in release mode, every time.
    let builds: Vec<&str> = instructions(builder, "RUN")
        .iter()
        .flat_map(|r| r.args.split("&&"))
        .map(str::trim)
        .filter(|c| c.starts_with("cargo build"))
        .collect();
    assert!(!builds.is_empty(), "the builder runs cargo build");
    for build in builds {
        let flags: Vec<&str> = build.split_whitespace().collect();
        assert!(
            flags.contains(&"--locked") && flags.contains(&"--release"),
            "every build in the builder uses --locked --release: {build}"
        );
    }

    // The builder's Rust is new enough for the crate.
    let rust_version = instructions(&stages[0], "ARG")
        .iter()
        .find_map(|a| a.args.strip_prefix("RUST_VERSION="))
        .expect("ARG RUST_VERSION=... before the first FROM")
        .to_string();
    assert!(
        builder[0].args.contains("${RUST_VERSION}"),
        "the builder image uses ARG RUST_VERSION"
    );
    assert!(
        version_numbers(&rust_version) >= version_numbers(&package("rust-version")),
        "Dockerfile RUST_VERSION {rust_version} is below Cargo.toml rust-version"
    );

    // The runtime stage copies exactly the crate's binary from the builder,
    // and runs it.
    let copies = instructions(runtime, "COPY");
    assert_eq!(copies.len(), 1, "the runtime stage holds only the binary");
    let (flags, sources, dest) = copy_parts(copies[0]);
    assert_eq!(flags, vec![format!("--from={builder_name}")]);
    assert_eq!(sources.len(), 1);
    assert!(
        sources[0].ends_with(&format!("/target/release/{bin}")),
        "COPY --from={builder_name} {} must copy the release binary {bin}",
        sources[0]
    );
    let installed = if dest.ends_with('/') {
        format!("{dest}{bin}")
    } else {
        dest
    };
    assert_eq!(
        Path::new(&installed).file_name().unwrap().to_string_lossy(),
        bin
    );
    let entrypoint = instructions(runtime, "ENTRYPOINT");
    assert_eq!(entrypoint.len(), 1);
    assert_eq!(
        exec_form(entrypoint[0]),
        vec![installed],
        "ENTRYPOINT runs the copied binary"
    );
    let cmd = instructions(runtime, "CMD");
    assert_eq!(cmd.len(), 1);
    assert_eq!(
        exec_form(cmd[0]),
        vec!["run".to_string()],
        "the default command is `run`"
    );
}

#[test]
fn dockerfile_labels_match_the_crate() {
    assert_eq!(
        label("org.opencontainers.image.version"),
        package("version")
    );
    assert_eq!(
        label("io.github.redis-janitor.script-version"),
        redis_janitor::script::VERSION,
        "the image's script-version label must be the Lua script version the binary embeds"
    );
    assert_eq!(
        label("org.opencontainers.image.source"),
        package("repository")
    );
    assert_eq!(
        label("org.opencontainers.image.licenses"),
        package("license")
    );
    assert_eq!(label("org.opencontainers.image.title"), package("name"));
}

// ---------------------------------------------------------------------------
// Security
// ---------------------------------------------------------------------------

#[test]
fn cronjob_security_context_holds() {
    let cronjob = cronjob();
    let pod = pod_spec(&cronjob);
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"].as_bool(), Some(true));
    let uid = psc["runAsUser"].as_i64().expect("a fixed runAsUser");
    let gid = psc["runAsGroup"].as_i64().expect("a fixed runAsGroup");
    assert!(uid > 0 && gid > 0, "non-root uid and gid");
    assert_eq!(
        psc["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(
            pod[host].is_badvalue() || pod[host].as_bool() == Some(false),
            "{host}"
        );
    }

    // Its own ServiceAccount, without a token either.
    let sa_name = pod["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName");
    let sa = object("k8s/base/serviceaccount.yaml", "ServiceAccount");
    assert_eq!(sa["metadata"]["name"].as_str(), Some(sa_name));
    assert_eq!(sa["automountServiceAccountToken"].as_bool(), Some(false));
    let base = &load("k8s/base/kustomization.yaml")[0];
    let resources: Vec<&str> = base["resources"]
        .as_vec()
        .expect("resources")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    for needed in [
        "serviceaccount.yaml",
        "cronjob.yaml",
        "networkpolicy.yaml",
        "prometheusrule.yaml",
    ] {
        assert!(
            resources.contains(&needed),
            "k8s/base/kustomization.yaml lacks {needed}"
        );
    }

    let c = container(&cronjob);
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_ne!(sc["privileged"].as_bool(), Some(true));
    let drop: Vec<&str> = sc["capabilities"]["drop"]
        .as_vec()
        .expect("capabilities.drop")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(drop, vec!["ALL"]);
    assert!(
        sc["capabilities"]["add"].is_badvalue(),
        "no capability is added"
    );
    if let Some(user) = sc["runAsUser"].as_i64() {
        assert_eq!(user, uid);
    }

    // Requests and limits for both resources.
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][resource].as_str().is_some(),
                "resources.{kind}.{resource} must be set"
            );
        }
    }

    // The image runs as the same non-root user the pod asks for.
    let runtime = stages().pop().unwrap();
    let user = instructions(&runtime, "USER");
    assert_eq!(user.len(), 1, "the runtime stage sets USER");
    let (u, g) = user[0].args.split_once(':').expect("USER uid:gid, numeric");
    assert_eq!(
        u.parse::<i64>().ok(),
        Some(uid),
        "Dockerfile USER vs runAsUser"
    );
    assert_eq!(
        g.parse::<i64>().ok(),
        Some(gid),
        "Dockerfile USER vs runAsGroup"
    );

    // The namespace enforces the restricted Pod Security Standard.
    let ns = object("k8s/base/namespace.yaml", "Namespace");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"].as_str(),
        Some("restricted")
    );
}

#[test]
fn the_password_comes_from_a_secret_never_a_literal() {
    let cronjob = cronjob();
    let c = container(&cronjob);
    let password_file =
        env(c, "REDIS_PASSWORD_FILE").expect("REDIS_PASSWORD_FILE in the base CronJob");
    let (dir, file) = password_file.rsplit_once('/').unwrap();
    let volumes = pod_spec(&cronjob)["volumes"].as_vec().unwrap();
    let volume = volumes
        .iter()
        .find(|v| !v["secret"].is_badvalue())
        .expect("a Secret volume");
    let mount = c["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the Secret is mounted");
    assert_eq!(
        mount["mountPath"].as_str(),
        Some(dir),
        "Secret mount vs REDIS_PASSWORD_FILE"
    );
    assert_eq!(mount["readOnly"].as_bool(), Some(true));
    let items = volume["secret"]["items"].as_vec().expect("secret items");
    assert!(
        items.iter().any(|i| i["path"].as_str() == Some(file)),
        "the Secret provides {file}"
    );

    // REDIS_URL comes from config, and no URL anywhere carries a password.
    assert!(
        env(c, "REDIS_URL").is_none(),
        "REDIS_URL comes from the ConfigMap, not a literal"
    );
    let urls = env_values("REDIS_URL");
    assert!(!urls.is_empty());
    for (file, url) in urls {
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(&url);
        let authority = rest.split('/').next().unwrap();
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            assert!(
                !userinfo.contains(':'),
                "{file}: REDIS_URL carries a password"
            );
        }
    }
    // No Secret objects, generators or password literals are committed.
    for (file, doc) in k8s_docs() {
        assert_ne!(
            doc["kind"].as_str(),
            Some("Secret"),
            "{file}: never commit a Secret"
        );
        assert!(
            doc["secretGenerator"].is_badvalue(),
            "{file}: never generate a Secret from the repo"
        );
        walk(&doc, None, &mut |_, node| {
            if let (Some(name), Some(_)) = (node["name"].as_str(), node["value"].as_str()) {
                let upper = name.to_ascii_uppercase();
                assert!(
                    !(upper.contains("PASSWORD") || upper.contains("SECRET"))
                        || upper.ends_with("_FILE"),
                    "{file}: {name} is a literal"
                );
            }
        });
    }
}

// ---------------------------------------------------------------------------
// Labels, network, alerts
// ---------------------------------------------------------------------------

#[test]
fn labels_network_policy_and_alerts_match_the_cronjob() {
    let cronjob = cronjob();
    let name = cronjob["metadata"]["name"].as_str().unwrap().to_string();
    let job_labels = &cronjob["spec"]["jobTemplate"]["metadata"]["labels"];
    let pod_labels = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"];
    // `kubectl get jobs -l` and `kubectl logs -l` find every run, scheduled
    // or created by hand (kubectl copies the job template's labels).
    for labels in [job_labels, pod_labels] {
        assert_eq!(
            labels["app.kubernetes.io/name"].as_str(),
            Some("redis-janitor")
        );
    }

    // The NetworkPolicy selects the job's pods.
    let policy = object("k8s/base/networkpolicy.yaml", "NetworkPolicy");
    let selector = policy["spec"]["podSelector"]["matchLabels"]
        .as_hash()
        .expect("podSelector.matchLabels");
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(
            &pod_labels[k.as_str().unwrap()],
            v,
            "NetworkPolicy selector {k:?} vs pod labels"
        );
    }
    let types: Vec<&str> = policy["spec"]["policyTypes"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        types.contains(&"Ingress") && types.contains(&"Egress"),
        "{types:?}"
    );
    assert!(policy["spec"]["ingress"].is_badvalue(), "no ingress at all");
    let allowed: Vec<(String, i64)> = policy["spec"]["egress"]
        .as_vec()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["ports"].as_vec().cloned().unwrap_or_default())
        .map(|p| {
            (
                p["protocol"].as_str().unwrap_or("TCP").to_string(),
                p["port"].as_i64().expect("numeric port"),
            )
        })
        .collect();
    assert!(
        allowed.contains(&("UDP".into(), 53)) && allowed.contains(&("TCP".into(), 53)),
        "DNS: {allowed:?}"
    );
    // Every configured Redis URL's port is open.
    for (file, url) in env_values("REDIS_URL") {
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(&url);
        let host_port = rest.split('/').next().unwrap().rsplit('@').next().unwrap();
        let port = host_port
            .rsplit_once(':')
            .map(|(_, p)| p.parse::<i64>().expect("port"))
            .unwrap_or(6379);
        assert!(
            allowed.contains(&("TCP".into(), port)),
            "{file}: Redis port {port} not allowed: {allowed:?}"
        );
    }
    assert_eq!(
        allowed.len(),
        3,
        "egress only to DNS and Redis: {allowed:?}"
    );

    // The alerts watch this CronJob, with kube-state-metrics' job metrics.
    let rule = object("k8s/base/prometheusrule.yaml", "PrometheusRule");
    let rules = rule["spec"]["groups"][0]["rules"].as_vec().expect("rules");
    let alerts: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    assert_eq!(
        alerts,
        vec!["RedisJanitorRunFailed", "RedisJanitorNoSuccessfulRun"]
    );
    assert!(
        rules[0]["expr"]
            .as_str()
            .unwrap()
            .contains("kube_job_status_failed")
    );
    for (file, expr) in field_values("expr") {
        let expr = expr.as_str().unwrap_or_else(|| panic!("{file}: expr"));
        let mut selectors = 0;
        for matcher in ["owner_name=\"", "cronjob=\""] {
            for (at, _) in expr.match_indices(matcher) {
                let value = expr[at + matcher.len()..].split('"').next().unwrap();
                assert_eq!(
                    value, name,
                    "{file}: an alert selects {matcher}{value}\", not CronJob {name}"
                );
                selectors += 1;
            }
        }
        assert!(
            selectors > 0,
            "{file}: alert expr does not select CronJob {name}: {expr}"
        );
    }
}

#[test]
fn every_deploy_file_opens_with_a_comment() {
    let mut files = vec!["Dockerfile".to_string(), ".dockerignore".to_string()];
    files.extend(files_under("k8s", &[".yaml", ".yml", ".toml"]));
    for file in files {
        let first = read(&file).lines().next().unwrap_or_default().to_string();
        assert!(
            first.starts_with("# "),
            "{file} must open with a comment saying its job"
        );
    }
    for file in files_under("k8s", &[".py"]) {
        assert!(
            read(&file).starts_with("\"\"\""),
            "{file} must open with a docstring saying its job"
        );
    }
}
