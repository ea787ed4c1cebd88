"""What one node keeps locally about a pool: its instance id and, per network, its pool record.

Instance id (``<dataDir>/.cni-ipam-instance``, one per data directory, made once and never
rewritten): 64 random bits, created with a link so that two first calls racing agree on one.  The
id a node uses is that value joined with the start of ``/etc/machine-id``: a data directory copied
to another machine (a cloned VM image) gives that machine an id of its own.

Pool record (``<dataDir>/<network>/.cni-ipam/pool.json``, read and written under the network lock
through the store): the blocks this node claimed with the exact claim value of each (its fencing
token), claims and releases whose outcome is not known yet, address records to delete when etcd
answers again, the etcd settings (so DEL and GC reach etcd without a valid netconf), and etcd's
cluster id with the highest revision saved (an answer below it, or another cluster id, means etcd
was restored from a backup).  Nothing in it is a time: no safety decision reads a clock.
"""

from __future__ import annotations

import json
import os

from cni_ipam.cluster.keys import decode_json, random_id

RECORD_FILE = "pool.json"
RECORD_LIMIT = 16 << 20  # as NetworkStore.read_meta: a record of ~100k blocks; anything larger is damage
INSTANCE_FILE = ".cni-ipam-instance"  # network names never start with a dot
MACHINE_ID = "/etc/machine-id"
_VERSION = 2
_STATES = ("held", "lost", "releasing")


def instance_id(data_dir: str) -> str:
    """This machine's instance id for ``data_dir`` (see the module doc); OSError when the data
    directory cannot hold it."""
    fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        base = _read_instance(fd)
        if base is None:
            base = _create_instance(fd)
    finally:
        os.close(fd)
    return f"{base}.{_machine()}"


