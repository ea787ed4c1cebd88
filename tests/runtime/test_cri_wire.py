"""cni_ipam/admin/cri.py and h2.py, the stdlib CRI client, against independent peers: a grpcio server serving
a fake ListPodSandbox on a unix socket (HTTP/2, HPACK, gRPC as grpc-core speaks them), Google's
protobuf runtime for the message encoding, the ``hpack`` package for header compression, and raw
sockets that misbehave.  Every failure must be a CriError (the runtime cannot be asked), bounded by
the deadline, never another exception.  No root needed."""

from __future__ import annotations

import os
import random
import re
import socket
import struct
import threading
import time
from concurrent import futures

import pytest

from cni_ipam.admin import cri, h2, runtimes
from tests.runtime import cri as cri_kit

pytestmark = pytest.mark.skipif(cri_kit.grpc_missing() is not None, reason=str(cri_kit.grpc_missing()))


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    return cri_kit.load_api(str(tmp_path_factory.mktemp("cri-proto")))


class FakeRuntime:
    """A servicer whose answer the test sets: ``boxes`` (list of PodSandbox), or ``abort``, or ``delay``."""

    def __init__(self, pb) -> None:
        self.pb = pb
        self.boxes: list = []
        self.abort = None
        self.delay = 0.0
        self.requests: list = []

    def ListPodSandbox(self, request, context):
        self.requests.append(request)
        if self.delay:
            time.sleep(self.delay)
        if self.abort:
            context.abort(*self.abort)
        boxes = self.boxes
        if request.HasField("filter") and request.filter.HasField("state"):
            boxes = [b for b in boxes if b.state == request.filter.state.state]
        return self.pb.ListPodSandboxResponse(items=boxes)


@pytest.fixture
def server(api, tmp_path):
    import grpc  # type: ignore[import-untyped]

    pb, stubs = api
    fake = type("Fake", (FakeRuntime, stubs.RuntimeServiceServicer), {})(pb)  # the other calls: UNIMPLEMENTED
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    stubs.add_RuntimeServiceServicer_to_server(fake, srv)
    path = str(tmp_path / "cri.sock")
    srv.add_insecure_port(f"unix:{path}")
    srv.start()
    try:
        yield fake, path
    finally:
        srv.stop(None)


def _box(pb, i: int, state: int = 0, big: int = 0):
    return pb.PodSandbox(
        id=f"{i:064x}", state=state, created_at=-5 if i == 0 else 1_700_000_000_000_000_000 + i,
        metadata=pb.PodSandboxMetadata(name=f"pod-{i}", uid=f"uid-{i}", namespace=f"ns-{i % 3}", attempt=i % 4),
        labels={"io.kubernetes.pod.name": f"pod-{i}", "app": "x" * big},
        annotations={"note": "é" * big}, runtime_handler="runc",
    )


def test_list_against_grpcio(server, api):
    pb, _ = api
    fake, path = server
    fake.boxes = [_box(pb, i, state=i % 2) for i in range(5)]
    got = cri.list_pod_sandboxes(path, timeout=5)
    assert [(b.id, b.state, b.name, b.namespace, b.uid, b.attempt) for b in got] == \
        [(f"{i:064x}", i % 2, f"pod-{i}", f"ns-{i % 3}", f"uid-{i}", i % 4) for i in range(5)]
    assert [b.ready for b in got] == [True, False, True, False, True]
    assert not fake.requests[-1].HasField("filter")  # asked for everything, READY and NOTREADY


def test_state_filter_is_encoded_as_upstream(server, api):
    pb, _ = api
    fake, path = server
    fake.boxes = [_box(pb, i, state=i % 2) for i in range(4)]
    got = cri.list_pod_sandboxes(path, timeout=5, state=cri.SANDBOX_NOTREADY)
    assert [b.id for b in got] == [f"{1:064x}", f"{3:064x}"]
    assert fake.requests[-1].filter.state.state == cri.SANDBOX_NOTREADY


