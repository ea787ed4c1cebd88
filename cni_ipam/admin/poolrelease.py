"""Releasing blocks of cluster pools: ``cni-ipam pool release-node NODE`` and ``pool gc``.

A block is released only on proof, never on a timestamp:

(a) it holds no address record: one txn compares the claim's exact value as read
    (``cmp_value``) and that the block's address key range is empty (``cmp_version(first, "=",
    0, range_end=end)``), and deletes the claim.  Safe whoever holds the block: the holder's next
    ADD finds its claim gone and claims another block.
(b) Kubernetes says the node *that claimed* is gone: the claim's ``node`` answers 404 NotFound while
    the claim carries a ``nodeUid``, or the Node exists with another UID and ``nodes/<name>`` no
    longer holds the claiming instance (another machine took the name, or no record is left).
    While ``nodes/<name>`` holds the claiming instance, a new UID proves nothing: ``kubectl delete
    node`` while kubelet runs makes kubelet register again at once with a new UID, the pods bound
    to the name keep running, and the node refreshes its record (and its claims' UID) only when it
    next registers.  The machine that claimed is still the registered one: the claim EXISTS.
    Then the block's address records are deleted in txns that compare the claim and each record's
    value as read (at most 128 compares per txn), and the claim last by (a)'s txn.  A record that
    appears meanwhile under the unchanged claim proves the node alive: the command stops for that
    block.
(c) The operator states that an instance is gone (``release-node NAME --instance ID --gone``: a
    reinstalled machine with a wiped data directory, refused under its own name because
    ``nodes/<name>`` still holds its former instance).  The operator is the authority; the
    command only checks that the instance named is the one in the records.  The instance's
    blocks go as in (b), then its node record under a compare of the value read.

Never released: a claim of a name Kubernetes never knew (404 and no ``nodeUid`` in the claim: the
node could never read its Node object, e.g. an FQDN against a short node name: a misconfiguration,
reported); a claim whose instance id shows under another node name (a renamed node still running);
a node without a clear answer (timeouts, 5xx, 401/403, a 404 that is not a NotFound Status).
"""

from __future__ import annotations

import base64
import os

from cni_ipam.admin.poolconf import AdminError, PoolTarget
from cni_ipam.admin.poolread import Snapshot
from cni_ipam.cluster import keys
from cni_ipam.errors import CniError

DEFAULT_SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TXN_RECORDS = 127  # record compares per txn, with the claim's compare: etcd's --max-txn-ops default is 128

# what happened to one block
RELEASED, IN_USE, CHANGED, ALIVE = "released", "in use", "changed", "alive"
# a claim's verdict
GONE, EXISTS, NEVER_KNOWN, UNCLEAR, ELSEWHERE = "gone", "exists", "never known", "no clear answer", "renamed"


class KubeNodes:
    """Node lookups through the plugin's kubeconfig / in-cluster client (cni_ipam.podcidr.kubeapi):
    ``lookup(name)`` -> ("found", uid), ("absent", "") for a 404 with a NotFound Status, or
    ("unclear", why).  One request per name per run."""

    def __init__(self, kubeconfig: str | None, in_cluster: str | None, timeout: float) -> None:
        import tempfile

        from cni_ipam.podcidr import kubeapi

        self._scratch = tempfile.mkdtemp(prefix="cni-ipam-pool-")
        self.timeout = timeout
        self._cache: dict = {}
        try:
            if in_cluster:
                self.target = kubeapi.in_cluster(in_cluster)
            else:
                self.target = kubeapi.from_kubeconfig(kubeconfig or "", self._scratch)
        except CniError as exc:
            self.close()
            raise AdminError(_plain(exc.msg)) from None

    def lookup(self, node: str) -> tuple[str, str]:
        if node not in self._cache:
            self._cache[node] = self._ask(node)
        return self._cache[node]

    def _ask(self, node: str) -> tuple[str, str]:
        from cni_ipam.podcidr import kubeapi

        try:
            obj = kubeapi.get_node(self.target, node, self.timeout)
        except kubeapi.ApiAnswer as exc:
            return ("absent", "") if exc.node_not_found() else ("unclear", _plain(exc.msg))
        except CniError as exc:
            return "unclear", _plain(exc.msg)
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if not isinstance(meta, dict):
            meta = {}
        uid = meta.get("uid")
        if not isinstance(uid, str) or not uid or meta.get("name") != node:
            return "unclear", f"the API server's answer for node {node} is not a Node object with a uid"
        return "found", uid

    def close(self) -> None:
        import shutil

        shutil.rmtree(self._scratch, ignore_errors=True)


def _plain(msg: str) -> str:
    return msg.replace("usePodCidr: ", "")


