"""Collaboration: a learner with sharing and mixing, as a node runs it (no network:
updates are handed over directly)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deepgossip.learn.collaboration import Collaboration, CollaborationConfig
from deepgossip.learn.data import Dataset, load_dataset
from deepgossip.learn.datastore import DataStore
from deepgossip.learn.learner import Learner, LearningConfig
from deepgossip.learn.mixing import GoSGD

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


def test_section_keys_map_to_sharing_and_mixing() -> None:
    config = CollaborationConfig.from_section(
        {
            "rule": "average",
            "push_period": 4,
            "fanout": 2,
            "theta_u": 0.1,
            "gamma": 0.5,
            "expected_nodes": 3,
            "lr": 1e-3,
        }
    )
    assert config.mixing.rule == "average" and config.mixing.period == 4
    assert config.mixing.fanout == 2 and config.expected_nodes == 3
    assert config.sharing.theta_u == 0.1 and config.sharing.gamma == 0.5
    with pytest.raises(ValueError, match="unknown mixing rule"):
        CollaborationConfig.from_section({"rule": "magic"})


@pytest.mark.parametrize("rule", ["gosgd", "average"])
def test_two_learners_with_disjoint_classes_learn_each_others(
    tmp_path: Path, digits: Dataset, rule: str
) -> None:
    section = {"rule": rule, "push_prob": 0.5, "push_period": 10, "expected_nodes": 2}
    a = _learner(tmp_path, "a", digits, (0, 1, 2, 3, 4))
    b = _learner(tmp_path, "b", digits, (5, 6, 7, 8, 9))
    ca = Collaboration(a, CollaborationConfig.from_section(section), b"a" * 16)
    cb = Collaboration(b, CollaborationConfig.from_section(section), b"b" * 16)
    rounds_seen = []
    for step in range(40):
        for mine, theirs, learner in ((ca, cb, a), (cb, ca, b)):
            stats = learner.train_round()
            update = mine.after_round(stats.steps, float(step))
            if update is not None:
                rounds_seen.append(update.round)
                theirs.offer(update, float(step))
    for learner in (a, b):
        predicted = np.asarray(learner.predict(digits.test_images)).argmax(axis=1)
        accuracy = float(np.mean(predicted == digits.test_labels))
        assert accuracy > 0.75, (rule, accuracy)  # alone: at most ~0.5
    assert ca.merged > 0 and cb.merged > 0 and ca.rejected == cb.rejected == 0
    if rule == "gosgd":
        assert isinstance(ca.rule, GoSGD)
        total = ca.rule.alpha + cb.rule.alpha + ca.rule.pending_weight + cb.rule.pending_weight
        assert total == pytest.approx(1.0)  # weight is conserved, buffered updates included
        assert a.mixing_state["alpha"] == ca.rule.alpha  # saved with checkpoints


def test_trust_rule_scores_peers_on_the_learners_growing_holdout(
    tmp_path: Path, digits: Dataset
) -> None:
    section = {"rule": "trust", "push_period": 10}
    a = _learner(tmp_path, "a", digits, tuple(range(10)))
    b = _learner(tmp_path, "b", digits, tuple(range(10)))
    ca = Collaboration(a, CollaborationConfig.from_section(section), b"a" * 16)
    cb = Collaboration(b, CollaborationConfig.from_section(section), b"b" * 16)
    for step in range(10):
        for mine, theirs, learner in ((ca, cb, a), (cb, ca, b)):
            update = mine.after_round(learner.train_round().steps, float(step))
            if update is not None:
                theirs.offer(update, float(step))
    assert ca.merged > 0 and cb.merged > 0
    self_weight, peers = ca.rule.trust.probabilities()  # type: ignore[attr-defined]
    assert set(peers) == {b"b" * 16} and 0.0 < self_weight < 1.0


def test_update_rounds_keep_growing_across_restarts(tmp_path: Path, digits: Dataset) -> None:
    section = {"rule": "average", "push_period": 1}
    learner = _learner(tmp_path, "a", digits, (0, 1))
    first = Collaboration(learner, CollaborationConfig.from_section(section), b"a" * 16)
    stats = learner.train_round()
    old = first.after_round(stats.steps, 0.0)
    again = Collaboration(learner, CollaborationConfig.from_section(section), b"a" * 16)
    stats = learner.train_round()
    new = again.after_round(stats.steps, 1.0)
    assert old is not None and new is not None and new.round > old.round
