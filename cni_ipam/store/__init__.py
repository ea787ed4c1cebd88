"""The data directory: the only code that opens anything under dataDir.  See docs/architecture.md."""
