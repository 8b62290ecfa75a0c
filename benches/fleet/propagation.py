#!/usr/bin/env python3
"""Propagation of fleet weight changes: how long after replica A's admin API
accepts a change the other replicas serve requests by the new table.

    propagation.py --admin A_ADMIN --route ROUTE --new-upstream ADDR \
        --legacy-upstream ADDR --replica B=ADDR --replica C=ADDR [--changes N]

Each replica is polled by a thread of its own with back-to-back GETs on one
keep-alive connection; the upstream names itself in `x-upstream` (the bench
upstream's `--addr-header`), so every response says which backend the
replica chose. The route is moved 0 -> 100 (`PUT /admin/weights/ROUTE`
{"new": 100}) and back (`POST /admin/rollback`), one change at a time: the
next change is made once every polled replica serves the previous one.

For each change and replica: the time from A's admin response received to
the first response received from the replica that came from the change's
backend. It can be below zero: a replica may serve the change before A's
own response has reached this client; the time from A's request sent is
reported too. Stdlib only.
"""

import argparse
import http.client
import json
import random
import socket
import sys
import threading
import time


class Poller(threading.Thread):
    """Back-to-back requests to one replica; records each change of upstream."""

    def __init__(self, name, addr, path):
        super().__init__(daemon=True)
        self.name = name
        self.host, port = addr.rsplit(":", 1)
        self.port = int(port)
        self.request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.current = None
        self.transitions = []  # (perf_counter seconds, upstream)
        self.requests = 0
        self.reconnects = 0
        self.failures = 0
        self.stopping = False

    def connect(self):
        sock = socket.create_connection((self.host, self.port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def exchange(self, sock, buf):
        """One request and its response; returns (x-upstream value, leftover bytes)."""
        sock.sendall(self.request)
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            rest += chunk
        if status[1] != b"200":
            raise ConnectionError(f"status {status[1].decode()}")
        return headers.get(b"x-upstream", b"?").decode(), rest[length:]

    def run(self):
        sock, buf = None, b""
        while not self.stopping:
            try:
                if sock is None:
                    sock, buf = self.connect(), b""
                upstream, buf = self.exchange(sock, buf)
            except (OSError, ConnectionError, ValueError, IndexError):
                self.failures += 1
                self.reconnects += 1
                if sock is not None:
                    sock.close()
                sock = None
                time.sleep(0.01)
                continue
            now = time.perf_counter()
            self.requests += 1
            if upstream != self.current:
                with self.changed:
                    self.current = upstream
                    self.transitions.append((now, upstream))
                    self.changed.notify_all()
        if sock is not None:
            sock.close()

    def wait_for(self, upstream, deadline):
        with self.changed:
            while self.current != upstream:
                left = deadline - time.perf_counter()
                if left <= 0:
                    return False
                self.changed.wait(left)
        return True

    def first_since(self, since, upstream):
        with self.lock:
            for at, seen in self.transitions:
                if at >= since and seen == upstream:
                    return at
        return None


class Admin:
    """Replica A's admin API on one keep-alive connection."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)

    def call(self, method, path, body):
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "X-Cutover-Actor": "propagation-bench"}
        try:
            self.conn.request(method, path, body=data, headers=headers)
            resp = self.conn.getresponse()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn.request(method, path, body=data, headers=headers)
            resp = self.conn.getresponse()
        return resp.status, resp.read()


def percentile(values, p):
    """Nearest rank: the smallest value with at least p% of values at or below it."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def summary(values):
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values),
        "min": min(values),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin", required=True, help="replica A's admin address")
    parser.add_argument("--route", required=True)
    parser.add_argument("--path", default="/propagation")
    parser.add_argument("--new-upstream", required=True, help="the x-upstream of the route's new backend")
    parser.add_argument("--legacy-upstream", required=True, help="the x-upstream of its stable backend")
    parser.add_argument("--replica", action="append", required=True, help="NAME=PUBLIC_ADDR, polled")
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds a change may take to reach every replica")
    parser.add_argument("--json", help="write every measurement here")
    args = parser.parse_args()

    pollers = [Poller(*spec.split("=", 1), args.path) for spec in args.replica]
    for p in pollers:
        p.start()
    start = time.perf_counter() + args.timeout
    for p in pollers:
        if not p.wait_for(args.legacy_upstream, start):
            sys.exit(f"replica {p.name} does not serve {args.legacy_upstream} at the start (serves {p.current})")

    admin = Admin(args.admin)
    delays = {p.name: [] for p in pollers}
    kinds = {"shift": {p.name: [] for p in pollers}, "rollback": {p.name: [] for p in pollers}}
    from_sent = []
    timeouts, conflicts, admin_ms = 0, 0, {"shift": [], "rollback": []}
    began = time.perf_counter()
    for i in range(args.changes):
        if i % 2 == 0:
            kind, target = "shift", args.new_upstream
            method, path, body = "PUT", f"/admin/weights/{args.route}", {"new": 100}
        else:
            kind, target = "rollback", args.legacy_upstream
            method, path, body = "POST", "/admin/rollback", {"routes": [args.route], "reason": "propagation bench"}
        while True:
            sent = time.perf_counter()
            status, text = admin.call(method, path, body)
            accepted = time.perf_counter()
            if status == 200:
                break
            # A's own previous change may not be back from etcd yet.
            if status == 409 and conflicts < args.changes:
                conflicts += 1
                time.sleep(0.005)
                continue
            sys.exit(f"change {i} ({kind}) refused: {status} {text[:300]!r}")
        admin_ms[kind].append((accepted - sent) * 1000)
        deadline = accepted + args.timeout
        for p in pollers:
            if not p.wait_for(target, deadline):
                timeouts += 1
                print(f"change {i} ({kind}): replica {p.name} still serves {p.current} after {args.timeout}s", file=sys.stderr)
                continue
            at = p.first_since(sent, target)
            ms = (at - accepted) * 1000
            delays[p.name].append(ms)
            kinds[kind][p.name].append(ms)
            from_sent.append((at - sent) * 1000)
        # A pause of a few to a few tens of milliseconds, so changes do not
        # arrive in lockstep with any periodic work of the replicas.
        time.sleep(random.uniform(0.005, 0.05))
    elapsed = time.perf_counter() - began
    for p in pollers:
        p.stopping = True
    for p in pollers:
        p.join(timeout=5)

    result = {
        "changes": args.changes,
        "timeouts": timeouts,
        "conflicts_retried": conflicts,
        "admin_response_ms": {kind: summary(v) for kind, v in admin_ms.items() if v},
        "per_replica": {name: summary(v) for name, v in delays.items() if v},
        "overall": summary([ms for v in delays.values() for ms in v]),
        "overall_from_request_sent": summary(from_sent),
        "by_kind": {
            kind: summary([ms for v in per.values() for ms in v]) for kind, per in kinds.items() if any(per.values())
        },
        "poll_round_trip_ms": {p.name: elapsed * 1000 / max(1, p.requests) for p in pollers},
        "poll_failures": {p.name: p.failures for p in pollers},
        "negative": sum(1 for v in delays.values() for ms in v if ms < 0),
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": result, "delays_ms": delays}, f, indent=1)

    print(f"changes: {args.changes} (shift new=100 / rollback, alternating) through A; "
          f"timeouts: {timeouts}; 409s retried: {conflicts}")
    for kind, s in result["admin_response_ms"].items():
        print(f"A's admin response to a {kind}: p50 {s['p50']:.2f} ms, p99 {s['p99']:.2f} ms, max {s['max']:.2f} ms")
    print("| replica | changes | p50 ms | p99 ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    every = "+".join(result["per_replica"])
    rows = list(result["per_replica"].items())
    rows += [(f"{kind}s ({every})", s) for kind, s in result["by_kind"].items()]
    rows.append((f"overall ({every})", result["overall"]))
    rows.append((f"overall ({every}), from A's request sent", result["overall_from_request_sent"]))
    for name, s in rows:
        print(f"| {name} | {s['n']} | {s['p50']:.1f} | {s['p99']:.1f} | {s['max']:.1f} |")
    print("poll round trip (ms): " + ", ".join(f"{k} {v:.3f}" for k, v in result["poll_round_trip_ms"].items())
          + f"; poll failures: {sum(result['poll_failures'].values())}; below zero: {result['negative']}")
    if timeouts:
        sys.exit(1)


if __name__ == "__main__":
    main()
