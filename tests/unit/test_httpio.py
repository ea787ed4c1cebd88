"""cni_ipam.httpio, the one deadline-bounded HTTP/1.1 exchange, against loopback servers
(tests/hostile_http.py): the deadline at every step, name resolution bounded by a thread join,
keep-alive reuse, and the answer's framing."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from cni_ipam import httpio
from tests.hostile_http import Hostile, answer, bounded

SLACK = 0.5


@pytest.fixture
def hostile():
    made = []

    def make(how, **kw):
        h = Hostile(how, **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def request(conn, deadline_in=0.6, method="POST", body=b"{}", max_body=1 << 20):
    return conn.request(method, "/v3/kv/range", body, {"Content-Type": "application/json"},
                        time.monotonic() + deadline_in, max_body)


# ------------------------------------------------------------------------------- the deadline
@pytest.mark.parametrize("how, step", [
    ("drip-status", "waiting for the status line"), ("drip-headers", "reading the headers"),
    ("drip-body", "reading the body"), ("silent", "waiting for the status line"),
])
def test_every_step_of_the_answer_shares_one_deadline(hostile, how, step):
    h = hostile(how, interval=0.05)
    conn = httpio.Connection("127.0.0.1", h.port)
    elapsed, exc, _ = bounded(lambda: request(conn, 0.6), 10)
    assert isinstance(exc, httpio.DeadlineExceeded) and isinstance(exc, socket.timeout), exc
    assert str(exc) == f"timed out {step}"
    assert 0.6 <= elapsed < 0.6 + SLACK
    assert conn.sock is None  # a connection that timed out is never reused


def test_an_expired_deadline_sends_nothing(hostile):
    h = hostile("json-200")
    conn = httpio.Connection("127.0.0.1", h.port)
    with pytest.raises(httpio.DeadlineExceeded, match="resolving|connecting"):
        request(conn, -1)
    assert h.requests == 0


def test_a_slow_name_lookup_is_abandoned_at_the_deadline():
    """getaddrinfo cannot be interrupted: the lookup runs in a daemon thread that the call stops
    waiting for at the deadline (here a lookup that takes 5 s)."""
    started = threading.Event()

    def slow_lookup(host, port, **kw):
        started.set()
        time.sleep(5)
        return socket.getaddrinfo("127.0.0.1", port, **kw)

    t0 = time.monotonic()
    with pytest.raises(httpio.DeadlineExceeded, match="timed out resolving slow.example"):
        httpio.resolve("slow.example", 80, time.monotonic() + 0.3, lookup=slow_lookup)
    assert started.is_set() and time.monotonic() - t0 < 0.3 + SLACK
    conn = httpio.Connection("slow.example", 80, lookup=slow_lookup)
    t0 = time.monotonic()
    with pytest.raises(httpio.DeadlineExceeded):
        request(conn, 0.3)
    assert time.monotonic() - t0 < 0.3 + SLACK


def test_ip_literals_are_never_looked_up_and_names_are():
    def refuse(*a, **kw):
        raise AssertionError("looked up")

    deadline = time.monotonic() + 1
    assert httpio.resolve("127.0.0.1", 1, deadline, lookup=refuse)[0][4] == ("127.0.0.1", 1)
    assert httpio.resolve("::1", 1, deadline, lookup=refuse)[0][4][:2] == ("::1", 1)
    seen = []

    def record(host, port, **kw):
        seen.append(host)
        return socket.getaddrinfo("127.0.0.1", port, **kw)

    assert httpio.resolve("localhost", 7, deadline, lookup=record)[0][4] == ("127.0.0.1", 7) and seen == ["localhost"]
    infos = httpio.resolve("localhost", 7, deadline)  # the real resolver, through the thread
    assert {i[4][0] for i in infos} <= {"127.0.0.1", "::1"} and infos
    with pytest.raises(OSError, match="cannot resolve no-such-host.invalid"):
        httpio.resolve("no-such-host.invalid", 7, deadline)
    with pytest.raises(OSError, match="cannot resolve a..b"):  # IDNA refuses an empty label: still an OSError
        httpio.resolve("a..b", 7, deadline)


# ------------------------------------------------------------------------------- keep-alive
def test_the_connection_is_kept_alive_and_a_stale_one_replaced(hostile):
    h = hostile("json-200")
    conn = httpio.Connection("127.0.0.1", h.port)
    assert request(conn).status == 200
    sock = conn.sock
    assert request(conn).status == 200 and conn.sock is sock and len(h.conns) == 1
    sock.shutdown(socket.SHUT_RDWR)  # as if the server had dropped the idle connection
    resp = request(conn)
    assert resp.status == 200 and resp.body.startswith(b'{"hello"') and conn.sock is not sock
    assert h.requests == 3


def test_connection_close_and_http_1_0_are_not_reused(hostile):
    for raw in (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
                b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}"):
        h = hostile("raw", answer_bytes=raw, keep=True)
        conn = httpio.Connection("127.0.0.1", h.port)
        resp = request(conn)
        assert resp.will_close and resp.body == b"{}" and conn.sock is None


def test_a_fresh_connection_closed_without_an_answer(hostile):
    h = hostile("raw", answer_bytes=b"")
    with pytest.raises(httpio.Closed) as info:
        request(httpio.Connection("127.0.0.1", h.port))
    assert info.value.fresh and info.value.stage == "answer"


# ------------------------------------------------------------------------------- framing
@pytest.mark.parametrize("raw, body", [
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n2;ext=1\r\nab\r\n1\r\nc\r\n0\r\n\r\n", b"abc"),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    (b"HTTP/1.1 200 OK\n\nuntil close", b"until close"),
])
def test_answer_framing(hostile, raw, body):
    resp = request(httpio.Connection("127.0.0.1", hostile("raw", answer_bytes=raw).port))
    assert resp.body == body


@pytest.mark.parametrize("raw, error, words", [
    (b"SSH-2.0-OpenSSH\r\n\r\n", httpio.NotHttp, "not HTTP/1.x"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", httpio.NotHttp, "not HTTP/1.x"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", httpio.BadAnswer, "malformed header"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", httpio.BadAnswer, "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n", httpio.TooLarge, "larger than"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100001\r\n", httpio.TooLarge, "larger than"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", httpio.BadAnswer, "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (1 << 20) + b"y", httpio.TooLarge, "larger than"),
    (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", httpio.BadAnswer, "101"),
    (b"HTTP/1.1 200 " + b"O" * 10000 + b"\r\n\r\n", httpio.BadAnswer, "longer than"),
])
def test_malformed_answers(hostile, raw, error, words):
    with pytest.raises(error, match=words):
        request(httpio.Connection("127.0.0.1", hostile("raw", answer_bytes=raw).port), 2)


def test_request_encoding_refuses_header_injection(hostile):
    h = hostile("json-200")
    conn = httpio.Connection("127.0.0.1", h.port)
    for headers, path in (({"Authorization": "Bearer x\r\nX-Injected: 1"}, "/ok"), ({"X": "1"}, "/a b"),
                          ({"X": "1"}, "/caf\u00e9"), ({"Bad Name": "1"}, "/ok")):
        with pytest.raises(ValueError):
            conn.request("GET", path, None, headers, time.monotonic() + 1, 100)
    assert h.requests == 0


def test_host_header_and_request_bytes():
    """What goes on the wire, read by a plain socket server."""
    listener = socket.socket(socket.AF_INET6)
    listener.bind(("::1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    got = {}

    def serve():
        conn, _ = listener.accept()
        data = b""
        while not data.endswith(b"{}"):
            data += conn.recv(4096)
        got["request"] = data
        conn.sendall(answer("200 OK", b"[]"))
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        resp = httpio.Connection("::1", port).request("POST", "/v3/kv/put", b"{}", {"X-A": "b"},
                                                      time.monotonic() + 2, 100)
    finally:
        thread.join(5)
        listener.close()
    assert resp.status == 200 and resp.headers["content-type"] == "application/json"
    assert got["request"] == (f"POST /v3/kv/put HTTP/1.1\r\nHost: [::1]:{port}\r\nAccept-Encoding: identity\r\n"
                              "X-A: b\r\nContent-Length: 2\r\n\r\n{}").encode()


def test_a_tls_alert_after_the_handshake_is_reported_not_a_closed_connection(tmp_path):
    """A TLS 1.3 server that requires a client certificate fails the handshake on its side only,
    sends an alert and closes; the client's request then draws a reset.  The alert is what says why:
    it must come out (ssl.SSLError), not "closed the connection" (which reads as an outage)."""
    import ssl

    from tests.integration.podcidr_apiserver import Pki

    pki = Pki(str(tmp_path / "pki"))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki.server_cert_file, pki.server_key_file)
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_verify_locations(cafile=pki.ca_file)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cafile=pki.ca_file)
    with Hostile("json-200", tls=server) as h:
        for _ in range(10):
            with pytest.raises(ssl.SSLError, match="certificate required"):
                request(httpio.Connection("127.0.0.1", h.port, client), 2)
