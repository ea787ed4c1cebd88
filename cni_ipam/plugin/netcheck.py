"""CHECK inside the container's network namespace: are the reserved addresses on the interface?

``plugin.cmd_check`` calls ``check_in_netns`` after the reservation checks.  When ``CNI_NETNS`` can
be entered, every address reserved for (container ID, ``CNI_IFNAME``) in this network must be
configured on ``CNI_IFNAME`` inside that namespace; otherwise CHECK fails with ``CHECK_FAILED``
naming the address, the interface and the namespace.

The namespace is read with pyroute2, imported here only (the ADD/DEL path never loads it).  The
check is skipped, not failed, when it cannot be made: pyroute2 is not installed, the namespace
path does not exist or is not a namespace, or we may not enter it (not root).  A path that is not a
regular file (a namespace file is a regular nsfs file) is never opened: a FIFO would block.  pyroute2 is told
never to create a namespace (its default ``flags`` would create a missing one).
"""

from __future__ import annotations

from cni_ipam.addr import Interface, ip_address
from cni_ipam.errors import CHECK_FAILED, IO_FAILURE, CniError


def interface_addresses(netns: str, ifname: str) -> list[Interface] | None:
    """The addresses (``cni_ipam.addr.Interface``) on ``ifname`` in ``netns``.  Raises LookupError when the
    interface is absent; returns None when the namespace cannot be entered or pyroute2 is missing."""
    try:
        from pyroute2 import IPRoute
    except ImportError:
        return None
    try:
        try:
            ipr = IPRoute(netns=netns, flags=0)  # flags=0: never create the namespace
        except TypeError:  # pyroute2 before 0.9: the namespace needs NetNS
            from pyroute2 import NetNS

            ipr = NetNS(netns, flags=0)
    except (OSError, ValueError):
        return None  # missing path, not a netns, or no permission to enter it
    try:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            raise LookupError(ifname)
        found = []
        for msg in ipr.get_addr(index=idx[0]):
            text = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")  # LOCAL: ours on a point-to-point link
            if text:
                found.append(Interface(ip_address(text), msg["prefixlen"]))
        return found
    except LookupError:
        raise
    except Exception as exc:  # a netlink failure after entering: say so, never a traceback
        raise CniError(
            IO_FAILURE, f"cannot read interface {ifname} in netns {netns}: {exc}", f"netns {netns}"
        ) from None
    finally:
        ipr.close()


def check_in_netns(netns: str, ifname: str, network: str, reserved: list) -> None:
    """Raise CHECK_FAILED when a reserved address is not on ``ifname`` in ``netns``."""
    import os
    from stat import S_ISREG

    try:
        st = os.stat(netns) if netns else None
    except OSError:
        st = None
    if st is None or not S_ISREG(st.st_mode):
        return  # nothing to enter (a namespace file is a regular nsfs file; never open a FIFO): skip
    reserved = list(reserved)
    try:
        found = interface_addresses(netns, ifname)
    except LookupError:
        raise CniError(
            CHECK_FAILED,
            f"interface {ifname} not found in netns {netns}: address {', '.join(map(str, reserved))} "
            f"of network {network} is not configured",
            f"netns {netns}",
        ) from None
    if found is None:
        return
    present = {iface.ip for iface in found}
    missing = [ip for ip in reserved if ip not in present]
    if missing:
        have = ", ".join(str(i) for i in found) or "none"
        raise CniError(
            CHECK_FAILED,
            f"address {', '.join(map(str, missing))} of network {network} is missing on interface "
            f"{ifname} in netns {netns}",
            f"{ifname} has {have}",
        )
