"""Which reservations are *provably* stranded?  The decision of the exhaustion heal (stdlib only).

ADD calls this, under the network lock, when a range set is full; ``cni-ipam gc`` applies the same
two proofs (through ``liveness``) before its heuristics.  Only proof counts here: no grace period, no
"unknown owner", no clock, no path that merely exists or not.

API::

    from cni_ipam.plugin.proof import provably_stranded
    found = provably_stranded(entries, boot_id, proc="/proc")
    # entries: {index key: owner-index entry} or an iterable of (key, entry).  An entry is the dict
    #   the store keeps per (containerID, ifname): {"containerID", "ifname", "ips", "meta": {...},
    #   "seenBoot": "<boot id under which the index first saw this exact reservation file>"}.
    # boot_id: the running kernel's boot id (store.read_boot_id()); empty/None disables the boot rule.
    # Returns {key: (reason, detail)} for the provably stranded entries only; every other entry
    #   (malformed, no evidence, namespace held, scan unsure) is absent: keep it.

The proofs, tried in this order:

``previous-boot``
    ``meta["bootId"]`` (written by our ADD, refreshed by every ADD of the attachment) differs from
    ``boot_id``.  Without a recorded ``bootId`` (a host-local file), ``entry["seenBoot"]`` differs
    from ``boot_id``: the file existed before this kernel booted, and no namespace survives a reboot.
    Our own ``bootId`` wins over ``seenBoot`` (a cni-ipam re-ADD in this boot keeps the old file but
    refreshes ``bootId``).  Boot ids are compared, never clocks.

``netns-gone``
    ``meta`` records the namespace identity (``netnsDev``, ``netnsIno``, integers) and one sure
    ``nsscan`` pass over every task, fd and nsfs mount of the node finds it nowhere.  An unsure scan
    (an unreadable process, not the host PID namespace, ...) proves nothing, and then no entry is
    stranded by this rule; an identity that is not on the nsfs device was never a namespace and
    proves nothing either.  The scan is done once for all entries and only when
    some entry needs it.
"""


PREVIOUS_BOOT = "previous-boot"
NETNS_GONE = "netns-gone"


def _str(value):
    return value if isinstance(value, str) and value else None


def _int(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def boot_proof(entry, boot_id):
    """(reason, detail) when ``entry`` was provably made under another boot, else None."""
    if not boot_id or not isinstance(entry, dict):
        return None
    meta = entry.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    recorded = _str(meta.get("bootId"))
    if recorded is not None:
        if recorded != boot_id:
            return PREVIOUS_BOOT, "reserved in boot %s, running boot is %s" % (recorded, boot_id)
        return None
    seen = _str(entry.get("seenBoot"))
    if seen is not None and seen != boot_id:
        return PREVIOUS_BOOT, "reservation file already present in boot %s, running boot is %s" % (seen, boot_id)
    return None


def netns_identity(entry):
    """The recorded (netnsDev, netnsIno) of an entry, or None."""
    if not isinstance(entry, dict):
        return None
    meta = entry.get("meta")
    if not isinstance(meta, dict):
        return None
    dev, ino = _int(meta.get("netnsDev")), _int(meta.get("netnsIno"))
    return None if dev is None or ino is None else (dev, ino)


def provably_stranded(entries, boot_id, proc="/proc", node_pidns=False):
    """See the module docstring."""
    items = list(entries.items()) if isinstance(entries, dict) else list(entries)
    out = {}
    pending = {}
    for key, entry in items:
        proof = boot_proof(entry, boot_id)
        if proof is not None:
            out[key] = proof
            continue
        ident = netns_identity(entry)
        if ident is not None:
            pending[key] = (ident, _str(entry["meta"].get("netns")) or "its network namespace")
    if not pending:
        return out
    from cni_ipam.plugin import nsscan

    result = nsscan.scan(set(ident for ident, _ in pending.values()), proc, node_pidns)
    for key, (ident, netns) in pending.items():
        if result.gone(ident):
            out[key] = NETNS_GONE, "%s (nsfs %d/%d) is held by no process, fd or mount on this node" % (netns, ident[0], ident[1])
    return out
