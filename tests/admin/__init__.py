"""Admin command tests (gc/show/metrics/lint/plan): they run `python -m cni_ipam <command>` as processes."""
