"""CKV_RJ_3: no credentials in the manifests. The Redis password comes from
the Secret redis-janitor-redis, which the operator creates and the repo never
holds; the job reads it from a file (REDIS_PASSWORD_FILE). So no object is a
Secret (a secretGenerator renders one too), no URL anywhere carries a
password (REDIS_URL holds the user only), and no env entry or ConfigMap key
named like a password or secret has a literal value (its *_FILE path is fine).

checkov's secrets scan finds `scheme://user:password@` but not Redis's
password-only form `redis://:password@host`."""

import re

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.kubernetes.checks.resource.base_spec_check import BaseK8Check

# scheme://[user]:password@ (the user may be empty).
URL_WITH_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@]*:[^\s/?#@]*@")


def strings(node):
    """Every string value in node, however deep."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def literal_settings(conf):
    """(name, value) of every literal setting: env entries anywhere, and the
    data of a ConfigMap."""
    if conf.get("kind") == "ConfigMap":
        yield from (conf.get("data") or {}).items()
    stack = [conf]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            name, value = node.get("name"), node.get("value")
            if isinstance(name, str) and isinstance(value, str):
                yield name, value
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def names_a_credential(name):
    upper = name.upper()
    return ("PASSWORD" in upper or "SECRET" in upper) and not upper.endswith("_FILE")


class NoCommittedCredentials(BaseK8Check):
    def __init__(self):
        super().__init__(
            name="No credentials committed: no Secret, no password in a URL or literal setting",
            id="CKV_RJ_3",
            categories=[CheckCategories.SECRETS],
            supported_entities=["*"],
        )

    def scan_spec_conf(self, conf):
        if conf.get("kind") == "Secret":
            return CheckResult.FAILED
        if any(URL_WITH_PASSWORD.search(s) for s in strings(conf)):
            return CheckResult.FAILED
        if any(names_a_credential(name) for name, _ in literal_settings(conf)):
            return CheckResult.FAILED
        return CheckResult.PASSED


check = NoCommittedCredentials()
