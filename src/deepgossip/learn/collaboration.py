"""Collaboration: a running learner plus its sharing and mixing, across threads.

The learner trains in its worker thread; updates arrive on the event loop. This
class is the one place where the two meet:

* ``offer(update)`` (event loop) hands a received update to the mixing rule,
  under a lock, so it never races a merge;
* ``after_round()`` (worker thread, right after a training round) builds this
  node's next update from the trained model when the rule says so, then merges
  what arrived into the model through :meth:`Learner.apply`;
* the event loop then pushes that update with the node's exchange.

The mixing state that must survive a restart (GoSGD's weight) lives in the
learner's ``mixing_state``, which every checkpoint saves.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from deepgossip.learn.learner import Learner
from deepgossip.learn.mixing import GoSGD, MixingConfig, MixingRule, make_rule
from deepgossip.learn.params import assign, flatten
from deepgossip.learn.sharing import Sharer, SharingConfig, SparseUpdate, UpdateRejected
from deepgossip.learn.trust_weights import HoldoutEvaluator

_MIXING_KEYS = {
    "rule": "rule",
    "push_prob": "push_prob",
    "push_period": "period",
    "fanout": "fanout",
    "window": "window",
}
_SHARING_KEYS = {
    "theta_u": "theta_u",
    "gamma": "gamma",
    "selection": "selection",
    "tau": "tau",
    "value_dtype": "value_dtype",
    "theta_d": "theta_d",
}


@dataclass(frozen=True)
class CollaborationConfig:
    """The ``[learning]`` keys of sharing and mixing (see docs/learning.md)."""

    mixing: MixingConfig
    sharing: SharingConfig
    expected_nodes: int = 8
    """GoSGD's starting weight is 1 / expected_nodes; only ratios matter, so an
    estimate is enough."""

    @classmethod
    def from_section(cls, table: dict[str, Any]) -> CollaborationConfig:
        mixing = {new: table[old] for old, new in _MIXING_KEYS.items() if old in table}
        sharing = {new: table[old] for old, new in _SHARING_KEYS.items() if old in table}
        # Sharing carries parameter values: every mixing rule merges values.
        return cls(
            mixing=MixingConfig(**mixing),
            sharing=SharingConfig(**sharing),
            expected_nodes=int(table.get("expected_nodes", 8)),
        )

    def to_section(self) -> dict[str, Any]:
        """The ``[learning]`` keys that :meth:`from_section` reads back as this config."""
        mixing = {old: getattr(self.mixing, new) for old, new in _MIXING_KEYS.items()}
        sharing = {old: getattr(self.sharing, new) for old, new in _SHARING_KEYS.items()}
        return {**mixing, **sharing, "expected_nodes": self.expected_nodes}


class _GrowingHoldout:
    """Held-out loss for the trust rule, on the learner's held-out samples, which
    grow as the application sends data (the evaluator is rebuilt when they do)."""

    def __init__(self, learner: Learner, max_samples: int = 1000) -> None:
        self.learner = learner
        self.max_samples = max_samples
        self._evaluator: HoldoutEvaluator | None = None
        self._samples = 0

    def __call__(self, params: torch.Tensor) -> float:
        n = min(self.learner.holdout_samples, self.max_samples)
        if n == 0:
            return 0.0  # no evidence yet: every candidate scores the same
        if self._evaluator is None or n != self._samples:
            x, y = self.learner.holdout_tensors(n)
            with self.learner.locked() as model:
                self._evaluator = HoldoutEvaluator(model, x, y, max_samples=n)
            self._samples = n
        return self._evaluator(params)


class Collaboration:
    def __init__(self, learner: Learner, config: CollaborationConfig, node_id: bytes) -> None:
        self.learner = learner
        self.config = config
        self.node_id = node_id
        with learner.locked() as model:
            initial = flatten(model)
        self.size = int(initial.numel())
        self.sharer = Sharer(initial, config.sharing, seed=learner.config.seed)
        self.rule: MixingRule = make_rule(
            config.mixing,
            size=self.size,
            self_id=node_id,
            num_nodes=config.expected_nodes,
            evaluator=_GrowingHoldout(learner) if config.mixing.rule == "trust" else None,
        )
        if isinstance(self.rule, GoSGD) and "alpha" in learner.mixing_state:
            self.rule.alpha = float(learner.mixing_state["alpha"])
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(learner.config.seed)
        self._round = 0
        self.rejected = 0
        self.merged = 0

    def offer(self, update: SparseUpdate, now: float) -> bool:
        """A received update, from the event loop; False if refused or ignored."""
        try:
            with self._lock:
                return self.rule.offer(update, now)
        except UpdateRejected:
            self.rejected += 1
            return False

    def after_round(self, steps: int, now: float) -> SparseUpdate | None:
        """Maybe build our update, then merge what arrived (worker thread).

        The update carries the freshly trained model, *before* the merge: what a
        peer averages in is then this node's new local progress, as in FedAvg,
        rather than a mix that mostly echoes the peers' own models back (pushing
        after the merge diluted each round's progress by the number of peers and
        left label-skewed nodes far behind; docs/learning.md). The model served
        and checkpointed is the merged one.
        """
        with self._lock:
            self.rule.on_local_step(steps)
            update = None
            if steps and self.rule.should_push(self._rng):
                # Rounds must grow across restarts too (peers drop old ones):
                # wall-clock milliseconds do that without persisted state.
                self._round = max(self._round + 1, int(time.time() * 1000))
                with self.learner.locked() as model:
                    params = flatten(model)
                update = self.rule.make_outgoing(
                    self.sharer.make_update(
                        params,
                        origin=self.node_id,
                        round=self._round,
                        samples=self.learner.train_samples,
                    )
                )
            if self.rule.pending:

                def merge(model: Any) -> int:
                    w = flatten(model)
                    report = self.rule.merge(w, now)
                    assign(model, w)
                    return report.merged

                self.merged += self.learner.apply(merge)
            if isinstance(self.rule, GoSGD):
                self.learner.mixing_state["alpha"] = self.rule.alpha
            return update
