"""Fixtures of the reliability suite: sandboxes named rel-*, root and host-local checks."""

import os
import shutil
import tempfile

import pytest

from tests.helpers import have_host_local, is_root


@pytest.fixture
def sandbox():
    """A fresh directory /tmp/rel-XXXX (removed afterwards, mounts included)."""
    path = tempfile.mkdtemp(prefix="rel-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def need_host_local():
    if not have_host_local():
        pytest.skip("Debian's host-local is not installed (apt-get install containernetworking-plugins)")


@pytest.fixture
def need_root():
    if not is_root():
        pytest.skip("needs root (mounts, other users)")


def size(name, ci_default):
    """A size knob: REL_<NAME> in the environment overrides the CI default."""
    return int(os.environ.get(f"REL_{name.upper()}", ci_default))
