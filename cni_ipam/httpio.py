"""One HTTP/1.1 request and its answer over TCP or TLS, bounded as a whole by one absolute deadline.

Standard library only; used by the etcd client (``cluster/etcd.py``) and the Kubernetes client
(``podcidr/kubeapi.py``).  It imports ``socket`` and ``time``; ``ssl`` comes with the caller's TLS
context, ``threading`` only when a host name (not an IP literal) must be resolved.

Why not ``http.client``: it reads the status line and the headers through a file object whose every
``recv`` gets the socket timeout afresh, so a server that drips one byte a second holds a call for
as long as it likes.  Here every step that can wait is given what is left of ONE deadline (a
``time.monotonic()`` value): name resolution, connect, the TLS handshake, each send, and each
receive of the status line, the headers and the body.  Past the deadline the call raises
``DeadlineExceeded`` naming the step; nothing waits longer, whatever the peer does.

Usage::

    conn = Connection("10.0.0.1", 2379, context=None)      # an ssl.SSLContext for https
    deadline = time.monotonic() + 2.0
    resp = conn.request("POST", "/v3/kv/range", b"{...}", {"Content-Type": "application/json"},
                        deadline, max_body=64 << 20)
    resp.status, resp.headers["content-type"], resp.body
    conn.close()

The connection is kept alive between requests unless the answer says otherwise; a request on a
kept-alive connection that the server had closed meanwhile (EOF or reset before any byte of the
answer) is sent once more on a fresh connection, within the same deadline.

Errors (all ``OSError``):
``DeadlineExceeded`` (a ``socket.timeout``): the deadline passed; its text says at which step.
``Closed``: the peer closed or reset the connection before any byte of the answer; ``stage`` is
    ``"handshake"`` (during the TLS handshake) or ``"answer"``; ``fresh`` tells whether the
    connection was new (a TLS 1.3 server refusing the client certificate does that).
``BadAnswer``: the head is malformed or too long, the body larger than ``max_body`` (``TooLarge``)
    or cut short; ``NotHttp`` when not even the status line is HTTP/1.x.
Anything else is the socket's or ``ssl``'s own error (refused, unreachable, certificate not trusted).
"""

from __future__ import annotations

import socket
import time

MAX_HEAD = 64 << 10  # status line and headers together
MAX_LINE = 8 << 10  # one header line, one chunk-size line
_CHUNK = 1 << 16


class DeadlineExceeded(socket.timeout):
    """The call's deadline passed; the text names the step that was waiting."""


class Closed(OSError):
    """The peer closed (or reset) the connection before sending any byte of the answer."""

    def __init__(self, text: str, stage: str, fresh: bool) -> None:
        super().__init__(text)
        self.stage = stage
        self.fresh = fresh


class BadAnswer(OSError):
    """What came back is not an acceptable HTTP/1.x answer."""


class TooLarge(BadAnswer):
    """The body is larger than the caller's cap."""


class NotHttp(BadAnswer):
    """The first line of the answer is not an HTTP/1.x status line: not an HTTP server at all."""


class Response:
    __slots__ = ("status", "reason", "headers", "body", "will_close")

    def __init__(self, status: int, reason: str, headers: dict, body: bytes, will_close: bool) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case names; a repeated header keeps its last value
        self.body = body
        self.will_close = will_close


