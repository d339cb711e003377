"""Outer momentum on the merged model: the update rule, and a collaboration using it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deepgossip.learn.collaboration import Collaboration, CollaborationConfig
from deepgossip.learn.data import Dataset, load_dataset
from deepgossip.learn.datastore import DataStore
from deepgossip.learn.learner import Learner, LearningConfig
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


CONFIG = LearningConfig(
    model="mlp", input_shape=(1, 8, 8), steps_per_round=10, lr=3e-3, holdout_fraction=0.2
)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    torch.set_num_threads(1)
    return load_dataset("digits")


def _learner(tmp_path: Path, name: str, data: Dataset, classes: tuple[int, ...]) -> Learner:
    store = DataStore(tmp_path / f"{name}.dglog", sample_shape=(8, 8), num_classes=10)
    mask = np.isin(data.train_labels, classes)
    store.append(data.train_images[mask], data.train_labels[mask])
    return Learner(CONFIG, store)


def test_a_collaboration_with_outer_momentum_learns_and_keeps_its_velocity(
    tmp_path: Path, digits: Dataset
) -> None:
    section = {"rule": "average", "push_period": 10, "outer_momentum": 0.5}
    config = CollaborationConfig.from_section(section)
    assert config.mixing.outer_momentum == 0.5
    a = _learner(tmp_path, "a", digits, (0, 1, 2, 3, 4))
    b = _learner(tmp_path, "b", digits, (5, 6, 7, 8, 9))
    ca = Collaboration(a, config, b"a" * 16, catch_up_timeout=0.0)
    cb = Collaboration(b, config, b"b" * 16, catch_up_timeout=0.0)
    for step in range(30):
        for mine, theirs, learner in ((ca, cb, a), (cb, ca, b)):
            update = mine.after_round(learner.train_round().steps, float(step))
            if update is not None:
                theirs.offer(update, float(step))
    for learner in (a, b):
        predicted = np.asarray(learner.predict(digits.test_images)).argmax(axis=1)
        assert float(np.mean(predicted == digits.test_labels)) > 0.75  # alone: ~0.5
    # The velocity lives in the learner's checkpointed mixing tensors ...
    assert ca.outer is not None
    velocity = a.mixing_tensors["outer_momentum.velocity"]
    assert velocity is ca.outer.velocity and float(velocity.abs().sum()) > 0
    # ... and a collaboration rebuilt on the learner (a restart) resumes it.
    again = Collaboration(a, config, b"a" * 16, catch_up_timeout=0.0)
    assert again.outer is not None and torch.equal(again.outer.velocity, velocity)
