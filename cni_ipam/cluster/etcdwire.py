"""The wire format of etcd's JSON gateway (``/v3/...``): encoding requests, decoding answers.

Owns the compare and operation builders of a transaction (``cmp_*``, ``op_*``), ``prefix_end``, the
base64 and int64 conversions and the decoders of each path's 200 answer and of error documents.
No I/O: the client that sends them is ``cni_ipam.cluster.etcd`` (which re-exports the public
names).  On the pool ADD path, so it imports nothing but ``binascii`` (base64 without the
``base64`` module and its ``re``).

The gateway's quirks handled here: keys and values are base64 in both directions; 64-bit integers
(revisions, counts) are JSON strings; fields equal to zero / false / empty are left out (an empty
range has no ``kvs``, an empty value no ``value``, a failed compare no ``succeeded``, ``deleted: 0``
is absent); errors are ``{"error": ..., "code": <gRPC code>}`` with an HTTP status derived from the
gRPC code.
"""

from __future__ import annotations

import binascii

_RESULTS = {"=": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}


def _b64(data: bytes) -> str:
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"etcd keys and values are bytes, not {type(data).__name__}")
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _unb64(text) -> bytes:
    return binascii.a2b_base64(text) if text else b""


def _int(value) -> int:
    """An int64 of the gateway: a JSON string, sometimes a number, absent when zero."""
    if value is None or value == "":
        return 0
    return int(value)


