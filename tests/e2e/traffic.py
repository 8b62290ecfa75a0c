#!/usr/bin/env python3
"""Sends the suite's requests through the proxy and checks what clients get.

    traffic.py PROXY_ADDR BOOKS STATUS

Sends BOOKS requests to /api/books/ and STATUS to /api/status/, interleaved,
four at a time. With the route's weights at legacy 100 / new 0, every client
must be answered by the legacy backend: a 200 with a bare JSON list of books.
"""

import json
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def fail(message):
    print(f"e2e: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")[:200]
    except (OSError, ValueError) as e:
        fail(f"GET {url}: {e}")


def main():
    proxy, books, status = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # The status requests spread evenly among the book requests.
    paths = ["/api/books/"] * books
    for n in range(status):
        paths.insert(n * (books + status) // status, "/api/status/")
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: (p, *fetch(f"http://{proxy}{p}")), paths))
    for path, code, body in results:
        if code != 200:
            fail(f"GET {path} through the proxy answered {code}")
        if path == "/api/books/" and not (isinstance(body, list) and body and "author" in body[0]):
            fail(f"GET {path} was not served by the legacy backend: {json.dumps(body)[:200]}")
        if path == "/api/status/" and body != {"status": "ok", "books": 3}:
            fail(f"GET {path} answered {body}")
    print(f"e2e: sent {books} requests to /api/books/ and {status} to /api/status/; all served by legacy")


if __name__ == "__main__":
    main()
