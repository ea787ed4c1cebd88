"""Hostile HTTP endpoints on 127.0.0.1 for the deadline tests of cni_ipam.httpio and its two users
(the etcd client, the Kubernetes client).  Real TCP (and TLS with an ``ssl.SSLContext``), no mocks.

``with Hostile("drip-status") as h: h.url``; ``Hostile("json-200", tls=server_ctx)`` serves over TLS.
What each ``how`` does after reading the request head:

- ``silent``: nothing, ever (a hung member, a black-holed port that still accepts);
- ``drip-status``: the status line one byte per ``interval`` seconds, never finishing it;
- ``drip-headers``: the status line at once, then a header one byte per ``interval``, never ending;
- ``drip-body``: status line and headers (Content-Length 100000) at once, then one body byte per
  ``interval``;
- ``json-200``: a 200 with JSON that is nobody's API answer; ``html-200``: a 200 with an HTML page;
- ``garbage``: bytes that are not HTTP at all; ``json-404``: a 404 with JSON that is no etcd error;
- ``bad-types``: a 200 with etcd's shape but wrong types (kvs that are numbers);
- ``raw``: ``answer`` (bytes) as it is, then the connection is closed (``keep=True``: kept open).

``requests`` counts requests whose head was read; ``close()`` (the ``with`` exit) closes every
connection, which also ends any client still waiting on one.
"""

from __future__ import annotations

import json
import socket
import threading

NOT_ETCD = json.dumps({"hello": "world", "status": "ok"}).encode()
HTML = b"<!DOCTYPE html><html><head><title>Welcome</title></head><body>It works!</body></html>"
BAD_TYPES = json.dumps({"header": {"cluster_id": "1", "revision": "9"}, "kvs": [5, 6], "count": "x"}).encode()


def answer(status: str, body: bytes, ctype: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


class Hostile:
    def __init__(self, how: str, interval: float = 0.1, tls=None, answer_bytes: bytes = b"",
                 keep: bool = False) -> None:
        self.how = how
        self.interval = interval
        self.tls = tls
        self.answer = answer_bytes
        self.keep = keep
        self.requests = 0
        self.stop = threading.Event()
        self.conns: list = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        try:
            conn.settimeout(10)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
                self.conns.append(conn)
            while not self.stop.is_set():
                if not self._read_request(conn):
                    break
                self.requests += 1
                if not self._respond(conn):
                    break
            conn.shutdown(socket.SHUT_RDWR)  # the end of the answer (a body without a length ends here)
            conn.close()
        except (OSError, ValueError):
            conn.close()  # at once, as servers do after a failed handshake

    def _read_request(self, conn) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            rest += chunk
        return True

    def _drip(self, conn, data: bytes) -> None:
        for i in range(len(data)):
            if self.stop.wait(self.interval):
                return
            conn.sendall(data[i:i + 1])

    def _respond(self, conn) -> bool:
        """Answer one request; True when the connection may carry another."""
        how = self.how
        if how == "silent":
            self.stop.wait(60)
        elif how == "drip-status":
            self._drip(conn, b"HTTP/1.1 200 OK" + b"K" * 100000)
        elif how == "drip-headers":
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            self._drip(conn, b"X-Slow: " + b"s" * 100000)
        elif how == "drip-body":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            self._drip(conn, b" " * 100000)
        elif how == "json-200":
            conn.sendall(answer("200 OK", NOT_ETCD))
            return True
        elif how == "html-200":
            conn.sendall(answer("200 OK", HTML, "text/html"))
            return True
        elif how == "garbage":
            conn.sendall(b"\x00\x01\x02 SSH-2.0-OpenSSH_9.2\r\n\r\nnot http at all\r\n")
        elif how == "json-404":
            conn.sendall(answer("404 Not Found", json.dumps({"message": "no route"}).encode()))
            return True
        elif how == "bad-types":
            conn.sendall(answer("200 OK", BAD_TYPES))
            return True
        elif how == "raw":
            conn.sendall(self.answer)
            return self.keep
        else:
            raise ValueError(f"unknown behaviour {how!r}")
        return False

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self.sock.close()

    def __enter__(self) -> "Hostile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bounded(fn, limit: float):
    """Run ``fn()`` in a thread: (elapsed seconds, its exception or None, its result).  Fails the
    test (instead of hanging it) when ``fn`` has not returned within ``limit`` seconds: the caller's
    ``Hostile.close()`` then frees the thread."""
    import time

    import pytest

    box: dict = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # handed to the test
            box["exc"] = exc
        box["elapsed"] = time.monotonic() - start

    start = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        pytest.fail(f"the call was still running after {limit} s: not bounded by its deadline")
    return box["elapsed"], box.get("exc"), box.get("result")
