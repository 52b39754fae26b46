"""CKV_RJ_2: a Namespace we ship enforces the `restricted` Pod Security
Standard, so a pod that drifts from it (root, privilege escalation, added
capabilities) is refused instead of running. checkov's container checks look
at our own pod; this is the cluster refusing any other."""

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.kubernetes.checks.resource.base_spec_check import BaseK8Check

ENFORCE = "pod-security.kubernetes.io/enforce"


class NamespaceEnforcesRestricted(BaseK8Check):
    def __init__(self):
        super().__init__(
            name="Namespace enforces the restricted Pod Security Standard",
            id="CKV_RJ_2",
            categories=[CheckCategories.KUBERNETES],
            supported_entities=["Namespace"],
        )

    def scan_spec_conf(self, conf):
        labels = (conf.get("metadata") or {}).get("labels") or {}
        if labels.get(ENFORCE) == "restricted":
            return CheckResult.PASSED
        return CheckResult.FAILED


check = NamespaceEnforcesRestricted()
