"""Fixtures of the reliability suite: sandboxes named rel-*, root and host-local checks."""

import os
import shutil
import tempfile

import pytest



@pytest.fixture
def sandbox():
    """A fresh directory /tmp/rel-XXXX (removed afterwards, mounts included)."""
    path = tempfile.mkdtemp(prefix="rel-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def size(name, ci_default):
    """A size knob: REL_<NAME> in the environment overrides the CI default."""
    return int(os.environ.get(f"REL_{name.upper()}", ci_default))
