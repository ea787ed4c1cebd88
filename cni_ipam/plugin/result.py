"""The IPAM result and its conversion to each CNI version the caller may speak.

0.1.0/0.2.0: ``ip4``/``ip6`` objects with their routes; 0.3.x/0.4.0: ``ips[]`` with ``version``;
1.x: ``ips[]`` without it.  An IPAM result never carries ``interfaces`` or an interface index.
The CNI 1.1 route fields (mtu, advmss, priority, table, scope) appear only in 1.1.0 results.
"""

from __future__ import annotations


class IpamResult:
    """Addresses (as interfaces: address + prefix), their gateways, routes and DNS."""

    __slots__ = ("ips", "routes", "dns")

    def __init__(self, ips: list[tuple], routes: tuple, dns: dict) -> None:
        self.ips = ips  # [(interface (cni_ipam.addr.Interface or ipaddress's), gateway address or None)]
        self.routes = routes  # netconf.Route objects
        self.dns = dns

    def to_json(self, version: str) -> dict:
        if version in ("0.1.0", "0.2.0"):
            return self._to_02x(version)
        with_version = version in ("0.3.0", "0.3.1", "0.4.0")
        out: dict = {"cniVersion": version}
        ips = []
        for iface, gateway in self.ips:
            entry: dict = {}
            if with_version:
                entry["version"] = str(iface.version)
            entry["address"] = str(iface)
            if gateway is not None:
                entry["gateway"] = str(gateway)
            ips.append(entry)
        if ips:
            out["ips"] = ips
        if self.routes:
            out["routes"] = [r.to_json(with_11_fields=version == "1.1.0") for r in self.routes]
        out["dns"] = dict(self.dns)
        return out

    def _to_02x(self, version: str) -> dict:
        out: dict = {"cniVersion": version}
        for family, key in ((4, "ip4"), (6, "ip6")):
            first = next(((i, g) for i, g in self.ips if i.version == family), None)
            if first is None:
                continue
            iface, gateway = first
            entry: dict = {"ip": str(iface)}
            if gateway is not None:
                entry["gateway"] = str(gateway)
            routes = [r.to_json(with_11_fields=False) for r in self.routes if r.version == family]
            if routes:
                entry["routes"] = routes
            out[key] = entry
        out["dns"] = dict(self.dns)
        return out


def addresses_in(prev_result: object) -> set[str]:
    """The addresses (without prefix) a prevResult of any version lists."""
    found: set[str] = set()
    if not isinstance(prev_result, dict):
        return found
    entries = prev_result.get("ips")
    if isinstance(entries, list):
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("address"), str):
                found.add(entry["address"].split("/")[0])
    for key in ("ip4", "ip6"):
        entry = prev_result.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("ip"), str):
            found.add(entry["ip"].split("/")[0])
    return found
