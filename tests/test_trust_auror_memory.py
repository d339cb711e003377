"""DeviationMemory: per-peer means over a full window, without our own lag."""

from __future__ import annotations

import numpy as np
import pytest

from deepgossip.trust.auror_memory import MOVEMENT_SMOOTHING, DeviationMemory


def test_a_peer_gets_a_mean_only_once_its_window_is_full() -> None:
    memory = DeviationMemory(3, [slice(0, 4)])
    peer = b"p" * 16
    assert memory.remember(peer, np.full(4, 1.0)) is None
    assert memory.remember(peer, np.full(4, 2.0)) is None
    np.testing.assert_allclose(memory.remember(peer, np.full(4, 3.0)), 2.0)
    # The oldest leaves: the mean is over the last three only.
    np.testing.assert_allclose(memory.remember(peer, np.full(4, 7.0)), 4.0)
    memory.forget(peer)
    assert len(memory) == 0 and memory.remember(peer, np.full(4, 1.0)) is None


def test_the_component_along_our_own_movement_is_removed_per_part() -> None:
    memory = DeviationMemory(2, [slice(0, 2), slice(2, 4)])
    memory.track(np.zeros(4))
    memory.track(np.array([1.0, 0.0, 0.0, 2.0]))  # we moved along x in part 1, y in part 2
    lagging = np.array([-0.5, 0.3, 0.4, -1.0])
    np.testing.assert_allclose(memory.without_lag(lagging), [0.0, 0.3, 0.4, 0.0])
    # The movement is smoothed: a second step mixes in with MOVEMENT_SMOOTHING.
    memory.track(np.array([1.0, 1.0, 0.0, 2.0]))
    expected = MOVEMENT_SMOOTHING * np.array([1.0, 0.0]) + (1 - MOVEMENT_SMOOTHING) * np.array(
        [0.0, 1.0]
    )
    out = memory.without_lag(np.array([1.0, 1.0, 0.0, 0.0]))[:2]
    assert float(out @ expected) == pytest.approx(0.0, abs=1e-12)


def test_no_movement_yet_removes_nothing() -> None:
    memory = DeviationMemory(2, [slice(0, 3)])
    memory.track(np.ones(3))
    deviation = np.array([0.1, -0.2, 0.3])
    np.testing.assert_array_equal(memory.without_lag(deviation), deviation)


@pytest.mark.parametrize("window", [-1, 0, 1])
def test_a_window_is_at_least_two_updates(window: int) -> None:
    with pytest.raises(ValueError, match="window"):
        DeviationMemory(window, [slice(0, 1)])