def remaining(deadline: float, step: str) -> float:
    """Seconds left before ``deadline``; ``DeadlineExceeded`` naming ``step`` when none are."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded(f"timed out {step}")
    return left


# ---------------------------------------------------------------------------------- connecting
def resolve(host: str, port: int, deadline: float, lookup=None) -> list:
    """``getaddrinfo`` results for a TCP connection to ``host``.  An IP literal is parsed, never
    looked up; a name is resolved in a daemon thread that the caller waits for only until the
    deadline (``getaddrinfo`` has no timeout of its own: a dead DNS server costs it 5 s x tries).
    ``lookup`` replaces ``socket.getaddrinfo`` for the name case (tests)."""
    try:
        # bytes: a str host makes getaddrinfo load the idna codec (stringprep, unicodedata) on every call
        return socket.getaddrinfo(host.encode("ascii"), port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):
        pass
    import threading

    lookup = lookup or socket.getaddrinfo
    box: list = []

    def run() -> None:
        try:
            box.append(lookup(host, port, type=socket.SOCK_STREAM))
        except Exception as exc:  # handed to the waiting thread
            box.append(exc)

    thread = threading.Thread(target=run, name=f"resolve {host}", daemon=True)
    thread.start()
    thread.join(remaining(deadline, f"resolving {host}"))
    if not box:
        raise DeadlineExceeded(f"timed out resolving {host}")
    if isinstance(box[0], Exception):
        exc = box[0]
        if isinstance(exc, socket.gaierror):
            raise OSError(exc.errno, f"cannot resolve {host}: {exc.strerror}") from None
        raise OSError(f"cannot resolve {host}: {exc}") from None  # a name IDNA cannot encode...
    if not box[0]:
        raise OSError(f"cannot resolve {host}: no address")
    return box[0]


def open_tcp(host: str, port: int, deadline: float, lookup=None) -> socket.socket:
    """A connected TCP socket to ``host`` (each address in turn, all within the deadline)."""
    error: OSError | None = None
    for family, kind, proto, _, address in resolve(host, port, deadline, lookup):
        try:
            sock = socket.socket(family, kind, proto)
        except OSError as exc:  # a family this host does not have (IPv6 disabled): the next address
            error = exc
            continue
        try:
            sock.settimeout(remaining(deadline, f"connecting to {host} port {port}"))
            sock.connect(address)
        except socket.timeout:
            sock.close()
            raise DeadlineExceeded(f"timed out connecting to {host} port {port}") from None
        except OSError as exc:
            sock.close()
            error = exc
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise error or OSError(f"cannot connect to {host} port {port}")


def _closing(exc: BaseException) -> bool:
    """An error that says the peer closed or reset the connection (TLS's unexpected EOF included)."""
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return True
    name = type(exc).__name__
    return name in ("SSLEOFError", "SSLZeroReturnError")


# ---------------------------------------------------------------------------------- the exchange
class Connection:
    """A keep-alive HTTP/1.1 connection to ``host``:``port`` (TLS when ``context`` is an
    ``ssl.SSLContext``; ``server_name`` is the name the certificate must carry and the SNI, by
    default ``host``).  Not thread-safe: one request at a time."""

    def __init__(self, host: str, port: int, context=None, server_name: str | None = None, lookup=None) -> None:
        self.host = host
        self.port = port
        self.context = context
        self.server_name = server_name or host
        self.sock: socket.socket | None = None
        self._lookup = lookup
        default = 443 if context is not None else 80
        shown = f"[{host}]" if ":" in host else host
        self.host_header = shown if port == default else f"{shown}:{port}"

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def connect(self, deadline: float) -> None:
        """TCP connect and, for TLS, the whole handshake within the deadline."""
        self.close()
        sock = open_tcp(self.host, self.port, deadline, self._lookup)
        if self.context is None:
            self.sock = sock
            return
        try:
            tls = self.context.wrap_socket(sock, server_hostname=self.server_name, do_handshake_on_connect=False)
        except BaseException:
            sock.close()
            raise
        try:
            # ssl bounds one do_handshake() by the socket timeout as a whole, every read and write in it
            tls.settimeout(remaining(deadline, "in the TLS handshake"))
            tls.do_handshake()
        except socket.timeout:
            tls.close()
            raise DeadlineExceeded(f"timed out in the TLS handshake with {self.host} port {self.port}") from None
        except OSError as exc:
            tls.close()
            if _closing(exc):
                raise Closed("closed the connection during the TLS handshake", "handshake", True) from None
            raise
        except BaseException:
            tls.close()
            raise
        self.sock = tls

    def request(self, method: str, path: str, body: bytes | None, headers: dict | None, deadline: float,
                max_body: int) -> Response:
        """Send one request and read its whole answer before ``deadline``; see the module text."""
        data = self._encode(method, path, body, headers)
        reused = self.sock is not None
        while True:
            if self.sock is None:
                self.connect(deadline)
            try:
                resp = self._exchange(method, data, deadline, max_body, not reused)
            except Closed:
                self.close()
                if reused:  # the kept-alive connection was gone: once more on a fresh one
                    reused = False
                    continue
                raise
            except BaseException:
                self.close()
                raise
            if resp.will_close:
                self.close()
            return resp

    def _encode(self, method: str, path: str, body: bytes | None, headers: dict | None) -> bytes:
        if not path.startswith("/") or not path.isascii() or any(c <= " " or c == "\x7f" for c in path):
            raise ValueError("an HTTP path must start with / and hold only printable ASCII characters")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host_header}", "Accept-Encoding: identity"]
        for name, value in (headers or {}).items():
            value = str(value)
            if (any(c in value for c in "\r\n\0") or not value.isascii() or not name
                    or any(c in name for c in ":\r\n\0 ")):
                raise ValueError(f"HTTP header {name!r} holds a character a header cannot have")
            lines.append(f"{name}: {value}")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")

    def _exchange(self, method: str, data: bytes, deadline: float, max_body: int, fresh: bool) -> Response:
        sock = self.sock
        assert sock is not None
        view = memoryview(data)
        try:
            while view:
                sock.settimeout(remaining(deadline, "sending the request"))
                sent = sock.send(view)
                view = view[sent:]
        except socket.timeout:
            raise DeadlineExceeded("timed out sending the request") from None
        except OSError as exc:
            if not _closing(exc):
                raise
            if fresh and self.context is not None:
                _raise_tls_alert(sock, deadline)
            raise Closed("closed the connection before reading the request", "answer", fresh) from None
        return _Reader(sock, deadline, fresh).response(method, max_body)


