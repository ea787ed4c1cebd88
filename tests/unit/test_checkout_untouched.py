"""A test run never changes the checkout, so one run never changes the next: no pytest cache, no
Hypothesis database or storage directory inside the tree (tests/conftest.py, pyproject.toml)."""

import os

from tests.helpers import ROOT


def test_pytest_cache_is_off():
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as fh:
        addopts = next(line for line in fh if line.startswith("addopts"))
    assert "-p no:cacheprovider" in addopts


def test_hypothesis_keeps_nothing_in_the_tree():
    from hypothesis import settings
    from hypothesis.configuration import storage_directory

    assert settings.default.database is None
    home = storage_directory(intent_to_write=False)
    where = os.path.realpath(str(getattr(home, "path", home)))  # a Path, or an object holding it (newer Hypothesis)
    assert not (where + os.sep).startswith(os.path.realpath(ROOT) + os.sep), where
    assert settings.default.derandomize == (os.environ.get("CI", "").lower() in ("1", "true", "yes"))
