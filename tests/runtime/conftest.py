"""Fixtures for the real-runtime tests (podman, containerd, the node image): one world per module."""

import pytest

from tests.helpers import real_runtime


@pytest.fixture(scope="module")
def podman_world():
    from tests.runtime.podman_world import PodmanWorld, skip_reason

    yield from real_runtime(skip_reason, PodmanWorld, PodmanWorld.close)


@pytest.fixture(scope="module")
def containerd_world():
    from tests.runtime.containerd_world import ContainerdWorld, skip_reason

    yield from real_runtime(skip_reason, ContainerdWorld, ContainerdWorld.close)
