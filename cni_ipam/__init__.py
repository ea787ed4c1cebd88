"""cni-ipam: a host-local compatible CNI IPAM plugin."""

__version__ = "0.1.0"
