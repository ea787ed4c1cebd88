"""IP addresses as (version, integer): parsed and printed exactly as the stdlib ``ipaddress`` does,
without importing it.

``import ipaddress`` pulls in functools, collections, operator, keyword, reprlib, itertools and
types: about 6.5 ms of CPU, a third of a cold plugin call.  The plugin and the store need little of
it: text to (version, int) with ipaddress's acceptance rules, the canonical text back (RFC 5952 for
IPv6, as ``str(ipaddress.ip_address(...))``), prefix lengths and masks.  That is this module;
``tests/unit/test_addr.py`` holds it to ipaddress (Hypothesis, differential) and the edge cases.

* ``ip_address(text)``: as ``ipaddress.ip_address`` for a str (or int): IPv4 dotted quads without
  leading zeros, every IPv6 form (``::``, an embedded ``a.b.c.d`` tail, a ``%zone``), and the same
  ``ValueError`` message.  Returns an ``IP``.
* ``parse_cidr(text)``: what ``ipaddress.ip_network(text, strict=False)`` and
  ``ipaddress.ip_interface(text)`` accept (``/len``, no prefix, an IPv4 netmask or hostmask), as
  ``(version, address int as written, prefix length)``; the same ``ValueError`` message as
  ``ip_network``.  The address keeps its host bits; ``host_bits(version, prefixlen)`` masks them.
* ``IP``: a stand-in for ``IPv4Address``/``IPv6Address``: ``version``, ``int()``, ``str()``,
  ``repr()``, ``+``/``-`` an int, equality, hashing and ordering that agree with ipaddress's own
  objects in both directions (same ``_ip``/``_version``/``_scope_id`` slots, the same hash), so a
  set or a comparison may mix the two.  Anything rarer (``packed``, ``is_private``, ``exploded``...)
  is answered by the real ipaddress object, built (and ipaddress imported) on first such use.
* ``Interface``: an address with a prefix length (``10.0.0.2/24``), as an IPAM result carries it.
"""

from __future__ import annotations

_HEX = frozenset("0123456789abcdefABCDEF")
_ALL4 = (1 << 32) - 1
_ALL6 = (1 << 128) - 1


