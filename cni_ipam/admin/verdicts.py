"""The vocabulary of the liveness rules: verdict states, reasons, ``Verdict`` and ``Finding``.

A ``Verdict`` says whether one reservation is ``live``, ``stranded`` (provably abandoned) or
``unknown``, with its reason (one of the constants below: the words ``cni-ipam gc``, ``show --ips``
and ``metrics`` print) and prose detail; a ``Finding`` is one reservation of a network with its
owner metadata and verdict.  The rules that reach a verdict are ``cni_ipam.admin.liveness`` (which
re-exports every name here); this module reads nothing from the machine.
"""

from __future__ import annotations

from typing import Any

from cni_ipam.store.layout import Reservation

LIVE = "live"
STRANDED = "stranded"
UNKNOWN = "unknown"

# reasons
GRACE_PERIOD = "grace-period"
PREVIOUS_BOOT = "previous-boot"
CURRENT_BOOT = "current-boot"
NETNS_GONE = "netns-gone"
NETNS_REPLACED = "netns-replaced"
NETNS_UNREADABLE = "netns-unreadable"
NETNS_ALIVE = "netns-alive"
NOT_IN_RUNTIME_CACHE = "not-in-runtime-cache"
NOT_IN_VALID_LIST = "not-in-valid-list"
NETNS_UNSURE = "netns-unsure"
NETNS_NOT_NSFS = "netns-not-nsfs"
NETNS_NO_IDENTITY = "netns-no-identity"
NOT_IN_RUNTIME = "not-in-runtime"  # the runtime (cni_ipam.admin.runtimes) does not know the container
NO_METADATA = "no-metadata"
EMPTY_FILE = "empty-file"
FOREIGN_CONTENT = "foreign-content"
NOT_A_FILE = "not-a-file"
NO_EVIDENCE = "no-evidence"

STRANDED_REASONS = (
    PREVIOUS_BOOT,
    NETNS_GONE,
    NETNS_REPLACED,
    NOT_IN_RUNTIME_CACHE,
    NOT_IN_VALID_LIST,
    NOT_IN_RUNTIME,
    EMPTY_FILE,
)


class Verdict:
    """``state`` is live / stranded / unknown; ``reason`` one of the constants; ``detail`` prose."""

    __slots__ = ("state", "reason", "detail")
    state: str
    reason: str
    detail: str

    def __init__(self, state: str, reason: str, detail: str = "") -> None:
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "detail", detail)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Verdict is immutable")

    @property
    def stranded(self) -> bool:
        return self.state == STRANDED

    def to_json(self) -> dict:
        return {"state": self.state, "reason": self.reason, "detail": self.detail}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Verdict) and (self.state, self.reason) == (other.state, other.reason)

    def __hash__(self) -> int:
        return hash((self.state, self.reason))

    def __repr__(self) -> str:
        return f"Verdict({self.state!r}, {self.reason!r}, {self.detail!r})"


class Finding:
    """One reservation of a network with its owner metadata and verdict."""

    __slots__ = ("network", "reservation", "meta", "mtime", "verdict", "seen_boot")

    def __init__(
        self,
        network: str,
        reservation: Reservation,
        meta: dict,
        mtime: float | None,
        verdict: Verdict,
        seen_boot: str | None = None,
    ) -> None:
        self.network = network
        self.reservation = reservation
        self.meta = meta
        self.mtime = mtime
        self.verdict = verdict
        self.seen_boot = seen_boot

    @property
    def address(self):
        return self.reservation.address

    @property
    def container_id(self) -> str | None:
        return self.reservation.container_id

    @property
    def ifname(self) -> str | None:
        return self.reservation.ifname

    @property
    def created(self) -> float | None:
        created = self.meta.get("created")
        if isinstance(created, (int, float)) and not isinstance(created, bool):
            return float(created)
        return self.mtime

    def age(self, now: float) -> float | None:
        created = self.created
        return None if created is None else now - created

    def to_json(self, now: float | None = None) -> dict:
        out = {
            "network": self.network,
            "ip": str(self.address),
            "containerID": self.container_id,
            "ifname": self.ifname,
            "created": self.created,
            "state": self.verdict.state,
            "reason": self.verdict.reason,
            "detail": self.verdict.detail,
        }
        if now is not None and self.created is not None:
            out["ageSeconds"] = round(now - self.created, 3)
        for key in ("netns", "bootId"):
            if key in self.meta:
                out[key] = self.meta[key]
        if self.seen_boot:
            out["seenBoot"] = self.seen_boot
        if isinstance(self.meta.get("k8s"), dict):
            out["k8s"] = self.meta["k8s"]
        return out

    def __repr__(self) -> str:
        return f"Finding({self.network}, {self.address}, {self.container_id!r}, {self.ifname!r}, {self.verdict!r})"
