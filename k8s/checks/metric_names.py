"""Checks that the alerts and the Grafana dashboard query only metrics that
exist; run by .ci/deploy-checks.

Usage:
  metric_names.py [--metrics docs/metrics.md] [--promtool PROMTOOL] FILE...
  metric_names.py --self-test [--metrics ...] [--promtool ...] DASHBOARD.json RULES.yaml

FILE is a Grafana dashboard (.json) or a YAML file holding Prometheus rule
groups: a rule file (`groups:`), a PrometheusRule, or rendered manifests
with one. Every PromQL expression in them (a rule's `expr`; a dashboard
target's `expr` and its query variables' `label_values(...)` and
`query_result(...)`) is split into tokens, and every metric name it selects
must be one the job emits: a name in the first column of the table in
docs/metrics.md, the one list of them. The rule files may also use the
kube-state-metrics names of the alerts on the CronJob's Jobs
(KUBE_STATE_METRICS below). Each unknown name is one line:

  FILE: WHERE: NAME is not a metric the job emits (docs/metrics.md)

An expression without any metric name is an error too: it would mean the
name extraction broke. The dashboard must take its data source from its
`datasource` variable (no data source uid written into a panel) and have an
`instance` variable. With --promtool, every dashboard expression (Grafana's
variables replaced by sample values) is also parsed by `promtool check
rules`, as a recording rule; the rule files are parsed by promtool in their
own step of .ci/deploy-checks.

--self-test runs the checker on deliberately wrong copies of DASHBOARD and
RULES (a misspelt metric in a panel, in a variable and in an alert; an
expression that does not parse) and on tricky expressions, and fails unless
each mistake is reported: a checker that passes everything fails here.
Exit codes: 0 all known, 1 a problem found, 2 bad usage or input.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

# kube-state-metrics series the alerts on the CronJob's Jobs use (group
# `redis-janitor` of k8s/base/prometheusrule.yaml); allowed in rule files only.
KUBE_STATE_METRICS = {
    "kube_cronjob_created",
    "kube_cronjob_spec_suspend",
    "kube_cronjob_status_last_successful_time",
    "kube_job_owner",
    "kube_job_status_active",
    "kube_job_status_completion_time",
    "kube_job_status_failed",
    "kube_job_status_start_time",
    "kube_job_status_succeeded",
}

METRIC_PREFIX = "redis_janitor_"
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
# PromQL words that are not metric names when not followed by "(".
KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "offset", "bool", "inf", "nan", "atan2",
}
TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<comment>\#[^\n]*)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])*)
      | (?P<name>""" + NAME + r""")
      | (?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
# Grafana's variables: intervals become a duration, any other a number
# (they sit in label matchers' strings, or where a number goes).
GRAFANA_INTERVAL = re.compile(r"\$(?:\{__(?:rate_interval|interval|range)(?::\w+)?\}|__(?:rate_interval|interval|range)\b)")
GRAFANA_VARIABLE = re.compile(r"\$\{\w+(?::\w+)?\}|\$\w+|\[\[\w+(?::\w+)?\]\]")


class Problem(Exception):
    """Bad input: the file cannot be read as what it should be."""


def emitted_metrics(path):
    """The metric names in the first column of the table(s) in docs/metrics.md."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise Problem(f"{path}: cannot read the list of metrics: {e.strerror}")
    names = set()
    for number, line in enumerate(lines, 1):
        m = re.match(r"\s*\|\s*`(" + NAME + r")", line)
        if not m:
            continue
        name = m.group(1)
        if not name.startswith(METRIC_PREFIX):
            raise Problem(f"{path}:{number}: {name} does not start with {METRIC_PREFIX}")
        if name in names:
            raise Problem(f"{path}:{number}: {name} is listed twice")
        names.add(name)
    if not names:
        raise Problem(f"{path}: no table row whose first column is a metric name in backticks")
    return names


def grafana_to_promql(expr):
    """expr with Grafana's variables replaced by sample values."""
    return GRAFANA_VARIABLE.sub("1", GRAFANA_INTERVAL.sub("5m", expr))