def _kv(item: dict) -> tuple:
    return (_unb64(item.get("key")), _unb64(item.get("value")), _int(item.get("mod_revision")),
            _int(item.get("create_revision")))


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key after every key that starts with ``prefix`` (etcd's ``range_end``).

    ``b""`` (or only 0xff bytes) gives ``b"\\0"``: every key from the start key on."""
    data = bytearray(prefix)
    while data and data[-1] == 0xFF:
        data.pop()
    if not data:
        return b"\0"
    data[-1] += 1
    return bytes(data)


def _compare(key: bytes, target: str, op: str, field: str, value, range_end: bytes | None = None) -> dict:
    try:
        result = _RESULTS[op]
    except KeyError:
        raise ValueError(f"compare operator must be one of = != < >, not {op!r}") from None
    cmp = {"key": _b64(key), "target": target, "result": result, field: value}
    if range_end is not None:
        cmp["range_end"] = _b64(range_end)
    return cmp


def cmp_create(key: bytes, op: str, rev: int, range_end: bytes | None = None) -> dict:
    """Compare the key's create revision (0: the key does not exist). With ``range_end`` every key
    in [key, range_end) must pass, and an empty range compares as one absent key."""
    return _compare(key, "CREATE", op, "create_revision", str(int(rev)), range_end)


def cmp_mod(key: bytes, op: str, rev: int, range_end: bytes | None = None) -> dict:
    """Compare the key's last modification revision (0: the key does not exist)."""
    return _compare(key, "MOD", op, "mod_revision", str(int(rev)), range_end)


def cmp_version(key: bytes, op: str, version: int, range_end: bytes | None = None) -> dict:
    """Compare the key's version (number of writes since it was created; 0: absent).
    ``cmp_version(start, "=", 0, range_end=end)`` holds exactly when no key lies in [start, end)."""
    return _compare(key, "VERSION", op, "version", str(int(version)), range_end)


def cmp_value(key: bytes, op: str, value: bytes) -> dict:
    """Compare the key's value (a missing key fails every value compare)."""
    return _compare(key, "VALUE", op, "value", _b64(value))


def op_put(key: bytes, value: bytes) -> dict:
    return {"request_put": {"key": _b64(key), "value": _b64(value)}}


def op_delete(key: bytes, prefix: bool = False) -> dict:
    req = {"key": _b64(key)}
    if prefix:
        req["range_end"] = _b64(prefix_end(key))
    return {"request_delete_range": req}


def op_get(key: bytes, prefix: bool = False) -> dict:
    req = {"key": _b64(key)}
    if prefix:
        req["range_end"] = _b64(prefix_end(key))
    return {"request_range": req}


def op_range(key: bytes, range_end: bytes | None = None, revision: int = 0, count_only: bool = False,
             keys_only: bool = False) -> dict:
    """A read of [key, range_end) (one key without ``range_end``) in a txn, at ``revision`` (0: the
    txn's own); ``count_only`` answers only the number of keys (``count``), no key."""
    req: dict = {"key": _b64(key)}
    if range_end is not None:
        req["range_end"] = _b64(range_end)
    if revision:
        req["revision"] = str(int(revision))
    if count_only:
        req["count_only"] = True
    if keys_only:
        req["keys_only"] = True
    return {"request_range": req}


def _decode_response(item: dict) -> dict:
    if "response_range" in item:
        r = item["response_range"] or {}
        return {"type": "range", "kvs": [_kv(kv) for kv in r.get("kvs") or ()], "count": _int(r.get("count")),
                "more": bool(r.get("more"))}
    if "response_put" in item:
        r = item["response_put"] or {}
        return {"type": "put", "revision": _int((r.get("header") or {}).get("revision"))}
    if "response_delete_range" in item:
        r = item["response_delete_range"] or {}
        return {"type": "delete", "deleted": _int(r.get("deleted")),
                "revision": _int((r.get("header") or {}).get("revision"))}
    if "response_txn" in item:
        r = item["response_txn"] or {}
        return {"type": "txn", "succeeded": bool(r.get("succeeded")),
                "responses": [_decode_response(x) for x in r.get("responses") or ()]}
    raise ValueError("a txn response of no known type")


def _header_revision(doc: dict) -> int:
    return _int((doc.get("header") or {}).get("revision"))


def _header(doc: dict) -> tuple:
    """(cluster_id, revision) of an etcd answer's header.  Every answer of the calls used here
    carries one, with a revision of at least 1 (an empty etcd is at revision 1): JSON without it is
    not etcd's (ValueError, the endpoint failed)."""
    head = doc.get("header")
    if not isinstance(head, dict):
        raise ValueError("no header")
    cluster_id, revision = _int(head.get("cluster_id")), _int(head.get("revision"))
    if revision < 1:
        raise ValueError("no revision in the header")
    return cluster_id, revision


def _list(value) -> list:
    """A JSON array the gateway leaves out when empty."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError("not a list")
    return value


def _decode_page(doc: dict, body: dict) -> tuple:
    kvs = [_kv(kv) for kv in _list(doc.get("kvs"))]
    if _int(doc.get("count")) < len(kvs):
        raise ValueError("fewer keys counted than returned")
    return _header_revision(doc), kvs, bool(doc.get("more"))


def _decode_put(doc: dict, body: dict) -> int:
    return _header_revision(doc)


def _decode_deleted(doc: dict, body: dict) -> int:
    return _int(doc.get("deleted"))


def _decode_txn(doc: dict, body: dict) -> tuple:
    succeeded = bool(doc.get("succeeded"))
    responses = [_decode_response(item) for item in _list(doc.get("responses"))]
    if len(responses) != len(body["success" if succeeded else "failure"]):
        raise ValueError("not one response per operation of the branch")
    return succeeded, responses, _header_revision(doc)


def _decode_token(doc: dict, body: dict) -> str:
    token = doc.get("token")
    if not isinstance(token, str) or not token:
        raise ValueError("no token in the answer (is authentication enabled in etcd?)")
    if any(c <= " " or c == "\x7f" for c in token):
        raise ValueError("the token holds characters an HTTP header cannot carry")
    return token


_NO_TEXT = "no error text"
# How each path's 200 answer is decoded; an answer that does not decode is not etcd's
_DECODE = {"/v3/kv/range": _decode_page, "/v3/kv/put": _decode_put, "/v3/kv/deleterange": _decode_deleted,
           "/v3/kv/txn": _decode_txn}


def _error_text(doc) -> str:
    if isinstance(doc, dict):
        for key in ("error", "message"):
            value = doc.get(key)
            if isinstance(value, str) and value:
                return value[:300]
            if isinstance(value, dict):  # a stream's {"error": {"grpc_code":..., "message":...}}
                return _error_text(value)
    return _NO_TEXT
