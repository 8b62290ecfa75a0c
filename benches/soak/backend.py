#!/usr/bin/env python3
"""Backends for the soak test (standard library only).

    backend.py app NAME PORT   HTTP/1.1 keep-alive app: GET answers a small JSON
                               document, POST answers the length of its body,
                               /ws upgrades to a WebSocket that echoes text frames.
    backend.py hang PORT       accepts connections, reads, and never answers.
"""

import base64
import hashlib
import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def ws_echo(sock):
    """Echoes WebSocket text/binary frames until a close frame or EOF."""
    while True:
        b0, b1 = read_exact(sock, 2)
        opcode, masked, length = b0 & 0x0F, b1 & 0x80, b1 & 0x7F
        if length == 126:
            length = int.from_bytes(read_exact(sock, 2), "big")
        elif length == 127:
            length = int.from_bytes(read_exact(sock, 8), "big")
        mask = read_exact(sock, 4) if masked else b"\0\0\0\0"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(read_exact(sock, length)))
        if opcode == 8:
            sock.sendall(b"\x88\x00")
            return
        if opcode in (1, 2):
            header = bytes([0x80 | opcode])
            if len(payload) < 126:
                header += bytes([len(payload)])
            else:
                header += bytes([126]) + len(payload).to_bytes(2, "big")
            sock.sendall(header + payload)


class App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body are separate writes: without TCP_NODELAY, Nagle's algorithm
    # and delayed ACKs add ~40 ms to every response.
    disable_nagle_algorithm = True
    name = "app"

    def log_message(self, *args):
        pass

    def answer(self, status, body, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/ws") and self.headers.get("Upgrade", "").lower() == "websocket":
            key = self.headers["Sec-WebSocket-Key"]
            accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.end_headers()
            self.wfile.flush()
            try:
                ws_echo(self.connection)
            except (ConnectionError, OSError):
                pass
            self.close_connection = True
            return
        body = json.dumps({"backend": self.name, "path": self.path, "user": self.headers.get("X-User")}).encode()
        self.answer(200, body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        received = len(self.rfile.read(length)) if length else 0
        self.answer(200, json.dumps({"backend": self.name, "received": received}).encode())


def hang(port):
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)

    def hold(conn):
        with conn:
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=hold, args=(conn,), daemon=True).start()


def main():
    if sys.argv[1] == "hang":
        hang(int(sys.argv[2]))
        return
    name, port = sys.argv[2], int(sys.argv[3])
    App.name = name
    server = ThreadingHTTPServer(("127.0.0.1", port), App)
    server.daemon_threads = True
    server.request_queue_size = 1024
    server.serve_forever()


if __name__ == "__main__":
    main()