def metric_names(expr):
    """The metric names a PromQL expression selects, in order of appearance."""
    tokens = [(m.lastgroup, m.group()) for m in TOKEN.finditer(expr)]
    tokens = [(kind, text) for kind, text in tokens if kind not in ("space", "comment")]
    names = []
    depth = 0  # inside {...}: label names, not metrics
    brackets = 0  # inside [...]: a range or a subquery's range and step
    skip_list = False  # the (...) after by/without/on/ignoring/group_*
    for i, (kind, text) in enumerate(tokens):
        following = tokens[i + 1][1].lower() if i + 1 < len(tokens) else ""
        if kind == "other":
            if text == "{":
                depth += 1
            elif text == "}":
                depth -= 1
            elif text == "[":
                brackets += 1
            elif text == "]":
                brackets -= 1
            elif text == ")" and skip_list:
                skip_list = False
            continue
        if brackets:
            continue
        if kind == "name" and depth and text == "__name__":
            # {__name__="metric"}: the operator's characters, then the string.
            j = i + 1
            while j < len(tokens) and tokens[j][0] == "other":
                j += 1
            operator = "".join(t for _, t in tokens[i + 1 : j])
            if operator != "=" or j == len(tokens) or tokens[j][0] != "string":
                raise Problem(f"a __name__ matcher other than = \"NAME\" cannot be checked: {expr!r}")
            names.append(tokens[j][1][1:-1])
        if kind != "name" or depth or skip_list:
            continue
        if text.lower() in ("by", "without", "on", "ignoring", "group_left", "group_right") and following == "(":
            skip_list = True
            continue
        # A function or an aggregation (`sum(`, `sum by (`), or a keyword.
        if following in ("(", "by", "without") or text.lower() in KEYWORDS:
            continue
        names.append(text)
    return names


