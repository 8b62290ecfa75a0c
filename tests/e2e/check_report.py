#!/usr/bin/env python3
"""Checks cutover's parity report for the planted differences, and no others.

    check_report.py ADMIN_ADDR BOOKS STATUS [REPORT_FILE]

Waits until the `api` route has an outcome for each of the BOOKS + STATUS
mirrored requests, then asserts that /admin/parity names exactly what the
two backends were built to differ on:

- shape /*/author and /*/author_name differ (a renamed key),
- shape /*/year differs (a number became a string),
- value /*/generated_at is noise (a timestamp: legacy differs from itself),

that nothing else is reported (DRF's pagination envelope is unwrapped), and
that every /api/status/ request compared clean. Writes the report to
REPORT_FILE when given; exits 1 with the reasons on any failure (the report
shown then has its first sample only; REPORT_FILE has them all).
"""

import json
import sys
import time
import urllib.request

PLANTED = {
    ("shape", "/*/author"): ("differs", "string", "absent"),
    ("shape", "/*/author_name"): ("differs", "absent", "string"),
    ("shape", "/*/year"): ("differs", "number", "string"),
    ("value", "/*/generated_at"): ("noise", None, None),
}


def parity(admin):
    url = f"http://{admin}/admin/parity?route=api"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def wait_for_outcomes(admin, expected, seconds=30):
    deadline = time.monotonic() + seconds
    while True:
        report = parity(admin)
        route = report["routes"][0]
        total = sum(route["outcomes"].values())
        if total >= expected or time.monotonic() > deadline:
            return report
        time.sleep(0.1)


def problems(route, books, status):
    out = []
    total = books + status

    def expect(cond, message):
        if not cond:
            out.append(message)

    expect(route["route"] == "api", f"route is {route['route']!r}, not 'api'")
    expect(route["backends"] == ["legacy", "new"], f"backends are {route['backends']}, not legacy vs new")
    expect(route["outcomes"] == {"compared": total}, f"outcomes are {route['outcomes']}, expected {total} compared and nothing dropped, skipped or failed")
    expect(route["compared"] == total, f"{route['compared']} requests compared, expected {total}")
    expect(route["noise_samples"] >= 10, f"only {route['noise_samples']} noise samples (noise.sample is 0.3 of {total})")

    # /api/status/ is identical on both sides: exactly those requests are clean
    # (every /api/books/ request carries the real shape differences).
    expect(route["clean"] == status, f"{route['clean']} requests compared clean, expected the {status} /api/status/ requests")
    rates = route["mismatch_rate"]
    expect(rates.get("status") == 0 and rates.get("header") == 0, f"status or header mismatches reported: {rates}")
    expect(abs(rates.get("shape", 0) - books / total) < 1e-3, f"shape mismatch rate {rates.get('shape')}, expected {books / total:.4f} (the /api/books/ share)")
    for sample in route["samples"]:
        expect(not sample["path"].startswith("/api/status/"), f"a /api/status/ request has differences: {sample}")
        expect(sample["statuses"] == [200, 200], f"a sample has statuses {sample['statuses']}")

    seen = {(p["kind"], p["path"]): p for p in route["paths"]}
    for key, (verdict, left, right) in PLANTED.items():
        entry = seen.get(key)
        if entry is None:
            out.append(f"{key[0]} {key[1]} is not reported (expected {verdict})")
            continue
        expect(entry["verdict"] == verdict, f"{key[0]} {key[1]} is {entry['verdict']!r}, expected {verdict!r} (rate {entry['rate']}, noise {entry['noise_rate']})")
        if left is not None:
            expect((entry["left"], entry["right"]) == (left, right), f"{key[0]} {key[1]} is {entry['left']} -> {entry['right']}, expected {left} -> {right}")
        if verdict == "differs":
            expect(entry["count"] == books, f"{key[0]} {key[1]} seen {entry['count']} times, expected once per /api/books/ request ({books})")
    for key, entry in seen.items():
        if key not in PLANTED:
            out.append(f"unexpected {entry['verdict']} entry: {entry['kind']} {entry['path'] or '(whole)'} {entry['left']} -> {entry['right']} (count {entry['count']})")
    return out


def main():
    admin, books, status = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    report = wait_for_outcomes(admin, books + status)
    if len(sys.argv) > 4:
        with open(sys.argv[4], "w") as f:
            json.dump(report, f, indent=2)
    routes = report.get("routes", [])
    if len(routes) != 1:
        print(f"e2e: FAIL: expected one mirrored route in the report, got {len(routes)}", file=sys.stderr)
        return 1
    found = problems(routes[0], books, status)
    if found:
        brief = dict(routes[0], samples=routes[0]["samples"][:1])
        print(json.dumps(brief, indent=2), file=sys.stderr)
        print("e2e: FAIL: the parity report does not name exactly the planted differences:", file=sys.stderr)
        for p in found:
            print(f"  - {p}", file=sys.stderr)
        return 1
    route = routes[0]
    print(f"e2e: parity report OK: {route['compared']} compared, {route['clean']} clean (the /api/status/ requests), {route['noise_samples']} noise samples")
    for p in route["paths"]:
        print(f"e2e:   {p['kind']:<6} {p['path']:<18} {p['verdict']:<8} rate {p['rate']:.4f} noise {p['noise_rate']:.4f}  {p['left']} -> {p['right']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
