"""The little of gRPC that ``cni_ipam.admin.cri`` needs, stdlib only: one unary call over HTTP/2.

Owns the transport: ``unary_call(path, method, request, timeout)`` sends one gRPC request message over
a unix socket and returns the answer message.

* **HTTP/2** (RFC 9113) in clear text over a unix socket, one stream per connection: the client
  preface, SETTINGS and their ACK, one HEADERS and one DATA frame out; HEADERS, CONTINUATION, DATA,
  SETTINGS, PING, WINDOW_UPDATE, RST_STREAM and GOAWAY in.  The receive windows are opened wide in
  the first SETTINGS and WINDOW_UPDATE and topped up as DATA is consumed, so an answer of any size
  (up to ``MAX_ANSWER``) flows.
* **HPACK** (RFC 7541): requests use literal fields without indexing (no state to keep);
  answers are decoded in full: indexed fields, the static and dynamic tables (with size updates and
  eviction), Huffman-coded strings.
* **gRPC**: the 5-byte message prefix, ``grpc-timeout``, and ``grpc-status`` from the trailers (or
  a trailers-only answer).  Anything but status 0 is an error.

Every failure (no socket, refused, a deadline passed, a malformed frame or header, a gRPC error)
raises ``CallError`` (``cni_ipam.admin.cri.CriError`` is the same class).  One deadline bounds the
whole call.  Admin code only; never imported on the plugin path.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Dict, List, Tuple

MAX_ANSWER = 64 << 20       # bytes of one answer message; more is taken as a broken peer
MAX_HEADER_BLOCK = 1 << 20  # bytes of one header block (HEADERS + CONTINUATION)


class CallError(Exception):
    """The peer could not be asked (the message says why): its silence proves nothing."""


# ---------------------------------------------------------------------------------------- HPACK
# RFC 7541 Appendix A: the static table (index 1..61).
_STATIC: Tuple[Tuple[str, str], ...] = tuple(
    (n, v) for n, v in (
        (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
        (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
        (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
        ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
        ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
        ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
        ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
        ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
        ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
        ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
        ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
        ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
        ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
    )
)
assert len(_STATIC) == 61

# RFC 7541 Appendix B: the Huffman code is canonical, so the code length of each symbol (0..255 and
# EOS = 256, in order) defines it.  One letter per symbol: "A" is 5 bits, "Z" is 30.
_HUFFMAN_LENGTHS = (
    "ISXXXXXXXTZXXZXXXXXXXXZXXXXXXXXXBFFHIBDGFFDGDBBBAAABBBBBBBCDKBHFIBCCCCCCCCCCCCCCCCCCCCCCDCDIOIJBKABABABBBACCBBBABC"
    "BAABCCCCCKGJIXPRPPRRRSRSSSSSTSTTRSTSSSSQRSRSSTRQPRRSSQSRRTQRSSQQRQSRSSPRRRSRRSVVPORSRUVVVWWVTUOQVWWVWTQQVVXWWWPTPQ"
    "RQQSRRUUTTVSVWVVWWWWWXWWWWWVZ"
)
_EOS = 256


def _huffman_tables() -> Dict[int, Tuple[int, int, List[int]]]:
    """length -> (first code of that length, its count, its symbols in code order)."""
    lengths = [ord(c) - ord("A") + 5 for c in _HUFFMAN_LENGTHS]
    assert len(lengths) == 257
    tables: Dict[int, Tuple[int, int, List[int]]] = {}
    code, prev = 0, 0
    for sym in sorted(range(257), key=lambda s: (lengths[s], s)):
        length = lengths[sym]
        if prev:
            code = (code + 1) << (length - prev)
        prev = length
        first, count, syms = tables.get(length, (code, 0, []))
        syms.append(sym)
        tables[length] = (first, count + 1, syms)
    return tables


_HUFFMAN = _huffman_tables()


def huffman_decode(data: bytes) -> bytes:
    out = bytearray()
    code = length = 0
    for byte in data:
        for shift in range(7, -1, -1):
            code = code << 1 | (byte >> shift) & 1
            length += 1
            entry = _HUFFMAN.get(length)
            if entry is not None and 0 <= code - entry[0] < entry[1]:
                sym = entry[2][code - entry[0]]
                if sym == _EOS:
                    raise CallError("HPACK: EOS inside a Huffman string")
                out.append(sym)
                code = length = 0
            elif length > 30:
                raise CallError("HPACK: invalid Huffman code")
    # padding: fewer than 8 bits, all ones (a prefix of EOS)
    if length > 7 or code != (1 << length) - 1:
        raise CallError("HPACK: invalid Huffman padding")
    return bytes(out)


class HpackDecoder:
    """One connection's decoding context: the dynamic table lives across header blocks."""

    def __init__(self, max_size: int = 4096) -> None:
        self.max_size = max_size       # what we allowed in SETTINGS_HEADER_TABLE_SIZE (default 4096)
        self.size_limit = max_size     # what the encoder chose (dynamic table size update)
        self.table: List[Tuple[str, str]] = []  # newest first
        self.size = 0

    @staticmethod
    def _int(buf: bytes, pos: int, prefix: int) -> Tuple[int, int]:
        if pos >= len(buf):
            raise CallError("HPACK: truncated integer")
        mask = (1 << prefix) - 1
        value = buf[pos] & mask
        pos += 1
        if value < mask:
            return value, pos
        shift = 0
        while True:
            if pos >= len(buf):
                raise CallError("HPACK: truncated integer")
            byte = buf[pos]
            pos += 1
            value += (byte & 0x7F) << shift
            if not byte & 0x80:
                return value, pos
            shift += 7
            if shift > 28:
                raise CallError("HPACK: integer too large")

    def _str(self, buf: bytes, pos: int) -> Tuple[str, int]:
        if pos >= len(buf):
            raise CallError("HPACK: truncated string")
        huffman = buf[pos] & 0x80
        size, pos = self._int(buf, pos, 7)
        if size > len(buf) - pos:
            raise CallError("HPACK: string runs past its header block")
        raw = bytes(buf[pos:pos + size])
        if huffman:
            raw = huffman_decode(raw)
        return raw.decode("latin-1"), pos + size

    def _get(self, index: int) -> Tuple[str, str]:
        if 1 <= index <= len(_STATIC):
            return _STATIC[index - 1]
        dyn = index - len(_STATIC) - 1
        if 0 <= dyn < len(self.table):
            return self.table[dyn]
        raise CallError(f"HPACK: index {index} is in neither table")

    def _evict(self) -> None:
        while self.size > self.size_limit and self.table:
            name, value = self.table.pop()
            self.size -= len(name) + len(value) + 32

    def _add(self, name: str, value: str) -> None:
        self.table.insert(0, (name, value))
        self.size += len(name) + len(value) + 32
        self._evict()  # an entry larger than the table empties it (RFC 7541 4.4)

    def decode(self, block: bytes) -> List[Tuple[str, str]]:
        fields: List[Tuple[str, str]] = []
        pos = 0
        while pos < len(block):
            byte = block[pos]
            if byte & 0x80:                      # indexed field
                index, pos = self._int(block, pos, 7)
                if index == 0:
                    raise CallError("HPACK: index 0")
                fields.append(self._get(index))
                continue
            if byte & 0xE0 == 0x20:              # dynamic table size update
                size, pos = self._int(block, pos, 5)
                if size > self.max_size:
                    raise CallError("HPACK: table size update above the limit we announced")
                self.size_limit = size
                self._evict()
                continue
            indexing = byte & 0xC0 == 0x40       # literal with incremental indexing
            index, pos = self._int(block, pos, 6 if indexing else 4)  # else without/never indexed
            if index:
                name = self._get(index)[0]
            else:
                name, pos = self._str(block, pos)
            value, pos = self._str(block, pos)
            if indexing:
                self._add(name, value)
            fields.append((name, value))
        return fields


