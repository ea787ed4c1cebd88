"""Crash consistency: SIGKILL the real plugin before every file-system mutation of ADD, DEL and GC.

See crashlib.py for what is checked after each kill.  Every mutation point of each scenario is
a kill point (``REL_CRASH_STRIDE`` > 1 samples every n-th one).
"""

import os

import pytest

from tests.helpers import have_host_local
from tests.reliability import crashlib

STRIDE = int(os.environ.get("REL_CRASH_STRIDE", "1"))


@pytest.mark.parametrize("scn", crashlib.scenarios(), ids=lambda s: s.name)
def test_kill_at_every_mutation(scn, sandbox, capsys):
    if scn.needs == "host-local" and not have_host_local():
        pytest.skip("Debian's host-local is not installed")
    tally, ops = crashlib.run_scenario(scn, sandbox, points=None if STRIDE == 1 else range(1, 1000, STRIDE))
    with capsys.disabled():
        print(f"\n[rel] crash {scn.name}: {len(ops)} mutations, {tally.kill_points} kill points, "
              f"{tally.recovered} recovered, {len(tally.problems)} problems")
    assert tally.kill_points >= (len(ops) if STRIDE == 1 else 1)
    assert not tally.problems, "\n".join(tally.problems[:15])
