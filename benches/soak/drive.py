#!/usr/bin/env python3
"""Soak traffic driver (standard library only).

    drive.py PROXY_ADDR SECONDS OUT_JSON

Mixed traffic through the proxy until SECONDS have passed: GETs on /api/ with
a sticky X-User from a fixed set of users, POSTs with 1-16 KiB bodies, GETs on
the default route, and two WebSocket sessions echoing a message every half
second. Writes counts by status, latency percentiles and WebSocket results to
OUT_JSON.
"""

import base64
import http.client
import json
import os
import random
import socket
import sys
import threading
import time

from backend import read_exact  # the soak backend's own reader, beside this file

WORKERS = 8
RATE_PER_WORKER = 25  # requests per second
USERS = [f"user-{i}" for i in range(200)]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.status = {}
        self.latencies = []
        self.ws_ok = 0
        self.ws_failed = 0
        self.ws_sessions = 0

    def record(self, status, latency):
        with self.lock:
            self.status[status] = self.status.get(status, 0) + 1
            self.latencies.append(latency)


def worker(host, port, deadline, stats, seed):
    rng = random.Random(seed)
    conn = None
    interval = 1.0 / RATE_PER_WORKER
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        next_at += interval
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        roll = rng.random()
        headers = {"X-User": rng.choice(USERS)}
        if roll < 0.6:
            method, path, body = "GET", f"/api/users/{rng.randrange(1000)}", None
        elif roll < 0.9:
            method, path = "POST", "/api/orders"
            body = os.urandom(rng.randrange(1024, 16 * 1024))
            headers["Content-Type"] = "application/octet-stream"
        else:
            method, path, body = "GET", f"/static/{rng.randrange(100)}.css", None
        started = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            status = str(resp.status)
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            status = f"error:{type(e).__name__}"
            if conn is not None:
                conn.close()
            conn = None
        stats.record(status, time.monotonic() - started)


def ws_frame(text):
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


def ws_read(sock):
    def exact(n):
        return read_exact(sock, n)

    b0, b1 = exact(2)
    length = b1 & 0x7F
    if length == 126:
        length = int.from_bytes(exact(2), "big")
    return exact(length).decode()


def websocket(host, port, deadline, stats, n):
    while time.monotonic() < deadline:
        try:
            sock = socket.create_connection((host, port), timeout=5)
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                (
                    f"GET /ws/{n} HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(1)
                if not chunk:
                    raise ConnectionError("closed during handshake")
                head += chunk
            if not head.startswith(b"HTTP/1.1 101"):
                raise ConnectionError(head.split(b"\r\n")[0].decode(errors="replace"))
            with stats.lock:
                stats.ws_sessions += 1
            i = 0
            while time.monotonic() < deadline:
                message = f"soak {n} message {i}"
                sock.sendall(ws_frame(message))
                if ws_read(sock) != message:
                    raise ConnectionError("wrong echo")
                with stats.lock:
                    stats.ws_ok += 1
                i += 1
                time.sleep(0.5)
            sock.close()
        except (OSError, ConnectionError):
            with stats.lock:
                stats.ws_failed += 1
            time.sleep(0.5)


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def main():
    addr, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    host, port = addr.rsplit(":", 1)
    port = int(port)
    deadline = time.monotonic() + seconds
    stats = Stats()
    threads = [threading.Thread(target=worker, args=(host, port, deadline, stats, i)) for i in range(WORKERS)]
    threads += [threading.Thread(target=websocket, args=(host, port, deadline, stats, n)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = sorted(stats.latencies)
    result = {
        "requests": len(lat),
        "status": dict(sorted(stats.status.items())),
        "p50_ms": round(percentile(lat, 50) * 1000, 2),
        "p99_ms": round(percentile(lat, 99) * 1000, 2),
        "max_ms": round((lat[-1] if lat else 0) * 1000, 2),
        "ws_sessions": stats.ws_sessions,
        "ws_messages_ok": stats.ws_ok,
        "ws_failures": stats.ws_failed,
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
