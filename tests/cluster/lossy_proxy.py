"""A loopback HTTP/1.1 proxy in front of one etcd member that can lose or hold the answer of
chosen requests: etcd applies the request, the client never hears back (a lost packet, a slow
disk, a plugin killed while it waits).  Used by the pool tests; one thread per connection."""

from __future__ import annotations

import socket
import threading


def _read_message(sock: socket.socket, buf: bytearray) -> bytes | None:
    """One HTTP/1.1 message (head and body, Content-Length or chunked) from ``sock``; None at EOF."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end]).lower()
    if b"transfer-encoding: chunked" in head:
        pos = end
        while True:
            while b"\r\n" not in buf[pos:]:
                data = sock.recv(65536)
                if not data:
                    return None
                buf += data
            line_end = buf.index(b"\r\n", pos)
            size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
            need = line_end + 2 + size + 2
            while len(buf) < need:
                data = sock.recv(65536)
                if not data:
                    return None
                buf += data
            pos = need
            if size == 0:
                break
        total = pos
    else:
        length = 0
        for line in head.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        total = end + length
        while len(buf) < total:
            data = sock.recv(65536)
            if not data:
                return None
            buf += data
    msg = bytes(buf[:total])
    del buf[:total]
    return msg


class LossyProxy:
    """``rule(request: bytes) -> "pass" | "drop" | "hold"``: drop closes the client's connection
    once etcd answered; hold keeps the answer until ``release()`` (then drops it too)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.rule = lambda request: "pass"
        self.answered = threading.Event()  # set when etcd answered a dropped or held request
        self.dropped = 0
        self._release = threading.Event()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._closed = False
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def release(self) -> None:
        self._release.set()

    def close(self) -> None:
        self._closed = True
        self._release.set()
        for s in [self._sock] + self._conns:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=30)
        except OSError:
            client.close()
            return
        self._conns.append(upstream)
        cbuf, ubuf = bytearray(), bytearray()
        try:
            while True:
                request = _read_message(client, cbuf)
                if request is None:
                    return
                action = self.rule(request)
                upstream.sendall(request)
                answer = _read_message(upstream, ubuf)
                if answer is None:
                    return
                if action == "pass":
                    client.sendall(answer)
                    continue
                self.dropped += 1
                self.answered.set()
                if action == "hold":
                    self._release.wait(60)
                return  # the answer is lost: the connection closes without it
        except OSError:
            return
        finally:
            for s in (client, upstream):
                try:
                    s.close()
                except OSError:
                    pass
