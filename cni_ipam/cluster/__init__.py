"""Cluster-wide pools: per-node blocks claimed in etcd (``pool``), the etcd v3 JSON-gateway client
(``etcd``) and the admin commands ``cni-ipam pool ...`` (``admin``).  Nothing here is imported on the
plugin path unless the network configures a pool."""
