"""Pod CIDR lists as they come from a config, a file, the cache or a node object: parsed and
refused unless each is one sane network per family.  Shared by ``sources`` and ``kubeapi``."""

from __future__ import annotations

import ipaddress
import re

from cni_ipam.errors import INVALID_CONFIG, CniError

MIN_PREFIX = {4: 8, 6: 32}  # a node's pod CIDR is a slice of the cluster CIDR, never wider than this


def parse_cidr_list(
    origin: str,
    value: object,
    strict: bool = True,
    code: int = INVALID_CONFIG,
    quote: bool = True,
    details: str | None = None,
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Pod CIDRs as a list or a string separated by commas/whitespace: at most one per family, each
    sane (:func:`refusal`).  ``quote=False`` for a file's content: errors then say which entry, never
    what it holds (the file may be root-only)."""
    details = details or origin
    if isinstance(value, str):
        items = [p for p in re.split(r"[\s,]+", value) if p]
    elif isinstance(value, list):
        items = value
    else:
        raise CniError(code, f"invalid {origin}{' ' + repr(value) if quote else ''}: must be a list of CIDRs", details)
    out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for i, item in enumerate(items):
        shown = repr(item) if quote else f"entry {i + 1}"
        if not isinstance(item, str) or "/" not in item or "%" in item:
            raise CniError(code, f"invalid {origin}: {shown} is not a CIDR", details)
        try:
            net = ipaddress.ip_network(item.strip(), strict=strict)
        except ValueError as exc:
            why = f" ({exc})" if quote else " (or has host bits set)"  # exc quotes the value
            raise CniError(code, f"invalid {origin}: {shown} is not a CIDR{why}", details) from None
        refused = refusal(net)
        if refused:
            raise CniError(code, f"invalid {origin}: {shown} is refused: {refused}", details)
        if any(n.version == net.version for n in out):
            raise CniError(code, f"invalid {origin}: more than one IPv{net.version} CIDR ({shown})", details)
        out.append(net)
    if not out:
        raise CniError(code, f"invalid {origin}: no CIDR given", details)
    return out


def refusal(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str | None:
    """Why ``net`` cannot be a node's pod CIDR, or None when it can."""
    if net.version == 6 and net.network_address.ipv4_mapped is not None:
        return "an IPv4-mapped IPv6 network"
    if net.prefixlen < MIN_PREFIX[net.version]:
        return f"wider than /{MIN_PREFIX[net.version]}, not a node's slice of a cluster CIDR"
    if net.is_loopback or net.is_multicast or net.is_link_local:
        return "a loopback, link-local or multicast network"
    return None