def _v4(text: str) -> int | None:
    """A dotted quad as ipaddress reads it (no leading zeros, ASCII digits only), else None."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for octet in parts:
        if (
            not octet
            or len(octet) > 3
            or not (octet.isascii() and octet.isdigit())
            or (octet[0] == "0" and octet != "0")
        ):
            return None
        number = int(octet)
        if number > 255:
            return None
        value = value << 8 | number
    return value


def _hextets(parts: list, first: int, stop: int, value: int) -> int | None:
    for i in range(first, stop):
        hextet = parts[i]
        if not hextet or len(hextet) > 4 or not _HEX.issuperset(hextet):
            return None
        value = value << 16 | int(hextet, 16)
    return value


def _v6(text: str) -> int | None:
    """IPv6 text without a zone, as ipaddress reads it, else None."""
    parts = text.split(":")
    if len(parts) < 3:
        return None
    if "." in parts[-1]:
        tail = _v4(parts.pop())
        if tail is None:
            return None
        parts.append("%x" % (tail >> 16))
        parts.append("%x" % (tail & 0xFFFF))
    if len(parts) > 9:
        return None
    skip = None
    for i in range(1, len(parts) - 1):
        if not parts[i]:
            if skip is not None:  # at most one "::"
                return None
            skip = i
    if skip is None:
        if len(parts) != 8:
            return None
        return _hextets(parts, 0, 8, 0)
    head, tail = skip, len(parts) - skip - 1
    if not parts[0]:
        head -= 1
        if head:  # a leading ":" only as part of "::"
            return None
    if not parts[-1]:
        tail -= 1
        if tail:
            return None
    skipped = 8 - head - tail
    if skipped < 1:
        return None
    value = _hextets(parts, 0, head, 0)
    if value is None:
        return None
    return _hextets(parts, len(parts) - tail, len(parts), value << 16 * skipped)


def _split_zone(text: str) -> tuple[str, str | None] | None:
    """(address, zone or None) as ipaddress splits ``fe80::1%eth0``; None for an empty or double zone."""
    addr, sep, zone = text.partition("%")
    if not sep:
        return addr, None
    if not zone or "%" in zone:
        return None
    return addr, zone


def ip_address(text):
    """``ipaddress.ip_address(text)`` for a str or an int, as an ``IP``; ValueError when it is none."""
    if isinstance(text, int):
        if 0 <= text <= _ALL4:
            return IP(text, 4)
        if 0 <= text <= _ALL6:
            return IP(text, 6)
    elif isinstance(text, str) and "/" not in text:
        value = _v4(text)
        if value is not None:
            return IP(value, 4)
        split = _split_zone(text)
        if split is not None:
            value = _v6(split[0]) if split[0] else None
            if value is not None:
                return IP(value, 6, split[1])
    raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 address")


def _prefix(text: str, bits: int) -> int | None:
    """A prefix length written as decimal digits (leading zeros allowed, as ipaddress), else None."""
    if not (text.isascii() and text.isdigit()):
        return None
    try:
        number = int(text)
    except ValueError:  # more digits than int() converts
        return None
    return number if number <= bits else None


def _mask_prefix(mask: int, bits: int) -> int | None:
    """The prefix length of a netmask integer (ones then zeros), else None."""
    zeros = bits if mask == 0 else min(bits, (~mask & (mask - 1)).bit_length())
    prefixlen = bits - zeros
    return prefixlen if mask >> zeros == (1 << prefixlen) - 1 else None


def parse_cidr(text: str) -> tuple[int, int, int]:
    """``(version, address, prefixlen)`` of what ``ipaddress.ip_network(text, strict=False)`` accepts
    (the same as ``ip_interface``); the address as written, host bits included.  ValueError otherwise."""
    parts = text.split("/") if isinstance(text, str) else ()
    if 1 <= len(parts) <= 2:
        addr = parts[0]
        mask = parts[1] if len(parts) == 2 else None
        value = _v4(addr)
        if value is not None:
            if mask is None:
                return 4, value, 32
            prefixlen = _prefix(mask, 32)
            if prefixlen is None:  # a netmask (255.255.255.0) or a hostmask (0.0.0.255)
                dotted = _v4(mask)
                if dotted is not None:
                    prefixlen = _mask_prefix(dotted, 32)
                    if prefixlen is None:
                        prefixlen = _mask_prefix(dotted ^ _ALL4, 32)
            if prefixlen is not None:
                return 4, value, prefixlen
        split = _split_zone(addr)
        if split is not None and split[0]:
            value = _v6(split[0])
            if value is not None:
                prefixlen = 128 if mask is None else _prefix(mask, 128)
                if prefixlen is not None:
                    return 6, value, prefixlen
    raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 network")


def host_bits(version: int, prefixlen: int) -> int:
    """The host part's mask of a /prefixlen: ``net = addr & ~mask``, ``last = net | mask``."""
    return (1 << ((32 if version == 4 else 128) - prefixlen)) - 1


def _text6(value: int) -> str:
    """RFC 5952 text of an IPv6 integer, as ipaddress writes it: lowercase, no leading zeros, the
    first longest run of two or more zero hextets as "::"."""
    hextets = ["%x" % (value >> shift & 0xFFFF) for shift in (112, 96, 80, 64, 48, 32, 16, 0)]
    best_start, best_len, start, run = -1, 0, -1, 0
    for i, hextet in enumerate(hextets):
        if hextet == "0":
            run += 1
            if start == -1:
                start = i
            if run > best_len:
                best_start, best_len = start, run
        else:
            start, run = -1, 0
    if best_len > 1:
        end = best_start + best_len
        if end == 8:
            hextets.append("")
        hextets[best_start:end] = [""]
        if best_start == 0:
            hextets.insert(0, "")
    return ":".join(hextets)


def text_of(value: int, version: int) -> str:
    """The canonical text of an address integer (no zone)."""
    if version == 4:
        return "%d.%d.%d.%d" % (value >> 24, value >> 16 & 255, value >> 8 & 255, value & 255)
    return _text6(value)


def _real_module():
    import ipaddress  # only for what this module does not answer itself

    return ipaddress


