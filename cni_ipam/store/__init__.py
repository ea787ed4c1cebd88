"""The data directory: the only code that opens anything under dataDir (see docs/architecture.md).

This package's own module holds the names that become paths - container IDs, interface names,
network names, with libcni's rules - because every user of the store needs them and the package
is loaded anyway: the protocol boundary (``plugin.skel``) validates the CNI_* environment with
them, and the store checks every owner read back from disk with the same rules before it is used
as a name; and Kubernetes node names (usePodCidr and cluster pools key their state by them).
Checked with str methods, not ``re``: importing re (and enum) is a tenth of a cold call's time.
"""

import os

from cni_ipam.errors import INVALID_CONFIG, CniError


# As libcni's utils.ValidateContainerID / ValidateNetworkName: ^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$.
_NAME_FIRST = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_NAME_CHARS = _NAME_FIRST + "_.-"


def is_cni_name(value: str) -> bool:
    return bool(value) and value[0] in _NAME_FIRST and not value.strip(_NAME_CHARS)


def is_container_id(value: str) -> bool:
    """True for a container ID libcni accepts (also used on IDs read back from disk)."""
    return is_cni_name(value) and len(value) <= 1024


def ifname_problem(value: str) -> str:
    """Why ``value`` is not an interface name libcni accepts, or '' when it is one."""
    if not value:
        return "missing"
    if len(value.encode("utf-8", "surrogateescape")) > 15:
        return "too long"
    if value in (".", ".."):
        return "dot"
    if any(c in "/:" or c.isspace() for c in value):
        return "bad char"
    if "\0" in value or any("\udc80" <= c <= "\udcff" for c in value):
        return "not utf-8"
    return ""



# A Kubernetes node name: a lowercase RFC 1123 DNS subdomain.
_DNS_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"


def is_node_name(value: object) -> bool:
    if not isinstance(value, str) or not value or len(value) > 253:
        return False
    for label in value.split("."):
        if not label or label[0] == "-" or label[-1] == "-" or label.strip(_DNS_CHARS) or len(label) > 63:
            return False
    return True


def node_name(configured: "str | None", key: str) -> str:
    """The node's name: ``configured`` (the conf's ``key``, validated when parsed), else
    ``KUBERNETES_NODE_NAME`` / ``NODE_NAME``, else the host name lowercased as the kubelet derives
    its default node name.  A value that is no node name is code 7 naming where it came from."""
    if configured:
        return configured
    for var in ("KUBERNETES_NODE_NAME", "NODE_NAME"):
        value = os.environ.get(var, "").strip()
        if value:
            if not is_node_name(value):
                raise CniError(
                    INVALID_CONFIG, f"{var}={value!r} is not a Kubernetes node name (lowercase DNS subdomain)", var
                )
            return value
    host = os.uname().nodename.strip().lower()
    if not is_node_name(host):
        raise CniError(
            INVALID_CONFIG,
            f"the host name {host!r} is not a Kubernetes node name; set {key} or KUBERNETES_NODE_NAME",
            f"key {key}",
        )
    return host
