"""Shared test setup: the source tree importable without installation, nothing written into the
checkout, Hypothesis' profile, and the CI gate on skips."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


import pytest  # noqa: E402

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _run_temp_dir(var: str, prefix: str) -> str:
    """A directory of this run outside the tree, named by ``var`` in the environment so the processes
    a test starts inherit it; made (and removed at exit) by the first process that needs it."""
    if not os.environ.get(var):
        import atexit
        import shutil
        import tempfile

        os.environ[var] = tempfile.mkdtemp(prefix=prefix)
        atexit.register(shutil.rmtree, os.environ[var], True)
    return os.environ[var]


# Bytecode goes to a directory of this run, not into __pycache__/ beside the sources: the plugin
# processes the tests start inherit the variable (scripts/test.sh sets it before pytest starts, so
# not even this file's bytecode lands in the tree).
sys.pycache_prefix = _run_temp_dir("PYTHONPYCACHEPREFIX", "cni-ipam-pycache-")

try:  # Hypothesis keeps nothing in the checkout: a run never changes the checkout or the next run.
    from hypothesis import settings as _hypothesis_settings
    from hypothesis.configuration import set_hypothesis_home_dir
except ImportError:  # pragma: no cover - the "test" extra brings it
    pass
else:
    # No example database; its other caches (e.g. the constants it collects from the source) go to
    # a directory of this run outside the tree (HYPOTHESIS_STORAGE_DIRECTORY, inherited by the pytest
    # runs a test starts), removed at exit by the run that made it.
    set_hypothesis_home_dir(_run_temp_dir("HYPOTHESIS_STORAGE_DIRECTORY", "cni-ipam-hypothesis-"))
    # CI=true: derandomized (the same examples every run, so a CI result depends on the code only)
    # and no deadline (a loaded CI machine makes an example slow, not wrong).
    _hypothesis_settings.register_profile(
        "cni-ipam", database=None, derandomize=CI, **({"deadline": None} if CI else {}))
    _hypothesis_settings.load_profile("cni-ipam")


# ------------------------------------------------------------------ CI=true: a skip is a failure
# Without CI=true a test whose prerequisite is missing (root, an apt package, a built binary, etcd,
# a runtime) skips and says why.  In CI such a skip means a broken setup, so it fails instead.  Only
# the skips below are legitimate there: they depend on a choice of the run or a fact of the machine
# that the setup does not control.  Matched against the skip reason.
LEGITIMATE_SKIPS = (
    "this host has no IPv4 address outside lo",  # lint's host check needs a real address to compare
    "is not an onedir bundle",  # CNI_IPAM_BUILT_EXE names a onefile build: the image needs the bundle
    "already running against CNI_IPAM_EXE",  # the whole run is against a built binary already
    "exists here and takes precedence",  # the machine has a kubeconfig at the default path
    "exists on this machine",  # (the same, unit tests)
    "does not support the immutable attribute",  # the temp file system (tmpfs) has no chattr +i
)


def skip_is_legitimate(reason: str) -> bool:
    return any(allowed in reason for allowed in LEGITIMATE_SKIPS)


def _fail_skip(report) -> None:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    reason = reason.removeprefix("Skipped: ")
    if skip_is_legitimate(reason):
        return
    report.outcome = "failed"
    report.longrepr = f"CI=true: a missing prerequisite fails instead of skipping: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if CI and report.skipped and not hasattr(report, "wasxfail"):
        _fail_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if CI and report.skipped:  # a module-level importorskip or skip
        _fail_skip(report)


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
