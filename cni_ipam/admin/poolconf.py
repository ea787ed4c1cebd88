"""The pools the admin commands work on: every network with an ``ipam.pool`` section in the conf
files, parsed by the plugin's own parser (so the commands see what the nodes see), and an etcd client
for each with the command line's overrides.  Admin path only."""

from __future__ import annotations

from typing import Any

from cni_ipam.admin import conffiles
from cni_ipam.errors import CniError


class AdminError(Exception):
    """A problem of the command's inputs (credentials, endpoints, kubeconfig): printed, never a traceback."""


def error_text(exc: BaseException) -> str:
    """One line for an error of etcd or the inputs: the client's own message, printed once (it
    names etcd and the endpoint already); an empty message (a MemoryError) still says what failed."""
    return " ".join(str(exc).split()) or type(exc).__name__


class PoolTarget:
    """One pool as a conf file defines it: name, etcd settings, range sets and block sizes."""

    def __init__(self, name: str, settings, range_sets: list, block_sizes: list, conf_file: str, network: str) -> None:
        self.name = name
        self.settings = settings
        self.range_sets = range_sets
        self.block_sizes = block_sizes
        self.conf_file = conf_file
        self.network = network

    @property
    def prefix(self) -> str:
        return self.settings.prefix

    @property
    def identity(self) -> tuple:
        return (tuple(self.settings.endpoints), self.settings.prefix, self.name)


def load_pools(conf_files, conf_dir: str, names=None) -> tuple[list, list]:
    """(pools, problems) of the conf files; the first file wins for a pool (libcni's order)."""
    files = list(conf_files) if conf_files else conffiles.conf_files(conf_dir)
    pools: list = []
    problems: list = []
    seen: set = set()
    for path in files:
        try:
            attachments = conffiles.read_conf_file(path)
        except conffiles.ConfFileError as exc:
            problems.append(f"{path}: {exc}")
            continue
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
            continue
        for att in attachments:
            ipam = att.netconf.get("ipam")
            if not isinstance(ipam, dict) or ipam.get("pool") is None:
                continue
            try:
                cfg: Any = conffiles.load_offline(att.netconf)  # offline: never the Kubernetes API
            except CniError as exc:
                problems.append(f"{path}: {att.prefix}ipam: {exc.msg}")
                continue
            pool = cfg.pool
            target = PoolTarget(pool.name, pool.etcd, list(cfg.range_sets), list(pool.block_sizes), path, att.name)
            if (names and target.name not in names) or target.identity in seen:
                continue
            seen.add(target.identity)
            pools.append(target)
    if names:
        problems += [f"pool {n!r} is in no conf file" for n in sorted(set(names) - {p.name for p in pools})]
    return pools, problems


def etcd_client(target: PoolTarget, args):
    """An EtcdClient for the pool: the conf's settings with the command-line overrides on top."""
    from cni_ipam.cluster import etcd

    s = target.settings
    username = args.username if args.username is not None else s.username
    password_file = args.password_file if args.password_file is not None else s.password_file
    password = None
    if username is not None:
        if not password_file:
            raise AdminError(f"etcd user {username!r} needs --password-file")
        try:
            with open(password_file, "rb") as fh:
                password = fh.read(4096).decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise AdminError(f"cannot read the etcd password file {password_file}: {exc}") from None
    try:
        return etcd.EtcdClient(args.endpoints or s.endpoints, ca_file=args.ca_file or s.ca_file,
                               cert_file=args.cert_file or s.cert_file, key_file=args.key_file or s.key_file,
                               username=username, password=password, timeout=args.timeout or s.timeout)
    except etcd.EtcdError as exc:
        raise AdminError(error_text(exc)) from None
