"""Integration fixtures: need_root and need_host_local live in tests/conftest.py; ``runtime`` (a
libcni-driven runtime in scratch namespaces) is tests/integration/netns.py's."""

from tests.integration.netns import runtime  # noqa: F401  (a fixture, found here by every test module)
