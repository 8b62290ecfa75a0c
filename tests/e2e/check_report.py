#!/usr/bin/env python3
"""Checks cutover's parity report for the planted differences, and no others.

    check_report.py ADMIN_ADDR BOOKS STATUS USERS CASES [REPORT_FILE]

Waits until the `api` route has an outcome for each mirrored request that
traffic.py sent, then asserts that /admin/parity names exactly what the two
backends were built to differ on, endpoint by endpoint (ENDPOINTS below):
the renamed and retyped book fields, the timestamp that is noise, the key
renamed inside gzipped user answers (twenty /api/users/N/ requests, one
endpoint, with redacted examples), and the hard cases: key order and
`\\u00e9` against `é` are no difference; null against absent, integers beyond
2^53, equal statuses with different error bodies, 200 against 301 (never
followed), 200 against 500 and HTML bodies by digest are. Writes the report
to REPORT_FILE when given; exits 1 with the reasons on any failure.
"""

import json
import sys
import time
import urllib.request

# Endpoint -> (clean: every request or none, {(kind, path): (verdict, left, right)});
# a left or right of None is not checked.
HTML_TYPE = "text/html;charset=utf-8"
ENDPOINTS = {
    "GET /api/books/": (False, {
        ("shape", "/*/author"): ("differs", "string", "absent"),
        ("shape", "/*/author_name"): ("differs", "absent", "string"),
        ("shape", "/*/year"): ("differs", "number", "string"),
        ("value", "/*/generated_at"): ("noise", None, None),
    }),
    "GET /api/status/": (True, {}),
    "GET /api/users/{id}/": (False, {
        ("shape", "/email"): ("differs", "string", "absent"),
        ("shape", "/email_address"): ("differs", "absent", "string"),
    }),
    "GET /api/cases/key-order/": (True, {}),
    "GET /api/cases/unicode/": (True, {}),
    "GET /api/cases/null/": (False, {("shape", "/bio"): ("differs", "null", "absent")}),
    "GET /api/cases/bigint/": (False, {("value", "/id"): ("differs", "9007199254740993", "9007199254740992")}),
    "GET /api/cases/not-found/": (False, {
        ("shape", "/error"): ("differs", "string", "absent"),
        ("shape", "/detail"): ("differs", "absent", "string"),
    }),
    "GET /api/cases/moved/": (False, {
        ("status", ""): ("differs", "200", "301"),
        ("header", "content-type"): ("differs", "application/json", HTML_TYPE),
        ("shape", ""): ("differs", "json", "not json"),
    }),
    "GET /api/cases/crash/": (False, {
        ("status", ""): ("differs", "200", "500"),
        ("header", "content-type"): ("differs", "application/json", HTML_TYPE),
        ("shape", ""): ("differs", "json", "not json"),
    }),
    "GET /api/cases/page/": (False, {("value", ""): ("differs", None, None)}),
}
CASES = [e for e in ENDPOINTS if e.startswith("GET /api/cases/")]


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


