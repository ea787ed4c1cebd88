"""Cluster-pool tests against a real etcd (fixtures in conftest.py)."""
