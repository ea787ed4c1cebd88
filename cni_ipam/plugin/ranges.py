"""Address ranges and range sets: defaults, containment, overlap and allocation order.

A ``Range`` is one ``{subnet, rangeStart, rangeEnd, gateway, exclude}`` entry; a ``RangeSet`` is the
list of ranges that together yield one address (one per range set, so two sets give dual stack).
Pure logic: nothing here touches the disk.  Inside, everything is an integer (``version``, ``net``,
``last``, ``prefixlen``, ``start``, ``end``); addresses handed out are ``cni_ipam.addr.IP``.  The
``subnet`` attribute is an ``ipaddress`` network for the admin tools and the cluster pool, built
(and ipaddress imported) on first use: the plugin path never asks for it.
"""

from __future__ import annotations

from cni_ipam.addr import IP, host_bits, text_of


def _bisect_right(a: list, x: int) -> int:
    """``bisect.bisect_right``: the C function bisect.py re-exports, imported on first use (most
    ranges exclude nothing, and on some builds ``_bisect`` is a shared library of its own); this
    name is then rebound to it."""
    global _bisect_right
    try:
        from _bisect import bisect_right
    except ImportError:  # pragma: no cover - an interpreter without the accelerator
        from bisect import bisect_right
    _bisect_right = bisect_right
    return bisect_right(a, x)


# An address argument (``addr: IP``) may as well be an ipaddress address: only ``.version`` and
# ``int()`` are used.


