"""Integration fixtures: need_root and need_host_local live in tests/conftest.py."""