class IP:
    """One address: ``version`` 4 or 6, ``int(ip)``, ``str(ip)`` canonical; see the module docstring."""

    __slots__ = ("_ip", "_version", "_scope_id")

    def __init__(self, value: int, version: int, scope_id: str | None = None) -> None:
        self._ip = value
        self._version = version
        self._scope_id = scope_id

    @property
    def version(self) -> int:
        return self._version

    @property
    def max_prefixlen(self) -> int:
        return 32 if self._version == 4 else 128

    def __int__(self) -> int:
        return self._ip

    def __str__(self) -> str:
        text = text_of(self._ip, self._version)
        return text + "%" + self._scope_id if self._scope_id else text

    def __repr__(self) -> str:
        return "IPv%dAddress(%r)" % (self._version, str(self))

    def __format__(self, spec: str) -> str:
        if not spec or spec[-1] == "s":
            return format(str(self), spec)
        return format(self.std(), spec)

    # Equality, hashing and order as ipaddress's: an IPv4Address and an IP of the same value are
    # equal and hash alike (IPv4: hash of hex(int); IPv6: hash of (int, zone)).
    def __eq__(self, other):
        try:
            return (
                self._ip == other._ip
                and self._version == other._version
                and self._scope_id == getattr(other, "_scope_id", None)
            )
        except AttributeError:
            return NotImplemented

    def __hash__(self) -> int:
        if self._version == 4:
            return hash(hex(self._ip))
        return hash((self._ip, self._scope_id))

    def _order(self, other) -> int | None:
        """-1, 0 or 1 against another address (ours or ipaddress's); None when ``other`` is none."""
        try:
            value, version = other._ip, other._version
        except AttributeError:
            return None
        if version != self._version:
            raise TypeError(f"{self} and {other} are not of the same version")
        return (self._ip > value) - (self._ip < value)

    def __lt__(self, other):
        order = self._order(other)
        return NotImplemented if order is None else order < 0

    def __le__(self, other):
        order = self._order(other)
        return NotImplemented if order is None else order <= 0

    def __gt__(self, other):
        order = self._order(other)
        return NotImplemented if order is None else order > 0

    def __ge__(self, other):
        order = self._order(other)
        return NotImplemented if order is None else order >= 0

    def __add__(self, other):
        if not isinstance(other, int):
            return NotImplemented
        return _checked(self._ip + other, self._version)

    def __sub__(self, other):
        if not isinstance(other, int):
            return NotImplemented
        return _checked(self._ip - other, self._version)

    def __reduce__(self):
        return ip_address, (str(self),)

    def std(self):
        """The equivalent ``ipaddress.IPv4Address``/``IPv6Address`` (imports ipaddress)."""
        real = _real_module()
        return real.IPv4Address(self._ip) if self._version == 4 else real.IPv6Address(str(self))

    def __getattr__(self, name: str):
        # Only for attributes not defined above (packed, is_private, exploded, scope_id, ...).
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.std(), name)


def _checked(value: int, version: int) -> IP:
    if not 0 <= value <= (_ALL4 if version == 4 else _ALL6):
        raise ValueError(f"{value} is not permitted as an IPv{version} address")
    return IP(value, version)


class Interface:
    """An address with its prefix length (``10.0.0.2/24``), a stand-in for ``ipaddress.ip_interface``."""

    __slots__ = ("ip", "_prefixlen")

    def __init__(self, ip: IP, prefixlen: int) -> None:
        self.ip = ip
        self._prefixlen = prefixlen

    @property
    def version(self) -> int:
        return self.ip.version

    @property
    def with_prefixlen(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return f"{self.ip}/{self._prefixlen}"

    def __repr__(self) -> str:
        return "IPv%dInterface(%r)" % (self.ip.version, str(self))

    def __eq__(self, other):
        try:
            return self.ip == other.ip and self._prefixlen == other._prefixlen
        except AttributeError:
            return NotImplemented

    def __hash__(self) -> int:
        value = int(self.ip)
        return hash((value, self._prefixlen, value & ~host_bits(self.ip.version, self._prefixlen)))

    def std(self):
        """The equivalent ``ipaddress`` interface (imports ipaddress)."""
        return _real_module().ip_interface(str(self))

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.std(), name)
