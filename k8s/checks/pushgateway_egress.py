"""Checks that the job may reach the Pushgateway it pushes to; run by
.ci/deploy-checks on every rendered kustomization.

Usage: pushgateway_egress.py RENDERED.yaml...

In each file, the CronJob's JANITOR_PUSHGATEWAY (a URL) must be reachable
through the NetworkPolicy that selects the job's pods: an egress rule
allows TCP to the URL's port (9091, or the scheme's default), and when the
URL names a Service in another namespace (`NAME.NAMESPACE.svc...`) and the
rule names its peers, one peer's namespaceSelector selects that namespace
by `kubernetes.io/metadata.name`. A push that the policy drops fails
without failing the run (it is only logged), so only this check and the
alerts on the pushed metrics would notice. Files whose CronJob sets no
JANITOR_PUSHGATEWAY are skipped, and said so. One line per problem; exit 1
if there is any.
"""

import sys
from urllib.parse import urlsplit

import yaml

DEFAULT_PORTS = {"http": 80, "https": 443}


def containers(cronjob):
    spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec.get("containers") or []


def pushgateway_url(cronjob):
    for container in containers(cronjob):
        for env in container.get("env") or []:
            if env.get("name") == "JANITOR_PUSHGATEWAY":
                return env.get("value")
    return None


def selects(policy, labels):
    """Whether the policy's podSelector matches pods with these labels."""
    selector = policy["spec"].get("podSelector") or {}
    if selector.get("matchExpressions"):
        raise SystemExit(f"{policy['metadata']['name']}: matchExpressions: not supported by {__file__}")
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def allows(rule, port, namespace):
    ports = rule.get("ports") or []
    if not any((p.get("protocol") or "TCP") == "TCP" and p.get("port") == port for p in ports):
        return False
    peers = rule.get("to")
    if not peers or namespace is None:
        return True
    for peer in peers:
        labels = (peer.get("namespaceSelector") or {}).get("matchLabels") or {}
        if labels.get("kubernetes.io/metadata.name") == namespace:
            return True
    return False


def check(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    cronjobs = [d for d in docs if d.get("kind") == "CronJob"]
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    problems = []
    for cronjob in cronjobs:
        name = f"{path}: CronJob/{cronjob['metadata']['name']}"
        url = pushgateway_url(cronjob)
        if not url:
            print(f"skip  {name}: no JANITOR_PUSHGATEWAY")
            continue
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        host = (parts.hostname or "").split(".")
        namespace = host[1] if len(host) >= 3 and host[2] == "svc" else None
        labels = cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels") or {}
        mine = [p for p in policies if selects(p, labels) and "Egress" in (p["spec"].get("policyTypes") or [])]
        if not mine:
            problems.append(f"{name}: no NetworkPolicy with egress rules selects its pods")
            continue
        if not any(allows(rule, port, namespace) for p in mine for rule in p["spec"].get("egress") or []):
            where = f" in namespace {namespace}" if namespace else ""
            problems.append(
                f"{name}: JANITOR_PUSHGATEWAY={url}, but no egress rule of "
                f"{', '.join('NetworkPolicy/' + p['metadata']['name'] for p in mine)} allows TCP {port}{where}"
            )
        else:
            print(f"ok    {name}: egress to {url} allowed")
    return problems


def main():
    problems = [p for path in sys.argv[1:] for p in check(path)]
    for p in problems:
        print(f"ERROR {p}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
