"""``<dataDir>/<network>/.cni-ipam/gc-stats.json``: what the last GC passes did (written by the GC
verb, the ADD heal and ``cni-ipam gc`` under the network lock; read by ``cni-ipam metrics``).
Fields in docs/gc.md.
"""

from __future__ import annotations

import json
import os
import time

from cni_ipam.store.layout import GC_STATS_FILE, META_DIR

def gc_stats_path(data_dir: str, network: str) -> str:
    return os.path.join(data_dir, network, META_DIR, GC_STATS_FILE)


def read_gc_stats(data_dir: str, network: str) -> dict:
    """The last GC pass of a network (see docs/gc.md for the fields), or {} when none ran."""
    try:
        with open(gc_stats_path(data_dir, network), "rb") as fh:
            stats = json.loads(fh.read(1 << 16))
    except (OSError, ValueError):
        return {}
    return stats if isinstance(stats, dict) else {}


def record_gc_stats(data_dir: str, network: str, source: str, apply: bool, counts: dict[str, int],
                    released: int, errors: int, now: float | None = None, log: list[dict] | None = None) -> dict:
    """Merge one pass into gc-stats.json (atomic replace).  Call with the network lock held.
    ``log``: one dict per released reservation, kept in ``releases`` (the last 100)."""
    now = time.time() if now is None else now
    stats = read_gc_stats(data_dir, network)
    stats.update(
        {
            "lastRun": round(now, 3),
            "lastRunSource": source,
            "lastRunApplied": bool(apply),
            "lastRunCounts": {k: int(v) for k, v in counts.items()},
            "lastRunErrors": int(errors),
        }
    )
    if apply:
        stats["lastApply"] = round(now, 3)
        stats["lastReleased"] = int(released)
        stats["releasedTotal"] = int(stats.get("releasedTotal", 0)) + int(released)
    if log:
        previous = stats["releases"] if isinstance(stats.get("releases"), list) else []
        stats["releases"] = (previous + list(log))[-100:]
    path = gc_stats_path(data_dir, network)
    tmp = path + ".tmp"
    try:
        try:
            os.unlink(tmp)  # a leftover, or a planted symlink: never write through it
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            # dumps: the bundle's json stand-in serves it (dump would load the real json, re, enum)
            fh.write(json.dumps(stats, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return stats
