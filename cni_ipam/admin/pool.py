"""``cni-ipam pool show | metrics | release-node NODE | gc``: the cluster-wide view of cluster pools
and the release of blocks whose node is gone.  Admin path: loaded only by the ``pool`` command.

Which pools: every network with an ``ipam.pool`` section in the conf files (``--conf FILE``,
repeatable, or every file of ``--conf-dir``), parsed by the plugin's own parser, so the commands see
what the nodes see; ``--pool NAME`` selects.  The etcd settings come from the same section;
``--endpoints``, ``--ca-file``, ``--cert-file``, ``--key-file``, ``--username``/``--password-file``
override them.  What is read and how it is counted: ``poolread`` and ``poolview``; what is
released and on which proof: ``poolrelease``.  No clock decides anything.
"""

from __future__ import annotations

import json
import os
import sys
import time

from cni_ipam.admin import options, output
from cni_ipam.admin import conffiles, poolconf
from cni_ipam.admin import poolrelease as rel
from cni_ipam.admin import poolview as view
from cni_ipam.admin.poolread import read_snapshot
from cni_ipam.store import is_node_name

EXIT_OK, EXIT_FAILED = 0, 1
SHOW_EXIT = {"ok": 0, "warning": 1, "critical": 2, "emergency": 3, output.UNKNOWN_LEVEL: 4}
TEXTFILE_NAME = "cni_ipam_pool.prom"

NO_CLOCK = ("No timestamp decides anything: a block goes only if it holds no address record, or if Kubernetes "
            "says the node that claimed it is gone.")
OPERATOR = (" With --instance ID --gone, the operator is the authority: the blocks, address records and node "
            "record of that instance go on the operator's statement that it is gone (dry run unless --apply).")


class PoolCommand(options.Command):
    """What the pool subcommands share: which pools (the conf files) and how to reach their etcd.
    No pool found is this command's missing input (``no_input_exit``)."""

    sub = ""
    summary = ""
    no_input_exit = EXIT_FAILED
    json_option = True  # --json
    threshold_options = False  # --warning, --critical, --emergency

    def __init__(self) -> None:
        self.name = f"pool {self.sub}"
        self.description = self.summary + "."

    def add_options(self, parser: options.Parser) -> None:
        parser.add_argument("--conf", action="append", metavar="FILE",
                            help="a netconf (.conf/.conflist) with an ipam.pool section (repeatable)")
        parser.add_argument("--conf-dir", default=conffiles.DEFAULT_CONF_DIR,
                            help="every pool of the conf files here (default %(default)s)")
        parser.add_argument("--pool", action="append", metavar="NAME", help="only this pool (repeatable)")
        parser.add_argument("--endpoints", type=lambda s: [e.strip() for e in s.split(",") if e.strip()],
                            metavar="URL,...", help="etcd endpoints instead of the conf's")
        parser.add_argument("--ca-file", metavar="FILE", help="etcd CA instead of the conf's")
        parser.add_argument("--cert-file", metavar="FILE", help="etcd client certificate instead of the conf's")
        parser.add_argument("--key-file", metavar="FILE", help="etcd client key instead of the conf's")
        parser.add_argument("--username", help="etcd user instead of the conf's (with --password-file)")
        parser.add_argument("--password-file", metavar="FILE", help="the etcd user's password (first line)")
        parser.add_argument("--timeout", type=float, metavar="SECONDS",
                            help="etcd timeout per endpoint (default: the conf's)")
        if self.json_option:
            parser.add_argument("--json", action="store_true", help="JSON for tools")
        if self.threshold_options:
            for name, default in zip(("warning", "critical", "emergency"), output.DEFAULT_THRESHOLDS):
                parser.add_argument(f"--{name}", type=float, default=default, metavar="PERCENT",
                                    help="default %(default)g")

    def check_args(self, args) -> None:
        if self.threshold_options:
            args.thresholds = (args.warning, args.critical, args.emergency)
            if not (0 <= args.warning <= args.critical <= args.emergency <= 100):
                raise options.UsageError(
                    "thresholds must satisfy 0 <= --warning <= --critical <= --emergency <= 100"
                )
        if args.timeout is not None and not args.timeout > 0:
            raise options.UsageError("--timeout must be positive")

    def input_problem(self, args) -> str | None:
        args.targets, problems = poolconf.load_pools(args.conf, args.conf_dir, args.pool)
        for problem in problems:
            print(f"cni-ipam {self.name}: {problem}", file=sys.stderr)
        return None if args.targets else "no pool found (give --conf FILE or --conf-dir)"

    def with_kube(self, args, default_kubeconfig: bool, work) -> int:
        """``work(args, targets, kube)`` with the Kubernetes client of --kubeconfig/--in-cluster (None
        without one), closed after; a usage error when it cannot be made."""
        try:
            kube = rel.kube_for(args, default_kubeconfig)
        except poolconf.AdminError as exc:
            raise options.UsageError(str(exc)) from None
        try:
            return work(args, args.targets, kube)
        finally:
            if kube is not None:
                kube.close()