@pytest.mark.parametrize("window", [None, 100_000], ids=["default-window", "small-window"])
def test_big_answer_needs_window_updates(server, api, monkeypatch, window):
    """About 8 MB: far beyond HTTP/2's default 64 KiB windows; with a small receive window of ours,
    hundreds of WINDOW_UPDATEs (the peer stops sending without them)."""
    pb, _ = api
    fake, path = server
    if window:
        monkeypatch.setattr(h2, "_WINDOW", window)
    fake.boxes = [_box(pb, i, big=1000) for i in range(2500)]
    started = time.monotonic()
    got = cri.list_pod_sandboxes(path, timeout=30)
    assert len(got) == 2500 and got[-1].name == "pod-2499"
    assert time.monotonic() - started < 20


def test_empty_answer(server):
    fake, path = server
    assert cri.list_pod_sandboxes(path, timeout=5) == []


def test_grpc_error_status_is_cannot_ask(server):
    import grpc  # type: ignore[import-untyped]

    fake, path = server
    fake.abort = (grpc.StatusCode.UNAVAILABLE, "shutting down: 100% é")
    with pytest.raises(cri.CriError, match="UNAVAILABLE: shutting down: 100% é"):
        cri.list_pod_sandboxes(path, timeout=5)


def test_unimplemented_service(tmp_path):
    import grpc  # type: ignore[import-untyped]

    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    path = str(tmp_path / "empty.sock")
    srv.add_insecure_port(f"unix:{path}")
    srv.start()
    try:
        with pytest.raises(cri.CriError, match="UNIMPLEMENTED"):
            cri.list_pod_sandboxes(path, timeout=5)
    finally:
        srv.stop(None)


def test_slow_runtime_is_bounded_by_the_deadline(server, api):
    pb, _ = api
    fake, path = server
    fake.boxes = [_box(pb, 1)]
    fake.delay = 3
    started = time.monotonic()
    with pytest.raises(cri.CriError):
        cri.list_pod_sandboxes(path, timeout=0.5)
    assert time.monotonic() - started < 2


def test_runtimes_source(server, api, tmp_path):
    pb, _ = api
    fake, path = server
    fake.boxes = [_box(pb, 1), _box(pb, 2, state=1)]
    answer = runtimes.query(runtimes.parse_spec(f"cri:{path}"), timeout=5)
    assert answer.ok and answer.ids == {f"{1:064x}", f"{2:064x}"} and answer.containers == 2
    assert answer.to_json()["kind"] == "cri" and "1 not ready" in " ".join(answer.details)
    fake.boxes = []  # an empty answer is no proof that every reservation is stranded
    answer = runtimes.query(runtimes.parse_spec(f"cri:{path}"), timeout=5)
    assert not answer.ok and "no containers" in answer.error
    answer = runtimes.query(runtimes.parse_spec(f"cri:{tmp_path}/none.sock"), timeout=5)
    assert not answer.ok and "does not exist" in answer.error


def test_parse_spec():
    assert runtimes.parse_spec("cri") == runtimes.RuntimeSpec("cri", socket="/run/containerd/containerd.sock")
    assert runtimes.parse_spec("cri:/var/run/crio/crio.sock").socket == "/var/run/crio/crio.sock"
    assert str(runtimes.parse_spec("cri:/x.sock")) == "cri:/x.sock"
    with pytest.raises(ValueError):
        runtimes.parse_spec("cri:relative.sock")


# ------------------------------------------------------------------ peers that misbehave
class RawPeer:
    """A unix socket server running ``behave(conn)`` for each connection in a thread."""

    def __init__(self, path: str, behave, accept: bool = True) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.behave = behave
        self.conns: list = []
        self.thread = None
        if accept:
            self.thread = threading.Thread(target=self._serve, daemon=True)
            self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        self.conns.append(conn)
        try:
            self.behave(conn)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()
        if self.thread is not None:
            self.thread.join(5)