class Range:
    """One contiguous pool inside a subnet; ``start``/``end`` are inclusive integers, ``net`` and
    ``last`` the subnet's first and last integers."""

    __slots__ = (
        "version",
        "net",
        "last",
        "prefixlen",
        "start",
        "end",
        "gateway",
        "_gw",
        "exclude",
        "_ex_starts",
        "_ex_ends",
        "_subnet",
    )

    def __init__(
        self,
        subnet,
        start: int,
        end: int,
        gateway: IP | None,
        exclude: list[tuple[int, int]] | tuple = (),
    ) -> None:
        """``subnet``: an ipaddress network or ``(version, network integer, prefix length)``."""
        if type(subnet) is tuple:
            self.version, self.net, self.prefixlen = subnet
            self._subnet = None
        else:
            self.version, self.net, self.prefixlen = subnet.version, int(subnet.network_address), subnet.prefixlen
            self._subnet = subnet
        self.last = self.net | host_bits(self.version, self.prefixlen)
        self.start = start
        self.end = end
        self.gateway = gateway
        self._gw = int(gateway) if gateway is not None else -1
        merged = merge(exclude)
        self.exclude = tuple(merged)
        self._ex_starts = [a for a, _ in merged]
        self._ex_ends = [b for _, b in merged]

    @property
    def subnet(self):
        """The subnet as an ``ipaddress`` network (admin tools, cluster pool): imports ipaddress."""
        if self._subnet is None:
            import ipaddress

            cls = ipaddress.IPv4Network if self.version == 4 else ipaddress.IPv6Network
            self._subnet = cls((self.net, self.prefixlen))
        return self._subnet

    @property
    def cidr(self) -> str:
        """``str(self.subnet)`` without building it."""
        return f"{text_of(self.net, self.version)}/{self.prefixlen}"

    @property
    def range_start(self) -> IP:
        return IP(self.start, self.version)

    @property
    def range_end(self) -> IP:
        return IP(self.end, self.version)

    @classmethod
    def of_subnet(cls, subnet) -> Range:
        """The range of a subnet given with no rangeStart, rangeEnd or gateway."""
        start, end, gateway = default_bounds(subnet)
        return cls(subnet, start, end, gateway)

    def excluding(self, intervals: list[tuple[int, int]]) -> Range:
        """This range with ``intervals`` (first, last) excluded as well."""
        subnet = self._subnet if self._subnet is not None else (self.version, self.net, self.prefixlen)
        return Range(subnet, self.start, self.end, self.gateway, list(self.exclude) + list(intervals))

    def is_default(self) -> bool:
        """Does this range span what its subnet gives by default (no rangeStart/rangeEnd)?"""
        return self.start == self.net + 1 and self.end == self.last - 1

    def contains(self, addr: IP) -> bool:
        """True when ``addr`` lies between rangeStart and rangeEnd (host-local's Range.Contains)."""
        return addr.version == self.version and self.start <= int(addr) <= self.end

    def can_hand_out(self, addr: IP) -> bool:
        """Could an ADD be given ``addr`` from this range: inside rangeStart..rangeEnd, not excluded,
        not the network, broadcast (IPv4) or gateway address.  The one rule the allocator, STATUS,
        the pool, ``show`` and ``lint`` all use."""
        if not self.contains(addr):
            return False
        value = int(addr)
        return self.excluded_until(value) < 0 and not self.unusable(value)

    def excluded_until(self, value: int) -> int:
        """The last excluded integer of the exclude interval holding ``value``, or -1."""
        if not self._ex_starts:
            return -1
        i = _bisect_right(self._ex_starts, value) - 1
        if i >= 0 and value <= self._ex_ends[i]:
            return self._ex_ends[i]
        return -1

    def is_excluded(self, addr: IP) -> bool:
        return self.excluded_until(int(addr)) >= 0

    def unusable(self, value: int) -> bool:
        """Network and (IPv4) broadcast addresses and the gateway are never handed out."""
        return value == self.net or value == self._gw or (value == self.last and self.version == 4)

    def size(self) -> int:
        """How many addresses this range can hand out (gateway, exclusions, network excluded)."""
        total = self.end - self.start + 1
        for lo, hi in self.exclude:
            lo, hi = max(lo, self.start), min(hi, self.end)
            if lo <= hi:
                total -= hi - lo + 1
        for special in self.specials():
            if self.start <= special <= self.end and self.excluded_until(special) < 0:
                total -= 1
        return max(total, 0)

    def specials(self) -> set[int]:
        """The addresses of the subnet never handed out (as integers): the network address, IPv4's
        broadcast, the gateway. The one statement of that rule (``plan`` and ``pool show`` use it)."""
        specials = {self.net}
        if self.version == 4:
            specials.add(self.last)
        if self.gateway is not None:
            specials.add(self._gw)
        return specials

    def overlaps(self, other: Range) -> bool:
        return self.version == other.version and self.start <= other.end and other.start <= self.end

    def to_json(self) -> dict:
        out = {
            "subnet": self.cidr,
            "rangeStart": str(self.range_start),
            "rangeEnd": str(self.range_end),
        }
        if self.gateway is not None:
            out["gateway"] = str(self.gateway)
        return out

    def __repr__(self) -> str:
        return f"Range({self.cidr}, {self.range_start}-{self.range_end}, gw={self.gateway})"


