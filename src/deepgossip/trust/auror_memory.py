"""AUROR's memory: each peer judged by its mean deviation over its last updates.

AUROR (:mod:`.auror`) judges one update per peer at a time. Colluders whose
push is smaller than the honest spread in every single round pass that test
every round: with seed 2, three colluding targeted attackers on Fashion-MNIST
did (docs/benchmarks.md, "The memory panel"). Averaged over its last ``window`` updates
a consistent push stays whole while honest noise shrinks by ``sqrt(window)``,
so a second set of detectors (the *memory panel*, kept by
:class:`~.defense.Defense` beside the single-update one) clusters these means.

Three choices, each forced by a measured failure:

* **Only peers with a full window are judged.** Honest noise in a mean of
  ``n`` updates is ``1 / sqrt(n)`` of a single update's, so a peer with fewer
  updates than the others (one that joined late, or that GoSGD brings
  rarely) is noisier than the crowd and looks like an outlier for that reason
  alone: in a synthetic crowd a decayed mean flagged an honest late joiner on
  all of its 40 updates and convicted it. The first version, a decayed sum
  (``a <- m a + d``), did the same whenever the crowd shared an offset of one
  noise sigma (when our own model is off the consensus), since fewer updates
  make a smaller sum. With equal windows every judged mean has the same
  noise and the same expectation. The single-update panel still judges
  everyone.
* **A plain mean, not a decayed one.** A decayed mean of ``n`` updates has
  fewer effective samples than one of ``2n``; with the same window for
  everyone the plain mean makes them equal.
* **Each deviation first loses its component along our own recent movement.**
  A node pushes before it merges and simulated rounds run at fixed phases, so
  one peer's update always reaches us a fixed part of a round after ours: its
  model trails ours along the common path by the same amount every time.
  Averaged, that honest lag convicted an honest node in 3 of 6 runs (always
  the same one, read from the simulator's phases). One direction per detector
  is removed, out of thousands of coordinates.

Memory: ``window`` vectors of the judged coordinates per peer (float32; 10 x
10,000 coordinates is 400 KB a peer). Deterministic and sans-I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Final

import numpy as np

__all__ = ["MOVEMENT_SMOOTHING", "DeviationMemory"]

MOVEMENT_SMOOTHING: Final = 0.5
"""Weight of the older movement in our own smoothed path (an exponential average
of our steps between screens). In a prototype that used the last step alone
(0), a node still convicted an honest peer on a Dirichlet split; with 0.5 it
did not (docs/benchmarks.md, "The memory panel")."""


class DeviationMemory:
    """The last ``window`` deviations of every peer, and our own recent movement.

    Args:
        window: updates per peer in a mean (>= 2).
        slices: each detector's part of the feature vector; the lag is removed
            per part, as each detector clusters its part alone.
    """

    def __init__(self, window: int, slices: Sequence[slice]) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        self.window = window
        self._slices = list(slices)
        self._history: dict[bytes, deque[np.ndarray]] = {}
        self._last_own: np.ndarray | None = None  # our coordinates at the previous screen
        self._movement: np.ndarray | None = None  # and how far they moved since

    def track(self, own: np.ndarray) -> None:
        """Note our coordinates at a screen; call once per screen, before
        :meth:`remember` (the movement is the direction a late model trails in)."""
        if self._last_own is not None:
            step = own - self._last_own
            if self._movement is None:
                self._movement = step
            else:  # one round's step also carries our own training noise: smooth it
                self._movement = (
                    MOVEMENT_SMOOTHING * self._movement + (1.0 - MOVEMENT_SMOOTHING) * step
                )
        self._last_own = own

    def remember(self, peer: bytes, deviation: np.ndarray) -> np.ndarray | None:
        """Add the peer's latest deviation (``v - w``); its mean over the last
        ``window`` once it has that many, else None (not judged yet)."""
        history = self._history.get(peer)
        if history is None:
            history = self._history[peer] = deque(maxlen=self.window)
        history.append(self.without_lag(deviation).astype(np.float32))
        if len(history) < self.window:
            return None
        return np.mean(np.stack(history), axis=0, dtype=np.float64)

    def without_lag(self, deviation: np.ndarray) -> np.ndarray:
        """``deviation`` minus its component along our recent movement, per part."""
        movement = self._movement
        if movement is None:
            return deviation
        out = deviation.copy()
        for part in self._slices:
            m = movement[part]
            norm2 = float(m @ m)
            if norm2 > 0.0:
                out[part] -= (float(out[part] @ m) / norm2) * m
        return out

    def forget(self, peer: bytes) -> None:
        """Drop a peer's history (convicted, or blacklisted elsewhere)."""
        self._history.pop(peer, None)

    def __len__(self) -> int:
        """Peers with a history."""
        return len(self._history)