def _add_kube(parser: options.Parser, note: str) -> None:
    parser.add_argument("--kubeconfig", metavar="FILE",
                        help=f"ask this Kubernetes API server whether nodes are gone ({note})")
    parser.add_argument("--in-cluster", nargs="?", const=True, metavar="SA_DIR",
                        help=f"use the pod's service account (default {rel.DEFAULT_SA_DIR})")
    parser.add_argument("--kube-timeout", type=float, default=5.0, metavar="SECONDS",
                        help="per request (default %(default)g)")


class PoolShow(PoolCommand):
    sub = "show"
    summary = "per pool, range set and node: blocks, addresses in use, levels, identity conflicts"
    no_input_exit = SHOW_EXIT[output.UNKNOWN_LEVEL]
    threshold_options = True

    def add_options(self, parser: options.Parser) -> None:
        super().add_options(parser)
        parser.add_argument("--summary", action="store_true", help="pools only, no per-node rows")

    def run(self, args) -> int:
        return cmd_show(args, args.targets, args.thresholds)


class PoolMetrics(PoolCommand):
    sub = "metrics"
    summary = "the show numbers in the Prometheus text format"
    json_option = False
    threshold_options = True

    def add_options(self, parser: options.Parser) -> None:
        super().add_options(parser)
        parser.add_argument("--textfile-dir", metavar="DIR",
                            help=f"write <DIR>/{TEXTFILE_NAME} atomically (the directory must exist)")

    def run(self, args) -> int:
        return cmd_metrics(args, args.targets, args.thresholds)


class PoolReleaseNode(PoolCommand):
    sub = "release-node"
    summary = ("release the blocks of a node that was removed (empty ones always, the rest on Kubernetes' "
               "word, or on the operator's with --instance ID --gone)")

    def __init__(self) -> None:
        super().__init__()
        self.description += " " + NO_CLOCK + OPERATOR

    def add_options(self, parser: options.Parser) -> None:
        super().add_options(parser)
        _add_kube(parser, "optional; without it only blocks holding no address record are released")
        parser.add_argument("node", metavar="NODE", help="the node's name (as Kubernetes and its blocks know it)")
        parser.add_argument("--dry-run", action="store_true", help="say what would be released, release nothing")
        parser.add_argument("--instance", metavar="ID",
                            help="with --gone: release every claim, address record and the node record of this "
                                 "instance id of NODE (a machine reinstalled with a wiped data directory is refused "
                                 "under its name while nodes/NODE holds its former instance; the refusal names the "
                                 "id)")
        parser.add_argument("--gone", action="store_true",
                            help="with --instance: YOU state that this instance is gone (the machine was "
                                 "reinstalled, replaced or destroyed). You are the authority here: no Kubernetes or "
                                 "etcd check can prove it; the command only checks that the id is the one in the "
                                 "records. Releasing an instance that still runs hands its pods' addresses to other "
                                 "pods")
        parser.add_argument("--apply", action="store_true",
                            help="with --instance ID --gone: really release (a dry run without it)")

    def check_args(self, args) -> None:
        if not is_node_name(args.node):
            raise options.UsageError(f"{args.node!r} is not a Kubernetes node name")
        _check_instance_options(args)
        super().check_args(args)

    def run(self, args) -> int:
        if args.instance:
            return cmd_release_instance(args, args.targets)
        return self.with_kube(args, False, cmd_release_node)


