"""Under CI=true a skip for a missing prerequisite fails the run (tests/conftest.py); the skips on
its allow-list, and every skip without CI=true, stay skips."""

import os
import re
import subprocess
import sys

from tests.conftest import LEGITIMATE_SKIPS
from tests.helpers import ROOT

CASES = '''
import pytest

def test_needs_root():
    pytest.skip("needs root (network namespaces, mounts, other users)")

def test_legitimate():
    pytest.skip("the temp dir does not support the immutable attribute")

@pytest.mark.skipif(True, reason="etcd is missing")
def test_marked():
    pass

def test_passes():
    pass
'''
MODULE_SKIP = 'import pytest\npytest.importorskip("no_such_module_for_the_ci_gate")\n\ndef test_never():\n    pass\n'


def run_cases(tmp_path, ci):
    (tmp_path / "test_cases.py").write_text(CASES)
    (tmp_path / "test_module_skip.py").write_text(MODULE_SKIP)
    env = dict(os.environ, PYTHONPATH=ROOT, CI=ci)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q",
                           "-rA", "--continue-on-collection-errors", "--rootdir", str(tmp_path), str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120)
    last = proc.stdout.splitlines()[-1]
    counts = {k.rstrip("s") if k.startswith("error") else k: int(n)
              for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last)}
    return proc, counts


def test_ci_turns_prerequisite_skips_into_failures(tmp_path):
    proc, counts = run_cases(tmp_path, "true")
    # needs root, the skipif mark and the module-level importorskip fail; the allow-listed skip stays
    assert counts.get("failed") == 1 and counts.get("error") == 2, proc.stdout  # (a setup skip fails as an error)
    assert counts.get("skipped") == 1 and counts.get("passed") == 1, proc.stdout
    assert "CI=true: a missing prerequisite fails instead of skipping: needs root" in proc.stdout


def test_without_ci_skips_stay_skips(tmp_path):
    proc, counts = run_cases(tmp_path, "")
    assert proc.returncode == 0, proc.stdout
    assert counts == {"passed": 1, "skipped": 4}, proc.stdout


def test_allow_list_entries_are_specific():
    assert all(len(entry) >= 15 for entry in LEGITIMATE_SKIPS)
    assert not any("root" in entry or "missing" in entry or "not installed" in entry for entry in LEGITIMATE_SKIPS)


def test_hypothesis_has_no_deadline_in_ci():
    """A loaded CI machine makes an example slow, not wrong (tests/conftest.py's profile)."""
    from hypothesis import settings

    from tests.conftest import CI

    assert CI == (os.environ.get("CI", "").lower() in ("1", "true", "yes"))
    assert (settings.default.deadline is None) == CI
