#!/usr/bin/env python3
"""Sends the suite's requests through the proxy and checks what clients get.

    traffic.py PROXY_ADDR BOOKS STATUS USERS CASES

Sends BOOKS requests to /api/books/ and STATUS to /api/status/, interleaved,
then one to each of /api/users/1/ .. /api/users/USERS/ (with a secret in the
query) and CASES to each hard case under /api/cases/, four at a time, with
the `Accept-Encoding` a browser sends. With the route's weights at legacy
100 / new 0, every client must be answered by the legacy backend. Last, a
form posted chunked to /upload/ must reach Django whole.
"""

import json
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def fail(message):
    print(f"e2e: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


# What a browser sends: the new backend then compresses its answers.
BROWSER = {"Accept-Encoding": "gzip, deflate, br", "Accept": "application/json"}

# Hard case -> the status and body the legacy backend answers the client with.
CASES = {
    "/api/cases/key-order/": (200, {"a": 1, "b": {"x": 1, "y": 2}, "c": [1, 2]}),
    "/api/cases/unicode/": (200, {"name": "café", "city": "Zürich"}),
    "/api/cases/null/": (200, {"name": "x", "bio": None}),
    "/api/cases/bigint/": (200, {"id": 2**53 + 1, "same": 2**70 + 1}),
    "/api/cases/not-found/": (404, {"error": "not found"}),
    "/api/cases/moved/": (200, {"here": True}),
    "/api/cases/crash/": (200, {"ok": True}),
    "/api/cases/page/": (200, "<p>Hello from the legacy app</p>"),
}


def fetch(url):
    request = urllib.request.Request(url, headers=BROWSER)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            if resp.headers.get("Content-Encoding"):
                fail(f"GET {url} came compressed: {resp.headers['Content-Encoding']}")
            body = resp.read().decode()
            return resp.status, json.loads(body) if "json" in resp.headers.get("Content-Type", "") else body
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except (OSError, ValueError) as e:
        fail(f"GET {url}: {e}")


def upload(proxy):
    """A form posted chunked (as curl -T and mobile SDKs send bodies) reaches
    Django whole: behind nginx it would, and Django reads no chunked body."""
    form = b"title=Solaris&author=Stanislaw+Lem"
    request = urllib.request.Request(
        f"http://{proxy}/upload/",
        data=iter([form[:10], form[10:]]),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Transfer-Encoding": "chunked"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            got = json.loads(resp.read())
    except (OSError, ValueError) as e:
        fail(f"POST /upload/ chunked: {e}")
    if got != {"length": len(form), "form": {"title": "Solaris", "author": "Stanislaw Lem"}}:
        fail(f"Django read {got} of a chunked form of {len(form)} bytes")


def main():
    proxy, books, status, users, cases = sys.argv[1], *map(int, sys.argv[2:6])
    # The status requests spread evenly among the book requests.
    paths = ["/api/books/"] * books
    for n in range(status):
        paths.insert(n * (books + status) // status, "/api/status/")
    paths += [f"/api/users/{n}/?page=1&access_token=secret-{n}" for n in range(1, users + 1)]
    paths += [case for case in CASES for _ in range(cases)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: (p, *fetch(f"http://{proxy}{p}")), paths))
    for path, code, body in results:
        if code != 200 and path not in CASES:
            fail(f"GET {path} through the proxy answered {code}")
        if path == "/api/books/" and not (isinstance(body, list) and body and "author" in body[0]):
            fail(f"GET {path} was not served by the legacy backend: {json.dumps(body)[:200]}")
        if path == "/api/status/" and body != {"status": "ok", "books": 3}:
            fail(f"GET {path} answered {body}")
        if path.startswith("/api/users/") and body.get("email", "").split("@")[0] != "user" + path.split("/")[3]:
            fail(f"GET {path} was not served by the legacy backend: {body}")
        if path in CASES and (code, body) != CASES[path]:
            fail(f"GET {path} answered {code} {body}, expected legacy's {CASES[path]}")
    upload(proxy)
    print(f"e2e: sent {books} requests to /api/books/, {status} to /api/status/, {users} to /api/users/N/ "
          f"and {cases} to each of {len(CASES)} hard cases; all served by legacy")


if __name__ == "__main__":
    main()