def _read_request(conn) -> bytes:
    """Read until the client's DATA frame with END_STREAM has arrived (the whole request)."""
    data = b""
    conn.settimeout(5)
    while True:
        pos = len(h2.PREFACE) if data.startswith(h2.PREFACE) else None
        if pos is not None:
            while pos + 9 <= len(data):
                size = int.from_bytes(data[pos:pos + 3], "big")
                if data[pos + 3] == h2.DATA and data[pos + 4] & h2.END_STREAM and pos + 9 + size <= len(data):
                    return data
                pos += 9 + size
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk


def _drain(conn) -> None:
    """Read until the client hangs up (closing with its frames unread could reset the connection)."""
    conn.settimeout(5)
    while conn.recv(65536):
        pass


def _valid_answer(message: bytes) -> bytes:
    hdr = b"".join(h2.hpack_literal(n, v) for n, v in ((":status", "200"), ("content-type", "application/grpc")))
    trl = h2.hpack_literal("grpc-status", "0")
    return (h2.frame(h2.SETTINGS, 0, 0) + h2.frame(h2.HEADERS, h2.END_HEADERS, 1, hdr)
            + h2.frame(h2.DATA, 0, 1, b"\x00" + struct.pack(">I", len(message)) + message)
            + h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, 1, trl))


@pytest.mark.parametrize("accept", [True, False], ids=["accepts-never-answers", "never-accepts"])
def test_silent_socket_does_not_hang(tmp_path, accept):
    stop = threading.Event()
    peer = RawPeer(str(tmp_path / "s.sock"), lambda conn: stop.wait(10), accept=accept)
    try:
        started = time.monotonic()
        with pytest.raises(cri.CriError, match="did not answer|no connection"):
            cri.list_pod_sandboxes(str(tmp_path / "s.sock"), timeout=0.5)
        assert time.monotonic() - started < 1.5
        answer = runtimes.query(runtimes.parse_spec(f"cri:{tmp_path}/s.sock"), timeout=0.5)
        assert not answer.ok and "within" in answer.error
    finally:
        stop.set()
        peer.close()


@pytest.mark.parametrize("reply, match", [
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "HTTP/2|frame|closed"),
    (b"", "closed the connection"),
    (h2.frame(h2.GOAWAY, 0, 0, struct.pack(">II", 0, 2) + b"overloaded"), "GOAWAY, error 2: overloaded"),
    (h2.frame(h2.SETTINGS, 0, 0) + h2.frame(h2.RST_STREAM, 0, 1, struct.pack(">I", 7)), "RST_STREAM, error 7"),
    (h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, 1, h2.hpack_literal(":status", "404")),
     "HTTP status 404"),
    (h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, 1, b"".join(h2.hpack_literal(n, v) for n, v in (
        (":status", "200"), ("content-type", "application/grpc")))), "no grpc-status"),
    (h2.frame(h2.HEADERS, h2.END_HEADERS, 1, b"\xbf"), "neither table"),  # index 63: empty dynamic table
    (_valid_answer(b"\x0a\x05\x0a\x03a/b"), "not an ID"),
    (_valid_answer(b"\x0a\x02\x18\x01"), "without an id"),  # state = NOTREADY only
    (_valid_answer(b"\x0a\x02\x10\x01"), "metadata is not a message"),
    (_valid_answer(b"\x0b"), "wire type 3"),
], ids=["http1", "close", "goaway", "rst", "http-404", "no-status", "bad-index", "bad-id", "no-id", "bad-meta",
         "group"])
def test_bad_answers_are_cannot_ask(tmp_path, reply, match):
    def behave(conn):
        _read_request(conn)
        conn.sendall(reply)
        conn.shutdown(socket.SHUT_WR)
        _drain(conn)

    path = str(tmp_path / "b.sock")
    peer = RawPeer(path, behave)
    try:
        answer = runtimes.query(runtimes.parse_spec(f"cri:{path}"), timeout=3)
        assert not answer.ok and answer.error
        assert re.search(match, answer.error), answer.error
    finally:
        peer.close()


