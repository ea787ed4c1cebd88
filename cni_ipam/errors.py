"""The one exception type of the plugin: a CNI error code, a message and details.

The codes below 100 are the CNI specification's (1.1.0); cni-ipam never answers its 2 (unsupported
field), 3 (unknown container) or 51 (limited connectivity).  Codes 100 and up are ours.  ``MEANINGS``
is the one description of every code cni-ipam answers: the README's table is generated from it
(scripts/readme_tables.py).
"""

# CNI specification codes
INCOMPATIBLE_VERSION = 1
INVALID_ENV = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50

# cni-ipam codes
RANGE_EXHAUSTED = 100
REQUESTED_IP_TAKEN = 101
REQUESTED_IP_INVALID = 102
DUPLICATE_ALLOCATION = 103
PODCIDR_UNAVAILABLE = 104
CHECK_FAILED = 105
GC_INCOMPLETE = 106
POOL_EXHAUSTED = 107
INTERNAL = 999

MEANINGS = {
    INCOMPATIBLE_VERSION: "incompatible CNI version (unsupported `cniVersion`; CHECK below 0.4.0; "
    "GC/STATUS below 1.1.0)",
    INVALID_ENV: "invalid or missing environment variable (the message names it: CNI_COMMAND, CNI_CONTAINERID, "
    "CNI_NETNS, CNI_IFNAME, CNI_ARGS)",
    IO_FAILURE: "I/O failure (data directory not writable, disk full, a symlink or file in the way)",
    DECODING_FAILURE: "the stdin config could not be decoded (not UTF-8 / JSON / an object)",
    INVALID_CONFIG: "invalid network config (the message names the key and value)",
    TRY_AGAIN_LATER: "try again later (the network lock was not obtained within `lockTimeout`; the pod CIDR source "
    "is unreachable and nothing is cached)",
    NOT_AVAILABLE: "STATUS: the plugin cannot serve an ADD now (and why)",
    RANGE_EXHAUSTED: "no free address left in a range set",
    REQUESTED_IP_TAKEN: "a requested address is held by someone else",
    REQUESTED_IP_INVALID: "a requested address is not in any range set, is excluded, or is a gateway",
    DUPLICATE_ALLOCATION: "the (container, ifname) already holds an address in this range set (duplicate ADD)",
    PODCIDR_UNAVAILABLE: "usePodCidr could not be resolved (no pod CIDR of that family, bad credentials, TLS failure)",
    CHECK_FAILED: "CHECK failed (reservation missing, not in prevResult, or address missing in the namespace)",
    GC_INCOMPLETE: "GC released what it could, but some reservations could not be released (all listed)",
    POOL_EXHAUSTED: "cluster pool exhausted: this node's blocks are full and no free block is left (the message "
    "names the pool)",
    INTERNAL: "an unexpected internal error (a bug; reported as JSON, please file it)",
}


class CniError(Exception):
    """A failure reported to the runtime as CNI error JSON (code, msg, details)."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> dict:
        out = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    def __repr__(self) -> str:
        return f"CniError({self.code}, {self.msg!r}, {self.details!r})"


def config_error(key: str, value: object, why: str) -> CniError:
    """Invalid network config naming the offending key and value."""
    return CniError(INVALID_CONFIG, f"invalid {key} {value!r}: {why}", f"key {key}")
