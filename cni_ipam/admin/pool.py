"""``cni-ipam pool show | metrics | release-node NODE | gc``: the cluster-wide view of cluster pools
and the release of blocks whose node is gone.  Admin path: loaded only by the ``pool`` command.

Which pools: every network with an ``ipam.pool`` section in the conf files (``--conf FILE``,
repeatable, or every file of ``--conf-dir``), parsed by the plugin's own parser, so the commands see
what the nodes see; ``--pool NAME`` selects.  The etcd settings come from the same section;
``--endpoints``, ``--ca-file``, ``--cert-file``, ``--key-file``, ``--username``/``--password-file``
override them.  What is read and how it is counted: ``poolview``; what is released and on which
proof: ``poolrelease``.  No clock decides anything.
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
from cni_ipam.store import is_node_name

EXIT_OK, EXIT_FAILED = 0, 1
SHOW_EXIT = {"ok": 0, "warning": 1, "critical": 2, "emergency": 3, output.UNKNOWN_LEVEL: 4}
TEXTFILE_NAME = "cni_ipam_pool.prom"

COMMANDS = {
    "show": "per pool, range set and node: blocks, addresses in use, levels, identity conflicts",
    "metrics": "the show numbers in the Prometheus text format",
    "release-node": "release the blocks of a node that was removed (empty ones always, the rest on Kubernetes' "
                    "word, or on the operator's with --instance ID --gone)",
    "gc": "release the blocks of nodes Kubernetes says are gone, and empty blocks (dry run unless --apply)",
}

NO_CLOCK = ("No timestamp decides anything: a block goes only if it holds no address record, or if Kubernetes "
            "says the node that claimed it is gone.")
OPERATOR = (" With --instance ID --gone, the operator is the authority: the blocks, address records and node "
            "record of that instance go on the operator's statement that it is gone (dry run unless --apply).")


def usage() -> str:
    lines = ["usage: cni-ipam pool <command> [options]", "", "commands:"]
    lines += [f"  {name:<13} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines + ["", "cni-ipam pool <command> --help for the options"])


def _common(p) -> None:
    p.add_argument("--conf", action="append", metavar="FILE",
                   help="a netconf (.conf/.conflist) with an ipam.pool section (repeatable)")
    p.add_argument("--conf-dir", default=conffiles.DEFAULT_CONF_DIR,
                   help="every pool of the conf files here (default %(default)s)")
    p.add_argument("--pool", action="append", metavar="NAME", help="only this pool (repeatable)")
    p.add_argument("--endpoints", type=lambda s: [e.strip() for e in s.split(",") if e.strip()], metavar="URL,...",
                   help="etcd endpoints instead of the conf's")
    p.add_argument("--ca-file", metavar="FILE", help="etcd CA instead of the conf's")
    p.add_argument("--cert-file", metavar="FILE", help="etcd client certificate instead of the conf's")
    p.add_argument("--key-file", metavar="FILE", help="etcd client key instead of the conf's")
    p.add_argument("--username", help="etcd user instead of the conf's (with --password-file)")
    p.add_argument("--password-file", metavar="FILE", help="the etcd user's password (first line)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="etcd timeout per endpoint (default: the conf's)")


def _thresholds(p) -> None:
    for name, default in zip(("warning", "critical", "emergency"), output.DEFAULT_THRESHOLDS):
        p.add_argument(f"--{name}", type=float, default=default, metavar="PERCENT", help="default %(default)g")


def _kube(p, note: str) -> None:
    p.add_argument("--kubeconfig", metavar="FILE",
                   help=f"ask this Kubernetes API server whether nodes are gone ({note})")
    p.add_argument("--in-cluster", nargs="?", const=True, metavar="SA_DIR",
                   help=f"use the pod's service account (default {rel.DEFAULT_SA_DIR})")
    p.add_argument("--kube-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="per request (default %(default)g)")


def make_parser(command: str):
    text = COMMANDS[command] + "." + (" " + NO_CLOCK if command in ("release-node", "gc") else "")
    if command == "release-node":
        text += OPERATOR
    p = options.make_parser(f"pool {command}", text)
    _common(p)
    if command != "metrics":
        p.add_argument("--json", action="store_true", help="JSON for tools")
    if command in ("show", "metrics"):
        _thresholds(p)
    if command == "show":
        p.add_argument("--summary", action="store_true", help="pools only, no per-node rows")
    elif command == "metrics":
        p.add_argument("--textfile-dir", metavar="DIR",
                       help=f"write <DIR>/{TEXTFILE_NAME} atomically (the directory must exist)")
    elif command == "release-node":
        _kube(p, "optional; without it only blocks holding no address record are released")
        p.add_argument("node", metavar="NODE")
        p.add_argument("--dry-run", action="store_true", help="say what would be released, release nothing")
        p.add_argument("--instance", metavar="ID",
                       help="with --gone: release every claim, address record and the node record of this "
                            "instance id of NODE (a machine reinstalled with a wiped data directory is refused "
                            "under its name while nodes/NODE holds its former instance; the refusal names the id)")
        p.add_argument("--gone", action="store_true",
                       help="with --instance: YOU state that this instance is gone (the machine was reinstalled, "
                            "replaced or destroyed). You are the authority here: no Kubernetes or etcd check can "
                            "prove it; the command only checks that the id is the one in the records. Releasing "
                            "an instance that still runs hands its pods' addresses to other pods")
        p.add_argument("--apply", action="store_true",
                       help="with --instance ID --gone: really release (a dry run without it)")
    else:
        _kube(p, "default $KUBECONFIG or ~/.kube/config when it exists; without one only empty blocks are released")
        p.add_argument("--apply", action="store_true", help="really release")
        p.add_argument("--force", action="store_true",
                       help="release even when Kubernetes knows none of the pool's nodes "
                            "(a wrong cluster looks like that)")
    return p


def main(argv: list) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else options.EXIT_USAGE
    command = argv[0]
    if command not in COMMANDS:
        print(f"cni-ipam pool: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return options.EXIT_USAGE
    try:
        args = make_parser(command).parse_args(argv[1:])
        thresholds = _thresholds_of(args) if command in ("show", "metrics") else None
        if command == "release-node" and not is_node_name(args.node):
            raise options.UsageError(f"cni-ipam pool release-node: {args.node!r} is not a Kubernetes node name")
        if command == "release-node":
            _check_instance_options(args)
        if args.timeout is not None and not args.timeout > 0:
            raise options.UsageError(f"cni-ipam pool {command}: --timeout must be positive")
    except options.UsageError as exc:
        print(exc, file=sys.stderr)
        return options.EXIT_USAGE
    targets, problems = poolconf.load_pools(args.conf, args.conf_dir, args.pool)
    for problem in problems:
        print(f"cni-ipam pool {command}: {problem}", file=sys.stderr)
    if not targets:
        print(f"cni-ipam pool {command}: no pool found (give --conf FILE or --conf-dir)", file=sys.stderr)
        return SHOW_EXIT[output.UNKNOWN_LEVEL] if command == "show" else EXIT_FAILED
    if command == "show":
        return cmd_show(args, targets, thresholds)
    if command == "metrics":
        return cmd_metrics(args, targets, thresholds)
    if command == "release-node" and args.instance:
        return cmd_release_instance(args, targets)
    try:
        kube = rel.kube_for(args, default_kubeconfig=command == "gc")
    except poolconf.AdminError as exc:
        print(f"cni-ipam pool {command}: {exc}", file=sys.stderr)
        return options.EXIT_USAGE
    try:
        return cmd_release_node(args, targets, kube) if command == "release-node" else cmd_gc(args, targets, kube)
    finally:
        if kube is not None:
            kube.close()


def _thresholds_of(args) -> tuple:
    t = (args.warning, args.critical, args.emergency)
    if not (0 <= t[0] <= t[1] <= t[2] <= 100):
        raise options.UsageError("thresholds must satisfy 0 <= --warning <= --critical <= --emergency <= 100")
    return t


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


def cmd_release_node(args, targets, kube) -> int:
    rc, results = EXIT_OK, []
    for target in targets:
        try:
            client = poolconf.etcd_client(target, args)
            try:
                snap = view.read_snapshot(client, target)
                plan = rel.plan_node(snap, args.node, kube)
                res = rel.apply_plan(client, target, plan, apply=not args.dry_run)
            finally:
                client.close()
        except Exception as exc:  # etcd down or refusing, garbage from an endpoint: this pool only
            print(f"cni-ipam pool release-node: pool {target.name}: {poolconf.error_text(exc)}", file=sys.stderr)
            results.append({"pool": target.name, "error": poolconf.error_text(exc)})
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
        raise options.UsageError("cni-ipam pool release-node: --instance ID and --gone go together: the operator "
                                 "states that this instance of the node is gone")
    if args.instance and (args.kubeconfig or args.in_cluster):
        raise options.UsageError("cni-ipam pool release-node: --instance ID --gone is the operator's statement; "
                                 "it asks no Kubernetes API (drop --kubeconfig/--in-cluster)")
    if args.apply and not args.instance:
        raise options.UsageError("cni-ipam pool release-node: --apply goes with --instance ID --gone "
                                 "(release-node NODE releases unless --dry-run)")
    if args.apply and args.dry_run:
        raise options.UsageError("cni-ipam pool release-node: --apply and --dry-run contradict each other")
    if args.instance and (len(args.instance) > 128 or not args.instance.isprintable() or " " in args.instance):
        raise options.UsageError(f"cni-ipam pool release-node: {args.instance!r} is not an instance id")


def cmd_release_instance(args, targets) -> int:
    """(c): the operator states that instance ``--instance`` of NODE is gone; dry run unless --apply."""
    from cni_ipam.cluster import keys

    rc, results = EXIT_OK, []
    apply = bool(args.apply)
    for target in targets:
        try:
            client = poolconf.etcd_client(target, args)
            try:
                got = client.get(keys.node_key(target.prefix, target.name, args.node))
                node_value = got[0] if got is not None else None
                snap = view.read_snapshot(client, target)
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
            finally:
                client.close()
        except Exception as exc:  # etcd down or refusing, garbage from an endpoint: this pool only
            print(f"cni-ipam pool release-node: pool {target.name}: {poolconf.error_text(exc)}", file=sys.stderr)
            results.append({"pool": target.name, "error": poolconf.error_text(exc)})
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
    for target in targets:
        try:
            client = poolconf.etcd_client(target, args)
            try:
                snap = view.read_snapshot(client, target)
                plan, undecided, refuse = gc_plan(snap, kube)
                if refuse and not args.force:
                    plan = [(c, "keep" if a == "records" else a, w) for c, a, w in plan]
                res = rel.apply_plan(client, target, plan, apply=args.apply)
            finally:
                client.close()
        except Exception as exc:  # etcd down or refusing, garbage from an endpoint: this pool only
            print(f"cni-ipam pool gc: pool {target.name}: {poolconf.error_text(exc)}", file=sys.stderr)
            doc.append({"pool": target.name, "error": poolconf.error_text(exc)})
            rc = EXIT_FAILED
            continue
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