class RangeSet:
    """An ordered list of same-family, non-overlapping ranges that yields one address."""

    __slots__ = ("ranges",)

    def __init__(self, ranges: list[Range] | tuple) -> None:
        self.ranges = tuple(ranges)

    @property
    def version(self) -> int:
        return self.ranges[0].version

    def range_for(self, addr: IP) -> Range | None:
        for r in self.ranges:
            if r.contains(addr):
                return r
        return None

    def contains(self, addr: IP) -> bool:
        return self.range_for(addr) is not None

    def can_hand_out(self, addr: IP) -> bool:
        """``Range.can_hand_out`` for the range of this set that holds ``addr``."""
        rng = self.range_for(addr)
        return rng is not None and rng.can_hand_out(addr)

    def in_subnets(self, addr: IP) -> Range | None:
        """The range whose subnet holds ``addr`` (used to attach a mask to a reserved address)."""
        value = int(addr)
        for r in self.ranges:
            if addr.version == r.version and r.net <= value <= r.last:
                return r
        return None

    def overlaps(self, other: RangeSet) -> bool:
        return any(a.overlaps(b) for a in self.ranges for b in other.ranges)

    def size(self) -> int:
        return sum(r.size() for r in self.ranges)

    def candidates(self, last_reserved: IP | None):
        """Every allocatable address once, as ``(IP, Range)``, in host-local's round-robin order.

        Ranges are walked in set order from rangeStart to rangeEnd.  When ``last_reserved`` lies in
        one of them the walk begins just after it (wrapping to the next range, then around the set)
        and ends with ``last_reserved`` itself; otherwise it begins at the first range's start.
        Gateways, network/broadcast addresses and excluded addresses are skipped.
        """
        ranges = self.ranges
        first_idx, first_val = 0, ranges[0].start
        if last_reserved is not None:
            for i, r in enumerate(ranges):
                if r.contains(last_reserved):
                    value = int(last_reserved)
                    if value < r.end:
                        first_idx, first_val = i, value + 1
                    else:
                        first_idx = (i + 1) % len(ranges)
                        first_val = ranges[first_idx].start
                    break
        version = self.version
        # The walk: the tail of the first range, the other ranges whole, then the head of the first.
        order = [(first_idx, first_val, ranges[first_idx].end)]
        for k in range(1, len(ranges)):
            j = (first_idx + k) % len(ranges)
            order.append((j, ranges[j].start, ranges[j].end))
        if first_val > ranges[first_idx].start:
            order.append((first_idx, ranges[first_idx].start, first_val - 1))
        for idx, lo, hi in order:
            r = ranges[idx]
            value = lo
            while value <= hi:
                skip_to = r.excluded_until(value)
                if skip_to >= 0:
                    value = skip_to + 1
                    continue
                if not r.unusable(value):
                    yield IP(value, version), r
                value += 1

    def to_json(self) -> list:
        return [r.to_json() for r in self.ranges]

    def __str__(self) -> str:
        return ",".join(f"{r.range_start}-{r.range_end}" for r in self.ranges)


def default_bounds(subnet) -> tuple[int, int, IP]:
    """(rangeStart, rangeEnd, gateway) of a subnet whose range keys are absent: the first address
    after the network address, the last one before the broadcast (IPv6 too: host-local hands out an
    IPv6 subnet's last address, we stop one short) and the first address as gateway.  ``subnet``:
    an ipaddress network or ``(version, network integer, prefix length)``."""
    if type(subnet) is tuple:
        version, first, prefixlen = subnet
    else:
        version, first, prefixlen = subnet.version, int(subnet.network_address), subnet.prefixlen
    return first + 1, (first | host_bits(version, prefixlen)) - 1, IP(first + 1, version)


def first_overlap(intervals: list[tuple[int, int, int]]) -> tuple[int, int] | None:
    """Two owners of overlapping intervals, or None: ``intervals`` are ``(first, last, owner)``.

    A sorted sweep (O(n log n)), so thousands of ranges cost milliseconds rather than the minutes
    of a pairwise check.  Intervals of one owner must already be disjoint (each range set is checked
    alone first); the answer is ``(lower owner, higher owner)``.
    """
    best_end, best_owner = -1, -1
    for lo, hi, owner in sorted(intervals):
        if lo <= best_end and owner != best_owner:
            return (min(owner, best_owner), max(owner, best_owner))
        if hi > best_end:
            best_end, best_owner = hi, owner
    return None


def clip(merged: list[tuple[int, int]], starts: list[int], lo: int, hi: int) -> list[tuple[int, int]]:
    """The intervals of ``merged`` (sorted, disjoint; ``starts`` their first values) that touch
    ``[lo, hi]``: what of a global exclude list applies to one range (O(log n + answer))."""
    i = max(_bisect_right(starts, lo) - 1, 0)
    out = []
    while i < len(merged) and merged[i][0] <= hi:
        if merged[i][1] >= lo:
            out.append(merged[i])
        i += 1
    return out


def merge(intervals: list[tuple[int, int]] | tuple) -> list[tuple[int, int]]:
    """Sorted, disjoint, non-adjacent intervals covering the same integers as ``intervals``."""
    out: list[list[int]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(a, b) for a, b in out]