def problems(route, books, status, users, cases):
    out = []
    requests = {"GET /api/books/": books, "GET /api/status/": status, "GET /api/users/{id}/": users}
    requests.update({e: cases for e in CASES})
    total = sum(requests.values())

    def expect(cond, message):
        if not cond:
            out.append(message)

    expect(route["route"] == "api", f"route is {route['route']!r}, not 'api'")
    expect(route["backends"] == ["legacy", "new"], f"backends are {route['backends']}, not legacy vs new")
    expect(route["outcomes"] == {"compared": total}, f"outcomes are {route['outcomes']}, expected {total} compared and nothing dropped, skipped or failed")
    expect(route["compared"] == total, f"{route['compared']} requests compared, expected {total}")
    expect(route["noise_samples"] >= 10, f"only {route['noise_samples']} noise samples (noise.sample is 0.3 of {total})")
    clean = sum(requests[e] for e, (all_clean, _) in ENDPOINTS.items() if all_clean)
    expect(route["clean"] == clean, f"{route['clean']} requests compared clean, expected {clean}")

    # Requests with a real difference of each kind.
    def share(kind):
        n = sum(requests[e] for e, (_, rows) in ENDPOINTS.items() if any(k == kind and v[0] == "differs" for (k, _), v in rows.items()))
        return n / total

    for kind in ["status", "header", "shape", "value", "undecodable"]:
        got = route["mismatch_rate"].get(kind)
        # Each endpoint's first requests learn its noise, so not even the
        # first book request counts /*/generated_at as a difference; one is
        # allowed, should its second answer from legacy have been lost.
        expect(got is not None and share(kind) - 1e-3 < got < share(kind) + 1e-3 + (kind == "value") / total,
               f"{kind} mismatch rate {got}, expected {share(kind):.4f}")

    # Endpoint by endpoint: the requests, the clean ones, the rows.
    endpoints = {e["endpoint"]: e for e in route["endpoints"]}
    expect(set(endpoints) == set(ENDPOINTS), f"endpoints are {sorted(endpoints)}, expected {sorted(ENDPOINTS)}")
    for name, (all_clean, rows) in ENDPOINTS.items():
        e = endpoints.get(name)
        if e is None:
            continue
        n = requests[name]
        expect(e["compared"] == n, f"{name}: {e['compared']} compared, expected {n}")
        expect(e["clean"] == (n if all_clean else 0), f"{name}: {e['clean']} clean, expected {n if all_clean else 0}")
        seen = {(r["kind"], r["path"]): r for r in e["paths"]}
        expect(set(seen) == set(rows), f"{name}: rows {sorted(seen)}, expected {sorted(rows)}")
        for key, (verdict, left, right) in rows.items():
            r = seen.get(key)
            if r is None:
                continue
            expect(r["verdict"] == verdict, f"{name}: {key} is {r['verdict']!r}, expected {verdict!r} (rate {r['rate']}, noise {r['noise_rate']})")
            for side, want in (("left", left), ("right", right)):
                expect(want is None or r[side] == want, f"{name}: {key} {side} is {r[side]!r}, expected {want!r}")
            if verdict == "differs":
                expect(r["count"] == n, f"{name}: {key} seen {r['count']} times, expected {n}")
                expect(len(r["examples"]) == min(3, n), f"{name}: {key} has {len(r['examples'])} examples")

    # Non-JSON bodies are compared by digest.
    page = {(r["kind"], r["path"]): r for r in endpoints.get("GET /api/cases/page/", {"paths": []})["paths"]}.get(("value", ""))
    if page:
        for side in ("left", "right"):
            expect(" bytes, digest " in page[side], f"the HTML page's {side} is {page[side]!r}, not a length and digest")

    # Examples: the request, the values, secrets redacted.
    users = {(r["kind"], r["path"]): r for r in endpoints.get("GET /api/users/{id}/", {"paths": []})["paths"]}
    for example in users.get(("shape", "/email"), {"examples": []})["examples"]:
        path = example["path"]
        expect(path.startswith("/api/users/") and path.endswith("/?page=1&access_token=[redacted]"), f"example path {path!r}")
        expect((example["left"], example["right"]) == ("[redacted]", "absent"), f"example values {example['left']!r} -> {example['right']!r}")
        expect(example["request_id"] and example["time"] and example["method"] == "GET", f"example {example}")
    bigint = {(r["kind"], r["path"]): r for r in endpoints.get("GET /api/cases/bigint/", {"paths": []})["paths"]}.get(("value", "/id"))
    if bigint and bigint["examples"]:
        x = bigint["examples"][0]
        expect((x["left"], x["right"]) == ("9007199254740993", "9007199254740992"), f"bigint example {x}")
    text = json.dumps(route)
    for secret in ["secret-", "@example.com"]:
        expect(secret not in text, f"{secret!r} appears in the report")

    # The route-wide rows are the union of the endpoints' rows.
    wanted = {key for _, rows in ENDPOINTS.values() for key in rows}
    listed = {(p["kind"], p["path"]) for p in route["paths"]}
    expect(listed == wanted, f"route rows {sorted(listed)}, expected {sorted(wanted)}")
    for sample in route["samples"]:
        expect(sample["endpoint"] in ENDPOINTS and ENDPOINTS[sample["endpoint"]][0] is False, f"a clean endpoint has differences: {sample}")
    return out


def main():
    admin, books, status, users, cases = sys.argv[1], *map(int, sys.argv[2:6])
    total = books + status + users + cases * len(CASES)
    report = wait_for_outcomes(admin, total)
    if len(sys.argv) > 6:
        with open(sys.argv[6], "w") as f:
            json.dump(report, f, indent=2)
    routes = report.get("routes", [])
    if len(routes) != 1:
        print(f"e2e: FAIL: expected one mirrored route in the report, got {len(routes)}", file=sys.stderr)
        return 1
    found = problems(routes[0], books, status, users, cases)
    if found:
        brief = dict(routes[0], samples=routes[0]["samples"][:1])
        print(json.dumps(brief, indent=2), file=sys.stderr)
        print("e2e: FAIL: the parity report does not name exactly the planted differences:", file=sys.stderr)
        for p in found:
            print(f"  - {p}", file=sys.stderr)
        return 1
    route = routes[0]
    print(f"e2e: parity report OK: {route['compared']} compared, {route['clean']} clean, {route['noise_samples']} noise samples, {len(route['endpoints'])} endpoints")
    for e in route["endpoints"]:
        print(f"e2e:   {e['endpoint']:<28} {e['compared']:>4} compared {e['clean']:>4} clean")
        for p in e["paths"]:
            print(f"e2e:     {p['kind']:<6} {p['path'] or '(whole)':<18} {p['verdict']:<8} rate {p['rate']:.4f}  {p['left']} -> {p['right']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