def hpack_literal(name: str, value: str) -> bytes:
    """A literal header field without indexing, new name, no Huffman: nothing to remember."""
    out = bytearray(b"\x00")
    for text in (name, value):
        data = text.encode("latin-1")
        out += _hpack_int(len(data), 7) + data
    return bytes(out)


def _hpack_int(value: int, prefix: int, first: int = 0) -> bytes:
    mask = (1 << prefix) - 1
    if value < mask:
        return bytes([first | value])
    out = bytearray([first | mask])
    value -= mask
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# ---------------------------------------------------------------------------------------- HTTP/2
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 5, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE = 0x2, 0x4
_WINDOW = 1 << 24             # our receive window (stream and connection)
_DEFAULT_WINDOW = 65535
_MAX_FRAME = 1 << 24          # what SETTINGS_MAX_FRAME_SIZE can say at most
STREAM = 1

# gRPC status codes a runtime may answer (the rest are shown as numbers)
_GRPC_CODES = {1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
               7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 12: "UNIMPLEMENTED", 13: "INTERNAL",
               14: "UNAVAILABLE", 16: "UNAUTHENTICATED"}


def frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def _percent_decode(text: str) -> str:
    from urllib.parse import unquote

    return unquote(text, errors="replace")


class _Conn:
    """One HTTP/2 connection over a unix socket, bounded by ``deadline`` (time.monotonic())."""

    def __init__(self, path: str, deadline: float) -> None:
        self.path = path
        self.deadline = deadline
        self.buf = bytearray()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._arm()
            self.sock.connect(path)
        except BaseException:
            self.sock.close()
            raise

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline passed")
        self.sock.settimeout(left)

    def send(self, data: bytes) -> None:
        self._arm()
        self.sock.sendall(data)

    def _fill(self, size: int) -> None:
        while len(self.buf) < size:
            self._arm()
            chunk = self.sock.recv(max(size - len(self.buf), 65536))
            if not chunk:
                raise CallError(f"{self.path}: the runtime closed the connection mid-answer")
            self.buf += chunk

    def read_frame(self) -> Tuple[int, int, int, bytes]:
        self._fill(9)
        length = int.from_bytes(self.buf[:3], "big")
        ftype, flags = self.buf[3], self.buf[4]
        stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
        if length > _MAX_FRAME:
            raise CallError(f"HTTP/2: a frame of {length} bytes")
        self._fill(9 + length)
        payload = bytes(self.buf[9:9 + length])
        del self.buf[:9 + length]
        return ftype, flags, stream, payload

    def close(self) -> None:
        self.sock.close()