class PoolGc(PoolCommand):
    sub = "gc"
    summary = "release the blocks of nodes Kubernetes says are gone, and empty blocks (dry run unless --apply)"

    def __init__(self) -> None:
        super().__init__()
        self.description += " " + NO_CLOCK

    def add_options(self, parser: options.Parser) -> None:
        super().add_options(parser)
        _add_kube(parser, "default $KUBECONFIG or ~/.kube/config when it exists; without one only empty blocks "
                          "are released")
        parser.add_argument("--apply", action="store_true", help="really release")
        parser.add_argument("--force", action="store_true",
                            help="release even when Kubernetes knows none of the pool's nodes "
                                 "(a wrong cluster looks like that)")

    def run(self, args) -> int:
        return self.with_kube(args, True, cmd_gc)


class Pool(options.CommandGroup):
    name = "pool"
    subcommands = {c.sub: (c, c.summary) for c in (PoolShow, PoolMetrics, PoolReleaseNode, PoolGc)}


def main(argv: list) -> int:
    return Pool().main(argv)


# ------------------------------------------------------------------------------------ show, metrics
def cmd_show(args, targets, thresholds) -> int:
    views = view.collect(targets, args, thresholds)
    level = "ok"
    for v in views:
        level = output.worse(level, v.level)
    if args.json:
        print(json.dumps({"thresholds": dict(zip(output.LEVELS[1:], thresholds)), "level": level,
                          "pools": [v.to_json(not args.summary) for v in views]}, indent=2))
    else:
        print(view.render(views, with_nodes=not args.summary))
    if any(v.error or v.errors for v in views):
        return SHOW_EXIT[output.UNKNOWN_LEVEL]
    return SHOW_EXIT[level]