def kube_for(args, default_kubeconfig: bool) -> KubeNodes | None:
    """The Kubernetes client the options ask for; None without one (then only (a) applies).  With
    ``default_kubeconfig`` (gc), $KUBECONFIG or ~/.kube/config is used when it exists."""
    if args.in_cluster:
        return KubeNodes(None, DEFAULT_SA_DIR if args.in_cluster is True else args.in_cluster, args.kube_timeout)
    path = args.kubeconfig
    if path is None and default_kubeconfig:
        path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or os.path.expanduser("~/.kube/config")
        if not os.path.exists(path):
            return None
    return KubeNodes(path, None, args.kube_timeout) if path else None


# ------------------------------------------------------------------------------------ verdicts
def instance_elsewhere(snap: Snapshot, claim) -> str:
    """Another node name the claim's instance uses (its node record or its claims), or ""."""
    if not claim.instance:
        return ""
    names = snap.instance_names().get(claim.instance, ())
    return next((n for n in sorted(names) if n != claim.node), "")


def judge(snap: Snapshot, claim, kube: KubeNodes) -> tuple[str, str]:
    """(verdict, why) for releasing a claim with its address records (b)."""
    name, uid = claim.node, claim.record.node_uid if claim.record else ""
    state, detail = kube.lookup(name)
    if state == "unclear":
        return UNCLEAR, detail
    if state == "found" and (not uid or uid == detail):
        return EXISTS, f"the Node exists (uid {detail})"
    if state == "absent" and not uid:
        return NEVER_KNOWN, (f"Kubernetes has no node {name} and the claim has no nodeUid: the name was never a "
                             "Kubernetes node name (does pool.nodeName match the node's name?); not released")
    rec = snap.nodes.get(name)
    if state == "found" and rec is not None and claim.instance and rec.instance == claim.instance:
        return EXISTS, (f"the Node has a new uid {detail} (the claim's {uid}) but nodes/{name} still holds the "
                        f"claiming instance {claim.instance}: the machine that claimed is still the registered one")
    other = instance_elsewhere(snap, claim)
    if other:
        return ELSEWHERE, f"its instance {claim.instance} now runs as node {other}; not released"
    if state == "absent":
        return GONE, f"404 NotFound from the API server (the claim's nodeUid {uid})"
    if rec is None:
        return GONE, f"the Node was re-created: uid {detail}, the claim's {uid}, and nodes/{name} is gone"
    return GONE, (f"the Node was re-created: uid {detail}, the claim's {uid}, and nodes/{name} holds another "
                  f"instance {rec.instance or '?'} (another machine took the name)")


# ------------------------------------------------------------------------------------ transactions
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _read_block(client, target: PoolTarget, claim) -> dict | None:
    """The block's address records {key: value} if the claim is still ``claim.value``, else None."""
    from cni_ipam.cluster.etcd import cmp_value

    start, end = keys.block_addr_range(target.prefix, target.name, claim.cidr)
    bkey = keys.block_key(target.prefix, target.name, claim.cidr)
    ok, responses, _ = client.txn([cmp_value(bkey, "=", claim.value)],
                                  [{"request_range": {"key": _b64(start), "range_end": _b64(end)}}])
    if not ok:
        return None
    return {kv[0]: kv[1] for kv in (responses[0].get("kvs") or ())}


def release_empty(client, target: PoolTarget, claim) -> str:
    """(a): the claim goes only if it is unchanged and the block holds no address record."""
    from cni_ipam.cluster.etcd import cmp_value, cmp_version, op_delete

    start, end = keys.block_addr_range(target.prefix, target.name, claim.cidr)
    bkey = keys.block_key(target.prefix, target.name, claim.cidr)
    empty = cmp_version(start, "=", 0, range_end=end)
    ok, _, _ = client.txn([cmp_value(bkey, "=", claim.value), empty], [op_delete(bkey)])
    if ok:
        return RELEASED
    got = client.get(bkey)
    return CHANGED if got is None or got[0] != claim.value else IN_USE


