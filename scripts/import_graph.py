#!/usr/bin/env python3
"""Check cni_ipam's import graph: no cycle, and every import points down the layers.

Walks every module's AST and collects every ``import``/``from ... import`` of a cni_ipam module,
lazy ones inside functions included, skipping only imports under ``if TYPE_CHECKING:`` (never run).
Layers, top to bottom (a module may import its own layer or any layer below):

    cni_ipam.__main__  >  admin  >  plugin.verbs, plugin.skel, plugin.netconf  >  cluster
    >  plugin (allocator, ranges, result, ...)  >  podcidr  >  store  >  errors, addr, httpio

The cluster pool's allocation sits between the verbs that call it and the allocator it calls:
netconf parses ``ipam.pool`` with ``cluster.config``, ADD/DEL/GC/STATUS call ``cluster.pool``, and
the pool hands out addresses through ``plugin.allocator`` and ``plugin.ranges``.

Exit 1 and print the offending edges when a cycle or an upward import exists.
Usage: python3 scripts/import_graph.py [--edges]
"""

import ast
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
LAYERS = [  # the first matching prefix gives a module's layer
    ("cni_ipam.__main__", 8), ("cni_ipam.admin", 7),
    ("cni_ipam.plugin.verbs", 6), ("cni_ipam.plugin.skel", 6), ("cni_ipam.plugin.netconf", 6),
    ("cni_ipam.cluster", 5), ("cni_ipam.plugin", 4), ("cni_ipam.podcidr", 3), ("cni_ipam.store", 2),
    ("cni_ipam.errors", 1), ("cni_ipam.addr", 1), ("cni_ipam.httpio", 1), ("cni_ipam", 0),
]


def layer(module: str) -> int:
    for prefix, rank in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return rank
    raise SystemExit(f"no layer for {module}")


def modules():
    out = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, "cni_ipam")):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
                out[rel[:-9] if rel.endswith(".__init__") else rel] = os.path.join(dirpath, f)
    return out


def imports(path: str, known: set) -> set:
    tree = ast.parse(open(path, encoding="utf-8").read())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in known else node.module)
    return {m for m in out if m in known}


def main() -> int:
    mods = modules()
    graph = {m: imports(p, set(mods)) - {m} for m, p in mods.items()}
    # a package's __init__ runs before its submodules: count "import a.b.c" as an edge to a.b.c only
    bad = [(a, b) for a, deps in graph.items() for b in deps if layer(b) > layer(a)]
    # cycles: Tarjan-free DFS
    color, stack, cycles = {}, [], []

    def visit(n):
        color[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if color.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in color:
                visit(d)
        stack.pop()
        color[n] = 2

    for n in sorted(graph):
        if n not in color:
            visit(n)
    if "--edges" in sys.argv:
        for a in sorted(graph):
            print(a, "->", ", ".join(sorted(graph[a])) or "-")
    print(f"{len(graph)} modules, {sum(len(d) for d in graph.values())} import edges (lazy ones included)")
    for a, b in bad:
        print(f"UPWARD: {a} (layer {layer(a)}) imports {b} (layer {layer(b)})")
    for c in cycles:
        print("CYCLE: " + " -> ".join(c))
    if not bad and not cycles:
        print("no cycle; every import points to the same layer or below")
    return 1 if bad or cycles else 0


if __name__ == "__main__":
    sys.exit(main())
