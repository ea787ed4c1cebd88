"""The CNI plugin: the cold path (stdlib only).  See docs/architecture.md."""
