"""A small reader for the YAML subset the admin files use (the ``plan --inventory`` file).

cni-ipam ships as one executable without pip dependencies on the admin path, so this reads a
documented subset of YAML instead of needing PyYAML, and every error names its line:

* block mappings (``key: value``, ``key:`` with a nested block) and block sequences (``- item``,
  ``- key: value`` starting a mapping inside the item), indented with spaces;
* scalars: plain (``10.0.0.0/8``, ``fd00::/48``), ``'single'`` (``''`` is a quote) and
  ``"double"`` quoted (``\\"``, ``\\\\``, ``\\n``, ``\\t``); ``true``/``false``, ``null``/``~``/empty,
  decimal integers; everything else is a string;
* flow collections on one line: ``[a, b]`` and ``{k: v, k2: v2}`` of scalars;
* ``#`` comments (whole line, or after a space), one optional leading ``---``.

Refused with a message naming the line: tabs in indentation, anchors/aliases (``&``/``*``), tags
(``!``), block scalars (``|``/``>``), more than one document, duplicate keys, a flow collection
across lines.  A plain scalar ending in ``:`` is a key, as in YAML: quote an IPv6 address such as
``"fd00::"``.

The result is plain dicts, lists and scalars; mappings are :class:`Map` (a dict with ``line`` and
``key_lines``) and sequences :class:`Seq` (a list with ``line`` and ``item_lines``), so a schema
check can name the line of any value.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 64


class YamlError(Exception):
    def __init__(self, line: int, msg: str) -> None:
        super().__init__(f"line {line}: {msg}")
        self.line = line
        self.msg = msg


class Map(dict):
    """A mapping with the line it starts on and the line of each key."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[str, int] = {}


class Seq(list):
    """A sequence with the line it starts on and the line of each item."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []


class _Line:
    __slots__ = ("no", "indent", "text")

    def __init__(self, no: int, indent: int, text: str) -> None:
        self.no = no
        self.indent = indent
        self.text = text


def _strip_comment(text: str, no: int) -> str:
    """``text`` without a trailing ``# comment`` (outside quotes)."""
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c in "'\"" and (i == 0 or text[i - 1] in " \t[{,:-"):
            quote = c
        elif c == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
        i += 1
    return text.rstrip()


def _lines(source: str) -> list[_Line]:
    out: list[_Line] = []
    started = False
    for no, raw in enumerate(source.splitlines(), 1):
        body = raw.lstrip(" ")
        if body.strip() and "\t" in raw[: len(raw) - len(raw.lstrip(" \t"))]:
            raise YamlError(no, "a tab in the indentation (indent with spaces)")
        text = _strip_comment(body, no) if "#" in body else body.rstrip()
        if not text:
            continue
        if text in ("---", "...") or text.startswith("--- ") or text.startswith("%"):
            if text == "---" and not started and not out:
                started = True
                continue
            raise YamlError(no, f"{text.split()[0]!r}: only one document, without directives")
        out.append(_Line(no, len(raw) - len(body), text))
    return out


def _is_seq_item(text: str) -> bool:
    return text == "-" or text.startswith("- ")


def _split_key(text: str, no: int) -> tuple[str, str] | None:
    """(key, rest) when ``text`` is ``key: rest`` or ``key:``, else None."""
    if text[0] in "'\"":
        end = _quoted_end(text, 0, no)
        after = text[end:].lstrip(" ")
        if after.startswith(":") and (len(after) == 1 or after[1] == " "):
            return _scalar(text[:end], no), after[1:].strip()
        return None
    if text[0] in "[{":
        return None
    i = 0
    while True:
        i = text.find(":", i)
        if i < 0:
            return None
        if i + 1 == len(text) or text[i + 1] == " ":
            key = text[:i].rstrip()
            if not key:
                raise YamlError(no, "a key is missing before ':'")
            return key, text[i + 1 :].strip()
        i += 1


def _quoted_end(text: str, start: int, no: int) -> int:
    """The index just past the quoted string that starts at ``start``."""
    quote = text[start]
    i = start + 1
    while i < len(text):
        c = text[i]
        if quote == '"' and c == "\\":
            i += 2
            continue
        if c == quote:
            if quote == "'" and i + 1 < len(text) and text[i + 1] == "'":
                i += 2
                continue
            return i + 1
        i += 1
    raise YamlError(no, "a quoted string does not end on its line")


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "/": "/", "0": "\0", "r": "\r"}


