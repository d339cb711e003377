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

With a ``defense`` (:class:`~deepgossip.trust.defense.Defense`, from the
session's ``[defense]`` table) the mixing rule screens every merge through it;
the defence then runs in the worker thread, under this class's lock, and what
it drops is counted in :attr:`Collaboration.screened_out`. With polling, the
defence may hold a flagged update until neighbours answer (the decision arrives
on the event loop, :class:`~deepgossip.trust.polling.LoopPoller`); a round then
merges when a decided update is waiting even if nothing new arrived, so the
held update is not left until some peer's next push.

A ``publish_transform`` (experiments only: a node started with ``--attack``)
replaces the parameters this node publishes by what the transform makes of
them and of the parameters at the start of the round; the node's own model
stays what it trained and merged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from deepgossip.learn.learner import Learner
from deepgossip.learn.mixing import GoSGD, MixingConfig, MixingRule, make_rule
from deepgossip.learn.outer_momentum import OuterMomentum
from deepgossip.learn.params import assign, flatten
from deepgossip.learn.sharing import Sharer, SharingConfig, SparseUpdate, UpdateRejected
from deepgossip.learn.trust_weights import HoldoutEvaluator

if TYPE_CHECKING:
    from deepgossip.trust.defense import Defense

_OUTER_VELOCITY = "outer_momentum.velocity"
"""``learner.mixing_tensors`` key of the outer momentum's velocity (checkpointed).
The round's start is not saved: after a restart the round starts from the
restored model, which is where the last round ended."""

_MIXING_KEYS = {
    "rule": "rule",
    "push_prob": "push_prob",
    "push_period": "period",
    "fanout": "fanout",
    "window": "window",
    "outer_momentum": "outer_momentum",
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
    catch_up_timeout: float = 5.0
    """Seconds a new node with peers waits for their models before it starts
    sharing its own (see :class:`Collaboration`). Long enough for a pull's answers
    to arrive on a loaded network; short, because in a network of new nodes
    everyone waits this long once."""

    @classmethod
    def from_section(cls, table: dict[str, Any]) -> CollaborationConfig:
        mixing = {new: table[old] for old, new in _MIXING_KEYS.items() if old in table}
        sharing = {new: table[old] for old, new in _SHARING_KEYS.items() if old in table}
        # Sharing carries parameter values: every mixing rule merges values.
        return cls(
            mixing=MixingConfig(**mixing),
            sharing=SharingConfig(**sharing),
            expected_nodes=int(table.get("expected_nodes", 8)),
            catch_up_timeout=float(table.get("catch_up_timeout", 5.0)),
        )

    def to_section(self) -> dict[str, Any]:
        """The ``[learning]`` keys that :meth:`from_section` reads back as this config."""
        mixing = {old: getattr(self.mixing, new) for old, new in _MIXING_KEYS.items()}
        sharing = {old: getattr(self.sharing, new) for old, new in _SHARING_KEYS.items()}
        return {
            **mixing,
            **sharing,
            "expected_nodes": self.expected_nodes,
            "catch_up_timeout": self.catch_up_timeout,
        }


PublishTransform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(honest, reference) -> published``: the flat parameters a node publishes
instead of its trained ones, given those at the start of the round. For
malicious behaviours in experiments only (``deepgossip node --attack``,
:meth:`deepgossip.attacks.behaviour.Attack.poison_update`); the result is never
written back into the model."""


@dataclass(frozen=True)
class DefenseSummary:
    """A snapshot of one node's defence, as ``/v1/status`` reports it."""

    name: str
    """The defence (``"none"`` without one), e.g. ``"auror+clipping"``."""
    convicted: frozenset[bytes]
    """Peers the local detector convicted (the node's blacklist may hold more)."""
    rejected: int
    """Received updates the defence dropped."""
    rejected_by_reason: dict[str, int]
    """Those drops by reason (``blacklisted``, ``auror_flagged``, ``robust``, ...)."""


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
    """One node's sharing and mixing around its learner.

    Connectivity (``peers_available``, a callable the node answers from its
    membership view) drives three behaviours:

    * **Disconnected mode.** While no peer is live the learner keeps training;
      nothing is pushed (GoSGD keeps its whole weight instead of handing halves to
      nobody) and the local progress accumulates in the model.
    * **Reconnecting.** The first round that finds peers again pushes at once,
      whatever the schedule: the accumulated progress is republished, and the
      node asks its peers for theirs (:attr:`wants_pull`), the anti-entropy step
      that brings it back up to date without waiting for their next pushes.
    * **Late joining.** A node that never trained with anyone (no ``joined`` in
      its saved mixing state) starts *catching up*: it asks its peers for their
      models and does not push; the first models that arrive replace its own
      parameters (:meth:`~.mixing.MixingRule.adopt`), after which it contributes
      like everyone else. If nothing arrives within ``catch_up_timeout`` seconds
      of having peers (it is the first node, or all are new), it just starts.
      ``catch_up_timeout`` defaults to the config's.
    """

    def __init__(
        self,
        learner: Learner,
        config: CollaborationConfig,
        node_id: bytes,
        peers_available: Callable[[], bool] = lambda: True,
        catch_up_timeout: float | None = None,
        *,
        defense: Defense | None = None,
        publish_transform: PublishTransform | None = None,
    ) -> None:
        self.learner = learner
        self.config = config
        self.node_id = node_id
        self.peers_available = peers_available
        self.catch_up_timeout = (
            config.catch_up_timeout if catch_up_timeout is None else catch_up_timeout
        )
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
            defense=defense,
        )
        self.defense = defense
        self.publish_transform = publish_transform
        # The parameters at the start of the current round (after the last merge):
        # the reference a malicious transform builds its update from.
        self._reference = initial.clone() if publish_transform is not None else None
        if isinstance(self.rule, GoSGD) and "alpha" in learner.mixing_state:
            self.rule.alpha = float(learner.mixing_state["alpha"])
        self.outer: OuterMomentum | None = None
        if config.mixing.outer_momentum > 0:
            # Resumed from the checkpoint when it has the state (same model size).
            saved = learner.mixing_tensors.get(_OUTER_VELOCITY)
            if saved is not None and saved.shape != initial.shape:
                saved = None
            self.outer = OuterMomentum(config.mixing.outer_momentum, initial, saved)
            learner.mixing_tensors[_OUTER_VELOCITY] = self.outer.velocity
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(learner.config.seed)
        self._round = 0
        self.rejected = 0
        self.merged = 0
        self.screened_out = 0
        """Received updates the defence dropped (blacklisted origin, AUROR, robust rule)."""
        self._adopt_blacklisted = 0
        self.catching_up = config.mixing.rule != "none" and not learner.mixing_state.get(
            "joined", False
        )
        self.connected = True
        self.wants_pull = self.catching_up
        """Set when the node should ask its peers for their models; the node's
        networking code sends the request and clears it."""
        self.reconnections = 0
        self._peers_since: float | None = None

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
            connected = self.peers_available()
            reconnected = connected and not self.connected
            self.connected = connected
            if reconnected:
                self.reconnections += 1
                self.wants_pull = True
            update = None
            if self.catching_up:
                self._catch_up(connected, now)
            elif connected and steps and (self.rule.should_push(self._rng) or reconnected):
                update = self._build_update()
            if (self.rule.pending or self._poll_returns()) and not self.catching_up:

                def merge(model: Any) -> int:
                    w = flatten(model)
                    report = self.rule.merge(w, now)
                    assign(model, w)
                    self.screened_out += report.rejected
                    return report.merged

                self.merged += self.learner.apply(merge)
            if self.outer is not None and steps and not self.catching_up:
                with self.learner.locked() as model:
                    w = flatten(model)
                    self.outer.step(w)  # every round, merged or not
                    assign(model, w)
            if isinstance(self.rule, GoSGD):
                self.learner.mixing_state["alpha"] = self.rule.alpha
            if self.publish_transform is not None:
                with self.learner.locked() as model:
                    self._reference = flatten(model)
            return update

    def _poll_returns(self) -> bool:
        """Whether the defence has updates whose poll ended: the next screen
        returns them, so merge even if nothing else is pending."""
        return self.defense is not None and self.defense.decided > 0

    def defense_summary(self) -> DefenseSummary:
        """What the defence did so far (for ``/v1/status``), read under the lock:
        the worker thread mutates the defence while it merges."""
        with self._lock:
            defense = self.defense
            if defense is None:
                return DefenseSummary("none", frozenset(), self.screened_out, {})
            prefix = "rejected_"
            reasons = {
                k[len(prefix) :]: v for k, v in defense.stats.items() if k.startswith(prefix)
            }
            if robust := defense.stats.get("robust_rejected", 0):
                reasons["robust"] = robust
            if self._adopt_blacklisted:
                reasons["blacklisted"] = reasons.get("blacklisted", 0) + self._adopt_blacklisted
            return DefenseSummary(
                defense.config.name, defense.blacklisted, self.screened_out, reasons
            )

    def _catch_up(self, connected: bool, now: float) -> None:
        """Late joiner: adopt the first models that arrive, or give up waiting."""
        if self.rule.pending:

            def adopt(model: Any) -> int:
                w = flatten(model)
                report = self.rule.adopt(w, now)
                assign(model, w)
                # Adoption drops blacklisted origins itself (nothing to screen against).
                self.screened_out += report.rejected
                self._adopt_blacklisted += report.rejected
                return report.merged

            self.merged += self.learner.apply(adopt)
            if self.outer is not None:
                with self.learner.locked() as model:
                    self.outer.restart(flatten(model))  # the adopted trajectory is not ours
            self._joined()
        elif connected:
            self._peers_since = now if self._peers_since is None else self._peers_since
            if now - self._peers_since >= self.catch_up_timeout:
                self._joined()

    def _joined(self) -> None:
        self.catching_up = False
        self.learner.mixing_state["joined"] = True

    def _build_update(self) -> SparseUpdate:
        # Rounds must grow across restarts too (peers drop old ones): wall-clock
        # milliseconds do that without persisted state.
        self._round = max(self._round + 1, int(time.time() * 1000))
        with self.learner.locked() as model:
            params = flatten(model)
        if self.publish_transform is not None and self._reference is not None:
            params = self.publish_transform(params, self._reference)
        return self.rule.make_outgoing(
            self.sharer.make_update(
                params,
                origin=self.node_id,
                round=self._round,
                samples=self.learner.train_samples,
            )
        )

    def reply_to_pull(self) -> SparseUpdate | None:
        """Our current model for a peer that asked (event loop). None while we are
        catching up ourselves: a fresh model is no help to anyone."""
        with self._lock:
            if self.catching_up or self.config.mixing.rule == "none":
                return None
            return self._build_update()
