"""Turns checkov's JSON results into CI's verdict; run by .ci/deploy-checks.

Usage: checkov_report.py [--expect CHECK_ID]... RESULTS.json...

Fails when checkov failed a check, could not parse a file, found nothing to
scan, when a check was skipped without a written reason, or when an expected
check (--expect: our own policies) never ran: checkov only logs a policy it
cannot load and goes on without it. Prints every skip with its reason, so
CI's log shows what is accepted and why.
"""

import argparse
import json

NO_REASON = {"", "No comment provided"}


def reports(path):
    with open(path) as f:
        data = json.load(f)
    return data if isinstance(data, list) else [data]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--expect", action="append", default=[], metavar="CHECK_ID")
    parser.add_argument("results", nargs="+")
    args = parser.parse_args()
    bad = 0
    ran = set()
    for path in args.results:
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
            for outcome in ("passed_checks", "failed_checks", "skipped_checks"):
                ran.update(check["check_id"] for check in results.get(outcome, []))
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
    for check_id in args.expect:
        if check_id in ran:
            print(f"  ran {check_id}")
        else:
            print(f"  ERROR: {check_id} never ran: it did not load, or nothing it checks was rendered")
            bad += 1
    if bad:
        print(f"checkov: {bad} problems")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
