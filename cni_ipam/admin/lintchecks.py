"""The checks of one ipam section, for ``cni-ipam lint``: what a linted file produces.

Owns the findings (``LintFinding``), the concrete ranges kept for the cross-file checks
(``RangeRecord``), the lint options, and ``Checks``: the per-attachment checks (known keys, the
plugin's own parse with each error set aside and the section parsed again, usePodCidr without the
Kubernetes API, each range's exclude/gateway/size checks). The driver over files and the checks
across files are in ``admin.lint``; the host's addresses and routes in ``admin.lintnet``.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
from typing import Any

from cni_ipam.plugin import netconf as config
from cni_ipam.admin.conffiles import (
    Attachment,
    load_offline,
)
from cni_ipam.errors import PODCIDR_UNAVAILABLE, CniError
from cni_ipam.plugin.ranges import Range

# Plugins that attach to an existing L2 network: their subnet is expected to be the host's LAN.
L2_PLUGIN_TYPES = ("macvlan", "ipvlan", "host-device", "vlan", "sriov", "dummy")
# The keys host-local reads, and the ones only cni-ipam reads (host-local ignores them).
HOST_LOCAL_KEYS = ("type", "ranges", "subnet", "rangeStart", "rangeEnd", "gateway", "routes", "dataDir", "resolvConf")
CNI_IPAM_ONLY_KEYS = (
    "exclude",
    "lockTimeout",
    "podCidr",
    "statusOnExhaustion",
    "reclaimOnExhaustion",
    "pidnsIsNode",
    "pool",
)  # pool: cluster pools
KNOWN_IPAM_KEYS = HOST_LOCAL_KEYS + CNI_IPAM_ONLY_KEYS
KNOWN_RANGE_KEYS = ("subnet", "rangeStart", "rangeEnd", "gateway", "exclude")
ERROR, WARNING, INFO = "error", "warning", "info"
EXIT_OK, EXIT_ERRORS = 0, 1
_STAND_IN = {4: "0.0.0.0/0", 6: "::/0"}


# ---------------------------------------------------------------------- findings
class LintFinding:
    __slots__ = ("level", "file", "key", "message", "check")

    def __init__(self, level: str, file: str, key: str, message: str, check: str) -> None:
        self.level = level
        self.file = file
        self.key = key
        self.message = message
        self.check = check

    def to_json(self) -> dict:
        return {"level": self.level, "file": self.file, "key": self.key, "message": self.message, "check": self.check}

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}: " if self.key else f"{self.file}: "
        return f"{where}{self.level}: {self.message} [{self.check}]"

    def __repr__(self) -> str:
        return f"LintFinding({self.level}, {self.file!r}, {self.key!r}, {self.check}, {self.message!r})"


class RangeRecord:
    """A concrete range of a linted network, kept for the overlap checks."""

    __slots__ = ("file", "key", "network", "data_dir", "range", "att", "pod_cidr")

    def __init__(
        self, file: str, key: str, network: str, data_dir: str, rng: Range, att: Attachment, pod_cidr: bool = False
    ) -> None:
        self.pod_cidr = pod_cidr  # the subnet is the node's pod CIDR (usePodCidr)
        self.file = file
        self.key = key
        self.network = network
        self.data_dir = data_dir
        self.range = rng
        self.att = att

    @property
    def l2(self) -> bool:
        return self.att.plugin_type in L2_PLUGIN_TYPES

    def text(self) -> str:
        r = self.range
        return f"{r.subnet} ({r.range_start}-{r.range_end})"


class Options:
    def __init__(
        self,
        service_cidrs=(),
        cluster_cidrs=(),
        node_cidrs=(),
        cidrs=(),
        pod_cidrs=(),
        max_pods: int | None = None,
        host: bool = True,
        netns: str | None = None,
    ) -> None:
        self.service_cidrs = list(service_cidrs)
        self.cluster_cidrs = list(cluster_cidrs)
        self.node_cidrs = list(node_cidrs)
        self.cidrs = list(cidrs)
        self.pod_cidrs = list(pod_cidrs)
        self.max_pods = max_pods
        self.host = host
        self.netns = netns



class Checks:
    """Findings and ranges of the files linted so far, and the checks of one ipam section."""

    def __init__(self, options: Options | None = None) -> None:
        self.opts = options or Options()
        self.findings: list[LintFinding] = []
        self.records: list[RangeRecord] = []

    def add(self, level: str, file: str, key: str, message: str, check: str) -> None:
        self.findings.append(LintFinding(level, file, key, message, check))

    # ------------------------------------------------------------------ the ipam section
    def lint_ipam(self, att: Attachment) -> None:
        path, pre = att.file, att.prefix + "ipam"
        ipam = att.plugin["ipam"]
        host_local = att.ipam_type == "host-local"
        for key in ipam:
            if key not in KNOWN_IPAM_KEYS:
                self.add(WARNING, path, f"{pre}.{key}", "unknown key (ignored by the plugin; a typo?)", "unknown-key")
            elif host_local and key in CNI_IPAM_ONLY_KEYS:
                self.add(
                    WARNING,
                    path,
                    f"{pre}.{key}",
                    "a cni-ipam key: host-local ignores it (set ipam.type to cni-ipam)",
                    "ipam-type",
                )
        netconf = copy.deepcopy(att.netconf)
        if "runtimeConfig" in netconf:
            self.add(
                WARNING,
                path,
                f"{att.prefix}runtimeConfig",
                "set by the runtime from capabilities; the value in the file is not used",
                "config",
            )
            netconf.pop("runtimeConfig")
        netconf.pop("args", None)  # requested IPs are per pod, not a property of the network
        work = netconf["ipam"]
        set_keys = self._set_keys(work)
        for set_key, raw_set in set_keys:
            if set_key == "ipam" or not isinstance(raw_set, list):
                continue
            for j, raw in enumerate(raw_set):
                for key in raw if isinstance(raw, dict) else ():
                    if key not in KNOWN_RANGE_KEYS:
                        self.add(
                            WARNING,
                            path,
                            f"{att.prefix}{set_key}[{j}].{key}",
                            "unknown range key (ignored; a typo?)",
                            "unknown-key",
                        )
        resolved: set = set()
        unresolved = self._pod_cidr_placeholders(att, work, host_local, resolved)
        try:
            checked, data_dir = self._load(att, netconf, set_keys)
        except Exception as exc:  # pragma: no cover - a bug in config must not hide the other files
            self.add(ERROR, path, pre, f"internal error validating the config: {type(exc).__name__}: {exc}", "config")
            return
        resolv = work.get("resolvConf")
        if isinstance(resolv, str) and resolv and not os.access(resolv, os.R_OK):
            self.add(
                WARNING,
                path,
                f"{pre}.resolvConf",
                f"{resolv} is not readable here; an ADD on this machine would fail",
                "resolv-conf",
            )
        for set_key, raw_set, ranges, complete in checked:
            set_size = 0
            set_unresolved = False
            for j, rng in ranges:
                key = att.prefix + (set_key if set_key == "ipam" else f"{set_key}[{j}]")
                raw = (
                    raw_set[j]
                    if isinstance(raw_set, list) and j < len(raw_set) and isinstance(raw_set[j], dict)
                    else {}
                )
                if (set_key, j) in unresolved:
                    set_unresolved = True
                    continue
                set_size += self._lint_range(att, key, rng, raw)
                self.records.append(RangeRecord(path, key, att.name, data_dir, rng, att, (set_key, j) in resolved))
            if complete and self.opts.max_pods and not set_unresolved and set_size < self.opts.max_pods:
                self.add(
                    ERROR,
                    path,
                    att.prefix + set_key,
                    f"range set has {set_size} usable addresses, fewer than --max-pods {self.opts.max_pods}",
                    "max-pods",
                )
        self._lint_global_exclude(path, pre, work, [r for _, _, ranges, _ in checked for _, r in ranges], unresolved)

    # ------------------------------------------------------------------ every config error
    def _load(self, att: Attachment, netconf: dict, set_keys: list[tuple[str, Any]]):
        """The plugin's own validation (``config.load``) of the whole section, every error of it.

        ``config.load`` stops at the first error, so each error is reported and then the part it
        names is set aside in the working copy — a bad range key dropped, a bad range or range set
        replaced by a stand-in that overlaps nothing, a bad top-level key dropped — and the whole
        section is parsed again, until it parses.  One parse per finding, always of the whole
        section, so every message names its key as the file has it.  A pool is judged against the
        real range sets only (once a range is set aside, ``pool`` is too).

        Returns ``(checked, data_dir)``: per range set ``(set key, raw set, [(index, Range)] of its
        ranges valid as written, whether the whole set is)``, for the size and overlap checks."""
        work = copy.deepcopy(netconf)
        ipam = work["ipam"]
        touched: set = set()  # (set key, range index) not valid as written
        broken: set = set()  # set keys replaced by a stand-in set
        stand_ins = iter(range(1 << 16))
        seen: set = set()
        cfg = None
        for _ in range(64 + 4 * sum(len(raw) if isinstance(raw, list) else 1 for _, raw in set_keys)):
            try:
                cfg = load_offline(work)  # a usePodCidr left in place never reaches the API
                break
            except CniError as exc:
                key = exc.details[4:] if exc.details.startswith("key ") else "ipam"
                if (key, exc.msg) not in seen:
                    seen.add((key, exc.msg))
                    self.add(ERROR, att.file, att.prefix + key, exc.msg, "config")
                if not _set_aside(work, ipam, key, exc.msg, set_keys, touched, broken, stand_ins):
                    break
        if cfg is None:
            return [], _data_dir(ipam)
        checked: list[tuple[str, Any, list, bool]] = []
        for (set_key, raw_set), rset in zip(set_keys, cfg.range_sets):
            if set_key in broken:
                checked.append((set_key, raw_set, [], False))
                continue
            ranges = [(j, r) for j, r in enumerate(rset.ranges) if (set_key, j) not in touched]
            checked.append((set_key, raw_set, ranges, len(ranges) == len(rset.ranges)))
        return checked, cfg.data_dir

    def _set_keys(self, ipam: dict) -> list[tuple[str, Any]]:
        """(key, raw range set) in config.load's order: the legacy top-level range, then ranges."""
        out: list[tuple[str, Any]] = []
        if ipam.get("subnet") not in (None, ""):
            out.append(("ipam", [{k: ipam[k] for k in ("subnet", "rangeStart", "rangeEnd", "gateway") if k in ipam}]))
        ranges = ipam.get("ranges")
        if isinstance(ranges, list):
            out += [(f"ipam.ranges[{i}]", s) for i, s in enumerate(ranges)]
        return out

    def _pod_cidr_placeholders(self, att: Attachment, ipam: dict, host_local: bool, resolved: set) -> set:
        """Replace usePodCidr subnets (in place, in the working copy) by --pod-cidr or a stand-in.

        Returns the (set key, range index) of ranges checked with a stand-in only."""
        unresolved: set[tuple[str, int]] = set()
        targets: list[tuple[str, int, dict]] = []
        if ipam.get("subnet") in config.POD_CIDR_PLACEHOLDERS:
            targets.append(("ipam", 0, ipam))
        ranges = ipam.get("ranges")
        if isinstance(ranges, list):
            for i, rset in enumerate(ranges):
                if isinstance(rset, list):
                    for j, rng in enumerate(rset):
                        if isinstance(rng, dict) and rng.get("subnet") in config.POD_CIDR_PLACEHOLDERS:
                            targets.append((f"ipam.ranges[{i}]", j, rng))
        path = att.file
        if not targets:
            if "podCidr" in ipam:
                self.add(
                    WARNING,
                    path,
                    att.prefix + "ipam.podCidr",
                    'set, but no range uses "subnet": "usePodCidr"',
                    "pod-cidr",
                )
                self._lint_podcidr_keys(att, ipam)
            return unresolved
        if host_local:
            self.add(
                ERROR,
                path,
                att.prefix + "ipam.subnet",
                "host-local cannot resolve usePodCidr (set ipam.type to cni-ipam)",
                "pod-cidr",
            )
        static = self._lint_podcidr_keys(att, ipam)
        for set_key, j, rng in targets:
            family = 6 if rng["subnet"] == "usePodCidrIPv6" else 4
            placeholder = rng["subnet"]
            key = att.prefix + (set_key if set_key == "ipam" else f"{set_key}[{j}]") + ".subnet"
            if static is not None:  # the file itself names the node's pod CIDRs
                given = [n for n in static if n.version == family]
                origin = "ipam.podCidr.static"
                if not given:
                    self.add(
                        ERROR, path, key, f"{placeholder}: ipam.podCidr.static has no IPv{family} CIDR", "pod-cidr"
                    )
            else:
                given = [n for n in self.opts.pod_cidrs if n.version == family]
                origin = "--pod-cidr"
            if not given and static is None:
                given, origin, problem = self._offline_pod_cidr(placeholder, ipam)
            else:
                problem = None
            if given:
                rng["subnet"] = str(given[0])
                resolved.add((set_key, j))
                self.add(INFO, path, key, f"{placeholder}: checked as {origin} {given[0]}", "pod-cidr")
                continue
            rng["subnet"] = _STAND_IN[family]
            for k in ("rangeStart", "rangeEnd", "gateway"):
                rng.pop(k, None)
            unresolved.add((set_key, j))
            hint = "give --pod-cidr to check this range's size and overlaps"
            if problem is not None:
                self.add(WARNING, path, key, f"{placeholder}: {problem}; {hint}", "pod-cidr")
            else:
                self.add(INFO, path, key, f"the node's pod CIDR is known only at ADD: {hint}", "pod-cidr")
        return unresolved

    def _offline_pod_cidr(self, placeholder: str, ipam: dict):
        """``([net], origin, None)`` when this machine knows the node's pod CIDR offline (the pod
        CIDR cache an ADD wrote, a static file, flannel's subnet.env: read only, never the API);
        ``([], "", problem)`` when it does not; ``([], "", None)`` for malformed podCidr keys
        (reported by ``_lint_podcidr_keys``)."""
        from cni_ipam.podcidr import sources as podcidr

        try:
            data_dir = config.data_dir_of(ipam)
        except CniError:
            data_dir = config.DEFAULT_DATA_DIR
        try:
            net, origin = podcidr.offline_pod_cidr(placeholder, ipam, data_dir)
        except podcidr.NotKnownOffline as exc:
            return [], "", f"pod CIDR not known offline ({exc.msg})"
        except CniError as exc:
            if exc.code != PODCIDR_UNAVAILABLE:
                return [], "", None
            return [], "", f"pod CIDR not known offline: an ADD on this machine would fail ({exc.msg})"
        return [net], origin, None

    def _lint_podcidr_keys(self, att: Attachment, ipam: dict):
        """Validate ``ipam.podCidr`` with podcidr's own parser (no I/O, no API).  Returns the static
        CIDR list when ``static`` is the source that will answer as far as the file tells, else None."""
        from cni_ipam.podcidr import sources as podcidr

        try:
            settings = podcidr.parse_settings(ipam)
        except CniError as exc:
            key = (
                exc.details[4:]
                if exc.details.startswith("key ")
                else exc.details
                if exc.details.startswith("ipam")
                else "ipam.podCidr"
            )
            self.add(ERROR, att.file, att.prefix + key, exc.msg, "pod-cidr")
            return None
        raw = ipam.get("podCidr") or {}
        for source in settings.sources:
            if source == "static":
                return list(settings.static) if settings.static is not None else None
            if source == "kubernetes" and raw.get("kubeconfig"):
                return None
            if source == "flannel" and raw.get("flannelSubnetEnv"):
                return None
        return None

    def _lint_range(self, att: Attachment, key: str, rng: Range, raw: dict) -> int:
        path = att.file
        size = rng.size()
        if size == 0:
            self.add(
                ERROR,
                path,
                key,
                f"range {rng.range_start}-{rng.range_end} has no address to hand out"
                " (gateway, network, broadcast or excluded)",
                "empty-range",
            )
        gw = rng.gateway
        net = rng.subnet
        if gw is not None and raw.get("gateway"):
            if gw == net.network_address:
                self.add(WARNING, path, f"{key}.gateway", f"{gw} is the network address of {net}", "gateway")
            elif net.version == 4 and gw == net.broadcast_address:
                self.add(WARNING, path, f"{key}.gateway", f"{gw} is the broadcast address of {net}", "gateway")
        exclude = raw.get("exclude")
        if isinstance(exclude, list):
            for i, item in enumerate(exclude):
                ex = _net(item)
                if ex is None:
                    continue
                if (
                    ex.version != net.version
                    or int(ex.broadcast_address) < rng.start
                    or int(ex.network_address) > rng.end
                ):
                    self.add(
                        WARNING,
                        path,
                        f"{key}.exclude[{i}]",
                        f"{item} is outside the range {rng.range_start}-{rng.range_end}: it excludes nothing",
                        "exclude-outside-range",
                    )
        return size

    def _lint_global_exclude(self, path: str, pre: str, ipam: dict, ranges: list[Range], unresolved: set) -> None:
        exclude = ipam.get("exclude")
        if not isinstance(exclude, list) or not ranges:
            return
        any_unresolved = bool(unresolved)
        for i, item in enumerate(exclude):
            ex = _net(item)
            if ex is None:
                continue
            hit = any(
                r.version == ex.version
                and int(ex.network_address) <= r.end
                and r.start <= int(ex.broadcast_address)
                and int(r.subnet.prefixlen) > 0
                for r in ranges
            )
            if not hit and not any_unresolved:
                self.add(
                    WARNING,
                    path,
                    f"{pre}.exclude[{i}]",
                    f"{item} is outside every range: it excludes nothing",
                    "exclude-outside-range",
                )


