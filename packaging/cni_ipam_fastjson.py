"""A stand-in for the ``json`` module on the frozen plugin path: same results, no ``re``.

``import json`` costs more than anything else a CNI call imports: json.decoder, json.scanner and
json.encoder import ``re`` (which imports ``enum``) and compile six regular expressions, none of
which is used when the C accelerator ``_json`` is present.  The frozen entry script puts this module
in ``sys.modules["json"]`` for CNI calls only (admin commands get the real json).

What it does itself, with ``_json`` exactly as the json package uses it:

* ``loads(s)`` with no keyword arguments: the C scanner with json's default context, the same
  leading/trailing whitespace rule ([ \\t\\n\\r]) and json's rule for bytes input (UTF-8 unless a
  BOM or NUL bytes say otherwise - those cases go to the real json).
* ``dumps(obj)`` / ``dumps(obj, sort_keys=...)``: the C encoder with json's default separators.
* ``dumps(obj, indent=N[, sort_keys])``: json's pure-Python layout, for str keys and plain values.

Anything else - other keyword arguments, any attribute not defined here, and every case where the
fast path raises (invalid JSON, unserialisable objects, non-str keys, NaN...) - goes to the real json
module, imported on first need, so errors and edge cases are exactly json's.
"""

import sys

import _json

_REAL = None
_WS = " \t\n\r"


def _real():
    """Import the real json package (once) and let it take over sys.modules["json"]."""
    global _REAL
    if _REAL is None:
        me = sys.modules.get("json")
        if me is not None and getattr(me, "_cni_ipam_fastjson", False):
            del sys.modules["json"]
        try:
            import json as real
        except BaseException:
            if me is not None:
                sys.modules["json"] = me
            raise
        _REAL = real
    return _REAL


def __getattr__(name):  # PEP 562: everything else comes from the real module
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(_real(), name)


_cni_ipam_fastjson = True


class _Context:
    # What json.decoder.JSONDecoder() hands to the C scanner.
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo = None

    @staticmethod
    def parse_constant(name, _c={"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}):  # noqa: B006
        return _c[name]


_scan = _json.make_scanner(_Context())
_encode_str = _json.encode_basestring_ascii


def loads(s, **kw):
    if kw or _REAL is not None:
        return _real().loads(s, **kw)
    try:
        if isinstance(s, (bytes, bytearray)):
            if s[:1] in (b"\xef", b"\xfe", b"\xff") or b"\x00" in s[:4]:
                raise ValueError("not plain UTF-8")  # let json detect the encoding
            text = s.decode("utf-8", "surrogatepass")
        elif isinstance(s, str):
            text = s
        else:
            raise TypeError
        start = len(text) - len(text.lstrip(_WS))
        obj, end = _scan(text, start)
        if text[end:].strip(_WS):
            raise ValueError("extra data")
        return obj
    except Exception:
        pass
    return _real().loads(s)


def _default(o):
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def dumps(obj, *, indent=None, sort_keys=False, **kw):
    if kw or _REAL is not None:
        return _real().dumps(obj, indent=indent, sort_keys=sort_keys, **kw)
    try:
        if indent is None:
            if isinstance(obj, str):
                return _encode_str(obj)
            enc = _json.make_encoder({}, _default, _encode_str, None, ": ", ", ", bool(sort_keys), False, True)
            chunks = enc(obj, 0)
            return "".join(chunks)
        if isinstance(indent, int) and not isinstance(indent, bool):
            out = []
            _pretty(obj, " " * indent, 0, bool(sort_keys), out)
            return "".join(out)
    except Exception:
        pass
    return _real().dumps(obj, indent=indent, sort_keys=sort_keys)


def dump(obj, fp, *, indent=None, sort_keys=False, **kw):
    """json.dump: the same text (the stdlib's dump writes dumps' text in pieces), written at once."""
    fp.write(dumps(obj, indent=indent, sort_keys=sort_keys, **kw))


_INF = float("inf")


def _pretty(o, ind, level, sort_keys, out):
    """json's layout for indent: separators (',', ': '), one item per line, [] and {} when empty."""
    if isinstance(o, str):
        out.append(_encode_str(o))
    elif o is None:
        out.append("null")
    elif o is True:
        out.append("true")
    elif o is False:
        out.append("false")
    elif isinstance(o, int):
        out.append(int.__repr__(o))
    elif isinstance(o, float):
        if o != o or o in (_INF, -_INF):
            raise ValueError("non-finite float")  # the real json spells these NaN/Infinity
        out.append(float.__repr__(o))
    elif isinstance(o, (list, tuple)):
        if not o:
            out.append("[]")
            return
        newline = "\n" + ind * (level + 1)
        out.append("[")
        first = True
        for v in o:
            out.append(newline if first else "," + newline)
            first = False
            _pretty(v, ind, level + 1, sort_keys, out)
        out.append("\n" + ind * level + "]")
    elif isinstance(o, dict):
        if not o:
            out.append("{}")
            return
        items = sorted(o.items()) if sort_keys else o.items()
        newline = "\n" + ind * (level + 1)
        out.append("{")
        first = True
        for k, v in items:
            if not isinstance(k, str):
                raise TypeError("non-str key")  # json converts numbers/bools/None; let it
            out.append(newline if first else "," + newline)
            first = False
            out.append(_encode_str(k))
            out.append(": ")
            _pretty(v, ind, level + 1, sort_keys, out)
        out.append("\n" + ind * level + "}")
    else:
        raise TypeError("not a JSON type")
