"""The data directory: the only code that opens anything under dataDir (see docs/architecture.md).

This package's own module holds the names that become paths - container IDs, interface names,
network names, with libcni's rules - because every user of the store needs them and the package
is loaded anyway: the protocol boundary (``plugin.skel``) validates the CNI_* environment with
them, and the store checks every owner read back from disk with the same rules before it is used
as a name.  Checked with str methods, not ``re``: importing re (and enum) is a tenth of a cold
call's time.
"""


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

