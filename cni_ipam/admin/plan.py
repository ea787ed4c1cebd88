"""``cni-ipam plan``: capacity planning from the kube-controller-manager CIDR settings.

Given ``--cluster-cidr`` (once per family for dual stack) and ``--node-mask`` (the
``--node-cidr-mask-size-ipv4/-ipv6`` of kube-controller-manager), with optional ``--service-cidr``,
``--nodes`` and ``--max-pods`` (default 110), per family:

* node subnets: 2^(node mask - cluster mask), less those the service range occupies
  (kube-controller-manager marks them used so no node gets one);
* usable pod addresses per node: the addresses cni-ipam hands out from a node subnet with the
  default range (``usePodCidr``): network address, gateway and (IPv4) broadcast excluded, and the
  last IPv6 address too;
* pods per node (the smaller of that and --max-pods), the cluster's pod capacity, the headroom over
  ``--nodes``.

Dual stack: a node needs a subnet of each family, so the nodes that fit are the smaller count.
Errors: a node mask shorter than the cluster mask, more than 16 bits longer (kube-controller-
manager's cidrset refuses it), too small to allocate from, more nodes than fit, fewer addresses per
node than --max-pods.  Warnings: less than 2x node growth, fewer than 2x --max-pods addresses per node,
a service range overlapping a cluster CIDR.  Exit status: ``options.EXIT_CODES["plan"]`` (0 clean,
1 warnings, 2 errors; 64 usage).  Counts too long to read (an IPv6 /64 holds 2^64-3 addresses) are
printed as powers of two in the table, exactly in ``--json``.

Cluster pools: ``--pool-conf FILE`` (a netconf with ``ipam.pool``, parsed by the plugin's
``netconf.load``) or ``--pool-subnet CIDR --block-size N`` plan a cluster pool instead
(``PoolPlan``): per range set the blocks, usable addresses per block, blocks a node needs for
--max-pods, the nodes that get that many; errors when not one node fits or fewer than --nodes fit
(the plan does not fit: exit 2 in both modes), a warning when a block holds 4x --max-pods.

Inventory: ``--inventory FILE`` plans every cluster of an inventory file at once (overlaps across
clusters and external networks, room per cluster and family, the first constraint to run out), and
with ``--propose NAME --nodes N`` finds free CIDRs for a new cluster (``admin.inventory`` reads the
file, ``admin.inventory_plan`` plans).  The arithmetic all modes share is ``admin.capacity``.
"""

from __future__ import annotations

import json

from cni_ipam.admin import options
from cni_ipam.admin.capacity import (  # noqa: F401 - the names plan has always had
    DEFAULT_MAX_PODS,
    DEFAULT_NODE_MASK,
    EXIT_ERRORS,
    EXIT_OK,
    EXIT_WARNINGS,
    MAX_MASK_DIFF,
    FamilyPlan,
    Plan,
    PlanError,
    PoolPlan,
    PoolSetPlan,
    count_text,
    load_pool,
    occupied_subnets,
    parse_masks,
    pool_set_blocks,
    usable_per_node,
)


# The options of the inventory mode: any of them (or --inventory) selects it.
_INVENTORY_ONLY = ("propose", "within", "growth", "services")


