"""``cni-ipam lint --inventory FILE [--cluster NAME]``: a node's conf files against the inventory.

Each range ``lint`` checked (rangeStart..rangeEnd of every range of a cni-ipam or host-local
network) must lie inside the claimed space of its cluster (the union of the cluster's pod, pool,
service and node ranges in the inventory) and must not touch a range of another cluster, nor an
external network other than the cluster's ``nodeNetworks``.  The cluster is ``--cluster``, else
the one whose claimed space holds the range (else the one it overlaps).  Each finding is an error.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any, Sequence

from cni_ipam.admin.inventory import Claim, Inventory
from cni_ipam.plugin.ranges import merge


class _Space:
    """A cluster's claimed space in one family as merged intervals."""

    def __init__(self, claims: Sequence[Claim]) -> None:
        self.intervals = merge([(c.lo, c.hi) for c in claims])
        self.starts = [a for a, _ in self.intervals]

    def holds(self, lo: int, hi: int) -> bool:
        i = bisect_right(self.starts, lo) - 1
        return i >= 0 and self.intervals[i][1] >= hi

    def touches(self, lo: int, hi: int) -> bool:
        i = bisect_right(self.starts, hi) - 1  # the last interval starting by hi: only it can reach lo
        return i >= 0 and self.intervals[i][1] >= lo


def check(inv: Inventory, records: Sequence[Any], cluster: str | None) -> list[tuple[str, str, str, str]]:
    """(file, key, message, check) of every error of ``records`` (lint's RangeRecords)."""
    mine: dict[tuple[str, int], list[Claim]] = {(c.name, v): [] for c in inv.clusters for v in (4, 6)}
    for x in inv.claims:
        if not x.external:
            mine[(x.holder, x.version)].append(x)
    spaces = {key: _Space(claims) for key, claims in mine.items()}
    node_networks = {c.name: {n for n, _ in c.node_networks} for c in inv.clusters}
    out = []
    where = f"in {inv.path}"
    for rec in records:
        rng = rec.range
        v, lo, hi = rng.version, rng.start, rng.end
        own = cluster
        if own is None:
            own = next((c.name for c in inv.clusters if spaces[(c.name, v)].holds(lo, hi)), None)
        if own is None:
            own = next((c.name for c in inv.clusters if spaces[(c.name, v)].touches(lo, hi)), None)
        if own is None:
            out.append(
                (
                    rec.file,
                    rec.key,
                    f"range {rec.text()} lies in no cluster's claimed space {where}",
                    "inventory-outside",
                )
            )
        elif not spaces[(own, v)].holds(lo, hi):
            listed = ", ".join(x.cidr for x in mine[(own, v)]) or "nothing"
            out.append(
                (
                    rec.file,
                    rec.key,
                    f"range {rec.text()} is outside cluster {own}'s claimed space (IPv{v}: {listed})",
                    "inventory-outside",
                )
            )
        for x in inv.claims:
            if x.version != v or x.hi < lo or hi < x.lo:
                continue
            if not x.external and x.holder != own:
                out.append(
                    (
                        rec.file,
                        rec.key,
                        f"range {rec.text()} overlaps cluster {x.holder} {x.role} {x.cidr} ({inv.path}:{x.line})",
                        "inventory-overlap",
                    )
                )
            elif x.external and (own is None or x.holder not in node_networks.get(own, ())):
                out.append(
                    (
                        rec.file,
                        rec.key,
                        f"range {rec.text()} overlaps {x.label()} ({inv.path}:{x.line})",
                        "inventory-overlap",
                    )
                )
    return out
