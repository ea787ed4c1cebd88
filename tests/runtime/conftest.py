"""Fixtures for the real-runtime tests (podman, containerd, the node image): one world per module."""

import pytest


def _world(make, skip_reason):
    reason = skip_reason()
    if reason:
        print(f"SKIP real-runtime test: {reason}")
        pytest.skip(reason)
    world = make()
    try:
        yield world
    finally:
        world.close()


@pytest.fixture(scope="module")
def podman_world():
    from tests.runtime.podman_world import PodmanWorld, skip_reason

    yield from _world(PodmanWorld, skip_reason)


@pytest.fixture(scope="module")
def containerd_world():
    from tests.runtime.containerd_world import ContainerdWorld, skip_reason

    yield from _world(ContainerdWorld, skip_reason)