def release_with_records(client, target: PoolTarget, claim) -> tuple[str, int]:
    """(b): delete the block's address records under compares of the claim and of each value as
    first read, then the claim by (a).  (outcome, records deleted)."""
    from cni_ipam.cluster.etcd import cmp_value, op_delete

    bkey = keys.block_key(target.prefix, target.name, claim.cidr)
    first = _read_block(client, target, claim)
    if first is None:
        return CHANGED, 0
    deleted = 0
    pending = dict(first)
    for _attempt in range(3):
        items = sorted(pending.items())
        failed = False
        for i in range(0, len(items), TXN_RECORDS):
            batch = items[i:i + TXN_RECORDS]
            ok, _, _ = client.txn([cmp_value(bkey, "=", claim.value)] + [cmp_value(k, "=", v) for k, v in batch],
                                  [op_delete(k) for k, _ in batch])
            if ok:
                deleted += len(batch)
                for k, _ in batch:
                    pending.pop(k)
            else:
                failed = True
        if not failed:
            break
        now = _read_block(client, target, claim)
        if now is None:
            return CHANGED, deleted
        if any(first.get(k) != v for k, v in now.items()):
            return ALIVE, deleted  # a record written after the verdict: the node is not gone
        pending = now
    outcome = release_empty(client, target, claim)
    if outcome == IN_USE:
        return ALIVE, deleted  # records appeared under the unchanged claim
    return outcome, deleted


# ------------------------------------------------------------------------------------ plans
def plan_node(snap: Snapshot, node: str, kube: KubeNodes | None) -> list:
    """For release-node: [(claim, action, why)] for every claim of ``node``; action is "empty"
    ((a) only), "records" ((b)) or "keep"."""
    out = []
    for claim in snap.node_claims(node):
        used = snap.count(claim.version, claim.first, claim.last)
        if kube is None:
            out.append((claim, "empty" if not used else "keep",
                        "holds no address record" if not used else
                        f"holds {used} address record(s); without Kubernetes only empty blocks are released"))
            continue
        verdict, why = judge(snap, claim, kube)
        if verdict == GONE:
            out.append((claim, "records", why))
        elif not used:
            out.append((claim, "empty", f"holds no address record ({why})"))
        else:
            out.append((claim, "keep", f"holds {used} address record(s) and {why}"))
    return out


def plan_instance(snap: Snapshot, node: str, instance: str, node_value: bytes | None) -> tuple[list, str]:
    """For ``release-node NODE --instance ID --gone`` (c): (plan, refusal).  The operator states
    that instance ``ID`` of node name ``NODE`` is gone; the plan releases its claims with their
    address records.  ``node_value``: ``nodes/<NODE>`` as read.  Refused (a non-empty reason, empty
    plan) when the instance named is not the one in the records: ``nodes/<NODE>`` holds another
    instance, or neither the node record nor any claim of NODE names it, or it runs under another
    node name (a renamed node, alive)."""
    rec = keys.NodeRecord.parse(node_value) if node_value is not None else None
    claims = [c for c in snap.node_claims(node) if c.instance == instance]
    if node_value is not None and (rec is None or rec.instance != instance):
        who = f"instance {rec.instance or '?'} (host {rec.hostname or '?'})" if rec else "no node record value"
        return [], (f"nodes/{node} holds {who}, not instance {instance}: nothing released "
                    "(`cni-ipam pool show` lists the instances of each node)")
    if node_value is None and not claims:
        return [], f"no node record and no claim of node {node} names instance {instance}: nothing released"
    elsewhere = sorted(n for n in snap.instance_names().get(instance, ()) if n != node)
    if elsewhere:
        return [], (f"instance {instance} also shows as node {', '.join(elsewhere)} (a renamed node, running): "
                    "nothing released")
    why = f"the operator states instance {instance} is gone"
    return [(c, "records", why) for c in claims], ""


def release_node_record(client, target: PoolTarget, node: str, value: bytes) -> bool:
    """Delete ``nodes/<node>`` if it still holds ``value`` (as read): (c)'s last step."""
    from cni_ipam.cluster.etcd import cmp_value, op_delete

    key = keys.node_key(target.prefix, target.name, node)
    ok, _, _ = client.txn([cmp_value(key, "=", value)], [op_delete(key)])
    return bool(ok)


def apply_plan(client, target: PoolTarget, plan: list, apply: bool) -> dict:
    """Run a plan: each entry (claim, action, why) with action "empty" (release by (a)), "records"
    (release by (b)), "keep" (undecided: reported) or "in use" (kept, nothing to report)."""
    res: dict = {"pool": target.name, "applied": apply, "released": [], "kept": [], "changed": [], "alive": [],
                 "recordsDeleted": 0, "blocks": []}
    for claim, action, why in plan:
        res["blocks"].append({"cidr": claim.cidr, "node": claim.node, "action": action, "why": why})
        if action in ("keep", "in use"):
            res["kept"].append(claim.cidr)
            continue
        if not apply:
            continue
        if action == "empty":
            outcome, deleted = release_empty(client, target, claim), 0
        else:
            outcome, deleted = release_with_records(client, target, claim)
        res["recordsDeleted"] += deleted
        lists = {RELEASED: res["released"], CHANGED: res["changed"], IN_USE: res["kept"], ALIVE: res["alive"]}
        lists[outcome].append(claim.cidr)
    return res
