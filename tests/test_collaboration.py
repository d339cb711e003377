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
from deepgossip.learn.sharing import SparseUpdate

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


def _collaboration(learner: Learner, section: dict, name: bytes, **kw: object) -> Collaboration:
    """Members of an established network by default: no catching up first."""
    kw.setdefault("catch_up_timeout", 0.0)
    return Collaboration(learner, CollaborationConfig.from_section(section), name * 16, **kw)  # type: ignore[arg-type]


def _accuracy(learner: Learner, data: Dataset, classes: tuple[int, ...]) -> float:
    mask = np.isin(data.test_labels, classes)
    predicted = np.asarray(learner.predict(data.test_images[mask])).argmax(axis=1)
    return float(np.mean(predicted == data.test_labels[mask]))


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
    ca = _collaboration(a, section, b"a")
    cb = _collaboration(b, section, b"b")
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
    ca = _collaboration(a, section, b"a")
    cb = _collaboration(b, section, b"b")
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
    learner.mixing_state["joined"] = True  # a member of the network already
    first = Collaboration(learner, CollaborationConfig.from_section(section), b"a" * 16)
    stats = learner.train_round()
    old = first.after_round(stats.steps, 0.0)
    again = Collaboration(learner, CollaborationConfig.from_section(section), b"a" * 16)
    assert not again.catching_up
    stats = learner.train_round()
    new = again.after_round(stats.steps, 1.0)
    assert old is not None and new is not None and new.round > old.round


@pytest.mark.parametrize("rule", ["gosgd", "average"])
def test_a_partitioned_node_keeps_training_and_merges_back(
    tmp_path: Path, digits: Dataset, rule: str
) -> None:
    """Cut off, a node trains on alone (and pushes nothing: GoSGD keeps its weight);
    back, it republishes at once and asks for its peers' models."""
    section = {"rule": rule, "push_prob": 0.3, "push_period": 10, "expected_nodes": 2}
    low, high = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
    a, b = _learner(tmp_path, "a", digits, low), _learner(tmp_path, "b", digits, high)
    linked = [True]
    ca = _collaboration(a, section, b"a", peers_available=lambda: linked[0])
    cb = _collaboration(b, section, b"b", peers_available=lambda: linked[0])

    def rounds(count: int, start: int) -> list[SparseUpdate | None]:
        from_a = []
        for step in range(start, start + count):
            for mine, theirs, learner in ((ca, cb, a), (cb, ca, b)):
                update = mine.after_round(learner.train_round().steps, float(step))
                if mine is ca:
                    from_a.append(update)
                if update is not None and linked[0]:
                    theirs.offer(update, float(step))
        return from_a

    rounds(30, 0)
    linked[0] = False
    steps_before = a.steps
    alpha_before = getattr(ca.rule, "alpha", None)
    assert all(u is None for u in rounds(20, 30))  # nothing pushed into the void
    assert a.steps == steps_before + 20 * CONFIG.steps_per_round  # kept training
    if rule == "gosgd":  # no weight handed to nobody (what was in flight still merges)
        assert ca.rule.alpha >= alpha_before  # type: ignore[attr-defined]
    assert not ca.connected and _accuracy(a, digits, low) > 0.9
    alone = _accuracy(a, digits, high)  # 20 rounds on its own digits only: forgotten
    linked[0] = True
    first_back = rounds(1, 50)[0]
    assert first_back is not None and ca.reconnections == 1  # republished at once
    assert ca.wants_pull  # the node then asks for its peers' models
    rounds(15, 51)
    assert _accuracy(a, digits, high) > max(0.75, alone + 0.2)  # merged back


def test_a_late_joiner_adopts_its_peers_model_before_contributing(
    tmp_path: Path, digits: Dataset
) -> None:
    section = {"rule": "gosgd", "push_prob": 0.5, "expected_nodes": 2}
    everything = tuple(range(10))
    old = _learner(tmp_path, "old", digits, everything)
    for _ in range(30):
        old.train_round()
    veteran = _collaboration(old, section, b"o")
    veteran.after_round(0, 0.0)  # joins (timeout 0) without a push
    new = _learner(tmp_path, "new", digits, (0, 1))
    joiner = Collaboration(new, CollaborationConfig.from_section(section), b"n" * 16)
    assert joiner.catching_up and joiner.wants_pull
    # Catching up: trains, but pushes nothing until it has a model worth sharing.
    assert joiner.after_round(new.train_round().steps, 1.0) is None
    assert joiner.reply_to_pull() is None
    answer = veteran.reply_to_pull()
    assert answer is not None
    assert joiner.offer(answer, 2.0)
    joiner.after_round(new.train_round().steps, 2.0)
    assert not joiner.catching_up and new.mixing_state["joined"] is True
    # It took the veteran's model whole, not a mix with its own 2-digit one.
    assert _accuracy(new, digits, everything) > 0.8
    total = veteran.rule.alpha + joiner.rule.alpha  # type: ignore[attr-defined]
    assert total == pytest.approx(1.0)  # GoSGD weight conserved through the adoption


def test_a_lone_first_node_stops_waiting_after_the_timeout(tmp_path: Path, digits: Dataset) -> None:
    section = {"rule": "average", "push_period": 1}
    learner = _learner(tmp_path, "first", digits, (0, 1))
    c = Collaboration(
        learner, CollaborationConfig.from_section(section), b"f" * 16, catch_up_timeout=5.0
    )
    assert c.after_round(learner.train_round().steps, 0.0) is None and c.catching_up
    assert c.after_round(learner.train_round().steps, 4.0) is None and c.catching_up
    c.after_round(learner.train_round().steps, 5.0)
    assert not c.catching_up
    assert c.after_round(learner.train_round().steps, 6.0) is not None


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
