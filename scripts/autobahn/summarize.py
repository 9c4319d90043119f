#!/usr/bin/env python3
"""Summarises an Autobahn|Testsuite fuzzingclient report (used by scripts/autobahn/run).

    summarize.py REPORT_DIR [--expect-agents a,b] [--expect-cases N]

Reads REPORT_DIR/index.json and, for each agent, prints the totals by `behavior` and by
`behaviorClose`, the NON-STRICT cases, and each failing case with its description and results
from the case's own JSON file. Ends with the line 'autobahn: N passed, N failed' (one case of one
agent is one test).

A case passes when its behavior is OK, NON-STRICT or INFORMATIONAL and its close behavior is OK
or INFORMATIONAL. Anything else fails: behavior FAILED or UNIMPLEMENTED (the only unimplemented
chapters, 12 and 13, are excluded from the run, so one showing up is an error too), close
behavior WRONG CODE, UNCLEAN, FAILED BY CLIENT (the server left the TCP connection open after
the closing handshake) or FAILED.

Exit status: 0 when every case passed, 1 when some failed, 2 when the report is missing, empty
or incomplete (an expected agent or case is missing).
"""
import argparse
import json
import os
import sys
from collections import Counter

BEHAVIOR_PASS = {"OK", "NON-STRICT", "INFORMATIONAL"}
CLOSE_PASS = {"OK", "INFORMATIONAL"}
BEHAVIOR_ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
CLOSE_ORDER = ["OK", "INFORMATIONAL", "WRONG CODE", "UNCLEAN", "FAILED BY CLIENT", "FAILED"]


def case_key(case_id):
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))


def counts_line(counter, order):
    keys = [k for k in order if counter.get(k)] + sorted(k for k in counter if k not in order)
    return ", ".join("%s %d" % (k, counter[k]) for k in keys) or "none"


def shorten(text, limit=300):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def load_case(report_dir, entry):
    name = entry.get("reportfile")
    if not name:
        return {}
    try:
        with open(os.path.join(report_dir, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report_dir")
    parser.add_argument("--expect-agents", default="", help="comma-separated agents that must be in the report")
    parser.add_argument("--expect-cases", type=int, default=0, help="number of cases each agent must have")
    args = parser.parse_args()

    index_path = os.path.join(args.report_dir, "index.json")
    try:
        with open(index_path) as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        print("autobahn: cannot read %s: %s" % (index_path, e))
        return 2

    passed = failed = 0
    problems = []
    expected_agents = [a for a in args.expect_agents.split(",") if a]
    for agent in expected_agents:
        if not index.get(agent):
            problems.append("agent %s has no cases in the report" % agent)
    if args.expect_cases:
        for agent in sorted(index):
            if len(index[agent]) != args.expect_cases:
                problems.append(
                    "agent %s has %d cases in the report, %d were to run (did the run stop early?)"
                    % (agent, len(index[agent]), args.expect_cases)
                )

    for agent in sorted(index):
        cases = index[agent]
        behaviors = Counter(c["behavior"] for c in cases.values())
        closes = Counter(c["behaviorClose"] for c in cases.values())
        failing = []
        non_strict = []
        for case_id in sorted(cases, key=case_key):
            c = cases[case_id]
            if c["behavior"] in BEHAVIOR_PASS and c["behaviorClose"] in CLOSE_PASS:
                passed += 1
                if c["behavior"] == "NON-STRICT":
                    non_strict.append(case_id)
            else:
                failed += 1
                failing.append(case_id)

        print()
        print("%s: %d cases, %d failing" % (agent, len(cases), len(failing)))
        print("  behavior:      %s" % counts_line(behaviors, BEHAVIOR_ORDER))
        print("  behaviorClose: %s" % counts_line(closes, CLOSE_ORDER))
        if non_strict:
            print("  non-strict (allowed): %s" % " ".join(non_strict))
        for case_id in failing:
            c = cases[case_id]
            detail = load_case(args.report_dir, c)
            print(
                "  FAIL %s: behavior %s, close %s (remote close code %s)"
                % (case_id, c["behavior"], c["behaviorClose"], c.get("remoteCloseCode"))
            )
            if detail.get("description"):
                print("       case:   %s" % shorten(detail["description"]))
            if detail.get("result"):
                print("       result: %s" % shorten(detail["result"]))
            if detail.get("resultClose"):
                print("       close:  %s" % shorten(detail["resultClose"]))
            if c.get("reportfile"):
                print("       report: %s" % os.path.join(args.report_dir, c["reportfile"].replace(".json", ".html")))

    if passed + failed == 0:
        problems.append("the report has no cases")
    print()
    for p in problems:
        print("autobahn: error: %s" % p)
    print("autobahn: %d passed, %d failed" % (passed, failed))
    if problems:
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