_RANGE_KEY = re.compile(r"^ipam\.ranges\[(\d+)\](?:\[(\d+)\])?(?:\.(\w+))?")
_RANGE_FIELDS = ("gateway", "rangeStart", "rangeEnd", "exclude")
# What a config key's error sets aside: ipam keys dropped whole (the first name after "ipam.").
_DROPPABLE = (
    "exclude",
    "routes",
    "dataDir",
    "lockTimeout",
    "resolvConf",
    "statusOnExhaustion",
    "reclaimOnExhaustion",
    "pidnsIsNode",
    "pool",
)


def _stand_in(family: int, n: int) -> dict:
    """A range that overlaps nothing a conf holds: class E (240/4) for IPv4, the 3fff::/20
    documentation prefix (RFC 9637) for IPv6, one small subnet per stand-in."""
    if family == 6:
        return {"subnet": f"3fff:fff:{n >> 16:x}:{n & 0xFFFF:x}::/126"}
    return {"subnet": f"{ipaddress.IPv4Address((240 << 24) + 4 * n)}/30"}


def _family_of(raw: Any) -> int:
    subnet = raw.get("subnet") if isinstance(raw, dict) else None
    return 6 if isinstance(subnet, str) and ":" in subnet else 4


def _set_aside(
    work: dict, ipam: dict, key: str, msg: str, set_keys: list, touched: set, broken: set, stand_ins
) -> bool:
    """Set aside what the config error at ``key`` names (see ``Linter._load``); False when there is
    nothing to set aside (a limit, an unknown key): the remaining errors are then not reported."""
    if key == "cniVersion":  # bad, or too old for the range sets per family: check the rest as 1.0.0
        if work.get("cniVersion") == "1.0.0":
            return False
        work["cniVersion"] = "1.0.0"
        return True
    if key == "ipam.ranges":  # not a list, or no range at all: check the rest with a stand-in
        if "more than the limit" in msg:
            return False
        if isinstance(ipam.get("ranges"), list) and ipam["ranges"]:
            if ipam.pop("pool", None) is not None:  # the pool's own rule on the range sets
                return True
            return False
        ipam["ranges"] = [[_stand_in(4, next(stand_ins))]]
        ipam.pop("pool", None)
        return True
    has_legacy = "ipam" in dict(set_keys)
    legacy = has_legacy and (
        key.startswith(("ipam.subnet", "ipam.gateway", "ipam.rangeStart", "ipam.rangeEnd"))
        or key == "ipam"
        and "overlaps" in msg
    )  # the legacy range as a whole set
    m = _RANGE_KEY.match(key)
    if legacy or m:
        ipam.pop("pool", None)  # a pool is judged against the real range sets only
        if legacy:
            if "ipam" in broken:
                return False
            field = key[5:].split(".")[0].split("[")[0]
            if field in ("gateway", "rangeStart", "rangeEnd") and field in ipam:
                del ipam[field]
                touched.add(("ipam", 0))
                return True
            ipam["subnet"] = _stand_in(_family_of(ipam), next(stand_ins))["subnet"]
            for k in ("gateway", "rangeStart", "rangeEnd"):
                ipam.pop(k, None)
            touched.add(("ipam", 0))
            if key == "ipam":
                broken.add("ipam")
            return True
        assert m is not None  # the legacy range returned above
        i, j, field = int(m.group(1)), m.group(2), m.group(3)
        sets = ipam.get("ranges")
        if not isinstance(sets, list) or i >= len(sets):
            return False
        set_key = f"ipam.ranges[{i}]"
        if j is None:  # the whole set: not a list, or overlapping another set
            family = _family_of(sets[i][0]) if isinstance(sets[i], list) and sets[i] else 4
            if set_key in broken:  # a stand-in set overlaps nothing: this would not end
                return False
            sets[i] = [_stand_in(family, next(stand_ins))]
            broken.add(set_key)
            return True
        j = int(j)
        rset = sets[i]
        if not isinstance(rset, list) or j >= len(rset):
            return False
        touched.add((set_key, j))
        if field in _RANGE_FIELDS and isinstance(rset[j], dict) and field in rset[j]:
            del rset[j][field]
            return True
        reference = rset[0] if j > 0 else rset[j]  # mixed families: the set's family is its first range's
        rset[j] = _stand_in(_family_of(reference), next(stand_ins))
        return True
    head, _, rest = key.partition(".")
    name = rest.split(".")[0].split("[")[0] if head == "ipam" else ""
    if name in _DROPPABLE and name in ipam:
        del ipam[name]
        return True
    return False


def _data_dir(ipam: dict) -> str:
    try:
        return config.data_dir_of(ipam)
    except CniError:
        return config.DEFAULT_DATA_DIR


def _net(item: Any):
    if not isinstance(item, str):
        return None
    try:
        return ipaddress.ip_network(item.strip(), strict=False)
    except ValueError:
        return None


def _range_overlaps(rng: Range, net) -> bool:
    return (
        rng.version == net.version and rng.start <= int(net.broadcast_address) and int(net.network_address) <= rng.end
    )
