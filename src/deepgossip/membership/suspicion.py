"""Lifeguard suspicion: a timeout that shrinks as independent members confirm.

A member that one peer failed to reach may well be alive (the peer, or the path,
may be the problem). So a suspicion starts with a long timeout, ``max``, which
gives the suspect time to hear of it and refute. Every *other* member that
independently fails to reach it adds a confirmation, and the timeout falls
logarithmically towards ``min``:

    timeout(C) = max(min, max - (max - min) * log(C + 1) / log(K + 1))

C confirmations out of the K we hope for. A crashed member is probed by about one
member per period, so it collects K confirmations within a few periods and is
declared dead close to ``min``; a live member that lost one datagram collects
none and keeps the full ``max``. The timeout is measured from the moment *we*
started suspecting, as in memberlist.
"""

from __future__ import annotations

import math


def suspicion_timeout(confirmations: int, k: int, low: float, high: float) -> float:
    """Total timeout after ``confirmations`` of the ``k`` wanted (Lifeguard formula)."""
    if k < 1:
        return low
    fraction = math.log(confirmations + 1) / math.log(k + 1)
    return max(low, high - (high - low) * fraction)


class Suspicion:
    """The timer state of one suspected member."""

    __slots__ = ("confirmers", "deadline", "high", "k", "low", "start")

    def __init__(self, accuser: bytes, start: float, k: int, low: float, high: float) -> None:
        self.start = start
        self.k = k
        self.low = low
        self.high = high
        # The first accuser is not a confirmation: our own suspicion may be
        # gossiped back to us, and must not count twice.
        self.confirmers: set[bytes] = {accuser}
        self.deadline = start + suspicion_timeout(0, k, low, high)

    @property
    def confirmations(self) -> int:
        return len(self.confirmers) - 1

    def knows(self, accuser: bytes) -> bool:
        """True if ``accuser`` already counted, or enough confirmations are in."""
        return accuser in self.confirmers or self.confirmations >= self.k

    def confirm(self, accuser: bytes) -> bool:
        """Count an independent confirmation; True if it was new (then re-gossip it)."""
        if self.knows(accuser):
            return False
        self.confirmers.add(accuser)
        self.deadline = self.start + suspicion_timeout(
            self.confirmations, self.k, self.low, self.high
        )
        return True
