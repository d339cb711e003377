"""A deadline heap with lazy cancellation, so ``next_deadline()`` is O(1).

The host asks every core for its next deadline after every message it handles;
scanning suspicions or pending relays there would make each message cost O(n).
Entries are never removed when they become moot: the owner re-checks its own
state when one fires (a stale entry costs one no-op tick).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Hashable


class Deadlines:
    """Min-heap of ``(when, kind, key)`` entries."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, Hashable]] = []
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, when: float, kind: str, key: Hashable = None) -> None:
        heapq.heappush(self._heap, (when, next(self._counter), kind, key))

    def next(self) -> float:
        return self._heap[0][0] if self._heap else math.inf

    def pop_due(self, now: float) -> tuple[str, Hashable, float] | None:
        """The earliest entry due at ``now`` (removed), or None."""
        heap = self._heap
        if heap and heap[0][0] <= now:
            when, _, kind, key = heapq.heappop(heap)
            return kind, key, when
        return None