def _strip_padding(flags: int, payload: bytes, what: str) -> bytes:
    if flags & PADDED:
        if not payload or payload[0] >= len(payload):
            raise CallError(f"HTTP/2: bad padding in {what}")
        payload = payload[1:len(payload) - payload[0]]
    return payload


def unary_call(path: str, method: str, request: bytes, timeout: float, authority: str = "localhost") -> bytes:
    """One gRPC unary call (``method`` like ``/runtime.v1.RuntimeService/ListPodSandbox``) over the
    unix socket ``path``; returns the answer message.  Raises CallError for everything that goes wrong."""
    deadline = time.monotonic() + timeout
    try:
        conn = _Conn(path, deadline)
    except FileNotFoundError:
        raise CallError(f"CRI socket {path} does not exist") from None
    except (socket.timeout, TimeoutError):
        raise CallError(f"CRI socket {path}: no connection within {timeout:g}s") from None
    except OSError as exc:
        raise CallError(f"CRI socket {path}: {exc.strerror or exc}") from None
    try:
        return _call(conn, method, request, timeout, authority)
    except (socket.timeout, TimeoutError):
        raise CallError(f"CRI at {path} did not answer {method} within {timeout:g}s") from None
    except OSError as exc:
        raise CallError(f"CRI at {path}: {exc.strerror or exc}") from None
    except (ValueError, IndexError, struct.error) as exc:  # a malformed answer the checks above missed
        raise CallError(f"CRI at {path}: malformed answer ({type(exc).__name__}: {exc})") from None
    finally:
        conn.close()


