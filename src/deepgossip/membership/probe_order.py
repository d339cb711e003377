"""Round-robin probe order over a shuffled member list (SWIM section 4.3).

Picking probe targets uniformly at random leaves some member unprobed for a long
time now and then; walking a shuffled list probes every member once per pass,
which bounds the time until a crashed member is probed by *this* node to one
pass, while different nodes' independent shuffles keep the targets spread. The
list is reshuffled at the start of every pass, and a new member is inserted at
a random position in what remains of the current pass (appending would make
all nodes probe it last).
"""

from __future__ import annotations

import random
from collections.abc import Callable


class ProbeOrder:
    """Yields probe targets; stale entries (dead, left, forgotten) are skipped."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._order: list[bytes] = []
        self._queued: set[bytes] = set()
        self._index = 0

    def reset(self, node_ids: list[bytes]) -> None:
        """Start a fresh, shuffled pass over ``node_ids``."""
        self._order = list(node_ids)
        self._rng.shuffle(self._order)
        self._queued = set(self._order)
        self._index = 0

    def add(self, node_id: bytes) -> None:
        if node_id in self._queued:
            return
        position = self._rng.randint(self._index, len(self._order))
        self._order.insert(position, node_id)
        self._queued.add(node_id)

    def next(
        self, probeable: Callable[[bytes], bool], refill: Callable[[], list[bytes]]
    ) -> bytes | None:
        """The next member to probe, or None when nobody is probeable."""
        refilled = False
        while True:
            if self._index >= len(self._order):
                if refilled:
                    return None
                self._order = refill()
                self._rng.shuffle(self._order)
                self._queued = set(self._order)
                self._index = 0
                refilled = True
                continue
            node_id = self._order[self._index]
            self._index += 1
            if probeable(node_id):
                return node_id
