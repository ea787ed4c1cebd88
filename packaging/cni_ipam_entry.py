"""Entry point of the built cni-ipam executable: imported by the launcher (packaging/launcher.c).

Same dispatch as ``cni_ipam/__main__.py``: a CNI call when CNI_COMMAND is set, the admin CLI when
arguments are given, and with neither what the program is (its version, on stderr) and exit 0.
The plugin path imports only ``cni_ipam.plugin.skel`` up front, with ``json`` served by
``cni_ipam_fastjson`` (same results, without importing re and enum).  After the
answer is written and flushed we leave with ``os._exit``: a plugin call owns no other resources, and
skipping interpreter finalisation (module teardown, GC of every object) saves about a millisecond
per call.  Admin commands exit normally.

A plugin call also runs without the cyclic garbage collector (``gc.disable``): the process lives for
one call and frees everything at exit, and the collections the imports and the index work would
trigger cost CPU for nothing (ADD about 2-5 % less CPU, docs/performance.md).  Reference counting
still frees everything that is not in a cycle.  Admin commands keep the collector.
"""

import gc
import os
import sys

if "CNI_COMMAND" not in os.environ:
    if len(sys.argv) > 1:
        from cni_ipam.admin.cli import cli_main

        sys.exit(cli_main(sys.argv[1:]))
    from cni_ipam.__main__ import about

    sys.exit(about())

gc.disable()

if "json" not in sys.modules and not os.environ.get("CNI_IPAM_REAL_JSON"):
    import cni_ipam_fastjson  # json without re/enum; falls back to the real json for anything else

    sys.modules["json"] = cni_ipam_fastjson

from cni_ipam.__main__ import VERBS  # noqa: E402  (after the json stand-in is in place)
from cni_ipam.plugin.skel import plugin_main  # noqa: E402

_rc = plugin_main(VERBS)
if os.environ.get("CNI_IPAM_LIST_MODULES"):  # for tests/integration/test_built_binary.py
    sys.stderr.write("cni-ipam modules: " + " ".join(sorted(sys.modules)) + "\n")
    # Modules read from a file of the bundle (a .pyc, not frozen into the launcher, not an extension).
    sys.stderr.write("cni-ipam from files: " + " ".join(sorted(
        name for name, mod in list(sys.modules.items())
        if str(getattr(getattr(mod, "__spec__", None), "origin", None) or "").endswith(".pyc"))) + "\n")
try:
    sys.stdout.flush()
    sys.stderr.flush()
except Exception:  # stdout closed by the caller: nothing more to say
    pass
os._exit(_rc)