def _raise_tls_alert(sock, deadline: float) -> None:
    """A TLS 1.3 server refuses a client certificate after the handshake: it sends an alert and
    closes, and our request, arriving after the close, draws a reset that fails the send.  The
    alert is usually still in the receive queue: raise it (it says why) instead of "closed"."""
    try:
        sock.settimeout(min(max(deadline - time.monotonic(), 0.001), 0.2))
        sock.recv(1)
    except OSError as exc:
        if type(exc).__name__ == "SSLError":  # the alert itself, not an EOF or a reset
            raise
    except ValueError:
        pass


class _Reader:
    """The answer's bytes, every receive bounded by what is left of the deadline."""

    def __init__(self, sock, deadline: float, fresh: bool) -> None:
        self.sock = sock
        self.deadline = deadline
        self.fresh = fresh
        self.buf = b""
        self.got_any = False
        self.step = "waiting for the status line"

    def _recv(self, size: int, eof_ok: bool = False) -> bytes:
        try:
            self.sock.settimeout(remaining(self.deadline, self.step))
            data = self.sock.recv(size)
        except socket.timeout:
            raise DeadlineExceeded(f"timed out {self.step}") from None
        except OSError as exc:
            if not _closing(exc):
                raise
            data = b""
        if not data and not eof_ok:
            if not self.got_any:
                raise Closed("closed the connection without answering", "answer", self.fresh)
            raise BadAnswer(f"closed the connection {self.step}")
        self.got_any = True
        return data

    def line(self, limit: int) -> bytes:
        """One line without its CRLF (or LF)."""
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                out, self.buf = self.buf[:end], self.buf[end + 1:]
                if len(out) > limit:
                    break
                return out[:-1] if out.endswith(b"\r") else out
            if len(self.buf) > limit:
                break
            self.buf += self._recv(_CHUNK)
        raise BadAnswer(f"a line of the answer is longer than {limit} bytes")

    def exact(self, size: int) -> bytes:
        parts: list = []
        if self.buf:
            take, self.buf = self.buf[:size], self.buf[size:]
            parts.append(take)
            size -= len(take)
        while size > 0:
            data = self._recv(min(size, _CHUNK))
            parts.append(data)
            size -= len(data)
        return b"".join(parts)

    def response(self, method: str, max_body: int) -> Response:
        while True:
            status, reason, version = self._status_line()
            headers = self._headers()
            if 100 <= status < 200 and status != 101:
                self.step = "waiting for the status line"
                continue  # an interim answer (100 Continue...): the real one follows
            break
        if status == 101:
            raise BadAnswer("answered 101 Switching Protocols to a plain request")
        conn = headers.get("connection", "").lower()
        will_close = "close" in conn or (version == "HTTP/1.0" and "keep-alive" not in conn)
        self.step = "reading the body"
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "transfer-encoding" in headers:
            coding = headers["transfer-encoding"].lower().replace(" ", "")
            if coding != "chunked":
                raise BadAnswer(f"unsupported Transfer-Encoding {headers['transfer-encoding'][:40]!r}")
            body = self._chunked(max_body)
        elif "content-length" in headers:
            text = headers["content-length"].strip()
            if not text.isdigit() or len(text) > 18:
                raise BadAnswer(f"bad Content-Length {text[:40]!r}")
            size = int(text)
            if size > max_body:
                raise TooLarge(f"answer larger than {max_body} bytes (Content-Length {size})")
            body = self.exact(size)
        else:  # the body runs to the end of the connection
            will_close = True
            body = self._until_close(max_body)
        if self.buf:  # bytes beyond the answer: never reuse such a connection
            will_close = True
        return Response(status, reason, headers, body, will_close)

    def _status_line(self) -> tuple:
        self.step = "waiting for the status line"
        raw = self.line(MAX_LINE)
        self.step = "reading the headers"
        text = raw.decode("latin-1")
        version, _, rest = text.partition(" ")
        code, _, reason = rest.partition(" ")
        if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
            shown = "".join(c if c.isprintable() else " " for c in text[:80]).strip()
            raise NotHttp(f"answered with something that is not HTTP/1.x: {shown!r}")
        return int(code), reason.strip(), version

    def _headers(self) -> dict:
        headers: dict = {}
        total = 0
        while True:
            raw = self.line(MAX_LINE)
            if not raw:
                return headers
            total += len(raw) + 2
            if total > MAX_HEAD:
                raise BadAnswer(f"the answer's headers are longer than {MAX_HEAD} bytes")
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep or not name or name != name.strip():
                raise BadAnswer("the answer holds a malformed header line")
            name = name.lower()
            value = value.strip()
            if name == "content-length" and headers.get(name, value) != value:
                raise BadAnswer("the answer holds two different Content-Length headers")
            headers[name] = value

    def _chunked(self, max_body: int) -> bytes:
        parts: list = []
        size_total = 0
        while True:
            text = self.line(MAX_LINE).split(b";", 1)[0].strip()
            try:
                size = int(text, 16)
                if size < 0 or len(text) > 16:
                    raise ValueError
            except ValueError:
                raise BadAnswer("the answer holds a bad chunk size") from None
            if size == 0:
                while self.line(MAX_LINE):  # trailers, up to the empty line
                    pass
                return b"".join(parts)
            size_total += size
            if size_total > max_body:
                raise TooLarge(f"answer larger than {max_body} bytes")
            parts.append(self.exact(size))
            if self.line(MAX_LINE):
                raise BadAnswer("a chunk of the answer does not end where its size says")

    def _until_close(self, max_body: int) -> bytes:
        parts = [self.buf]
        size = len(self.buf)
        self.buf = b""
        while True:
            data = self._recv(_CHUNK, eof_ok=True)  # the end of the connection is the end of the body
            if not data:
                return b"".join(parts)
            size += len(data)
            if size > max_body:
                raise TooLarge(f"answer larger than {max_body} bytes")
            parts.append(data)