def _scalar(text: str, no: int) -> Any:
    text = text.strip()
    if not text:
        return None
    c = text[0]
    if c in "'\"":
        end = _quoted_end(text, 0, no)
        if text[end:].strip():
            raise YamlError(no, f"text after a quoted string: {text[end:].strip()!r}")
        body = text[1 : end - 1]
        if c == "'":
            return body.replace("''", "'")
        out, i = [], 0
        while i < len(body):
            if body[i] == "\\":
                esc = body[i + 1 : i + 2]
                if esc not in _ESCAPES:
                    raise YamlError(no, f"unsupported escape \\{esc} in a double-quoted string")
                out.append(_ESCAPES[esc])
                i += 2
            else:
                out.append(body[i])
                i += 1
        return "".join(out)
    if c in "&*!|>%@`":
        what = {"&": "anchors", "*": "aliases", "!": "tags", "|": "block scalars", ">": "block scalars"}.get(
            c, f"{c!r}"
        )
        raise YamlError(no, f"{what} are not supported (see the inventory's YAML subset)")
    if c in "[{":
        return _flow(text, no)
    if c in "]},":
        raise YamlError(no, f"unexpected {c!r}")
    if text in ("null", "Null", "NULL", "~"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    digits = text[1:] if text[0] in "+-" else text
    if digits.isascii() and digits.isdigit() and (digits == "0" or digits[0] != "0"):
        return int(text)
    return text


def _flow_items(body: str, no: int) -> list[str]:
    items, start, i = [], 0, 0
    while i < len(body):
        c = body[i]
        if c in "'\"" and body[:i].rstrip()[-1:] in ("", ",", ":"):
            i = _quoted_end(body, i, no)
            continue
        if c in "[{":
            raise YamlError(no, "nested flow collections are not supported")
        if c == ",":
            items.append(body[start:i])
            start = i + 1
        i += 1
    items.append(body[start:])
    if items and not items[-1].strip():  # a trailing comma
        items.pop()
    if any(not item.strip() for item in items):
        raise YamlError(no, "an empty item in a flow collection")
    return items


def _flow(text: str, no: int) -> Any:
    close = "]" if text[0] == "[" else "}"
    if not text.endswith(close):
        raise YamlError(no, f"a flow collection must end with {close!r} on its line")
    body = text[1:-1]
    if text[0] == "[":
        seq = Seq(no)
        for item in _flow_items(body, no):
            seq.append(_scalar(item, no))
            seq.item_lines.append(no)
        return seq
    mapping = Map(no)
    for item in _flow_items(body, no):
        kv = _split_key(item.strip(), no)
        if kv is None:
            raise YamlError(no, f"{item.strip()!r} in a flow mapping is not 'key: value'")
        key, rest = kv
        if key in mapping:
            raise YamlError(no, f"duplicate key {key!r}")
        mapping[key] = _scalar(rest, no)
        mapping.key_lines[key] = no
    return mapping


class _Parser:
    def __init__(self, lines: list[_Line]) -> None:
        self.lines = lines
        self.i = 0

    def peek(self) -> _Line | None:
        return self.lines[self.i] if self.i < len(self.lines) else None

    def block(self, indent: int, depth: int) -> Any:
        line = self.peek()
        assert line is not None
        if depth > MAX_DEPTH:
            raise YamlError(line.no, "nested too deeply")
        if _is_seq_item(line.text):
            return self.seq(line.indent, depth)
        return self.map(line.indent, depth)

    def nested(self, parent: _Line, indent: int, depth: int, seq_ok: bool) -> Any:
        """The value of ``key:`` / ``-`` with nothing after it: the block below, if any."""
        nxt = self.peek()
        if nxt is not None and nxt.indent > indent:
            return self.block(nxt.indent, depth + 1)
        if seq_ok and nxt is not None and nxt.indent == indent and _is_seq_item(nxt.text):
            return self.seq(indent, depth + 1)  # "key:" then "- item" at the key's indent
        return None

    def seq(self, indent: int, depth: int) -> Seq:
        first = self.peek()
        assert first is not None
        out = Seq(first.no)
        while True:
            line = self.peek()
            if line is None or line.indent < indent:
                return out
            if line.indent > indent:
                raise YamlError(line.no, "unexpected indentation")
            if not _is_seq_item(line.text):
                if line.indent == indent:
                    return out  # the parent mapping's next key (a sequence at the key's indent)
                raise YamlError(line.no, "expected '- item'")
            rest = line.text[1:].lstrip(" ")
            out.item_lines.append(line.no)
            if not rest:
                self.i += 1
                out.append(self.nested(line, indent, depth, seq_ok=False))
                continue
            col = line.indent + len(line.text) - len(rest)
            if (
                _is_seq_item(rest)
                or (rest[0] not in "[{'\"" and _split_key(rest, line.no) is not None)
                or (rest[0] in "'\"" and _split_key(rest, line.no) is not None)
            ):
                self.lines[self.i] = _Line(line.no, col, rest)  # the item is a block starting on this line
                out.append(self.block(col, depth + 1))
                continue
            self.i += 1
            out.append(_scalar(rest, line.no))

    def map(self, indent: int, depth: int) -> Map:
        first = self.peek()
        assert first is not None
        out = Map(first.no)
        while True:
            line = self.peek()
            if line is None or line.indent < indent:
                return out
            if line.indent > indent:
                raise YamlError(line.no, "unexpected indentation")
            if _is_seq_item(line.text):
                raise YamlError(line.no, "a sequence item where a 'key: value' was expected")
            kv = _split_key(line.text, line.no)
            if kv is None:
                raise YamlError(line.no, f"expected 'key: value', found {line.text!r}")
            key, rest = kv
            if not isinstance(key, str):
                raise YamlError(line.no, "a key must be a string")
            if key in out:
                raise YamlError(line.no, f"duplicate key {key!r} (first on line {out.key_lines[key]})")
            out.key_lines[key] = line.no
            self.i += 1
            out[key] = self.nested(line, indent, depth, seq_ok=True) if not rest else _scalar(rest, line.no)


def loads(source: str) -> Any:
    """The document in ``source`` (None when empty).  Raises YamlError naming the line."""
    lines = _lines(source)
    if not lines:
        return None
    parser = _Parser(lines)
    first = lines[0]
    if first.indent:
        raise YamlError(first.no, "the document must start at column 1")
    if len(lines) == 1 and not _is_seq_item(first.text) and _split_key(first.text, first.no) is None:
        return _scalar(first.text, first.no)
    doc = parser.block(0, 0)
    rest = parser.peek()
    if rest is not None:
        raise YamlError(rest.no, "unexpected indentation" if rest.indent else f"unexpected {rest.text!r}")
    return doc