def dashboard_queries(path, dash):
    """(where, expr) of every PromQL expression in a Grafana dashboard, and
    the problems of its layout."""
    queries, problems = [], []
    if not isinstance(dash, dict) or not isinstance(dash.get("panels"), list):
        raise Problem(f"{path}: not a Grafana dashboard (no panels)")
    variables = {v.get("name"): v for v in (dash.get("templating") or {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append(f"{path}: no `datasource` variable of type datasource for prometheus")
    if "instance" not in variables:
        problems.append(f"{path}: no `instance` variable")
    for name, var in variables.items():
        if var.get("type") != "query":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        m = re.fullmatch(r"\s*(?:label_values\((.*),\s*" + NAME + r"\s*\)|query_result\((.*)\))\s*", query or "", re.DOTALL)
        if not m:
            problems.append(f"{path}: variable {name}: not label_values(EXPR, LABEL) or query_result(EXPR): {query!r}")
            continue
        queries.append((f"variable {name}", m.group(1) or m.group(2)))

    def walk(panels):
        for panel in panels:
            title = f"panel {panel.get('title', panel.get('id'))!r}"
            walk(panel.get("panels") or [])
            if panel.get("type") == "row":
                continue
            datasources = [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets") or []]
            for d in datasources:
                if d is not None and (not isinstance(d, dict) or d.get("uid") != "${datasource}"):
                    problems.append(f"{path}: {title}: data source {d!r}, not the variable ${{datasource}}")
            if not panel.get("targets"):
                problems.append(f"{path}: {title}: no query")
            for target in panel.get("targets") or []:
                expr = target.get("expr")
                if not isinstance(expr, str) or not expr.strip():
                    problems.append(f"{path}: {title} target {target.get('refId')}: no PromQL expr")
                    continue
                queries.append((f"{title} target {target.get('refId')}", expr))

    walk(dash["panels"])
    return queries, problems


def rule_queries(path, docs):
    """(where, expr) of every rule in the rule groups of YAML documents."""
    queries = []
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        if doc.get("kind") == "PrometheusRule":
            groups = (doc.get("spec") or {}).get("groups")
        elif "groups" in doc and "kind" not in doc:
            groups = doc["groups"]
        else:
            continue
        for group in groups or []:
            for rule in group.get("rules") or []:
                name = rule.get("alert") or rule.get("record")
                queries.append((f"group {group.get('name')} rule {name}", rule.get("expr", "")))
    if not queries:
        raise Problem(f"{path}: no rule groups")
    return queries


def promtool_parse(promtool, path, queries):
    """Problems promtool finds parsing the expressions as recording rules."""
    rules = [{"record": f"dashboard:query:{i}", "expr": grafana_to_promql(expr)} for i, (_, expr) in enumerate(queries)]
    with tempfile.TemporaryDirectory() as tmp:
        file = os.path.join(tmp, "dashboard.rules.yaml")
        with open(file, "w") as f:
            yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
        out = subprocess.run([promtool, "check", "rules", file], capture_output=True, text=True)
    if out.returncode == 0:
        return []
    problems = []
    for line in (out.stdout + out.stderr).splitlines():
        m = re.search(r"group \"dashboard\", rule (\d+), \"dashboard:query:\d+\": (.*)", line)
        if m and int(m.group(1)) - 1 < len(queries):
            where, expr = queries[int(m.group(1)) - 1]
            problems.append(f"{path}: {where}: promtool cannot parse {expr!r}: {m.group(2)}")
    return problems or [f"{path}: promtool check rules failed: {(out.stdout + out.stderr).strip()}"]


def check_file(path, known, promtool):
    """The problems of one file, one line each; raises Problem on bad input."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise Problem(f"{path}: {e.strerror}")
    if path.endswith(".json"):
        try:
            dash = json.loads(text)
        except json.JSONDecodeError as e:
            raise Problem(f"{path}:{e.lineno}: not JSON: {e.msg}")
        queries, problems = dashboard_queries(path, dash)
        allowed = known
    else:
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as e:
            raise Problem(f"{path}: not YAML: {' '.join(str(e).split())}")
        queries, problems = rule_queries(path, docs), []
        allowed = known | KUBE_STATE_METRICS
    used = set()
    for where, expr in queries:
        try:
            names = metric_names(grafana_to_promql(expr))
        except Problem as e:
            problems.append(f"{path}: {where}: {e}")
            continue
        if not names:
            problems.append(f"{path}: {where}: no metric name found in {expr!r}")
        for name in dict.fromkeys(names):
            if name not in allowed:
                problems.append(f"{path}: {where}: {name} is not a metric the job emits (docs/metrics.md)")
        used.update(names)
    if promtool and path.endswith(".json") and queries:
        problems += promtool_parse(promtool, path, queries)
    return problems, len(queries), used


def check(paths, metrics, promtool):
    """Checks every file, prints each problem; returns the number found."""
    known = emitted_metrics(metrics)
    bad = 0
    used = set()
    for path in paths:
        problems, count, names = check_file(path, known, promtool)
        used |= names
        for p in problems:
            print(f"ERROR {p}")
        bad += len(problems)
        if not problems:
            print(f"ok    {path}: {count} expressions, {len(names)} metric names, all known")
    unused = sorted(known - used)
    if unused:
        print(f"note  emitted but used by none of these files: {', '.join(unused)}")
    return bad


# --- self-test ----------------------------------------------------------------

EXTRACTION_CASES = [
    ('sum by (instance, rule) (redis_janitor_keys_acted_total{rule="a b", node=~"x|y"})', ["redis_janitor_keys_acted_total"]),
    ("time() - max by (node) (redis_janitor_last_success_timestamp_seconds{dry_run!=\"true\"}) > 4 * 3600", ["redis_janitor_last_success_timestamp_seconds"]),
    ("rate(foo_total[5m] offset 1h) / on (a) group_left (b) bar", ["foo_total", "bar"]),
    ("max(x) by (instance) and on () absent(y{a=\"}\"})", ["x", "y"]),
    ('label_replace(m, "dst", "$1", "src", "(.*)") unless ignoring (z) n', ["m", "n"]),
    ("avg_over_time(a[7d:1h]) > bool 1e3 or b offset 5m # c", ["a", "b"]),
    ('{__name__="redis_janitor_dry_run", instance="i"}', ["redis_janitor_dry_run"]),
    ('count({instance="i", __name__ = "a:b"})', ["a:b"]),
    ("sum without (node) (q) * 0x10 + inf", ["q"]),
    (grafana_to_promql('rate(r_total{instance=~"$instance"}[$__rate_interval]) > ${threshold}'), ["r_total"]),
]


def self_test(dashboard, rules, metrics, promtool):
    failures = []
    for expr, expected in EXTRACTION_CASES:
        got = metric_names(expr)
        if got != expected:
            failures.append(f"metric_names({expr!r}) = {got}, expected {expected}")

    known = emitted_metrics(metrics)
    problems, count, _ = check_file(dashboard, known, promtool)
    if problems or not count:
        failures.append(f"{dashboard}: the real dashboard must pass first: {problems or 'no expressions'}")
    problems, count, _ = check_file(rules, known, promtool)
    if problems or not count:
        failures.append(f"{rules}: the real rules must pass first: {problems or 'no expressions'}")

    with open(dashboard) as f:
        dash = json.load(f)
    with open(rules) as f:
        rule_docs = list(yaml.safe_load_all(f))
    first_expr = [v for v in _exprs(dash)][0]
    bad_name = "redis_janitor_not_emitted_total"

    def expect(what, path, *needles):
        found, _, _ = check_file(path, known, promtool)
        for needle in needles:
            if not any(needle in p for p in found):
                failures.append(f"{what}: no problem reported with {needle!r} (got {found})")

    with tempfile.TemporaryDirectory() as tmp:
        # A misspelt metric in the first panel's first query, and in a variable.
        wrong = json.loads(json.dumps(dash))
        target = _first_target(wrong)
        target["expr"] = re.sub(METRIC_PREFIX + r"\w+", bad_name, target["expr"], count=1)
        var = [v for v in wrong["templating"]["list"] if v.get("type") == "query"][0]
        var["query"] = re.sub(METRIC_PREFIX + r"\w+", "redis_janitor_misspelt", var["query"], count=1)
        path = os.path.join(tmp, "wrong-name.json")
        with open(path, "w") as f:
            json.dump(wrong, f)
        expect("dashboard with a misspelt metric", path, f"{bad_name} is not a metric", "redis_janitor_misspelt is not a metric")

        # A hard-coded data source, and a query without any metric.
        wrong = json.loads(json.dumps(dash))
        target = _first_target(wrong)
        target["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
        target["expr"] = "vector(1)"
        path = os.path.join(tmp, "wrong-datasource.json")
        with open(path, "w") as f:
            json.dump(wrong, f)
        expect("dashboard with a fixed data source", path, "not the variable", "no metric name found")

        # An expression that does not parse.
        if promtool:
            wrong = json.loads(json.dumps(dash))
            _first_target(wrong)["expr"] = first_expr + " +"
            path = os.path.join(tmp, "wrong-syntax.json")
            with open(path, "w") as f:
                json.dump(wrong, f)
            expect("dashboard with a syntax error", path, "promtool cannot parse")

        # A misspelt metric in an alert, and a kube-state-metrics name that is
        # not one of the allowed ones.
        groups = [g for doc in rule_docs if isinstance(doc, dict)
                  for g in (doc.get("groups") or (doc.get("spec") or {}).get("groups") or [])]
        rule = [r for g in groups for r in g.get("rules") or [] if METRIC_PREFIX in r.get("expr", "")][0]
        rule["expr"] = re.sub(METRIC_PREFIX + r"\w+", bad_name, rule["expr"], count=1)
        groups[0]["rules"].append({"alert": "Extra", "expr": "kube_pod_info > 0"})
        path = os.path.join(tmp, "wrong.rules.yaml")
        with open(path, "w") as f:
            yaml.safe_dump_all(rule_docs, f)
        expect("rules with a misspelt metric", path, f"{bad_name} is not a metric", "kube_pod_info is not a metric")

        # A list of metrics without the table the checker reads.
        path = os.path.join(tmp, "metrics.md")
        with open(path, "w") as f:
            f.write("# Metrics\n\nredis_janitor_dry_run\n")
        try:
            emitted_metrics(path)
            failures.append("a metrics list without a table was accepted")
        except Problem:
            pass

    for failure in failures:
        print(f"SELF-TEST FAILED {failure}")
    if not failures:
        print(f"self-test: ok ({len(EXTRACTION_CASES)} expressions; wrong copies of {dashboard} and {rules} rejected)")
    return len(failures)


def _exprs(dash):
    for panel in dash["panels"]:
        for target in panel.get("targets") or []:
            yield target["expr"]


def _first_target(dash):
    return [t for p in dash["panels"] for t in p.get("targets") or []][0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", default="docs/metrics.md")
    parser.add_argument("--promtool")
    parser.add_argument("--self-test", action="store_true")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    try:
        if args.self_test:
            if len(args.files) != 2 or not args.files[0].endswith(".json"):
                parser.error("--self-test takes DASHBOARD.json RULES.yaml")
            bad = self_test(args.files[0], args.files[1], args.metrics, args.promtool)
        else:
            bad = check(args.files, args.metrics, args.promtool)
    except Problem as e:
        print(f"ERROR {e}")
        sys.exit(2)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
