#!/usr/bin/env python3
"""idleconns.py: holds N idle keep-alive HTTP/1.1 connections open against a server.

  idleconns.py [--timeout S] [--tls] HOST PORT N READY_FILE RELEASE_FILE

Opens N connections (500 at a time; with --tls one after the other, each
with a full TLS handshake, the certificate not checked), sends one
`GET /small` on each and reads the whole response (the body's length from
Content-Length), then
writes "OPEN N" to READY_FILE and holds the connections, idle, until
RELEASE_FILE exists or the timeout (120 s by default, counted from the
start) passes; then closes them and exits. compare.sh reads the proxy's
memory while they are held.
"""

import os
import resource
import selectors
import socket
import ssl
import time

from benchlib import ToolError, arg_parser, run


def raise_nofile(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def response_complete(buf):
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    length = 0
    for line in buf[:head_end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                raise ToolError("the server sent an invalid Content-Length: %r" % value.strip()) from None
    return len(buf) >= head_end + 4 + length


def open_batch(host, port, count, request, deadline):
    """Opens `count` connections concurrently, one request/response each."""
    sel = selectors.DefaultSelector()
    socks = []
    received = {}
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((host, port))
        sel.register(s, selectors.EVENT_WRITE)
        received[s] = b""
        socks.append(s)
    pending = len(socks)
    while pending:
        if time.monotonic() > deadline:
            raise ToolError("timed out opening connections")
        for key, events in sel.select(timeout=1.0):
            s = key.fileobj
            if events & selectors.EVENT_WRITE:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise ToolError("connect failed: %s" % os.strerror(err))
                s.sendall(request)
                sel.modify(s, selectors.EVENT_READ)
            elif events & selectors.EVENT_READ:
                data = s.recv(65536)
                if not data:
                    raise ToolError("the server closed a connection")
                received[s] += data
                if response_complete(received[s]):
                    sel.unregister(s)
                    pending -= 1
    sel.close()
    return socks


def open_tls(host, port, count, request, deadline):
    """Opens `count` TLS connections one by one, one request/response each."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    socks = []
    for _ in range(count):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ToolError("timed out opening connections")
        try:
            s = context.wrap_socket(socket.create_connection((host, port), timeout=remaining), server_hostname="localhost")
            s.sendall(request)
            received = b""
            while not response_complete(received):
                data = s.recv(65536)
                if not data:
                    raise ToolError("the server closed a connection")
                received += data
        except (OSError, ssl.SSLError) as e:
            raise ToolError("TLS connection failed: %s" % e) from None
        socks.append(s)
    return socks


def hold(host, port, n, ready_file, release_file, timeout_s, tls=False):
    raise_nofile(n + 256)
    request = ("GET /small HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (host, port)).encode()
    deadline = time.monotonic() + timeout_s
    held = []
    opener = open_tls if tls else open_batch
    while len(held) < n:
        held += opener(host, port, min(500, n - len(held)), request, deadline)
    with open(ready_file, "w") as f:
        f.write("OPEN %d\n" % len(held))
    while not os.path.exists(release_file) and time.monotonic() < deadline:
        time.sleep(0.05)
    for s in held:
        s.close()


def main(argv):
    parser = arg_parser(__doc__)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("n", type=int, metavar="N")
    parser.add_argument("ready_file")
    parser.add_argument("release_file")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="S",
                        help="give up and close everything after S seconds (default 120)")
    parser.add_argument("--tls", action="store_true", help="connect with TLS (certificate not checked)")
    args = parser.parse_args(argv)
    hold(args.host, args.port, args.n, args.ready_file, args.release_file, args.timeout, args.tls)


if __name__ == "__main__":
    run(main)
