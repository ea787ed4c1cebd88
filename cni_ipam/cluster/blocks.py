"""Block math of a cluster pool: which aligned CIDRs of one prefix length cut a range set, what each
can hand out, and how many reservations this node has inside one.

Exact integer arithmetic throughout: a /64 cut into /128 blocks has 2^64 of them, so nothing here
counts with ``len()`` of a ``range`` (limited to 2^63 - 1) or lists the blocks; candidates are
yielded lazily from a start position.
"""

from __future__ import annotations

import ipaddress
import os

_BITS = {4: 32, 6: 128}


def _make(version: int):
    return ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address


def block_cidr(version: int, lo: int, prefixlen: int) -> str:
    return f"{_make(version)(lo)}/{prefixlen}"


def block_bounds(cidr: str) -> tuple[int, int, int]:
    """(version, first, last) of a block CIDR."""
    net = ipaddress.ip_network(cidr)
    return net.version, int(net.network_address), int(net.broadcast_address)


def block_prefixlen(cidr: str) -> int:
    return int(cidr.rsplit("/", 1)[1])


def cidr_order(cidr: str) -> tuple[int, int]:
    version, lo, _ = block_bounds(cidr)
    return version, lo


def block_of(addr, prefixlen: int) -> str:
    """The aligned block of ``prefixlen`` holding ``addr`` (anything with ``version`` and ``int()``)."""
    step = 1 << (_BITS[addr.version] - prefixlen)
    return block_cidr(addr.version, int(addr) - int(addr) % step, prefixlen)


def run_count(run: range) -> int:
    """The length of a ``range`` of any size (``len()`` stops at 2^63 - 1)."""
    return max(0, (run.stop - run.start + run.step - 1) // run.step)


def block_start_runs(rset, prefixlen: int) -> list[range]:
    """First addresses (ints) of the blocks that meet the set's ranges, as ascending, disjoint
    ``range`` objects: a pool of /32 blocks over a /16 is one ``range``, not 65,536 ints."""
    step = 1 << (_BITS[rset.version] - prefixlen)
    runs = []
    last = -1
    for r in sorted(rset.ranges, key=lambda r: r.start):
        lo = r.start - r.start % step
        if lo <= last:  # this range's first block is the previous range's last one
            lo = last + step
        hi = r.end - r.end % step
        if lo <= hi:
            runs.append(range(lo, hi + 1, step))
            last = hi
    return runs


def set_block_starts(rset, prefixlen: int) -> list[int]:
    """First address (int) of every block that meets one of the set's ranges, ascending.  Lists
    them all: for small pools only (tests, planning); the plugin uses ``free_blocks``."""
    return [lo for run in block_start_runs(rset, prefixlen) for lo in run]


def free_blocks(rset, prefixlen: int, taken, start: int = 0):
    """Yields the CIDRs of the set's blocks not in ``taken`` (a set of CIDRs) that can hand out an
    address, lazily, beginning at the ``start``-th block (modulo the count) and wrapping round."""
    runs = block_start_runs(rset, prefixlen)
    counts = [run_count(run) for run in runs]
    total = sum(counts)
    if not total:
        return
    start %= total
    k = 0
    while k < total:
        i = (start + k) % total
        for run, count in zip(runs, counts):
            if i < count:
                lo = run[i]  # indexing a range works for any int; only len() is bounded
                break
            i -= count
        cidr = block_cidr(rset.version, lo, prefixlen)
        if cidr not in taken and block_capacity(rset, cidr):
            yield cidr
        k += 1


def block_pieces(rset, cidr: str) -> list:
    """The pool's ranges clipped to one block: ``Range`` objects keeping their subnet, gateway and
    exclusions, so the gateway and excluded addresses are never handed out from any block."""
    from cni_ipam.plugin.ranges import Range

    version, lo, hi = block_bounds(cidr)
    out = []
    for r in rset.ranges:
        if version == r.version and r.start <= hi and lo <= r.end:
            out.append(Range(r.subnet, max(lo, r.start), min(hi, r.end), r.gateway, r.exclude))
    return out


def block_capacity(rset, cidr: str) -> int:
    return sum(p.size() for p in block_pieces(rset, cidr))


def held_range_set(rset, cidrs: list[str]):
    """A ``RangeSet`` made of the given blocks' pieces (what the allocator may hand out), or None."""
    from cni_ipam.plugin.ranges import RangeSet

    pieces = [p for cidr in cidrs for p in block_pieces(rset, cidr)]
    return RangeSet(pieces) if pieces else None


def stable_hash(text: str) -> int:
    """FNV-1a of a node name: where its block search starts (fewer collisions between nodes)."""
    h = 2166136261
    for ch in text.encode():
        h = ((h ^ ch) * 16777619) & 0xFFFFFFFF
    return h


def used_in_block(net_dir_fd: int, cidr: str) -> int:
    """Reservation files inside a block (any owner, host-local's included).  Stats each address of
    small blocks; lists the directory for blocks larger than 1,024 addresses."""
    version, lo, hi = block_bounds(cidr)
    make = _make(version)
    if hi - lo < 1024:
        count = 0
        for value in range(lo, hi + 1):
            try:
                os.stat(str(make(value)), dir_fd=net_dir_fd, follow_symlinks=False)
                count += 1
            except OSError:
                pass
        return count
    from cni_ipam.store.layout import parse_ip_name

    count = 0
    for name in os.listdir(net_dir_fd):
        addr = parse_ip_name(name)
        if addr is not None and addr.version == version and lo <= int(addr) <= hi:
            count += 1
    return count