def cmd_metrics(args, targets, thresholds) -> int:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        print("cni-ipam pool metrics: needs prometheus-client, a dependency of cni-ipam", file=sys.stderr)
        return EXIT_FAILED
    views = view.collect(targets, args, thresholds)
    data = view.exposition(views, time.time())
    if args.textfile_dir:
        from cni_ipam.store import fs as safefs  # O_EXCL|O_NOFOLLOW temporary file, 0644, one rename

        try:
            fd = safefs.open_dir(args.textfile_dir, follow=True)  # the operator named it; it may be a link
            try:
                safefs.write_atomic(fd, TEXTFILE_NAME, data, 0o644)
            finally:
                os.close(fd)
        except OSError as exc:
            print(f"cni-ipam pool metrics: --textfile-dir {args.textfile_dir}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAILED
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    for v in views:
        if v.error:
            print(f"cni-ipam pool metrics: {v.target.name}: {v.error}", file=sys.stderr)
    return EXIT_FAILED if any(v.error for v in views) else EXIT_OK


# ------------------------------------------------------------------------------------ releasing
def _print_result(res: dict, label: str) -> None:
    pool = res["pool"]
    quiet = [b for b in res["blocks"] if b["action"] == "in use"]
    if quiet:
        nodes = len({b["node"] for b in quiet})
        print(f"pool {pool}: kept {len(quiet)} block(s) of {nodes} node(s) in use or alive (--json lists them)")
    for b in res["blocks"]:
        if b["action"] == "in use":
            continue
        what = _action_text(b["action"], res["applied"])
        print(f"pool {pool}: {label}{b['node'] or '?'}: {b['cidr']}: {what} ({b['why']})")
    if not res["applied"]:
        return
    if res["released"]:
        print(f"pool {pool}: released {len(res['released'])} block(s): {', '.join(res['released'])}"
              + (f"; {res['recordsDeleted']} address record(s) deleted" if res["recordsDeleted"] else ""))
    if res["changed"]:
        print(f"pool {pool}: kept {len(res['changed'])} block(s) whose claim changed meanwhile: "
              + ", ".join(res["changed"]))
    if res["alive"]:
        print(f"pool {pool}: kept {', '.join(res['alive'])}: an address record was written under the claim "
              "while releasing: the node is ALIVE", file=sys.stderr)


def _action_text(action: str, applied: bool) -> str:
    if action == "keep":
        return "kept"
    what = "release" if action == "empty" else "release with its address records"
    return what if applied else f"would {what}"


def _failed(res: dict, undecided: bool) -> bool:
    return bool(res["changed"] or res["alive"] or undecided)


def _each_pool(command: str, args, targets, work):
    """``work(client, target)`` for each pool, on a client of its etcd that is closed after; yields
    (target, what work returned, None), or (target, None, the error document) for a pool that failed
    (etcd down or refusing, garbage from an endpoint: that pool only), whose error is printed."""
    for target in targets:
        try:
            client = poolconf.etcd_client(target, args)
            try:
                done = work(client, target)
            finally:
                client.close()
        except Exception as exc:
            text = poolconf.error_text(exc)
            print(f"cni-ipam pool {command}: pool {target.name}: {text}", file=sys.stderr)
            yield target, None, {"pool": target.name, "error": text}
            continue
        yield target, done, None


def cmd_release_node(args, targets, kube) -> int:
    def work(client, target):
        plan = rel.plan_node(read_snapshot(client, target), args.node, kube)
        return rel.apply_plan(client, target, plan, apply=not args.dry_run)

    rc, results = EXIT_OK, []
    for target, res, error in _each_pool("release-node", args, targets, work):
        if error:
            results.append(error)
            rc = EXIT_FAILED
            continue
        res["node"] = args.node
        results.append(res)
        if not args.json:
            if not res["blocks"]:
                print(f"pool {target.name}: node {args.node} holds no block")
            _print_result(res, "node ")
        if _failed(res, bool(res["kept"])):
            rc = EXIT_FAILED
    if args.json:
        print(json.dumps({"node": args.node, "kubernetes": kube is not None, "results": results}, indent=2))
    return rc


def _check_instance_options(args) -> None:
    if bool(args.instance) != bool(args.gone):
        raise options.UsageError("--instance ID and --gone go together: the operator states that this instance "
                                 "of the node is gone")
    if args.instance and (args.kubeconfig or args.in_cluster):
        raise options.UsageError("--instance ID --gone is the operator's statement; it asks no Kubernetes API "
                                 "(drop --kubeconfig/--in-cluster)")
    if args.apply and not args.instance:
        raise options.UsageError("--apply goes with --instance ID --gone (release-node NODE releases unless "
                                 "--dry-run)")
    if args.apply and args.dry_run:
        raise options.UsageError("--apply and --dry-run contradict each other")
    if args.instance and (len(args.instance) > 128 or not args.instance.isprintable() or " " in args.instance):
        raise options.UsageError(f"{args.instance!r} is not an instance id")


def cmd_release_instance(args, targets) -> int:
    """(c): the operator states that instance ``--instance`` of NODE is gone; dry run unless --apply."""
    from cni_ipam.cluster import keys

    apply = bool(args.apply)

    def work(client, target):
        got = client.get(keys.node_key(target.prefix, target.name, args.node))
        node_value = got[0] if got is not None else None
        snap = read_snapshot(client, target)
        plan, refusal = rel.plan_instance(snap, args.node, args.instance, node_value)
        res = rel.apply_plan(client, target, plan, apply=apply and not refusal)
        res["nodeRecord"] = "absent" if node_value is None else ("kept" if refusal else "would delete")
        if refusal:
            res["refused"] = refusal
        elif apply and node_value is not None:
            if res["changed"] or res["alive"] or res["kept"]:
                res["nodeRecord"] = "kept"
            else:
                done = rel.release_node_record(client, target, args.node, node_value)
                res["nodeRecord"] = "deleted" if done else "changed"
        return res

    rc, results = EXIT_OK, []
    for target, res, error in _each_pool("release-node", args, targets, work):
        if error:
            results.append(error)
            rc = EXIT_FAILED
            continue
        res["node"], res["instance"] = args.node, args.instance
        results.append(res)
        if res.get("refused"):
            print(f"cni-ipam pool release-node: pool {target.name}: {res['refused']}", file=sys.stderr)
            rc = EXIT_FAILED
        elif not args.json:
            if not res["blocks"]:
                print(f"pool {target.name}: instance {args.instance} of node {args.node} holds no block")
            _print_result(res, "node ")
            verb = {"would delete": "would delete" if not apply else "deleted", "deleted": "deleted",
                    "kept": "kept", "changed": "kept (it changed meanwhile)", "absent": None}[res["nodeRecord"]]
            if verb:
                print(f"pool {target.name}: nodes/{args.node} (instance {args.instance}): {verb}")
        if _failed(res, bool(res["kept"])) or res["nodeRecord"] in ("kept", "changed"):
            rc = EXIT_FAILED
    if args.json:
        print(json.dumps({"node": args.node, "instance": args.instance, "applied": apply, "results": results},
                         indent=2))
    elif not apply:
        print("dry run: nothing released (use --apply)")
    return rc


def gc_plan(snap, kube) -> tuple[list, bool, bool]:
    """(plan, undecided, refuse): the pool's claims with their actions; ``undecided`` when a claim
    was kept for lack of evidence; ``refuse`` when Kubernetes knows none of the claiming nodes."""
    plan, undecided, exists = [], False, False
    for claim in sorted(snap.claims.values(), key=lambda c: (c.node, c.version, c.first)):
        used = snap.count(claim.version, claim.first, claim.last)
        if kube is None or not claim.node or not is_node_name(claim.node):
            why = "no Kubernetes access" if kube is None else "the claim names no Kubernetes node"
            plan.append((claim, "empty" if not used else "in use",
                         f"holds no address record ({why})" if not used else f"holds {used} address record(s) ({why})"))
            continue
        verdict, why = rel.judge(snap, claim, kube)
        exists = exists or verdict == rel.EXISTS
        if verdict == rel.GONE:
            plan.append((claim, "records", why))
        elif verdict == rel.EXISTS:
            plan.append((claim, "in use", why))  # a live node's blocks are its own business
        else:
            plan.append((claim, "keep", why))
            undecided = True
    refuse = kube is not None and not exists and any(a == "records" for _, a, _ in plan)
    return plan, undecided, refuse


def cmd_gc(args, targets, kube) -> int:
    rc, doc = EXIT_OK, []
    if kube is None and not args.json:
        print("cni-ipam pool gc: no Kubernetes access (--kubeconfig, --in-cluster, $KUBECONFIG, ~/.kube/config): "
              "only blocks that hold no address record are released")

    def work(client, target):
        plan, undecided, refuse = gc_plan(read_snapshot(client, target), kube)
        if refuse and not args.force:
            plan = [(c, "keep" if a == "records" else a, w) for c, a, w in plan]
        return rel.apply_plan(client, target, plan, apply=args.apply), undecided, refuse

    for target, done, error in _each_pool("gc", args, targets, work):
        if error:
            doc.append(error)
            rc = EXIT_FAILED
            continue
        res, undecided, refuse = done
        if refuse and not args.force:
            res["refused"] = (f"pool {target.name}: Kubernetes knows none of the pool's claiming nodes: no block "
                              "with address records released (wrong kubeconfig or cluster? --force overrides)")
            print(res["refused"], file=sys.stderr)
            rc = EXIT_FAILED
        doc.append(res)
        if not args.json:
            _print_result(res, "node ")
        if _failed(res, undecided):
            rc = EXIT_FAILED
    if args.json:
        print(json.dumps({"applied": args.apply, "kubernetes": kube is not None, "pools": doc}, indent=2))
    elif not args.apply:
        print("dry run: nothing released (use --apply)")
    return rc
