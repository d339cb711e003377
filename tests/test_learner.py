"""The Learner (rounds, idle, predict, lock hooks) and its checkpoints."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from deepgossip.learn.checkpoint import (
    CheckpointError,
    flatten_optimizer_state,
    load_checkpoint,
    unflatten_optimizer_state,
)
from deepgossip.learn.data import Dataset, load_dataset
from deepgossip.learn.datastore import DataStore
from deepgossip.learn.learner import Learner, LearningConfig, holdout_mask

DIGITS = LearningConfig(
    model="logreg", input_shape=(1, 8, 8), steps_per_round=60, lr=0.01, holdout_fraction=0.2
)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """As in a node (learner_executor): two threads on a busy 2-core box collapse."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def _store(tmp_path: Path, data: Dataset | None = None, n: int = 600) -> DataStore:
    store = DataStore(tmp_path / "samples.dglog", sample_shape=(8, 8), num_classes=10)
    if data is not None:
        store.append(data.train_images[:n], data.train_labels[:n])
    return store


def test_a_round_improves_holdout_accuracy(tmp_path: Path, digits: Dataset) -> None:
    learner = Learner(DIGITS, _store(tmp_path, digits))
    before = learner.evaluate()
    assert before is not None and learner.holdout_samples > 50
    stats = [learner.train_round() for _ in range(3)]
    after = stats[-1].holdout_accuracy
    assert after is not None and after > max(0.8, before + 0.3)
    assert [s.model_version for s in stats] == [1, 2, 3]
    assert learner.steps == 180 and not stats[-1].idle
    assert learner.train_samples + learner.holdout_samples == 600
    status = learner.status()
    assert status["model_version"] == 3 and status["samples"] == 600
    assert status["holdout_accuracy"] == after


def test_idle_without_data(tmp_path: Path) -> None:
    learner = Learner(DIGITS, _store(tmp_path))
    stats = learner.train_round()
    assert stats.idle and stats.steps == 0 and learner.model_version == 0
    assert Learner(DIGITS).train_round().idle  # no store at all
    assert learner.evaluate() is None


def test_new_samples_are_picked_up(tmp_path: Path, digits: Dataset) -> None:
    store = _store(tmp_path)
    learner = Learner(DIGITS, store)
    assert learner.train_round().idle
    store.append(digits.train_images[:100], digits.train_labels[:100])
    assert not learner.train_round(steps=2).idle
    store.append(digits.train_images[100:150], digits.train_labels[100:150])
    learner.train_round(steps=1)
    assert learner.train_samples + learner.holdout_samples == 150


def test_holdout_split_is_stable_as_data_grows() -> None:
    whole = holdout_mask(0, 1000, 0.1, seed=3)
    parts = np.concatenate([holdout_mask(0, 400, 0.1, 3), holdout_mask(400, 600, 0.1, 3)])
    np.testing.assert_array_equal(whole, parts)
    assert 60 < whole.sum() < 140
    assert not np.array_equal(whole, holdout_mask(0, 1000, 0.1, seed=4))
    assert not holdout_mask(0, 100, 0.0, 0).any()


