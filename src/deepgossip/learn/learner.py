"""The Learner: a node's model, its local training and its thread-safety contract.

The node trains in rounds of ``steps_per_round`` SGD steps on the samples its
application stored (:class:`~deepgossip.learn.datastore.DataStore`). A round is
seconds of CPU, so it runs in a worker thread (:mod:`.service`) while
the event loop keeps answering pings; everything else that touches the model
(prediction for the API, merging peers' parameters, checkpoints) runs in other
threads. One re-entrant lock guards the model, taken per SGD *step* rather than
per round, so a prediction or a merge waits for at most one step.

Hooks for the sharing and mixing layers:

* ``with learner.locked() as model:`` read (or write) parameters under the lock,
  e.g. to compute the delta to publish;
* ``learner.apply(fn)`` runs ``fn(model)`` under the lock and counts it as a
  merge: ``model_version`` goes up, so the API shows the model changed;
* ``learner.mixing_state`` (JSON values) and ``learner.mixing_tensors`` (named
  tensors) are saved in every checkpoint and restored at start, e.g. GoSGD's
  weight alpha. Change them under the lock.

A local, deterministic held-out split (a hash of each sample's index in the
store, so a sample never moves between train and held-out as data grows, and
not across restarts either) gives the local accuracy the status reports.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from deepgossip.learn.checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    CheckpointError,
    check_model_state,
    check_optimizer_state,
    load_checkpoint,
    save_checkpoint,
)
from deepgossip.learn.datastore import DATA_FILE, DataLimits, DataStore, to_unit_float
from deepgossip.learn.models import build_model, model_names
from deepgossip.learn.params import flatten
from deepgossip.learn.train import TrainConfig, make_optimizer, predict, train_steps

__all__ = [
    "Learner",
    "LearningConfig",
    "RoundStats",
    "holdout_mask",
    "store_sample_shape",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class LearningConfig:
    """The ``[learning]`` section of a session file; every default is here, once."""

    model: str = "cnn"
    """A name of the model zoo (``logreg``, ``mlp``, ``cnn``)."""
    input_shape: tuple[int, int, int] = (1, 28, 28)
    """(channels, height, width) of one sample; ``[H, W]`` in TOML means one channel."""
    num_classes: int = 10
    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 64
    momentum: float = 0.9
    """SGD only."""
    weight_decay: float = 0.0
    steps_per_round: int = 50
    round_interval: float = 1.0
    """Seconds between the starts of two rounds (a late round starts at once)."""
    holdout_fraction: float = 0.1
    """Share of local samples kept out of training to measure local accuracy."""
    eval_samples: int = 1000
    """Held-out samples scored after each round (bounds the cost of a round)."""
    checkpoint_every: int = 10
    """Save a checkpoint every this many rounds (and at a clean shutdown)."""
    max_batch: int = 10_000
    """Most samples in one ``/v1/train`` or ``/v1/predict`` request."""
    max_samples: int = 100_000
    """Most samples the node stores."""
    seed: int = 0
    """Seeds the initial weights and the mini-batch draws."""

    def __post_init__(self) -> None:
        if self.model not in model_names():
            raise ValueError(f"[learning] model {self.model!r}: one of {model_names()}")
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(f"[learning] input_shape {list(self.input_shape)}: need [C, H, W]")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"[learning] optimizer {self.optimizer!r}: 'adam' or 'sgd'")
        positive = ("num_classes", "batch_size", "eval_samples", "checkpoint_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"[learning] {name} must be >= 1")
        if self.num_classes < 2:
            raise ValueError("[learning] num_classes must be >= 2")
        if self.steps_per_round < 0 or self.round_interval < 0:
            raise ValueError("[learning] steps_per_round and round_interval must be >= 0")
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.weight_decay < 0:
            raise ValueError("[learning] lr must be > 0 and weight_decay >= 0")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError("[learning] holdout_fraction must be in [0, 1)")
        DataLimits(self.max_batch, self.max_samples)  # validates

    @property
    def train(self) -> TrainConfig:
        return TrainConfig(
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            schedule="constant",
        )

    @property
    def limits(self) -> DataLimits:
        return DataLimits(self.max_batch, self.max_samples)

    @classmethod
    def keys(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))

    @classmethod
    def from_section(cls, table: Mapping[str, Any]) -> LearningConfig:
        """Build from a ``[learning]`` table; wrong types raise ``ValueError``.

        Keys this class does not know are left alone: the sharing and mixing
        layers read their settings from the same table.
        """
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in table:
                continue
            value = table[f.name]
            default = getattr(cls, f.name)
            if f.name == "input_shape":
                kwargs[f.name] = _shape(value)
            elif isinstance(default, bool) or isinstance(value, bool):
                raise ValueError(f"[learning] {f.name} must not be a boolean")
            elif isinstance(default, int):
                if not isinstance(value, int):
                    raise ValueError(f"[learning] {f.name} must be an integer, got {value!r}")
                kwargs[f.name] = value
            elif isinstance(default, float):
                if not isinstance(value, int | float):
                    raise ValueError(f"[learning] {f.name} must be a number, got {value!r}")
                kwargs[f.name] = float(value)
            else:
                if not isinstance(value, str):
                    raise ValueError(f"[learning] {f.name} must be a string, got {value!r}")
                kwargs[f.name] = value
        return cls(**kwargs)


def _shape(value: Any) -> tuple[int, int, int]:
    if (
        not isinstance(value, list | tuple)
        or len(value) not in (2, 3)
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in value)
    ):
        raise ValueError(f"[learning] input_shape must be [H, W] or [C, H, W], got {value!r}")
    dims = tuple(value)
    return (1, dims[0], dims[1]) if len(dims) == 2 else (dims[0], dims[1], dims[2])


def store_sample_shape(input_shape: tuple[int, int, int]) -> tuple[int, ...]:
    """Shape of one stored sample: (H, W) for one channel, else (C, H, W)."""
    return tuple(input_shape[1:]) if input_shape[0] == 1 else tuple(input_shape)


_MASK64 = (1 << 64) - 1


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def holdout_mask(start: int, count: int, fraction: float, seed: int) -> np.ndarray:
    """Which of the samples ``start..start+count`` are held out (bool array).

    A hash of (seed, index) decides each sample independently, so the split of
    old samples never changes when new ones arrive or the node restarts.
    """
    if count <= 0 or fraction <= 0:
        return np.zeros(max(count, 0), dtype=bool)
    idx = np.arange(start, start + count, dtype=np.uint64)
    mixed = _splitmix64(idx ^ np.uint64((seed * 0x5851F42D4C957F2D) & _MASK64))
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction


@dataclass(frozen=True)
class RoundStats:
    """What one :meth:`Learner.train_round` did."""

    round: int
    steps: int
    loss: float | None
    train_samples: int
    holdout_samples: int
    holdout_accuracy: float | None
    model_version: int
    seconds: float
    idle: bool
    """True when there was nothing to train on (no steps were taken)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DataHook = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``(x, y) -> (x', y')``: what a learner trains on instead of a chunk of samples."""


class Learner:
    """A node's model, optimizer, local data and training rounds (thread-safe)."""

    def __init__(
        self,
        config: LearningConfig,
        store: DataStore | None = None,
        *,
        checkpoint_path: str | os.PathLike[str] | None = None,
    ) -> None:
        """Build a fresh model, then restore ``checkpoint_path`` if it exists.

        A checkpoint that is corrupt or does not fit this configuration is moved
        aside (``<name>.corrupt``) with a warning and the learner starts fresh:
        a bad file must never keep a node from starting.
        """
        self.config = config
        self.store = store
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self._lock = threading.RLock()
        self._save_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._sample_shape = store_sample_shape(config.input_shape)
        self.model, self.optimizer, self.generator = self._fresh()
        self.model_version = 0
        self.rounds = 0
        self.steps = 0
        self.merges = 0
        self.mixing_state: dict[str, Any] = {}
        self.mixing_tensors: dict[str, torch.Tensor] = {}
        self.holdout_accuracy: float | None = None
        self.accuracy_version: int | None = None
        self.last_round: RoundStats | None = None
        self.checkpoint_version: int | None = None
        self.training = False
        self.data_hook: DataHook | None = None
        """Applied to every newly synced chunk of *training* samples before the
        learner trains on them (the held-out ones stay as the application sent
        them). For malicious behaviours in experiments (``deepgossip node
        --attack``, :meth:`deepgossip.attacks.behaviour.Attack.poison_data`):
        the sample log keeps the application's data, so a node restarted
        without the attack is honest again. Honest nodes never set it."""
        self._interrupt = threading.Event()
        self._seen = 0
        empty_x = torch.zeros((0, *config.input_shape))
        self._x_train, self._y_train = empty_x, torch.zeros(0, dtype=torch.int64)
        self._x_hold, self._y_hold = empty_x, torch.zeros(0, dtype=torch.int64)
        if self.checkpoint_path is not None and self.checkpoint_path.exists():
            self._restore(self.checkpoint_path)

    @classmethod
    def open(cls, config: LearningConfig, data_dir: str | os.PathLike[str]) -> Learner:
        """The learner of a node's data directory: its sample log and checkpoint.

        Replays ``samples.dglog`` (with the configuration's limits, shape and
        classes) and restores ``checkpoint.safetensors`` if present.
        """
        directory = Path(data_dir)
        store = DataStore(
            directory / DATA_FILE,
            limits=config.limits,
            sample_shape=store_sample_shape(config.input_shape),
            num_classes=config.num_classes,
        )
        return cls(config, store, checkpoint_path=directory / CHECKPOINT_FILE)

    def _fresh(self) -> tuple[nn.Module, torch.optim.Optimizer, torch.Generator]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            model = build_model(self.config.model, self.config.input_shape, self.config.num_classes)
        optimizer = make_optimizer(list(model.parameters()), self.config.train)
        return model, optimizer, torch.Generator().manual_seed(self.config.seed)

    # -- the hooks for sharing and mixing -----------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[nn.Module]:
        """The model, with training, prediction and checkpoints held off."""
        with self._lock:
            yield self.model

    def apply(self, fn: Callable[[nn.Module], T]) -> T:
        """Run ``fn(model)`` under the lock as a merge: ``model_version`` += 1."""
        with self._lock:
            result = fn(self.model)
            self.merges += 1
            self.model_version += 1
            return result

    def initial_parameters(self) -> torch.Tensor:
        """The flat parameters of the model every node of the session starts from.

        Rebuilt from ``config.seed`` (what :meth:`_fresh` does), not read from
        the current model, which a checkpoint may have moved: a defence uses it
        as the public state of peers that have not published a coordinate yet.
        """
        model, _, _ = self._fresh()
        return flatten(model)

    def parameters(self) -> dict[str, torch.Tensor]:
        """A consistent copy of the model's state dict (taken under the lock)."""
        with self._lock:
            return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    # -- data ---------------------------------------------------------------------------

    def sync_data(self) -> int:
        """Take samples the store gained since the last call; return how many."""
        if self.store is None:
            return 0
        with self._sync_lock:  # one reader at a time: each sample is taken once
            start = self._seen
            images, labels = self.store.read(start)
            n = len(labels)
            if n == 0:
                return 0
            x = torch.from_numpy(images.reshape((n, *self.config.input_shape)))
            y = torch.from_numpy(labels)
            hold = torch.from_numpy(
                holdout_mask(start, n, self.config.holdout_fraction, self.config.seed)
            )
            x_train, y_train = x[~hold], y[~hold]
            if self.data_hook is not None and len(y_train):
                x_train, y_train = self.data_hook(x_train, y_train)
            with self._lock:
                self._x_train = torch.cat([self._x_train, x_train])
                self._y_train = torch.cat([self._y_train, y_train])
                self._x_hold = torch.cat([self._x_hold, x[hold]])
                self._y_hold = torch.cat([self._y_hold, y[hold]])
                self._seen = start + n
            return n

    @property
    def train_samples(self) -> int:
        return len(self._y_train)

    @property
    def holdout_samples(self) -> int:
        return len(self._y_hold)

    def holdout_tensors(self, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to ``limit`` held-out samples (for scoring peers' updates)."""
        with self._lock:
            return self._x_hold[:limit], self._y_hold[:limit]

    # -- training -------------------------------------------------------------------------

    def train_round(self, steps: int | None = None) -> RoundStats:
        """Pick up new samples and run one round of SGD steps (call from a worker).

        Without training data the learner is idle: no steps, no new version.
        """
        start = time.perf_counter()
        self.sync_data()
        steps = self.config.steps_per_round if steps is None else steps
        if self.train_samples == 0 or steps <= 0:
            return self._stats(0, None, time.perf_counter() - start, idle=True)
        self.training = True
        try:
            total, done = 0.0, 0
            for _ in range(steps):
                if self._interrupt.is_set():  # shutting down: end the round early
                    break
                done += 1
                with self._lock:  # per step: a predict or a merge waits one step at most
                    total += train_steps(
                        self.model,
                        self.optimizer,
                        self._x_train,
                        self._y_train,
                        1,
                        self.config.batch_size,
                        self.generator,
                    )
            if done == 0:
                return self._stats(0, None, time.perf_counter() - start, idle=True)
            with self._lock:
                self.steps += done
                self.rounds += 1
                self.model_version += 1
                self._evaluate_locked()
        finally:
            self.training = False
        self.last_round = self._stats(done, total / done, time.perf_counter() - start)
        return self.last_round

    def interrupt(self) -> None:
        """Make the running round (and any later one) stop after its current step."""
        self._interrupt.set()

    def _stats(
        self, steps: int, loss: float | None, seconds: float, idle: bool = False
    ) -> RoundStats:
        return RoundStats(
            round=self.rounds,
            steps=steps,
            loss=loss,
            train_samples=self.train_samples,
            holdout_samples=self.holdout_samples,
            holdout_accuracy=self.holdout_accuracy,
            model_version=self.model_version,
            seconds=seconds,
            idle=idle,
        )

    def _evaluate_locked(self) -> None:
        n = min(self.holdout_samples, self.config.eval_samples)
        if n == 0:
            return
        probs = predict(self.model, self._x_hold[:n])
        self.holdout_accuracy = float((probs.argmax(dim=1) == self._y_hold[:n]).float().mean())
        self.accuracy_version = self.model_version

    def evaluate(self) -> float | None:
        """Score the held-out samples now (e.g. after a merge); None without any."""
        self.sync_data()
        with self._lock:
            self._evaluate_locked()
            return self.holdout_accuracy if self.holdout_samples else None

    # -- prediction -------------------------------------------------------------------------

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities, float32 (n, num_classes), for validated images.

        ``images``: uint8 (0..255) or float32 (0..1), shaped (n, *sample shape)
        or (n, C, H, W) (see :func:`deepgossip.learn.datastore.check_inputs`).
        """
        x = torch.from_numpy(
            np.ascontiguousarray(to_unit_float(images)).reshape((-1, *self.config.input_shape))
        )
        with self._lock:
            return predict(self.model, x).numpy()

    # -- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot for ``/v1/status`` (no lock: plain attribute reads)."""
        return {
            "model": self.config.model,
            "model_version": self.model_version,
            "rounds": self.rounds,
            "steps": self.steps,
            "merges": self.merges,
            "training": self.training,
            "samples": self.store.count if self.store is not None else self._seen,
            "train_samples": self.train_samples,
            "holdout_samples": self.holdout_samples,
            "holdout_accuracy": self.holdout_accuracy,
            "accuracy_version": self.accuracy_version,
            "last_loss": self.last_round.loss if self.last_round else None,
            "checkpoint_version": self.checkpoint_version,
        }

    # -- checkpoints ----------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        c = self.config
        return {
            "model": c.model,
            "input_shape": list(c.input_shape),
            "num_classes": c.num_classes,
            "optimizer": c.optimizer,
        }

    def snapshot(self) -> Checkpoint:
        """Everything a checkpoint holds, copied under the lock."""
        with self._lock:
            return Checkpoint(
                model={k: v.detach().clone() for k, v in self.model.state_dict().items()},
                optimizer=_clone_state(self.optimizer.state_dict()),
                generator=self.generator.get_state(),
                extra={k: v.detach().clone() for k, v in self.mixing_tensors.items()},
                meta={
                    "learner": {
                        **self._identity(),
                        "model_version": self.model_version,
                        "rounds": self.rounds,
                        "steps": self.steps,
                        "merges": self.merges,
                    },
                    "mixing": _json_copy(self.mixing_state),
                },
            )

    def save_checkpoint(self, path: str | os.PathLike[str] | None = None) -> int:
        """Save atomically to ``path`` (default: ``checkpoint_path``); return the version.

        The copy is taken under the lock; the slow write happens outside it.
        """
        target = Path(path) if path is not None else self.checkpoint_path
        if target is None:
            raise ValueError("no checkpoint path")
        with self._save_lock:
            checkpoint = self.snapshot()
            save_checkpoint(target, checkpoint)
            version = int(checkpoint.meta["learner"]["model_version"])
            self.checkpoint_version = version
            return version

    def _restore(self, path: Path) -> None:
        try:
            checkpoint = load_checkpoint(path)
            self._load(checkpoint)
        except CheckpointError as exc:
            aside = path.with_name(path.name + ".corrupt")
            log.warning(
                "checkpoint %s is unusable (%s); starting from a fresh model "
                "(the file is kept as %s)",
                path,
                exc,
                aside,
            )
            try:
                os.replace(path, aside)
            except OSError as move_error:
                log.warning("cannot move %s aside: %s", path, move_error)
            return
        log.info("restored %s at model version %d", path, self.model_version)

    def _load(self, checkpoint: Checkpoint) -> None:
        """Load into fresh objects, then swap them in: all or nothing."""
        learner = checkpoint.meta.get("learner")
        if not isinstance(learner, dict):
            raise CheckpointError("no learner metadata")
        identity = {k: learner.get(k) for k in self._identity()}
        if identity != self._identity():
            raise CheckpointError(f"made for {identity}, this learner is {self._identity()}")
        model, optimizer, generator = self._fresh()
        check_model_state(model, checkpoint.model)
        check_optimizer_state(optimizer, checkpoint.optimizer)
        try:
            model.load_state_dict(checkpoint.model)
            optimizer.load_state_dict(checkpoint.optimizer)
            if checkpoint.generator is not None:
                generator.set_state(checkpoint.generator)
            counters = {k: int(learner[k]) for k in ("model_version", "rounds", "steps", "merges")}
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"cannot load: {exc}") from None
        mixing = checkpoint.meta.get("mixing", {})
        if not isinstance(mixing, dict):
            raise CheckpointError("mixing state is not a JSON object")
        self._apply_config_hyperparameters(optimizer)
        with self._lock:
            self.model, self.optimizer, self.generator = model, optimizer, generator
            self.model_version = counters["model_version"]
            self.rounds = counters["rounds"]
            self.steps = counters["steps"]
            self.merges = counters["merges"]
            self.mixing_state = mixing
            self.mixing_tensors = dict(checkpoint.extra)
            self.checkpoint_version = self.model_version

    def _apply_config_hyperparameters(self, optimizer: torch.optim.Optimizer) -> None:
        """The session file wins over a checkpoint's learning rate and decay.

        An operator who lowers ``lr`` and restarts expects the new value; the
        optimizer's moments and step counts still come from the checkpoint.
        """
        for group in optimizer.param_groups:
            group["lr"] = self.config.lr
            group["weight_decay"] = self.config.weight_decay
            if self.config.optimizer == "sgd":
                group["momentum"] = self.config.momentum


def _clone_state(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "state": {
            i: {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
            for i, s in state["state"].items()
        },
        "param_groups": [dict(g) for g in state["param_groups"]],
    }


def _json_copy(value: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(value, allow_nan=False))
