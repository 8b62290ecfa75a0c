#!/usr/bin/env python3
"""Django's collected static files, fetched through cutover's file backend.

    static_check.py PROXY_ADDR STATIC_ROOT

Every file under STATIC_ROOT must come back under /static/ byte for byte,
with the content type a browser needs for stylesheets and scripts; a
conditional request must get 304, a missing file 404, and no path may
reach a file outside STATIC_ROOT.
"""

import http.client
import os
import sys

proxy, root = sys.argv[1], sys.argv[2]
host, port = proxy.rsplit(":", 1)
TYPES = {".css": "text/css", ".js": "text/javascript"}


def get(path, headers=None):
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


def fail(message):
    print(f"static_check: {message}", file=sys.stderr)
    sys.exit(1)


files = sorted(
    os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names
)
if len(files) < 10:
    fail(f"collectstatic gathered {len(files)} files; DRF alone ships more")
for rel in files:
    path = "/static/" + rel.replace(os.sep, "/")
    resp, body = get(path)
    with open(os.path.join(root, rel), "rb") as f:
        on_disk = f.read()
    if resp.status != 200 or body != on_disk:
        fail(f"{path}: {resp.status}, {len(body)} bytes against {len(on_disk)} on disk")
    want = TYPES.get(os.path.splitext(rel)[1])
    got = (resp.getheader("content-type") or "").split(";")[0]
    if want and got != want:
        fail(f"{path}: content-type {got!r}, a browser needs {want!r}")

css = next(f for f in files if f.endswith(".css"))
first, _ = get("/static/" + css)
again, body = get("/static/" + css, {"If-Modified-Since": first.getheader("last-modified")})
if again.status != 304 or body:
    fail(f"a conditional request for {css} got {again.status}, not 304")
missing, _ = get("/static/rest_framework/css/no-such-file.css")
if missing.status != 404:
    fail(f"a missing file got {missing.status}, not 404")
for escape in ["/static/../cutover.yaml", "/static/%2e%2e/cutover.yaml", "/static/rest_framework/..%2f..%2fcutover.yaml"]:
    resp, body = get(escape)
    if resp.status == 200 or b"listeners" in body:
        fail(f"{escape} reached a file outside the static folder")
print(f"e2e: {len(files)} static files served from disk as they are; 304, 404 and escapes checked")