def test_mutated_answers_never_raise_anything_else(tmp_path):
    """Bit flips, truncations and splices of a valid answer: a result or a CriError, nothing else."""
    box = cri.pb_field(1, "f" * 64) + cri.pb_field(2, cri.pb_field(1, "p") + cri.pb_field(3, "n")) + cri.pb_field(3, 1)
    good = _valid_answer(cri.pb_field(1, box) + cri.pb_field(1, box.replace(b"f" * 64, b"e" * 64)))
    rng = random.Random(7)
    outcomes = {"ok": 0, "error": 0}
    for i in range(60):
        data = bytearray(good)
        kind = i % 3
        if kind == 0:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del data[rng.randrange(len(data)):]
        else:
            at = rng.randrange(len(data))
            data[at:at] = os.urandom(rng.randint(1, 12))
        path = str(tmp_path / f"m{i}.sock")

        def behave(conn, payload=bytes(data)):
            _read_request(conn)
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            _drain(conn)

        peer = RawPeer(path, behave)
        try:
            try:
                cri.list_pod_sandboxes(path, timeout=1)
                outcomes["ok"] += 1
            except cri.CriError:
                outcomes["error"] += 1
        finally:
            peer.close()
    assert outcomes["error"] > 0


# ------------------------------------------------------------------ HPACK and protobuf alone
def test_hpack_rfc7541_examples():
    # C.4: three requests on one connection, Huffman-coded, filling the dynamic table
    dec = h2.HpackDecoder()
    assert dec.decode(bytes.fromhex("828684418cf1e3c2e5f23a6ba0ab90f4ff")) == [
        (":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")]
    assert dec.decode(bytes.fromhex("828684be5886a8eb10649cbf")) == [
        (":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com"),
        ("cache-control", "no-cache")]
    assert dec.table[0] == ("cache-control", "no-cache") and dec.size == 110


def test_hpack_against_an_independent_encoder():
    hpack = pytest.importorskip("hpack", reason="hpack missing (pip install -e '.[test]')")

    rng = random.Random(11)
    enc = hpack.Encoder()
    dec = h2.HpackDecoder()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_/%:;.,= ~\x7f\t" + "".join(chr(c) for c in range(0x80, 0x100, 7))
    names = [":status", "content-type", "grpc-status", "grpc-message", "x-a", "x-b", "date", "server"]
    for round_ in range(300):
        if round_ % 50 == 25:
            enc.header_table_size = rng.choice([0, 64, 256, 4096])  # size updates, evictions
        headers = [(rng.choice(names) if rng.random() < 0.7 else "x-" + "".join(rng.choices("abcxyz", k=5)),
                    "".join(rng.choices(alphabet, k=rng.randint(0, 40))))
                   for _ in range(rng.randint(1, 8))]
        block = enc.encode([(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers],
                           huffman=rng.random() < 0.7)
        assert dec.decode(block) == headers


def test_huffman_rejects_bad_padding_and_eos():
    assert h2.huffman_decode(bytes.fromhex("f1e3c2e5f23a6ba0ab90f4ff")) == b"www.example.com"
    with pytest.raises(cri.CriError):
        h2.huffman_decode(b"\x00")          # padding of zeros
    with pytest.raises(cri.CriError):
        h2.huffman_decode(b"\xff\xff\xff\xff")  # EOS


def test_protobuf_against_google_protobuf(api):
    pb, _ = api
    msg = pb.ListPodSandboxResponse(items=[_box(pb, i, state=i % 2, big=3) for i in range(3)])
    got = cri.parse_list_response(msg.SerializeToString())
    assert [(b.id, b.state, b.name, b.uid, b.namespace, b.attempt) for b in got] == [
        (m.id, m.state, m.metadata.name, m.metadata.uid, m.metadata.namespace, m.metadata.attempt) for m in msg.items]
    # our encoder, read by Google's
    req = pb.ListPodSandboxRequest.FromString(cri.pb_field(1, cri.pb_field(2, cri.pb_field(1, 1))))
    assert req.filter.state.state == 1
    assert pb.PodSandbox.FromString(cri.pb_field(4, -5)).created_at == -5
    for cut in range(1, len(msg.SerializeToString())):
        try:
            cri.parse_list_response(msg.SerializeToString()[:cut])
        except cri.CriError:
            pass
