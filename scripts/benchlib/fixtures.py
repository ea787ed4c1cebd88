"""Data directories for the scenarios: host-local-format prefills and their copies."""

from __future__ import annotations

import ipaddress
import os
import subprocess


# --------------------------------------------------------------------------- prefill, copies
def prefill(net_dir: str, count: int, subnet: str, prefix: str) -> list:
    """Reservations as host-local writes them: file <ip> holding "id\\r\\nifname"; returns the IDs."""
    os.makedirs(net_dir, exist_ok=True)
    net = ipaddress.ip_network(subnet)
    if net.version != 4 or count > net.num_addresses - 4:
        raise SystemExit(f"bench: {count} reservations do not fit in {subnet}")
    base = int(net.network_address) + 2  # .1 is the gateway
    ids = []
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    dfd = os.open(net_dir, os.O_RDONLY | os.O_DIRECTORY)
    last = None
    try:
        for i in range(count):
            a = base + i
            last = f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}"
            cid = f"{prefix}{i:06d}"
            fd = os.open(last, flags, 0o600, dir_fd=dfd)
            os.write(fd, f"{cid}\r\neth0".encode())
            os.close(fd)
            ids.append(cid)
    finally:
        os.close(dfd)
    if last:
        with open(os.path.join(net_dir, "last_reserved_ip.0"), "w") as fh:
            fh.write(last)
    return ids


class Template:
    """A prefilled data directory (one network, host-local's format), copied for each measurement with
    ``cp -a``: a real copy.  A hard-link farm would be faster but is not a copy for cni-ipam: its
    index identifies a file by (inode, ctime), and linking or unlinking another copy's names changes
    the shared inodes' ctime (tried: every call after a host-local write then re-read all 60,000
    files, 75 s instead of 0.5 s).  After a copy the file system is synced, so the measured call does
    not pay for the copy's writeback (an fsync commits the whole ext4 journal)."""

    def __init__(self, path: str, network: str, count: int, subnet: str, prefix: str) -> None:
        self.path, self.network = path, network
        self.ids = prefill(os.path.join(path, network), count, subnet, prefix)

    def clone(self, dest: str) -> str:
        if os.path.exists(dest):
            raise SystemExit(f"bench: {dest} exists")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        subprocess.run(["cp", "-a", self.path, dest], check=True)
        os.sync()
        return dest

    def take(self, dest: str) -> str:
        """The template itself, moved to ``dest`` (no copy; the template is gone afterwards)."""
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.rename(self.path, dest)
        self.path = None
        return dest


def count_reserved(net_dir: str) -> int:
    return sum(1 for n in os.listdir(net_dir) if n[0].isdigit() and not n.startswith("last_"))


def on_disk(net_dir: str) -> dict:
    """{ip: container id} of the reservation files in a network directory."""
    out = {}
    for n in os.listdir(net_dir):
        if n[0].isdigit() and not n.startswith("last_"):
            with open(os.path.join(net_dir, n), "rb") as fh:
                out[n] = fh.read().split(b"\r\n", 1)[0].decode("utf-8", "replace").strip()
    return out
