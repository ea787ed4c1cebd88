"""The exhaustion heal: an ADD that finds a range set full first releases the reservations that are
*provably* stranded, under the network lock it already holds, then tries the set again.

Only an authority's proof counts (``cni_ipam.plugin.proof.provably_stranded``): the reservation was
made under a previous boot id (our ``bootId``, else the ``seenBoot`` the owner index recorded for
that exact file; both provably the kernel's), or the kernel says that every network namespace the
attachment was added in no longer exists (nsfs file handles, Linux 6.18).  No /proc walk, no grace
period, no clock, no unknown owner: an entry without such proof is kept.  The work under the lock is
one bounded kernel call per owner entry, whatever runs on the node (no walk of every process's fds).
A reservation is released only while its file is still the very file the index describes: its
owner is read again right before the unlink, and its identity (inode, ctime, generation) must be
the one recorded.  Every release is logged in ``.cni-ipam/gc-stats.json`` (source ``add-heal``;
``releases`` lists each one, ``releasedTotal`` counts them for the metrics).

Loaded only on that path (``ipam.reclaimOnExhaustion``, default true).
"""

from __future__ import annotations

import time

from cni_ipam.store.layout import OWNED, parse_ip_name, read_reservation
from cni_ipam.store.network import NetworkStore



def reclaim_stranded(store: NetworkStore, kernel=None) -> list[dict]:
    """Release every provably stranded reservation of the open (locked) store; returns the log.
    ``kernel``: an ``nsfs.Kernel`` (tests pass one that answers from a table)."""
    from cni_ipam.plugin.proof import provably_stranded

    entries = store.meta_owner_entries()
    found = provably_stranded(entries, store.boot_id, kernel)
    log: list[dict] = []
    now = time.time()
    for key in sorted(found):
        reason, detail = found[key]
        entry = entries[key]
        for ip in entry["ips"]:
            res = read_reservation(store.dir_fd, ip, parse_ip_name(ip), store.path)
            if (
                res is None
                or res.kind != OWNED
                or (res.container_id, res.ifname) != (entry["containerID"], entry["ifname"])
                or res.ident is None
                or res.ident[0] != entry["files"][ip][0]  # (the index was brought up to date at open)
            ):
                continue  # not the file the proof is about: keep it
            if store.release_reservation(res):
                log.append({"time": round(now, 3), "source": "add-heal", "ip": ip, "containerID": res.container_id,
                            "ifname": res.ifname, "reason": reason, "detail": detail})
    if found:
        from cni_ipam.store.gcstats import record_gc_stats

        record_gc_stats(store.data_dir, store.network, "add-heal", True,
                        {"stranded": len(found)}, len(log), 0, now, log)
    return log