def _call(conn: _Conn, method: str, request: bytes, timeout: float, authority: str) -> bytes:
    settings = struct.pack(">HIHI", SETTINGS_ENABLE_PUSH, 0, SETTINGS_INITIAL_WINDOW_SIZE, _WINDOW)
    headers = b"".join(hpack_literal(n, v) for n, v in (
        (":method", "POST"), (":scheme", "http"), (":path", method), (":authority", authority),
        ("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", "cni-ipam"),
        ("grpc-timeout", f"{max(int(timeout * 1000), 1)}m"),
    ))
    message = b"\x00" + struct.pack(">I", len(request)) + request
    conn.send(PREFACE + frame(SETTINGS, 0, 0, settings)
              + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", _WINDOW - _DEFAULT_WINDOW))
              + frame(HEADERS, END_HEADERS, STREAM, headers)
              + frame(DATA, END_STREAM, STREAM, message))
    # The request is small (no flow-control wait: the peer's initial windows are at least 65535 bytes).
    hpack = HpackDecoder()
    blocks: List[List[Tuple[str, str]]] = []  # response headers, then trailers
    body = bytearray()
    block = bytearray()
    block_end = False      # END_STREAM seen on the HEADERS that opened the current block
    in_block = False
    unacked = 0
    while True:
        ftype, flags, stream, payload = conn.read_frame()
        if in_block and ftype != CONTINUATION:
            raise CallError("HTTP/2: a header block interrupted by another frame")
        if ftype == SETTINGS:
            if stream != 0 or (flags & ACK and payload) or len(payload) % 6:
                raise CallError("HTTP/2: malformed SETTINGS")
            if not flags & ACK:
                conn.send(frame(SETTINGS, ACK, 0))
        elif ftype == PING:
            if len(payload) != 8:
                raise CallError("HTTP/2: malformed PING")
            if not flags & ACK:
                conn.send(frame(PING, ACK, 0, payload))
        elif ftype == GOAWAY:
            if len(payload) < 8:
                raise CallError("HTTP/2: malformed GOAWAY")
            last, code = struct.unpack(">II", payload[:8])
            if (last & 0x7FFFFFFF) < STREAM or code != 0:
                detail = payload[8:200].decode("utf-8", "replace")
                raise CallError(f"the runtime refused the call (GOAWAY, error {code}{': ' + detail if detail else ''})")
        elif ftype == RST_STREAM:
            if stream == STREAM:
                code = struct.unpack(">I", payload[:4])[0] if len(payload) == 4 else -1
                raise CallError(f"the runtime reset the call (RST_STREAM, error {code})")
        elif ftype == WINDOW_UPDATE:
            pass  # the request went out whole; the peer's windows do not matter any more
        elif ftype in (HEADERS, CONTINUATION):
            if stream != STREAM:
                raise CallError(f"HTTP/2: header block on stream {stream}")
            if ftype == HEADERS:
                if in_block:
                    raise CallError("HTTP/2: HEADERS inside a header block")
                payload = _strip_padding(flags, payload, "HEADERS")
                if flags & PRIORITY:
                    payload = payload[5:]
                block = bytearray(payload)
                block_end = bool(flags & END_STREAM)
            else:
                if not in_block:
                    raise CallError("HTTP/2: CONTINUATION outside a header block")
                block += payload
            if len(block) > MAX_HEADER_BLOCK:
                raise CallError("HTTP/2: header block too large")
            in_block = not flags & END_HEADERS
            if not in_block:
                blocks.append(hpack.decode(bytes(block)))
                if block_end:
                    return _finish(blocks, bytes(body))
        elif ftype == DATA:
            if stream != STREAM:
                raise CallError(f"HTTP/2: DATA on stream {stream}")
            if not blocks:
                raise CallError("HTTP/2: DATA before the response headers")
            unacked += len(payload)
            body += _strip_padding(flags, payload, "DATA")
            if len(body) > MAX_ANSWER + 5:
                raise CallError(f"the answer is larger than {MAX_ANSWER} bytes")
            if flags & END_STREAM:
                return _finish(blocks, bytes(body))
            if unacked >= _WINDOW // 4:  # top both windows up again before they run low
                inc = struct.pack(">I", unacked)
                conn.send(frame(WINDOW_UPDATE, 0, 0, inc) + frame(WINDOW_UPDATE, 0, STREAM, inc))
                unacked = 0
        elif ftype == PUSH_PROMISE:
            raise CallError("HTTP/2: PUSH_PROMISE although push was disabled")
        # frames of unknown type are ignored (RFC 9113 4.1)


def _finish(blocks: List[List[Tuple[str, str]]], body: bytes) -> bytes:
    headers = dict(blocks[0])
    status = headers.get(":status")
    if status != "200":
        raise CallError(f"the runtime answered HTTP status {status} (not a gRPC server?)")
    trailers = dict(blocks[-1]) if len(blocks) > 1 else headers  # one block: trailers-only
    if len(blocks) > 2:
        raise CallError("HTTP/2: more than two header blocks")
    code = trailers.get("grpc-status")
    if code is None:
        raise CallError("gRPC: the answer has no grpc-status")
    if code != "0":
        name = _GRPC_CODES.get(int(code), code) if code.isdigit() else code
        msg = _percent_decode(trailers.get("grpc-message", ""))[:300]
        raise CallError(f"gRPC error {name}{': ' + msg if msg else ''}")
    if not headers.get("content-type", "").startswith("application/grpc"):
        raise CallError(f"gRPC: content-type {headers.get('content-type')!r}")
    if len(body) < 5:
        raise CallError("gRPC: status 0 without an answer message")
    flag, size = body[0], struct.unpack(">I", body[1:5])[0]
    if flag != 0:
        raise CallError("gRPC: compressed answer (none was offered)")
    if size != len(body) - 5:
        raise CallError(f"gRPC: message of {len(body) - 5} bytes announced as {size}")
    return body[5:]
