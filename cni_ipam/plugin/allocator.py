"""Allocation policy: which address each range set hands out.  Knows nothing of the file format.

host-local's policy: one address per range set; a requested address is honoured when it lies in
the set (not its gateway); otherwise round robin from just after the set's last reserved address,
skipping gateways, network/broadcast and excluded addresses.  Unlike host-local, every range set is
allocated under one lock (the caller holds the store) and a failure part-way releases only what
this call reserved.
"""

from __future__ import annotations

from cni_ipam.addr import Interface
from cni_ipam.errors import (
    DUPLICATE_ALLOCATION,
    RANGE_EXHAUSTED,
    REQUESTED_IP_INVALID,
    REQUESTED_IP_TAKEN,
    CniError,
)

TYPE_CHECKING = False  # the name type checkers treat as true; no ``typing`` import at run time
if TYPE_CHECKING:
    from cni_ipam.store.protocol import AllocationStore

# Annotations: ``store`` is a ``store.protocol.AllocationStore`` (``store.network.NetworkStore``, or
# the fakes of the unit tests), ``rset`` a ``plugin.ranges.RangeSet``.


def allocate(
    store: AllocationStore,
    range_sets: list | tuple,
    requested: list | tuple,
    cid: str,
    ifname: str,
    reclaim=None,
) -> list[tuple[Interface, object]]:
    """Reserve one address per range set; returns [(interface, gateway)] in range-set order.

    ``reclaim`` (the exhaustion heal, ``() -> bool``) is called once, the first time a set has no free address;
    when it released something, that set is tried again.  On any error the store's rollback (run
    by its context manager) removes what was reserved here.
    """
    pending = list(dict.fromkeys(requested))
    held = None  # addresses (cid, ifname) already holds, looked up once when needed
    out = []
    for idx, rset in enumerate(range_sets):
        wanted = next((ip for ip in pending if rset.contains(ip)), None)
        if wanted is not None:
            pending.remove(wanted)
            rng = check_requested(rset, wanted, idx)
            if not store.reserve(wanted, cid, ifname):
                raise CniError(
                    REQUESTED_IP_TAKEN,
                    f"requested IP address {wanted} is not available in range set {rset}",
                    _holder_detail(store, wanted),
                )
            address = wanted
        else:
            if held is None:
                held = store.owned_by(cid, ifname)
            check_not_held(held, rset, idx, cid)
            address, rng = _first_free(store, rset, idx, cid, ifname)
            if address is None and reclaim is not None:
                healed, reclaim = reclaim(), None
                if healed:
                    address, rng = _first_free(store, rset, idx, cid, ifname)
            if address is None:
                raise CniError(RANGE_EXHAUSTED, f"no IP addresses available in range set: {rset}", f"range set {idx}")
        store.set_last_reserved(idx, address)
        out.append((Interface(address, rng.prefixlen), rng.gateway))
    if pending:
        raise unplaced(pending)
    return out


# The rules below are the allocator's; a cluster pool applies them too (to its whole range sets,
# before it claims a block), so each is written once.
def check_requested(rset, wanted, idx: int):
    """The range of ``rset`` holding the requested ``wanted``; code 102 for its gateway or an
    excluded or special address."""
    rng = rset.range_for(wanted)
    if wanted == rng.gateway:
        raise CniError(REQUESTED_IP_INVALID, f"requested ip {wanted} is subnet's gateway", f"range set {idx}")
    if not rng.can_hand_out(wanted):
        raise CniError(REQUESTED_IP_INVALID, f"requested ip {wanted} is excluded from range set {rset}",
                       f"range set {idx}")
    return rng


def check_not_held(held: list, rset, idx: int, cid: str) -> None:
    """Code 103 when the attachment already holds an address of ``rset`` (``held``: its addresses)."""
    for ip in held:
        if rset.contains(ip):
            raise CniError(
                DUPLICATE_ALLOCATION,
                f"{ip} has been allocated to {cid}, duplicate allocation is not allowed",
                f"range set {idx}",
            )


def unplaced(pending: list) -> CniError:
    """Code 102 for requested addresses no range set contains."""
    return CniError(
        REQUESTED_IP_INVALID,
        "failed to allocate all requested IPs: " + " ".join(str(ip) for ip in pending),
        "no range set contains them",
    )


def _first_free(store: AllocationStore, rset, idx: int, cid: str, ifname: str) -> tuple:
    for candidate, candidate_range in rset.candidates(store.last_reserved(idx)):
        if store.reserve(candidate, cid, ifname):
            return candidate, candidate_range
    return None, None


def _holder_detail(store: AllocationStore, addr) -> str:
    holder = store.holder(addr)
    if holder is None:
        return "reserved"
    return f"held by container {holder[0]}" + (f" interface {holder[1]}" if holder[1] else "")
