"""The store as the allocator sees it: a ``typing.Protocol`` for type checkers and for the fakes of
the allocator's unit tests.  Annotations only: the plugin path never imports this module at run
time (``plugin.allocator`` names it under ``if TYPE_CHECKING``, which is false when it runs), so
it may use ``typing``.  ``store.network.NetworkStore`` is the implementation.
"""

from __future__ import annotations

from typing import Protocol

from cni_ipam.addr import IP


class AllocationStore(Protocol):
    """What ``plugin.allocator.allocate`` calls, all under the network lock the store holds."""

    def reserve(self, addr: IP, cid: str, ifname: str) -> bool:
        """Reserve ``addr`` for (cid, ifname); False when it is held already (by anyone, in any way)."""

    def holder(self, addr: IP) -> tuple[str, str | None] | None:
        """(containerID, ifname) holding ``addr``; None when free or held by no valid owner."""

    def owned_by(self, cid: str, ifname: str) -> list:
        """The addresses (cid, ifname) holds, its old ID-only reservations included."""

    def last_reserved(self, range_id: int) -> IP | None:
        """The round-robin cursor of range set ``range_id``."""

    def set_last_reserved(self, range_id: int, addr: IP) -> None:
        """Move the cursor (kept only if the call succeeds)."""