class PlanCommand(options.Command):
    name = "plan"
    description = "Capacity planning for cluster and node CIDRs."

    def add_options(self, parser: options.Parser) -> None:
        options.add_cidr_option(
            parser, "--cluster-cidr", "kube-controller-manager --cluster-cidr (repeat once per family for dual stack)"
        )
        _add_prefix_length_option(
            parser,
            "--node-mask",
            "node CIDR mask size (default ipv4=24, ipv6=64); plain numbers pair with --cluster-cidr in order",
        )
        options.add_cidr_option(
            parser,
            "--service-cidr",
            "the cluster's Service CIDR (kube-apiserver --service-cluster-ip-range): the node subnets it "
            "touches go to no node (repeatable)",
        )
        parser.add_argument("--nodes", type=int, metavar="N", help="nodes the cluster has or will have")
        parser.add_argument(  # None: not given (the inventory mode takes it only with --propose)
            "--max-pods", type=int, metavar="N", help=f"kubelet maxPods (default {DEFAULT_MAX_PODS})"
        )
        parser.add_argument(
            "--pool-conf", metavar="FILE", help="plan a cluster pool: a network config with an ipam.pool section"
        )
        options.add_cidr_option(
            parser, "--pool-subnet", "plan a cluster pool over this subnet (once per family), with --block-size"
        )
        _add_prefix_length_option(
            parser, "--block-size", "pool block prefix length; plain numbers pair with --pool-subnet in order"
        )
        parser.add_argument(
            "--inventory", metavar="FILE", help="plan every cluster of an inventory file (YAML): overlaps, capacity"
        )
        parser.add_argument(
            "--propose", metavar="NAME", help="with --inventory and --nodes: free CIDRs for a new cluster"
        )
        options.add_cidr_option(
            parser, "--within", "--propose: where to look (repeat; per family; default the RFC 1918 blocks)"
        )
        parser.add_argument("--growth", type=float, metavar="X", help="--propose: room for X times --nodes (default 2)")
        parser.add_argument("--services", type=int, metavar="N", help="--propose: services to plan for (default 1000)")
        parser.add_argument("--json", action="store_true", help="JSON for tools")

    def check_args(self, args) -> None:
        """The options of one mode only; the checks that need the plan's numbers are the plan's."""
        args.inventory_mode = args.inventory is not None or any(
            getattr(args, o) not in (None, []) for o in _INVENTORY_ONLY
        )
        if args.inventory_mode:
            _check_inventory_args(args)
        else:
            pooled = args.pool_conf is not None or args.pool_subnet or args.block_size
            if pooled and args.cluster_cidr:
                raise options.UsageError("plan either --cluster-cidr or a pool (--pool-conf / --pool-subnet), not both")
            if not pooled and not args.cluster_cidr:
                raise options.UsageError("give --cluster-cidr, --pool-conf or --pool-subnet")
            for c in args.cluster_cidr:
                if c.prefixlen > c.max_prefixlen - 2:
                    raise options.UsageError(f"--cluster-cidr {c} is too small")
        if args.max_pods is None:
            args.max_pods = DEFAULT_MAX_PODS

    def run(self, args) -> int:
        try:
            plan = _inventory_plan(args) if args.inventory_mode else _plan(args)
        except PlanError as exc:  # the options cannot be a plan (or the file cannot be read): a usage error
            raise options.UsageError(str(exc)) from None
        print(json.dumps(plan.to_json(), indent=2) if args.json else plan.render())
        return plan.exit_code


def _add_prefix_length_option(parser: options.Parser, flag: str, help: str) -> None:
    """A prefix length per family (``--node-mask``, ``--block-size``), read by ``parse_masks``."""
    parser.add_argument(flag, action="append", default=[], metavar="N|ipv4=N|ipv6=N", help=help)


def main(argv: list[str]) -> int:
    return PlanCommand().main(argv)


def _plan(args) -> Plan | PoolPlan:
    if args.cluster_cidr:
        masks = parse_masks(args.node_mask, args.cluster_cidr)
        return Plan(args.cluster_cidr, masks, args.service_cidr, args.nodes, args.max_pods)
    range_sets, block_sizes = load_pool(args.pool_conf, args.pool_subnet, args.block_size)
    return PoolPlan(range_sets, block_sizes, args.nodes, args.max_pods)


def _check_inventory_args(args) -> None:
    """``--inventory FILE`` (with ``--propose NAME --nodes N``): see ``admin.inventory_plan``."""
    if args.inventory is None:
        raise options.UsageError("--propose, --within, --growth and --services go with --inventory FILE")
    cluster_options = ("cluster_cidr", "node_mask", "service_cidr", "pool_conf", "pool_subnet", "block_size")
    if any(getattr(args, o) for o in cluster_options):
        raise options.UsageError(
            "--inventory takes the clusters from the file: no --cluster-cidr/--node-mask/--service-cidr/--pool-*"
        )
    proposing = args.propose is not None
    if not proposing and (
        args.nodes is not None
        or args.max_pods is not None
        or args.within
        or args.growth is not None
        or args.services is not None
    ):
        raise options.UsageError("--nodes, --max-pods, --within, --growth and --services go with --propose NAME")
    if proposing and args.nodes is None:
        raise options.UsageError("--propose needs --nodes N")


def _inventory_plan(args):
    from cni_ipam.admin import inventory, inventory_plan

    try:
        inv = inventory.load(args.inventory)
        if args.propose is None:
            return inventory_plan.InventoryPlan(inv)
        return inventory_plan.Proposal(
            inv,
            args.propose,
            args.nodes,
            args.max_pods,
            args.within,
            inventory_plan.DEFAULT_GROWTH if args.growth is None else args.growth,
            inventory_plan.DEFAULT_SERVICES if args.services is None else args.services,
        )
    except inventory.InventoryError as exc:  # the file names the line
        raise PlanError(str(exc)) from None
