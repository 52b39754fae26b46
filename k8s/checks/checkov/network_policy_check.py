"""CKV_RJ_1: the job's NetworkPolicy allows no ingress at all (it serves
nothing) and egress only to named ports (DNS, Redis, the Pushgateway), never
to every port. checkov's built-in checks look at no NetworkPolicy."""

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.kubernetes.checks.resource.base_spec_check import BaseK8Check


class NetworkPolicyNoIngressNamedEgress(BaseK8Check):
    def __init__(self):
        super().__init__(
            name="NetworkPolicy: no ingress, egress only to named ports",
            id="CKV_RJ_1",
            categories=[CheckCategories.NETWORKING],
            supported_entities=["NetworkPolicy"],
        )

    def scan_spec_conf(self, conf):
        spec = conf.get("spec") or {}
        # Without both types listed, the policy leaves that direction open.
        types = spec.get("policyTypes") or []
        if "Ingress" not in types or "Egress" not in types:
            return CheckResult.FAILED
        if spec.get("ingress"):
            return CheckResult.FAILED
        # An egress rule without ports allows every port of its peers.
        for rule in spec.get("egress") or []:
            if not (isinstance(rule, dict) and rule.get("ports")):
                return CheckResult.FAILED
        return CheckResult.PASSED


check = NetworkPolicyNoIngressNamedEgress()
