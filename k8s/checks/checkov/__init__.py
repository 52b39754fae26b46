"""Our own checkov policies, for what no built-in check enforces on the
rendered manifests; .ci/deploy-checks loads them with --external-checks-dir
and fails when one fails or did not run. One policy a file, each named
CKV_RJ_<n>:

- CKV_RJ_1 (network_policy_check.py): the NetworkPolicy allows no ingress and
  only egress to named ports;
- CKV_RJ_2 (namespace_check.py): a Namespace enforces the `restricted` Pod
  Security Standard;
- CKV_RJ_3 (credentials_check.py): no credentials are committed: no Secret,
  no password in a URL, no literal password or secret setting.

checkov needs this file to load the policies here.
"""