def _read_instance(dir_fd: int) -> str | None:
    try:
        fd = os.open(INSTANCE_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    try:
        text = os.read(fd, 64).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    if len(text) == 16 and not text.strip("0123456789abcdef"):
        return text
    raise OSError(f"{INSTANCE_FILE} in the data directory is damaged ({text[:20]!r}): remove it to make a new one")


def _create_instance(dir_fd: int) -> str:
    value = random_id()
    tmp = f"{INSTANCE_FILE}.{value}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    try:
        os.write(fd, value.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, INSTANCE_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:  # another first call won the race: its id is the one
        value = _read_instance(dir_fd) or value
    finally:
        os.unlink(tmp, dir_fd=dir_fd)
    os.fsync(dir_fd)
    return value


def _machine() -> str:
    try:
        with open(MACHINE_ID, "rb") as fh:
            text = fh.read(64).decode("ascii", "replace").strip()
    except OSError:
        return "0"
    return text[:12] if text and not text.strip("0123456789abcdef") else "0"


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _valid_cidr(text: object) -> bool:
    if not isinstance(text, str) or "/" not in text:
        return False
    import ipaddress

    try:
        return str(ipaddress.ip_network(text)) == text
    except ValueError:
        return False


def _block(b: object) -> dict | None:
    if (isinstance(b, dict) and _valid_cidr(b.get("cidr")) and _int(b.get("set")) == b.get("set")
            and isinstance(b.get("claim"), str) and b.get("state", "held") in _STATES):
        return {"cidr": b["cidr"], "set": b["set"], "claim": b["claim"], "state": b.get("state", "held")}
    return None


def _pending(p: object) -> dict | None:
    if not isinstance(p, dict):
        return None
    if p.get("op") == "claim" and _block(p) is not None:
        return {"op": "claim", "cidr": p["cidr"], "set": p["set"], "claim": p["claim"]}
    if (p.get("op") == "free" and p.get("family") in (4, 6) and isinstance(p.get("addr"), int)
            and not isinstance(p.get("addr"), bool) and p["addr"] >= 0 and isinstance(p.get("record"), str)):
        return {"op": "free", "family": p["family"], "addr": p["addr"], "record": p["record"]}
    return None


class Record:
    """``.cni-ipam/pool.json`` of one network (see the module doc).  Junk entries are dropped."""

    def __init__(self, doc: object) -> None:
        d = doc if isinstance(doc, dict) and doc.get("v") == _VERSION else {}
        self.pool = _text(d.get("pool"))
        self.node = _text(d.get("node"))
        self.network = _text(d.get("network"))
        self.instance = _text(d.get("instance"))
        self.etcd = d.get("etcd")
        keep = d.get("keepBlocks")
        self.keep = keep if isinstance(keep, int) and not isinstance(keep, bool) and keep >= 0 else 1
        blocks = [_block(b) for b in _list(d.get("blocks"))]
        self.blocks: list[dict] = [b for b in blocks if b is not None]
        pending = [_pending(p) for p in _list(d.get("pending"))]
        self.pending: list[dict] = [p for p in pending if p is not None]
        self.cluster = _int(d.get("cluster"))
        self.revision = _int(d.get("revision"))
        self.reassert = d.get("reassert") is True
        self.dirty = False

    @classmethod
    def load(cls, store) -> Record:
        """``store``: the locked ``store.network.NetworkStore``."""
        return cls(decode_json(store.read_meta(RECORD_FILE, RECORD_LIMIT)))

    def to_json(self) -> dict:
        return {"v": _VERSION, "pool": self.pool, "node": self.node, "network": self.network,
                "instance": self.instance, "etcd": self.etcd, "keepBlocks": self.keep, "blocks": self.blocks,
                "pending": self.pending, "cluster": self.cluster, "revision": self.revision,
                "reassert": self.reassert}

    def save(self, store) -> None:
        store.write_meta(RECORD_FILE, json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode())
        self.dirty = False

    def held(self, set_idx: int) -> list[str]:
        """CIDRs this node may hand out from in range set ``set_idx``."""
        from cni_ipam.cluster.blocks import cidr_order

        return sorted((b["cidr"] for b in self.blocks if b["set"] == set_idx and b["state"] == "held"), key=cidr_order)

    def entry(self, cidr: str) -> dict | None:
        return next((b for b in self.blocks if b["cidr"] == cidr), None)

    def add(self, cidr: str, set_idx: int, claim: bytes, state: str = "held") -> None:
        self.drop(cidr)
        self.blocks.append({"cidr": cidr, "set": set_idx, "claim": claim.decode(), "state": state})
        self.dirty = True

    def set_state(self, cidr: str, state: str) -> None:
        entry = self.entry(cidr)
        if entry is not None and entry["state"] != state:
            entry["state"] = state
            self.dirty = True

    def drop(self, cidr: str) -> None:
        before = len(self.blocks)
        self.blocks = [b for b in self.blocks if b["cidr"] != cidr]
        self.dirty = self.dirty or len(self.blocks) != before

    def saw(self, header: tuple[int, int]) -> bool:
        """Note etcd's (cluster id, revision) of an answer; True when it shows a restore: another
        cluster id, or a revision below the highest one saved."""
        cluster, revision = header
        if not cluster:
            return False
        restored = bool(self.cluster) and (cluster != self.cluster or revision < self.revision)
        if restored:
            self.reassert = True
            self.dirty = True
        if cluster != self.cluster or revision > self.revision:
            if cluster != self.cluster:
                self.dirty = True
            self.cluster, self.revision = cluster, revision
        return restored


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def read_record_at(net_dir_fd: int) -> Record:
    """pool.json read without the lock (STATUS is advisory) through the store's dir-fd reader:
    neither ``.cni-ipam`` nor ``pool.json`` followed as a symlink, a regular file only (a FIFO or a
    device is never read), at most ``RECORD_LIMIT`` bytes; an empty record otherwise."""
    from cni_ipam.store import fs as safefs
    from cni_ipam.store.layout import META_DIR

    try:
        meta_fd = safefs.open_dir(META_DIR, net_dir_fd)
    except OSError:
        return Record(None)
    try:
        return Record(decode_json(safefs.read_regular(meta_fd, RECORD_FILE, RECORD_LIMIT)))
    finally:
        os.close(meta_fd)
