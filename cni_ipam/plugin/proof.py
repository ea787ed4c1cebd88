"""Which reservations are *provably* stranded?  The decision of the exhaustion heal (stdlib only).

ADD calls this, under the network lock, when a range set is full; ``cni-ipam gc`` applies the same
two proofs (through ``liveness``) before anything else.  Only an authority counts here: the kernel
(its boot id, its namespace ids).  No grace period, no clock, no "we did not see a holder": a
walk of /proc can only show that it did not see one, and Linux has holders no walk can enumerate
(docs/gc.md lists them), so no scan is a proof and this module runs none.

API::

    from cni_ipam.plugin.proof import provably_stranded
    found = provably_stranded(entries, boot_id)
    # entries: {index key: owner-index entry} or an iterable of (key, entry).  An entry is the dict
    #   the store keeps per (containerID, ifname): {"containerID", "ifname", "ips", "meta": {...},
    #   "seenBoot": "<boot id under which the index first saw this exact reservation file>"}.
    # boot_id: the running kernel's boot id (store.read_boot_id(): "" when not provably the
    #   kernel's own file); empty disables the boot rule.
    # Returns {key: (reason, detail)} for the provably stranded entries only; every other entry
    #   (malformed, no evidence, namespace alive, kernel cannot answer) is absent: keep it.

The proofs, tried in this order:

``previous-boot``
    ``meta["bootId"]`` (written by our ADD, refreshed by every ADD of the attachment) differs from
    ``boot_id``.  Without a recorded ``bootId`` (a host-local file), ``entry["seenBoot"]`` differs
    from ``boot_id``: the file existed before this kernel booted, and no namespace survives a reboot.
    Both sides must be non-empty: an empty id is one that was not provably the kernel's (a system
    container's fake boot_id), and a disagreement with it proves nothing.  Our own ``bootId`` wins
    over ``seenBoot``.  Boot ids are compared, never clocks.

``netns-gone``
    ``meta`` records the kernel id of every namespace the attachment was added in (``netnsId``,
    ``netnsIno``; ``netnsAlso`` for an attachment added twice) and the kernel answers ``ESTALE``
    for each one's nsfs file handle (``plugin.nsfs``: Linux 6.18; on older kernels, without the
    permission, or without a recorded id, nothing is proven and the entry is kept).
"""

from cni_ipam.plugin import nsfs

PREVIOUS_BOOT = "previous-boot"
NETNS_GONE = "netns-gone"


def _str(value):
    return value if isinstance(value, str) and value else None


def boot_proof(entry, boot_id):
    """(reason, detail) when ``entry`` was provably made under another boot, else None."""
    if not boot_id or not isinstance(entry, dict):
        return None
    meta = entry.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    if "bootId" in meta:
        recorded = _str(meta.get("bootId"))
        if recorded is not None and recorded != boot_id:
            return PREVIOUS_BOOT, "reserved in boot %s, running boot is %s" % (recorded, boot_id)
        return None  # same boot, or recorded where the boot id was not the kernel's: no proof
    seen = _str(entry.get("seenBoot"))
    if seen is not None and seen != boot_id:
        return PREVIOUS_BOOT, "reservation file already present in boot %s, running boot is %s" % (seen, boot_id)
    return None


def netns_proof(entry, kernel):
    """(reason, detail) when the kernel says every namespace ``entry`` was added in is gone, else None."""
    meta = entry.get("meta") if isinstance(entry, dict) else None
    idents = nsfs.recorded(meta)
    if not idents:
        return None
    details = []
    for ns_id, ns_ino in idents:
        state, detail = kernel.state(ns_id, ns_ino)
        if state != nsfs.GONE:
            return None
        details.append(detail)
    where = _str(meta.get("netns")) or "its network namespace"
    return NETNS_GONE, "%s: %s" % (where, "; ".join(details))


def provably_stranded(entries, boot_id, kernel=None):
    """See the module docstring.  ``kernel``: an ``nsfs.Kernel`` (one is made when None)."""
    items = list(entries.items()) if isinstance(entries, dict) else list(entries)
    out = {}
    for key, entry in items:
        proof = boot_proof(entry, boot_id)
        if proof is None:
            if kernel is None:
                kernel = nsfs.Kernel()
            proof = netns_proof(entry, kernel)
        if proof is not None:
            out[key] = proof
    return out
