"""Shared test setup: make the source tree importable without installation."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


import pytest  # noqa: E402

try:  # Hypothesis keeps nothing in the checkout: a run never changes the checkout or the next run.
    from hypothesis import settings as _hypothesis_settings
    from hypothesis.configuration import set_hypothesis_home_dir
except ImportError:  # pragma: no cover - the "test" extra brings it
    pass
else:
    # No example database; its other caches (e.g. the constants it collects from the source) go to
    # a directory of this run outside the tree (HYPOTHESIS_STORAGE_DIRECTORY, inherited by the pytest
    # runs a test starts), removed at exit by the run that made it.
    if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        import atexit
        import shutil
        import tempfile

        os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = tempfile.mkdtemp(prefix="cni-ipam-hypothesis-")
        atexit.register(shutil.rmtree, os.environ["HYPOTHESIS_STORAGE_DIRECTORY"], True)
    set_hypothesis_home_dir(os.environ["HYPOTHESIS_STORAGE_DIRECTORY"])
    # CI=true: derandomized (the same examples every run), so a CI result depends on the code only.
    _hypothesis_settings.register_profile(
        "cni-ipam", database=None, derandomize=os.environ.get("CI", "").lower() in ("1", "true", "yes"))
    _hypothesis_settings.load_profile("cni-ipam")


@pytest.fixture
def need_host_local():
    from tests.helpers import have_host_local

    if not have_host_local():
        pytest.skip("Debian's host-local is not installed (apt-get install containernetworking-plugins)")


@pytest.fixture
def need_root():
    from tests.helpers import is_root

    if not is_root():
        pytest.skip("needs root (network namespaces, mounts, other users)")


@pytest.fixture(scope="session")
def built_binary():
    """The shipped binary (tests/integration/test_built_binary.py, tests/runtime/test_image.py):
    CNI_IPAM_BUILT_EXE, a fresh dist/cni-ipam/cni-ipam, or one build per test run into a temp dir."""
    from tests.integration.test_built_binary import provide_built_binary

    yield from provide_built_binary()
