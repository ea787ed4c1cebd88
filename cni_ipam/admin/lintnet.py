"""The networks the host already has, for ``cni-ipam lint``: its interface addresses and the routes
of its main table, in the host's namespace or a named one, read with pyroute2 (imported only here),
and the findings of the linted ranges that collide with them.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from cni_ipam.admin.lintchecks import ERROR, INFO, WARNING, Checks, _range_overlaps



def check_host(linter: Checks) -> None:
    """Compare every range the linter kept with the addresses and routes of the host (or --netns)."""
    try:
        addrs, routes = host_networks(linter.opts.netns)
    except ImportError as exc:
        linter.add(
            WARNING, "<host>", "", f"host networks not checked: {exc} (install pyroute2, or pass --no-host)", "host"
        )
        return
    except Exception as exc:
        where = f"network namespace {linter.opts.netns!r}" if linter.opts.netns else "the host"
        linter.add(ERROR, "<host>", "", f"cannot read the networks of {where}: {exc}", "host")
        return
    for rec in linter.records:
        rng = rec.range
        own_dev = rec.att.plugin.get("bridge", "cni0") if rec.att.plugin_type == "bridge" else None
        master = rec.att.plugin.get("master") if rec.l2 else None
        for ip, prefixlen, dev in addrs:
            if ip.version != rng.version or not rng.contains(ip):
                continue
            if not rng.can_hand_out(ip):
                continue
            linter.add(
                ERROR,
                rec.file,
                rec.key,
                f"host address {ip}/{prefixlen} on {dev} lies in range {rec.text()}: "
                "the plugin could hand it out (exclude it)",
                "host-address",
            )
        for net, dev in routes:
            if net.version != rng.version or not net.overlaps(rng.subnet):
                continue
            if own_dev is not None and dev == own_dev:
                continue  # the bridge this network itself creates
            if master is not None and dev == master:
                linter.add(
                    INFO,
                    rec.file,
                    rec.key,
                    f"subnet {rng.subnet} is on master {dev} ({net}): expected for {rec.att.plugin_type}",
                    "overlap-host",
                )
                continue
            if net.prefixlen == net.max_prefixlen:
                if rng.contains(net.network_address):
                    linter.add(
                        WARNING,
                        rec.file,
                        rec.key,
                        f"host route {net} dev {dev} points at an address of range {rec.text()}",
                        "overlap-host",
                    )
                continue
            if _range_overlaps(rng, net):
                linter.add(
                    ERROR,
                    rec.file,
                    rec.key,
                    f"range {rec.text()} overlaps the host route {net} dev {dev}",
                    "overlap-host",
                )
            else:
                linter.add(
                    WARNING,
                    rec.file,
                    rec.key,
                    f"subnet {rng.subnet} overlaps the host route {net} dev {dev} (the range itself does not)",
                    "overlap-host",
                )


def host_networks(netns: str | None = None) -> tuple[list[tuple[Any, int, str]], list[tuple[Any, str]]]:
    """(addresses [(ip, prefixlen, dev)], routes [(network, dev)]) of the host or of the named
    network namespace; routes of the main table without the default routes."""
    import pyroute2  # heavy: only the lint host check loads it

    if netns:
        path = netns if "/" in netns else os.path.join("/var/run/netns", netns)
        if not os.path.exists(path):  # pyroute2 would create it
            raise FileNotFoundError(f"no network namespace {path}")
        ipr = pyroute2.NetNS(netns, flags=0)
    else:
        ipr = pyroute2.IPRoute()
    try:
        links = {link["index"]: link.get("ifname") for link in ipr.get_links()}
        addrs = []
        for msg in ipr.get_addr():
            text = msg.get("address")
            if not text:
                continue
            ip = ipaddress.ip_address(text.split("%")[0])
            addrs.append((ip, msg["prefixlen"], links.get(msg["index"], "?")))
        routes = []
        for msg in ipr.get_routes(table=254):
            if not msg["dst_len"]:
                continue
            dst = msg.get("dst")
            if not dst:
                continue
            net = ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False)
            routes.append((net, links.get(msg.get("oif"), "?")))
    finally:
        ipr.close()
    return addrs, routes