def test_predict_shape(tmp_path: Path, digits: Dataset) -> None:
    learner = Learner(DIGITS, _store(tmp_path, digits))
    learner.train_round(steps=5)
    probs = learner.predict(digits.test_images[:7])
    assert probs.shape == (7, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    floats = learner.predict(digits.test_images[:7].astype(np.float32) / 255)
    np.testing.assert_allclose(floats, probs, rtol=1e-5)


def test_apply_and_locked_hooks(tmp_path: Path, digits: Dataset) -> None:
    learner = Learner(DIGITS, _store(tmp_path, digits))

    def zero(model: torch.nn.Module) -> str:
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        return "merged"

    assert learner.apply(zero) == "merged"
    assert learner.model_version == 1 and learner.merges == 1
    assert all(float(p.abs().sum()) == 0 for p in learner.parameters().values())

    done = threading.Event()
    with learner.locked() as model:
        before = [p.detach().clone() for p in model.parameters()]
        worker = threading.Thread(target=lambda: (learner.train_round(steps=3), done.set()))
        worker.start()
        time.sleep(0.3)  # the round cannot take a step while we hold the lock
        assert not done.is_set()
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    worker.join(10)
    assert done.is_set() and learner.model_version == 2


def test_config_from_section() -> None:
    assert LearningConfig.from_section({}) == LearningConfig()
    config = LearningConfig.from_section(
        {"model": "mlp", "input_shape": [8, 8], "lr": 1, "theta_u": 0.1}  # theta_u: not ours
    )
    assert config.input_shape == (1, 8, 8) and config.lr == 1.0 and config.model == "mlp"
    for bad in (
        {"model": "resnet"},
        {"steps_per_round": "10"},
        {"steps_per_round": True},
        {"input_shape": [28]},
        {"holdout_fraction": 1.0},
        {"optimizer": "lbfgs"},
    ):
        with pytest.raises(ValueError):
            LearningConfig.from_section(bad)


# -- checkpoints -------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_checkpoint_round_trip_is_exact(tmp_path: Path, digits: Dataset, optimizer: str) -> None:
    config = LearningConfig(
        model="mlp", input_shape=(1, 8, 8), steps_per_round=10, optimizer=optimizer, lr=0.01
    )
    path = tmp_path / "ck.safetensors"
    store = _store(tmp_path, digits)
    a = Learner(config, store, checkpoint_path=path)
    a.train_round()
    a.train_round()
    a.mixing_state["alpha"] = 0.25
    a.mixing_tensors["reference"] = torch.arange(4.0)
    assert a.save_checkpoint() == 2

    b = Learner(config, store, checkpoint_path=path)
    assert b.model_version == 2 and b.steps == 20 and b.checkpoint_version == 2
    assert b.mixing_state == {"alpha": 0.25}
    assert torch.equal(b.mixing_tensors["reference"], torch.arange(4.0))
    # one more step with and without the reload: bit-identical (moments, step counts, RNG)
    a.train_round(steps=1)
    b.train_round(steps=1)
    pa, pb = a.parameters(), b.parameters()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert b.model_version == a.model_version == 3


def test_optimizer_state_flattening_round_trip() -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    tensors, plain = flatten_optimizer_state(opt.state_dict())
    assert set(tensors) == {
        f"optimizer/{i}/{k}" for i in (0, 1) for k in ("step", "exp_avg", "exp_avg_sq")
    }
    restored = unflatten_optimizer_state(tensors, plain)
    assert restored["param_groups"] == opt.state_dict()["param_groups"]


@pytest.mark.parametrize("damage", ["garbage", "truncate", "flip", "other_model"])
def test_corrupt_checkpoint_starts_fresh_with_a_warning(
    tmp_path: Path, digits: Dataset, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ck.safetensors"
    learner = Learner(DIGITS, _store(tmp_path, digits), checkpoint_path=path)
    learner.train_round(steps=3)
    learner.save_checkpoint()
    data = bytearray(path.read_bytes())
    config = DIGITS
    if damage == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    elif damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "flip":
        data[-10] ^= 0x40  # a bit of a weight
        path.write_bytes(bytes(data))
        with pytest.raises(CheckpointError, match="checksum"):
            load_checkpoint(path)
    else:
        config = LearningConfig(model="mlp", input_shape=(1, 8, 8))
    with caplog.at_level(logging.WARNING):
        fresh = Learner(config, _store(tmp_path / "other"), checkpoint_path=path)
    assert fresh.model_version == 0 and fresh.checkpoint_version is None
    assert "starting from a fresh model" in caplog.text
    assert not path.exists() and path.with_name(path.name + ".corrupt").exists()
    fresh.save_checkpoint()  # and the next save works
    assert path.exists()
