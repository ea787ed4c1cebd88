"""Ask a CRI runtime (containerd, CRI-O) which pod sandboxes exist: ``ListPodSandbox`` over its socket.

This is what kubelet sees.  The product is one file without pip dependencies, so the little of gRPC
it needs is carried here, stdlib only.  This module owns the CRI side:

* **protobuf**: a reader of the wire format (varints, length-delimited fields; the other wire types
  are skipped) and a writer for the few fields a request has.  Only the fields used below are
  interpreted, by their numbers in cri-api's ``runtime/v1/api.proto``.
* **the sandboxes**: the ``ListPodSandbox`` request and the ``Sandbox`` records of its answer.

The transport (one unary gRPC call: HTTP/2, HPACK, gRPC framing) is ``cni_ipam.admin.h2``.

Every failure (no socket, refused, a deadline passed, a malformed frame, field or header, a gRPC
error) raises ``CriError``: the runtime "cannot be asked" and proves nothing.  One deadline bounds
the whole call, so a socket that accepts and never answers cannot hang ``cni-ipam gc``.

Admin code only (``cni-ipam gc --runtime cri``); never imported on the plugin path.
"""

from __future__ import annotations

from typing import Iterator, List, Optional, Tuple

from cni_ipam.admin.h2 import CallError, unary_call

DEFAULT_SOCKET = "/run/containerd/containerd.sock"  # containerd; CRI-O's is /var/run/crio/crio.sock
SERVICE = "runtime.v1.RuntimeService"

# PodSandboxState (cri-api runtime/v1)
SANDBOX_READY = 0
SANDBOX_NOTREADY = 1
STATE_NAMES = {SANDBOX_READY: "SANDBOX_READY", SANDBOX_NOTREADY: "SANDBOX_NOTREADY"}


# The runtime could not be asked (the message says why): its silence proves nothing.  One class
# with the transport's error, so every failure of a call is a CriError.
CriError = CallError


# ---------------------------------------------------------------------------------------- protobuf
def pb_varint(value: int) -> bytes:
    """A protobuf varint (negative int64 values in 10 bytes, two's complement)."""
    if value < 0:
        value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pb_field(number: int, value: "int | bytes | str") -> bytes:
    """One field: an int as a varint (wire type 0), bytes or str length-delimited (wire type 2)."""
    if isinstance(value, bool) or isinstance(value, int):
        return pb_varint(number << 3) + pb_varint(int(value))
    data = value.encode() if isinstance(value, str) else bytes(value)
    return pb_varint(number << 3 | 2) + pb_varint(len(data)) + data


def _read_varint(buf: bytes, pos: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise CriError("protobuf: truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise CriError("protobuf: varint longer than 10 bytes")


def pb_fields(buf: bytes) -> Iterator[Tuple[int, int, "int | bytes"]]:
    """(field number, wire type, value) of every field: varints as int, length-delimited as bytes,
    fixed 32/64-bit as int.  Groups (wire types 3, 4) and anything malformed raise CriError."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wtype = key >> 3, key & 7
        if number == 0:
            raise CriError("protobuf: field number 0")
        value: "int | bytes"
        if wtype == 0:
            value, pos = _read_varint(buf, pos)
        elif wtype == 2:
            size, pos = _read_varint(buf, pos)
            if size > end - pos:
                raise CriError("protobuf: length-delimited field runs past its message")
            value, pos = bytes(buf[pos:pos + size]), pos + size
        elif wtype in (1, 5):
            size = 8 if wtype == 1 else 4
            if size > end - pos:
                raise CriError("protobuf: truncated fixed-size field")
            value, pos = int.from_bytes(buf[pos:pos + size], "little"), pos + size
        else:
            raise CriError(f"protobuf: unsupported wire type {wtype}")
        yield number, wtype, value


def _text(value: "int | bytes", what: str) -> str:
    if not isinstance(value, bytes):
        raise CriError(f"protobuf: {what} is not a string field")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise CriError(f"protobuf: {what} is not UTF-8") from None


def _number(value: "int | bytes", what: str) -> int:
    if isinstance(value, bytes):
        raise CriError(f"protobuf: {what} is not a varint field")
    return value


# ---------------------------------------------------------------------------------------- CRI
class Sandbox:
    """One entry of ``ListPodSandboxResponse.items`` (the fields cni-ipam uses)."""

    __slots__ = ("id", "state", "name", "namespace", "uid", "attempt")

    def __init__(self, id: str, state: int, name: str = "", namespace: str = "", uid: str = "",
                 attempt: int = 0) -> None:
        self.id = id
        self.state = state
        self.name = name
        self.namespace = namespace
        self.uid = uid
        self.attempt = attempt

    @property
    def ready(self) -> bool:
        return self.state == SANDBOX_READY

    def __repr__(self) -> str:
        return f"Sandbox({self.id[:12]}, {STATE_NAMES.get(self.state, self.state)}, {self.namespace}/{self.name})"


def parse_sandbox(buf: bytes) -> Sandbox:
    """``PodSandbox``: id = 1, metadata = 2 (name = 1, uid = 2, namespace = 3, attempt = 4), state = 3."""
    box = Sandbox("", SANDBOX_READY)
    for number, _, value in pb_fields(buf):
        if number == 1:
            box.id = _text(value, "PodSandbox.id")
        elif number == 3:
            box.state = _number(value, "PodSandbox.state")
        elif number == 2:
            if not isinstance(value, bytes):
                raise CriError("protobuf: PodSandbox.metadata is not a message")
            for mnum, _, mval in pb_fields(value):
                if mnum == 1:
                    box.name = _text(mval, "PodSandboxMetadata.name")
                elif mnum == 2:
                    box.uid = _text(mval, "PodSandboxMetadata.uid")
                elif mnum == 3:
                    box.namespace = _text(mval, "PodSandboxMetadata.namespace")
                elif mnum == 4:
                    box.attempt = _number(mval, "PodSandboxMetadata.attempt")
    if not box.id:
        raise CriError("ListPodSandbox answered a sandbox without an id")
    return box


def parse_list_response(buf: bytes) -> List[Sandbox]:
    """``ListPodSandboxResponse``: items = 1 (repeated PodSandbox)."""
    out = []
    for number, _, value in pb_fields(buf):
        if number == 1:
            if not isinstance(value, bytes):
                raise CriError("protobuf: ListPodSandboxResponse.items is not a message")
            out.append(parse_sandbox(value))
    return out


def list_pod_sandboxes(path: str = DEFAULT_SOCKET, timeout: float = 10.0,
                       state: Optional[int] = None) -> List[Sandbox]:
    """Every pod sandbox the runtime at ``path`` knows, READY and NOTREADY (``state`` filters:
    ``PodSandboxFilter.state`` = 2 holding ``PodSandboxStateValue.state`` = 1)."""
    request = b""
    if state is not None:
        request = pb_field(1, pb_field(2, pb_field(1, state)))  # proto3: state 0 is the absent default
    return parse_list_response(unary_call(path, f"/{SERVICE}/ListPodSandbox", request, timeout))
