"""Validates rendered Kubernetes manifests offline against one Kubernetes
version; run by .ci/deploy-checks once per version it supports.

Usage: validate.py KUBERNETES_VERSION RULES_OUT_DIR RENDERED.yaml...

Every object must pass:
- built-in kinds: the Kubernetes OpenAPI schema of KUBERNETES_VERSION, in
  strict mode (unknown fields are errors, as `kubectl apply` with server-side
  strict field validation would make them), via kubernetes-validate;
- PrometheusRule (monitoring.coreos.com/v1, a CRD with no schema in
  kubernetes-validate): its envelope here (apiVersion, kind, metadata against
  the strict ObjectMeta schema of the same Kubernetes version, spec with only
  `groups`); its spec.groups are written to RULES_OUT_DIR as a Prometheus
  rule file for `promtool check rules`, which parses them strictly (unknown
  fields, durations, PromQL, templates) exactly as Prometheus will load them.
- any other kind fails: no object goes unvalidated.
"""

import json
import os
import sys

import importlib_resources
import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

PROMETHEUS_RULE = ("monitoring.coreos.com/v1", "PrometheusRule")


def definitions(version):
    """The strict schema definitions kubernetes-validate ships for version."""
    major_minor = ".".join(version.split(".")[:2])
    root = importlib_resources.files("kubernetes_validate") / "kubernetes-json-schema"
    for entry in root.iterdir():
        if entry.name.startswith(f"v{major_minor}.") and entry.name.endswith("-local-strict"):
            return json.loads((entry / "_definitions.json").read_text())
    raise SystemExit(f"kubernetes-validate has no schemas for Kubernetes {version}")


def prometheus_rule_validator(version):
    defs = definitions(version)
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://kubernetes.io/api/prometheusrule-monitoring-v1.json",
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": PROMETHEUS_RULE[0]},
            "kind": {"const": PROMETHEUS_RULE[1]},
            "metadata": {
                "$ref": "/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
            },
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["groups"],
                "properties": {"groups": {"type": "array", "minItems": 1}},
            },
        },
    }
    registry = Resource.from_contents(defs) @ Registry()
    return jsonschema.Draft202012Validator(schema, registry=registry)


def main():
    version, rules_dir, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    os.makedirs(rules_dir, exist_ok=True)
    prom_validator = prometheus_rule_validator(version)
    errors = 0
    checked = 0
    for path in files:
        label = os.path.splitext(os.path.basename(path))[0]
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        if not docs:
            print(f"ERROR {path}: no objects rendered")
            errors += 1
        for doc in docs:
            kind = doc.get("kind", "?")
            name = (doc.get("metadata") or {}).get("name", "?")
            what = f"{path}: {kind}/{name}"
            checked += 1
            if (doc.get("apiVersion"), kind) == PROMETHEUS_RULE:
                problems = sorted(prom_validator.iter_errors(doc), key=lambda e: list(e.path))
                for e in problems:
                    where = ".".join(str(p) for p in e.path)
                    print(f"ERROR {what}: {where}: {e.message}")
                errors += len(problems)
                if not problems:
                    out = os.path.join(rules_dir, f"{label}-{name}.rules.yaml")
                    with open(out, "w") as f:
                        yaml.safe_dump({"groups": doc["spec"]["groups"]}, f, sort_keys=False)
                    print(f"ok    {what} (envelope; rule groups -> promtool: {out})")
                continue
            try:
                used = kubernetes_validate.validate(doc, version, strict=True)
                print(f"ok    {what} (Kubernetes {used} schema, strict)")
            except kubernetes_validate.ValidationError as e:
                where = ".".join(str(p) for p in e.path)
                print(f"ERROR {what}: {where}: {e.message}")
                errors += 1
            except kubernetes_validate.SchemaNotFoundError as e:
                print(f"ERROR {what}: {e.message}; add a validator for it to {__file__}")
                errors += 1
    print(f"{checked} objects checked, {errors} errors")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
