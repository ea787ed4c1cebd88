"""The one exception type of the plugin: a CNI error code, a message and details.

Spec codes (CNI 1.1.0): 1 incompatible version, 2 unsupported field, 3 unknown container,
4 invalid environment variables, 5 I/O failure, 6 decoding failure, 7 invalid network config,
11 try again later, 50 plugin not available, 51 limited connectivity.  Codes 100 and up are
ours and are listed in the README.
"""

# CNI specification codes
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51

# cni-ipam codes
RANGE_EXHAUSTED = 100  # no free address left in a range set
REQUESTED_IP_TAKEN = 101  # a requested address is reserved by someone else
REQUESTED_IP_INVALID = 102  # a requested address is outside every range, excluded or a gateway
DUPLICATE_ALLOCATION = 103  # the (container, ifname) already holds an address in the range set
PODCIDR_UNAVAILABLE = 104  # usePodCidr could not be resolved
CHECK_FAILED = 105  # CHECK found a reservation or an interface address missing
GC_INCOMPLETE = 106  # GC released what it could but some reservations failed
POOL_EXHAUSTED = 107  # cluster pool: the node's blocks are full and no free block is left (issue 12)
INTERNAL = 999  # an unexpected failure (a bug): reported, never a traceback


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
