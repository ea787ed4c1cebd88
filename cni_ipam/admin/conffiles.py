"""CNI conf files as libcni reads them: the files of a conf directory, each file's plugins with the
netconf each would receive, and the cni-ipam networks they define.  Shared by ``show``, ``metrics``,
``lint`` and ``pool``.

Every conf is parsed offline: :func:`load_offline` is the plugin's ``netconf.load`` with the
cache-only pod CIDR resolver (``podcidr.sources.offline_subnet_for``), so reading confs never calls
the Kubernetes API and never writes the pod CIDR cache.
"""

from __future__ import annotations

import json
import os
from typing import Any

from cni_ipam.errors import CniError
from cni_ipam.plugin import netconf as config
from cni_ipam.plugin.ranges import RangeSet
from cni_ipam.podcidr.sources import NotKnownOffline, offline_subnet_for

DEFAULT_CONF_DIR = "/etc/cni/net.d"
IPAM_TYPES = ("cni-ipam", "host-local")

CONF_EXTENSIONS = (".conf", ".conflist", ".json")
MAX_FILE = 4 << 20


class ConfFileError(Exception):
    def __init__(self, key: str, msg: str) -> None:
        super().__init__(msg)
        self.key = key
        self.msg = msg


class Attachment:
    """One plugin of a conf file, with the netconf the plugin would receive (name and cniVersion
    injected from the list, as libcni does)."""

    __slots__ = ("file", "prefix", "plugin", "netconf", "name", "cni_version", "plugin_type", "ipam_type")

    def __init__(self, file: str, prefix: str, plugin: dict, name: Any, cni_version: Any) -> None:
        self.file = file
        self.prefix = prefix  # "plugins[1]." in a conflist, "" in a single conf
        self.plugin = plugin
        self.name = name
        self.cni_version = cni_version
        self.netconf = dict(plugin)
        self.netconf["name"] = name
        if cni_version is not None:
            self.netconf["cniVersion"] = cni_version
        self.plugin_type = plugin.get("type")
        ipam = plugin.get("ipam")
        self.ipam_type = ipam.get("type") if isinstance(ipam, dict) else None


def conf_files(conf_dir: str) -> list[str]:
    """The files libcni would read from ``conf_dir`` (.conf, .conflist, .json), in lexical order."""
    try:
        names = sorted(os.listdir(conf_dir))
    except OSError:
        return []
    return [
        os.path.join(conf_dir, n)
        for n in names
        if n.endswith(CONF_EXTENSIONS) and os.path.isfile(os.path.join(conf_dir, n))
    ]


def load_json(path: str) -> Any:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE + 1)
    except OSError as exc:
        raise ConfFileError("", f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE:
        raise ConfFileError("", f"larger than {MAX_FILE} bytes")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ConfFileError("", f"not valid JSON: {exc}") from None


def read_conf_file(path: str) -> list[Attachment]:
    """The plugins of a .conf or .conflist file (a file with "plugins" is a list).

    Raises ConfFileError when the file is not a JSON object or its plugin list is malformed."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise ConfFileError("", "the file is not a JSON object")
    if "plugins" not in data:
        return [Attachment(path, "", data, data.get("name"), data.get("cniVersion"))]
    plugins = data["plugins"]
    if not isinstance(plugins, list) or not plugins:
        raise ConfFileError("plugins", "must be a non-empty list of plugin objects")
    out = []
    for i, plugin in enumerate(plugins):
        if not isinstance(plugin, dict):
            raise ConfFileError(f"plugins[{i}]", "a plugin must be an object")
        out.append(Attachment(path, f"plugins[{i}].", plugin, data.get("name"), data.get("cniVersion")))
    return out


def load_offline(netconf: dict) -> config.IpamConfig:
    """``netconf.load`` as the admin commands run it: no CNI_ARGS, and a ``usePodCidr`` subnet from
    the pod CIDR cache (or a static/flannel source) only.  Raises CniError as the plugin would, and
    ``podcidr.sources.NotKnownOffline`` when the node's pod CIDR is not known offline."""
    return config.load(netconf, {}, podcidr_resolver=offline_subnet_for)


class NetworkConf:
    """A network as a conf file defines it: name, data directory and (when valid) range sets.
    ``pod_cidr_unknown``: the conf is valid as far as can be told, but its ``usePodCidr`` subnet is
    not known offline (``error`` says why); its range sets are then None."""

    __slots__ = ("name", "data_dir", "file", "key", "range_sets", "error", "pod_cidr_unknown")

    def __init__(
        self,
        name: str,
        data_dir: str,
        file: str,
        key: str,
        range_sets: tuple[RangeSet, ...] | None,
        error: str,
        pod_cidr_unknown: bool = False,
    ) -> None:
        self.name = name
        self.data_dir = data_dir
        self.file = file
        self.key = key
        self.range_sets = range_sets
        self.error = error
        self.pod_cidr_unknown = pod_cidr_unknown


def conf_networks(conf_dir: str) -> list[NetworkConf]:
    """Every cni-ipam (or host-local) network of the conf files in ``conf_dir``, first file wins
    for a name (libcni reads the files in lexical order).  Unreadable files are skipped here; run
    ``cni-ipam lint`` to see why."""
    out: list[NetworkConf] = []
    seen = set()
    for path in conf_files(conf_dir):
        try:
            attachments = read_conf_file(path)
        except ConfFileError:
            continue
        for att in attachments:
            if att.ipam_type not in IPAM_TYPES or not isinstance(att.name, str):
                continue
            try:
                data_dir = config.data_dir_of(att.netconf.get("ipam"))
            except CniError:
                continue
            if (att.name, data_dir) in seen:
                continue
            seen.add((att.name, data_dir))
            range_sets, error, unknown = None, "", False
            try:
                range_sets = load_offline(att.netconf).range_sets
            except NotKnownOffline as exc:
                error, unknown = exc.msg, True
            except CniError as exc:
                error = exc.msg
            except Exception as exc:  # a bug elsewhere must not hide the other networks
                error = f"{type(exc).__name__}: {exc}"
            out.append(NetworkConf(att.name, data_dir, path, att.prefix, range_sets, error, unknown))
    return out
