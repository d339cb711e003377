"""Outer momentum on the merged model: the update rule (a collaboration using it:
tests/test_collaboration.py)."""

from __future__ import annotations

import pytest
import torch

from deepgossip.learn.mixing import MixingConfig
from deepgossip.learn.outer_momentum import OuterMomentum


def test_beta_zero_leaves_the_merged_model_alone() -> None:
    outer = OuterMomentum(0.0, torch.zeros(3))
    for merged in (torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 0.5, 0.5])):
        expected = merged.clone()
        outer.step(merged)
        assert torch.equal(merged, expected)


def test_the_velocity_accumulates_the_rounds_steps() -> None:
    outer = OuterMomentum(0.5, torch.tensor([0.0, 0.0]))
    first = torch.tensor([1.0, -1.0])  # round 1 moved by (1, -1)
    outer.step(first)
    assert torch.equal(first, torch.tensor([1.0, -1.0]))  # v = (-1, 1): no history yet
    second = torch.tensor([2.0, -1.0])  # round 2 moved by (1, 0) from (1, -1)
    outer.step(second)
    # v = 0.5 * (-1, 1) + (-1, 0) = (-1.5, 0.5); model = (1, -1) - v = (2.5, -1.5)
    assert torch.equal(second, torch.tensor([2.5, -1.5]))
    assert torch.equal(outer.start, second)
    outer.restart(torch.tensor([7.0, 7.0]))
    third = torch.tensor([8.0, 7.0])
    outer.step(third)
    assert torch.equal(third, torch.tensor([8.0, 7.0]))  # velocity forgotten


def test_bad_settings_and_shapes_are_refused() -> None:
    for beta in (-0.1, 1.0):
        with pytest.raises(ValueError, match="beta"):
            OuterMomentum(beta, torch.zeros(2))
    with pytest.raises(ValueError, match="velocity"):
        OuterMomentum(0.5, torch.zeros(2), velocity=torch.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        OuterMomentum(0.5, torch.zeros(2)).step(torch.zeros(3))
    with pytest.raises(ValueError, match="outer_momentum"):
        MixingConfig(outer_momentum=1.0)
