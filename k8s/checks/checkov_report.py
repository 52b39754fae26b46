"""Turns checkov's JSON results into CI's verdict; run by .ci/deploy-checks.

Usage: checkov_report.py RESULTS.json...

Fails when checkov failed a check, could not parse a file, found nothing to
scan, or when a check was skipped without a written reason. Prints every
skip with its reason, so CI's log shows what is accepted and why.
"""

import json
import sys

NO_REASON = {"", "No comment provided"}


def reports(path):
    with open(path) as f:
        data = json.load(f)
    return data if isinstance(data, list) else [data]


def main():
    bad = 0
    for path in sys.argv[1:]:
        for report in reports(path):
            kind = report.get("check_type", "?")
            summary = report.get("summary", {})
            results = report.get("results", {})
            print(
                f"checkov {kind}: {summary.get('resource_count', 0)} resources, "
                f"{summary.get('passed', 0)} passed, {summary.get('failed', 0)} failed, "
                f"{summary.get('skipped', 0)} skipped, {summary.get('parsing_errors', 0)} parsing errors"
            )
            if not summary.get("resource_count"):
                print(f"  ERROR: nothing scanned ({path})")
                bad += 1
            for error in results.get("parsing_errors", []):
                print(f"  ERROR: could not parse {error}")
                bad += 1
            for check in results.get("failed_checks", []):
                print(
                    f"  FAILED {check['check_id']} {check['check_name']}: "
                    f"{check['resource']} ({check['file_path']}:{check.get('file_line_range')})"
                )
                bad += 1
            for check in results.get("skipped_checks", []):
                reason = (check.get("check_result") or {}).get("suppress_comment") or ""
                if reason.strip() in NO_REASON:
                    print(f"  ERROR: {check['check_id']} skipped without a reason: {check['resource']}")
                    bad += 1
                else:
                    print(f"  skipped {check['check_id']} on {check['resource']} ({check['file_path']}): {reason}")
    if bad:
        print(f"checkov: {bad} problems")
        sys.exit(1)


if __name__ == "__main__":
    main()
