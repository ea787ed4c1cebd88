"""Integration fixtures: skip with a printed reason when root or Debian's plugins are missing."""

import pytest

from tests.helpers import have_host_local, is_root


@pytest.fixture
def need_host_local():
    if not have_host_local():
        pytest.skip("Debian's host-local is not installed (apt-get install containernetworking-plugins)")


@pytest.fixture
def need_root():
    if not is_root():
        pytest.skip("needs root for network namespaces")
