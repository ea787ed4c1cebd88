#!/usr/bin/env python3
"""Time ``plan --inventory``, ``--propose`` and ``lint --inventory`` on a generated inventory of
1,000 ranges (100 dual-stack clusters: pods, services, nodes; 500 external networks, 10 of them
overlapping a cluster).  Prints the CPU time of each step in process (best of 5) and the wall
clock and CPU time of each whole command (a new interpreter each, best of 3).  CPU time does not
grow with the machine's load; wall time does.  Writes only into a temporary directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def inventory_text() -> str:
    lines = ["clusters:"]
    for i in range(100):
        lines += [
            f"  - name: c{i}",
            "    nodes: 50",
            f"    clusterCIDR: [10.{i}.0.0/16, 'fd00:{i:x}::/56']",
            f"    serviceCIDR: [172.16.{i}.0/24, 'fd01:{i:x}::/112']",
            f"    nodeSubnets: 192.168.{i}.0/24",
        ]
    lines.append("external:")
    for j in range(500):
        cidr = f"10.{j // 50}.128.0/20" if j % 50 == 0 else f"100.{64 + j // 256}.{j % 256}.0/24"
        lines += [f"  - name: e{j}", f"    owner: team{j % 7}", "    kind: other", f"    cidr: {cidr}"]
    return "\n".join(lines) + "\n"


def best(fn, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times)


def main() -> None:
    import ipaddress

    from cni_ipam.admin import inventory, inventory_lint, inventory_plan
    from cni_ipam.plugin.ranges import Range

    with tempfile.TemporaryDirectory(prefix="inventory-timing-") as tmp:
        path = os.path.join(tmp, "inventory.yaml")
        with open(path, "w") as fh:
            fh.write(inventory_text())
        conf = os.path.join(tmp, "pods.conflist")
        ranges = [[{"subnet": f"10.{i}.3.0/24"}] for i in range(100)]
        with open(conf, "w") as fh:
            json.dump(
                {
                    "cniVersion": "1.0.0",
                    "name": "pods",
                    "plugins": [{"type": "bridge", "ipam": {"type": "cni-ipam", "ranges": ranges}}],
                },
                fh,
            )
        inv = inventory.load(path)
        print(f"ranges: {len(inv.claims)}")

        class Rec:
            def __init__(self, subnet: str) -> None:
                self.range = Range.of_subnet(ipaddress.ip_network(subnet))
                self.file, self.key = conf, "ipam"

            def text(self) -> str:
                return str(self.range.subnet)

        recs = [Rec(f"10.{i}.3.0/24") for i in range(100)]
        steps = {
            "parse (YAML + schema)": lambda: inventory.load(path),
            "plan (overlaps + capacity + render)": lambda: inventory_plan.InventoryPlan(inv).render(),
            "propose (dual stack)": lambda: inventory_plan.Proposal(
                inv, "new", 500, 110, [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]
            ).render(),
            "lint check (100 ranges)": lambda: inventory_lint.check(inv, recs, None),
        }
        for name, fn in steps.items():
            print(f"in process  {name:38s} {best(fn) * 1000:8.1f} ms CPU")
        env = dict(os.environ, PYTHONPATH=ROOT)
        commands = {
            "cni-ipam plan --inventory": ["plan", "--inventory", path],
            "cni-ipam plan --inventory --propose": [
                "plan",
                "--inventory",
                path,
                "--propose",
                "new",
                "--nodes",
                "500",
                "--within",
                "10.0.0.0/8",
                "--within",
                "fd00::/8",
            ],
            "cni-ipam lint --no-host --inventory": ["lint", "--no-host", conf, "--inventory", path],
        }
        for name, argv in commands.items():
            walls, cpus = [], []
            for _ in range(3):
                before, t = os.times(), time.perf_counter()
                subprocess.run([sys.executable, "-m", "cni_ipam", *argv], env=env, capture_output=True, check=False)
                after = os.times()
                walls.append(time.perf_counter() - t)
                cpus.append(after.children_user + after.children_system - before.children_user - before.children_system)
            print(f"whole command {name:36s} {min(walls) * 1000:8.1f} ms wall, {min(cpus) * 1000:6.1f} ms CPU")
        print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
