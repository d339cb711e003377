"""Lifeguard local health: stretch our own timeouts when *we* are the problem.

SWIM assumes the prober is healthy. A node whose CPU is starved (a training step
holding the interpreter) or whose network drops its packets misses acks from
perfectly healthy peers and accuses them. Lifeguard's answer is a saturating
score of evidence about ourselves:

* +1 per nack we expected from an intermediary but did not get (the
  intermediaries are presumed healthy; if even their nacks don't reach us, the
  fault is on our side), or +1 for a failed probe when nobody could be asked;
* +1 when we must refute a suspicion about ourselves (others could not reach us);
* -1 for each probe answered in time.

Probe interval and timeout are multiplied by ``score + 1``: a sick node probes
less often and waits longer, so its accusations become rarer and slower.
"""

from __future__ import annotations


class Awareness:
    """Saturating local health score in ``[0, max_score]``; 0 is healthy."""

    __slots__ = ("_score", "max_score")

    def __init__(self, max_score: int) -> None:
        if max_score < 0:
            raise ValueError("max_score must be >= 0")
        self.max_score = max_score
        self._score = 0

    @property
    def score(self) -> int:
        return self._score

    def apply(self, delta: int) -> None:
        self._score = min(self.max_score, max(0, self._score + delta))

    def scale(self, duration: float) -> float:
        """``duration`` stretched by the current health multiplier."""
        return duration * (self._score + 1)
