#!/usr/bin/env python3
"""`cutover replay` against the real apps, and the Markdown sign-off report.

    replay_check.py CUTOVER CONFIG WORK_DIR ADMIN_ADDR BOOKS STATUS

1. Writes an access log in nginx's `combined` format of the suite's traffic
   (BOOKS GETs of /api/books/ and STATUS of /api/status/, interleaved as
   traffic.py sends them), with what a real log also holds: POSTs and
   DELETEs (never to be sent), a proxy-style absolute target, requests no
   route takes and a line that is no request. Replays it with the suite's
   own config and checks that the report names the planted differences,
   that every /api/status/ request compared clean, and that no mutating
   request reached either app (their gunicorn access logs say so).
2. Replays the legacy app's own gunicorn access log (the same `combined`
   format, with gunicorn's startup lines among the requests) with --limit.
3. Writes the sign-off document from the replay and from the running proxy
   (`cutover parity --format markdown`) and checks both name the route, its
   clean share and the difference rows.

Exits 1 with the reasons on any failure.
"""

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
DIFFERS = {
    ("shape", "/*/author"): ("string", "absent"),
    ("shape", "/*/author_name"): ("absent", "string"),
    ("shape", "/*/year"): ("number", "string"),
}
START = datetime(2026, 11, 22, 1, 0, 0, tzinfo=timezone.utc)

problems = []


def expect(cond, message):
    if not cond:
        problems.append(message)


def combined(method_target, when, status=200):
    t = f"{when.day:02}/{MONTHS[when.month - 1]}/{when.year}:{when:%H:%M:%S} +0000"
    return f'192.0.2.10 - - [{t}] "{method_target}" {status} 512 "-" "Mozilla/5.0 (X11; Linux x86_64)"\n'


def write_log(path, books, status):
    paths = ["/api/books/"] * books
    for n in range(status):
        paths.insert(n * (books + status) // status, "/api/status/")
    lines = []
    for i, p in enumerate(paths):
        lines.append(combined(f"GET {p} HTTP/1.1", START + timedelta(seconds=10 * i)))
        if i % 25 == 0:
            lines.append(combined("POST /api/books/ HTTP/1.1", START + timedelta(seconds=10 * i), 201))
            lines.append(combined("DELETE /api/books/1/ HTTP/1.1", START + timedelta(seconds=10 * i), 204))
    lines.append(combined("GET http://evil.example/api/books/ HTTP/1.1", START, 400))
    lines.append(combined("GET /healthz HTTP/1.1", START))
    lines.append('192.0.2.10 - - [22/Nov/2026:01:00:00 +0000] "\\x16\\x03\\x01\\x00" 400 150 "-" "-"\n')
    with open(path, "w") as f:
        f.writelines(lines)
    posts = sum(1 for line in lines if '"POST ' in line or '"DELETE ' in line)
    end = START + timedelta(seconds=10 * (len(paths) - 1))
    return len(lines), posts, end


def replay(cutover, config, log, *args):
    cmd = [cutover, "replay", "-c", config, "--log", log, "--rate", "0", "--concurrency", "8", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        print(f"e2e: FAIL: {' '.join(cmd)}: {out.stderr}", file=sys.stderr)
        sys.exit(1)
    return out.stdout


def check_replay(report, books, status, lines, posts, end):
    total = books + status
    r = report["replay"]
    expect(r["lines"] == lines, f"{r['lines']} lines read, expected {lines}")
    expect(r["replayed"] == total, f"{r['replayed']} requests replayed, expected {total}")
    expect(r["not_replayed"] == {"method": posts, "target": 1, "no_route": 1, "not_mirrored": 0},
           f"not replayed: {r['not_replayed']}, expected {posts} by method, 1 target, 1 without a route")
    expect(r["malformed"] == 1, f"{r['malformed']} malformed lines, expected 1")
    expect(report["window"] == {"from": "2026-11-22T01:00:00Z", "to": end.strftime("%Y-%m-%dT%H:%M:%SZ")},
           f"window {report['window']}")
    routes = report["routes"]
    expect(len(routes) == 1 and routes[0]["route"] == "api", f"routes: {[x['route'] for x in routes]}")
    api = routes[0]
    expect(api["outcomes"] == {"compared": total}, f"outcomes {api['outcomes']}, expected {total} compared")
    expect(api["compared"] == total and api["clean"] == status,
           f"{api['compared']} compared, {api['clean']} clean; expected {total}, and the {status} /api/status/ requests clean")
    seen = {(p["kind"], p["path"]): p for p in api["paths"]}
    for key, (left, right) in DIFFERS.items():
        p = seen.get(key)
        expect(p is not None and p["verdict"] == "differs" and (p["left"], p["right"]) == (left, right),
               f"{key[0]} {key[1]} is not reported as differing {left} -> {right}: {p}")
    noise = seen.get(("value", "/*/generated_at"))
    expect(noise is not None and noise["verdict"] == "noise", f"value /*/generated_at is not noise: {noise}")
    return api


def check_no_mutation(work):
    for app in ("legacy", "new"):
        with open(f"{work}/{app}.log") as f:
            # traffic.py's own chunked form to Django aside.
            sent = [line for line in f if ('"POST ' in line or '"DELETE ' in line) and '"POST /upload/ ' not in line]
        expect(not sent, f"a mutating request reached {app}: {sent[:3]}")


def check_markdown(doc, what, rows):
    for expected in ["# Parity sign-off", "## Route api: legacy vs new", "| Window | ", *rows]:
        expect(expected in doc, f"the sign-off document from {what} lacks {expected!r}")


def main():
    cutover, config, work, admin = sys.argv[1:5]
    books, status = int(sys.argv[5]), int(sys.argv[6])
    log = f"{work}/access.log"
    lines, posts, end = write_log(log, books, status)

    report = json.loads(replay(cutover, config, log, "--json"))
    api = check_replay(report, books, status, lines, posts, end)
    check_no_mutation(work)

    # A real server's log in the same format: gunicorn's, with its startup lines.
    real = json.loads(replay(cutover, config, f"{work}/legacy.log", "--json", "--limit", "30"))
    expect(real["replay"]["replayed"] == 30 and real["replay"]["limit_reached"],
           f"the legacy app's own log: {real['replay']}")
    expect(real["replay"]["malformed"] >= 1, f"gunicorn's startup lines are not counted as malformed: {real['replay']}")

    total = books + status
    share = f"{100 * status / total:.1f}%"
    doc = replay(cutover, config, log, "--format", "markdown")
    check_markdown(doc, "replay", [
        f"| Replayed | {total} requests of {lines} log lines |",
        f"| api | {total} | {status} | {share} |",
        "| shape | `/*/author` | ",
        "| shape | `/*/year` | ",
        "### Noise",
    ])
    live = subprocess.run([cutover, "parity", "--admin", admin, "--format", "markdown"], capture_output=True, text=True, timeout=30)
    expect(live.returncode == 0, f"cutover parity --format markdown failed: {live.stderr}")
    check_markdown(live.stdout, "the running proxy", [
        "| Traffic | live traffic through the proxy",
        "| shape | `/*/author_name` | ",
    ])

    if problems:
        print("e2e: FAIL: cutover replay or the sign-off report is wrong:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"e2e: replay OK: {total} of {lines} log lines replayed, {posts} mutating requests not sent, "
          f"{api['clean']} clean; both sign-off documents name the planted differences")
    summary = doc[doc.find("## Summary"):doc.find("## Route ")]
    print(summary.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
