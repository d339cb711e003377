"""Mixing rules: when a node pushes, and how it merges what it receives.

One interface (:class:`MixingRule`), chosen by name with :func:`make_rule`:

``gosgd``   Blot et al. 2016: push-sum weights. Start with ``alpha = 1/N``; with
            probability ``p`` per local step halve ``alpha`` and push
            ``(values, alpha/2)`` to one random peer; the receiver sets
            ``w <- (a_r w + a_s v) / (a_r + a_s)`` and ``a_r <- a_r + a_s``. The sum
            of all alphas (nodes plus messages in flight) is conserved.
``average`` Learnae-style: push every ``period`` steps; merge
            ``w <- mean(w, received)`` over the newest update per peer received
            within ``window``.
``trust``   as ``average`` but weighted by learned trust (:mod:`.trust_weights`):
            ``w <- (t_self w + sum_j t_j v_j) / (t_self + sum_j t_j)``.
``none``    standalone: never pushes, never merges (the baseline).

Every rule merges *values* (``SparseUpdate.kind == "values"``): a convex
combination of the node's parameters and the peers' published parameters. For a
sparse update the combination is per coordinate, over the updates that carry that
coordinate; coordinates no update carries keep the local value. Convexity is what
bounds the dynamics: a merge never moves a coordinate outside the range of the
values it combines, so mixing adds no step of its own to the local optimizer's
(docs/learning.md).

Calling pattern (the node's networking code; all methods are cheap except
``merge``, which touches the parameters and belongs with training)::

    rule.on_local_step(steps)
    if rule.should_push(rng):
        update = rule.make_outgoing(sharer.make_update(flatten(model), origin=me, round=r))
        send update to rule.config.fanout random peers (the same update to each)
    ...
    rule.offer(received_update, now)          # validates; False = duplicate/stale/own
    w = flatten(model); rule.merge(w, now); assign(model, w)

Not thread-safe: call ``offer`` and ``merge`` from one thread, or hold a lock.

Defences (optional, :mod:`deepgossip.trust.defense`): a rule built with a
``defense`` screens its buffer at the start of every ``merge`` (blacklisted
origins dropped, AUROR run over the batch, flagged updates dropped or held for a
neighbour poll) and merges only what the defence accepts:

* ``average`` / ``trust`` with a robust rule other than ``mean`` (median,
  trimmed mean, Krum, clipping, BALANCE): the merge result *is* the robust
  aggregate of ``{w} ∪ accepted`` (densified over ``w``); the trust weights are
  then not used. With ``mean`` the rule merges the accepted updates as it always
  does.
* ``gosgd`` merges one push at a time, so only one-at-a-time rules apply
  (``clipping`` bounds each pull, ``balance`` refuses distant updates); rules
  that need a set (median, trimmed mean, Krum) are refused at construction. A
  rejected push's alpha is *kept* (added to the receiver's alpha without mixing
  its values): the network's total weight stays conserved, the poisoned values
  never enter, and a blacklisted sender that keeps pushing only gives its weight
  away.

``defense=None`` (the default) is exactly the undefended behaviour.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from deepgossip.learn.sharing import (
    DEFAULT_UPDATE_LIMITS,
    SparseUpdate,
    UpdateLimits,
    validate_update,
)
from deepgossip.learn.trust_weights import Evaluator, TrustWeights

if TYPE_CHECKING:
    from deepgossip.trust.defense import Defense

__all__ = [
    "RULES",
    "Averaging",
    "GoSGD",
    "MergeReport",
    "MixingConfig",
    "MixingRule",
    "NoMixing",
    "TrustMixing",
    "make_rule",
    "weighted_merge",
]


_NEGLIGIBLE_WEIGHT = 1e-12
"""Own weight in :meth:`MixingRule.adopt`: positive (``weighted_merge`` keeps
every combination convex) but far below any received weight."""


@dataclass(frozen=True)
class MixingConfig:
    """Session settings of the mixing rule; every default is written here once.

    ``push_prob`` (GoSGD) and ``period`` (average, trust) are set so that a node
    pushes about once per ten local steps: on the MNIST MLP benchmark this
    reached centralized accuracy (docs/learning.md); pushing less often widens the
    gap between nodes' models, more often costs bandwidth for little gain.
    """

    rule: str = "gosgd"
    push_prob: float = 0.1
    """GoSGD: probability of a push per local step."""
    period: int = 10
    """average / trust: local steps between pushes."""
    fanout: int = 1
    """Peers each update is sent to (GoSGD splits alpha in fanout + 1 parts)."""
    window: float = math.inf
    """average / trust: updates older than this (caller's clock, arrival to merge)
    are dropped as stale. The harness measures it in rounds; a node in seconds."""
    trust_eta: float = 2.0
    """trust: logit per unit of score. 2 gives a noise-sending peer <5% weight at
    its first update and <0.1% after three (tests/test_mixing.py); larger values
    let held-out noise in IID scores sway the weights more."""
    trust_decay: float = 0.9
    trust_max_advantage: float = 5.0
    outer_momentum: float = 0.0
    """Momentum across rounds on the merged model (:mod:`.outer_momentum`);
    0 = off, the rule's merge as it is. The merge stays convex; the momentum is
    a step of the node's own, taken after it."""

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown mixing rule {self.rule!r}; choose one of {sorted(RULES)}")
        if not 0.0 < self.push_prob <= 1.0:
            raise ValueError(f"push_prob must be in (0, 1], got {self.push_prob}")
        if self.period < 1 or self.fanout < 1:
            raise ValueError("period and fanout must be >= 1")
        if not self.window >= 0:
            raise ValueError(f"window must be >= 0, got {self.window}")
        if not 0.0 <= self.outer_momentum < 1.0:
            raise ValueError(f"outer_momentum must be in [0, 1), got {self.outer_momentum}")


@dataclass
class MergeReport:
    """What one :meth:`MixingRule.merge` did (for logs and metrics)."""

    merged: int = 0
    """Updates combined into the local parameters."""
    expired: int = 0
    """Buffered updates dropped because they were older than the window."""
    coordinates: int = 0
    """Distinct coordinates changed."""
    weights: dict[bytes, float] = field(default_factory=dict)
    """Weight each merged origin had (``b"self"`` excluded)."""
    rejected: int = 0
    """Updates the defence dropped (blacklisted, flagged, refused by the rule)."""
    held: int = 0
    """Updates the defence held back for a neighbour poll (merged or dropped later)."""


@dataclass(slots=True)
class _Pending:
    update: SparseUpdate
    arrived: float


class MixingRule(ABC):
    """A push schedule plus a merge; see the module docstring for the call pattern."""

    name: ClassVar[str]

    def __init__(
        self,
        config: MixingConfig,
        *,
        size: int,
        self_id: bytes = b"",
        limits: UpdateLimits = DEFAULT_UPDATE_LIMITS,
        defense: Defense | None = None,
    ) -> None:
        self.config = config
        self.size = size
        self.self_id = self_id
        self.limits = limits
        self.defense = defense
        """Screens the buffer before every merge (None: undefended)."""
        self._steps = 0
        self._pending: list[_Pending] = []

    # -- schedule ------------------------------------------------------------------

    def on_local_step(self, steps: int = 1) -> None:
        """Count local optimizer steps; the push schedule runs on them."""
        if steps < 0:
            raise ValueError("steps must be >= 0")
        self._steps += steps

    @abstractmethod
    def should_push(self, rng: np.random.Generator) -> bool:
        """Whether to push now (consumes the steps counted since the last call)."""

    def make_outgoing(self, update: SparseUpdate) -> SparseUpdate:
        """The update to send to each of ``fanout`` peers (sets the carried weight)."""
        return update

    # -- receiving -----------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._pending)

    def offer(self, update: SparseUpdate, now: float) -> bool:
        """Validate and buffer a received update; ``False`` if it is ignored.

        Raises :class:`~.sharing.UpdateRejected` for a malformed update. Own updates
        (echoed back by gossip) and duplicates are ignored, not errors.
        """
        validate_update(update, self.size, kind="values", limits=self.limits)
        if self.self_id and update.origin == self.self_id:
            return False
        if not self._accept(update):
            return False
        self._pending.append(_Pending(update, float(now)))
        return True

    @abstractmethod
    def _accept(self, update: SparseUpdate) -> bool:
        """Rule-specific duplicate / staleness check (may drop buffered updates)."""

    @abstractmethod
    def merge(self, local: torch.Tensor, now: float) -> MergeReport:
        """Mix the buffered updates into ``local`` (in place) and clear the buffer."""

    def adopt(self, local: torch.Tensor, now: float) -> MergeReport:
        """Catch up: replace ``local`` by the received models' consensus (in place).

        For a node whose own parameters carry nothing worth keeping yet (a late
        joiner's fresh initialisation): every coordinate the buffered updates
        carry becomes their average weighted by the weight each carries (GoSGD's
        alpha; 1 for the other rules), as if the node's own weight were zero. The
        received weight is kept (GoSGD adds it to ``alpha``), so the network's
        total is conserved.
        """
        del now
        report = MergeReport()
        pairs = [(p.update, p.update.weight) for p in self._pending if p.update.weight > 0]
        self._pending.clear()
        if self.defense is not None:
            # Own parameters are meaningless here (nothing to cluster against), but
            # a blacklisted peer's model must not become ours.
            kept = [(u, c) for u, c in pairs if not self.defense.is_blacklisted(u.origin)]
            report.rejected = len(pairs) - len(kept)
            self._adopted(sum(c for u, c in pairs if self.defense.is_blacklisted(u.origin)))
            pairs = kept
        if not pairs:
            return report
        report.coordinates = weighted_merge(local, _NEGLIGIBLE_WEIGHT, pairs)
        report.merged = len(pairs)
        report.weights = {u.origin: c for u, c in pairs}
        self._adopted(sum(c for _, c in pairs))
        return report

    def _adopted(self, weight: float) -> None:
        """Hook: the rule's bookkeeping for weight received by :meth:`adopt`."""
        del weight  # only GoSGD keeps a weight


# ---------------------------------------------------------------------------- merging


def weighted_merge(
    local: torch.Tensor,
    self_weight: float,
    updates: Sequence[tuple[SparseUpdate, float]],
) -> int:
    """Per coordinate: ``w <- (s w + sum_u c_u v_u) / (s + sum_u c_u)``.

    Sums run over the updates that carry the coordinate; others keep ``w``. All
    weights must be positive, so the result is a convex combination. Returns the
    number of coordinates changed. Dense updates take a fast path.
    """
    if not updates:
        return 0
    if self_weight <= 0 or any(c <= 0 for _, c in updates):
        raise ValueError("mixing weights must be positive")
    if all(u.dense for u, _ in updates):
        acc = local * self_weight
        for u, c in updates:
            acc.add_(u.value_tensor(), alpha=c)
        local.copy_(acc.div_(self_weight + sum(c for _, c in updates)))
        return local.numel()
    acc = local * self_weight
    den = torch.full_like(local, self_weight)
    touched = torch.zeros(local.numel(), dtype=torch.bool)
    for u, c in updates:
        idx = u.index_tensor()
        acc.index_add_(0, idx, u.value_tensor(), alpha=c)
        den.index_add_(0, idx, torch.full((len(idx),), c, dtype=local.dtype))
        touched[idx] = True
    changed = torch.nonzero(touched).flatten()
    local[changed] = acc[changed] / den[changed]
    return int(changed.numel())


# ------------------------------------------------------------------------------ rules


class NoMixing(MixingRule):
    """Standalone training: the reference collaboration must beat."""

    name = "none"

    def should_push(self, rng: np.random.Generator) -> bool:
        self._steps = 0
        return False

    def _accept(self, update: SparseUpdate) -> bool:
        return False

    def merge(self, local: torch.Tensor, now: float) -> MergeReport:
        return MergeReport()


class GoSGD(MixingRule):
    """Gossip SGD with push-sum weights (Blot, Picard, Cord, Thome 2016).

    ``alpha`` is this node's share of the network's total weight (1). A push
    splits it into ``fanout + 1`` equal parts, keeps one and puts one on the
    outgoing update (sent once to each of ``fanout`` peers). Each message must
    reach exactly one receiver, once: duplicates are dropped by ``(origin,
    round)``, and a lost message takes its weight with it (only ratios matter, so
    this skews weights but never breaks convexity). Do not *broadcast* GoSGD
    updates through rumour mongering: every copy would add alpha again.

    For sparse updates the weights are still one scalar per node: coordinates the
    update carries mix with ``a_s / (a_r + a_s)``, the others not at all, and
    ``a_r`` grows by ``a_s`` either way.
    """

    name = "gosgd"
    SEEN_PER_ORIGIN: ClassVar[int] = 1024
    """Rounds remembered per origin for duplicate detection."""

    def __init__(
        self,
        config: MixingConfig,
        *,
        size: int,
        num_nodes: int,
        self_id: bytes = b"",
        limits: UpdateLimits = DEFAULT_UPDATE_LIMITS,
        defense: Defense | None = None,
    ) -> None:
        super().__init__(config, size=size, self_id=self_id, limits=limits, defense=defense)
        if num_nodes < 1:
            raise ValueError("num_nodes must be >= 1")
        if defense is not None and defense.config.robust.rule not in _GOSGD_ROBUST:
            raise ValueError(
                f"gosgd merges one push at a time; robust rule {defense.config.robust.rule!r} "
                f"needs a set of updates: use {'/'.join(_GOSGD_ROBUST)} or the average rule"
            )
        self.alpha = 1.0 / num_nodes
        self._seen: dict[bytes, deque[int]] = {}

    @property
    def pending_weight(self) -> float:
        """Alpha carried by received but not yet merged updates (the defence's
        poll-held ones included)."""
        held = self.defense.held_weight if self.defense is not None else 0.0
        return sum(p.update.weight for p in self._pending) + held

    def should_push(self, rng: np.random.Generator) -> bool:
        steps, self._steps = self._steps, 0
        if steps == 0:
            return False
        return bool(rng.random() < 1.0 - (1.0 - self.config.push_prob) ** steps)

    def make_outgoing(self, update: SparseUpdate) -> SparseUpdate:
        share = self.alpha / (self.config.fanout + 1)
        self.alpha -= self.config.fanout * share
        return replace(update, weight=share)

    def _adopted(self, weight: float) -> None:
        self.alpha += weight

    def _accept(self, update: SparseUpdate) -> bool:
        seen = self._seen.setdefault(update.origin, deque(maxlen=self.SEEN_PER_ORIGIN))
        if update.round in seen:
            return False
        seen.append(update.round)
        return True

    def merge(self, local: torch.Tensor, now: float) -> MergeReport:
        """Apply the buffered pushes one by one, in arrival order (never expire:
        dropping one would destroy its alpha)."""
        report = MergeReport()
        touched = torch.zeros(local.numel(), dtype=torch.bool)
        batch = [p.update for p in self._pending]
        self._pending.clear()
        rejected_weight = 0.0
        if self.defense is not None:
            screened = self.defense.screen(local, batch, now)
            report.held = screened.held
            rejected_weight = sum(u.weight for u, _ in screened.rejected)
            report.rejected = len(screened.rejected)
            plan = self.defense.per_update(local, screened.accepted)
        else:
            plan = [(u, True) for u in batch]
        for u, ok in plan:
            a_r, a_s = self.alpha, u.weight
            if not ok:
                rejected_weight += a_s
                report.rejected += 1
                continue
            values = u.value_tensor()
            if u.dense:
                local.mul_(a_r).add_(values, alpha=a_s).div_(a_r + a_s)
                touched[:] = True
            else:
                idx = u.index_tensor()
                local[idx] = (local[idx] * a_r + values * a_s) / (a_r + a_s)
                touched[idx] = True
            self.alpha = a_r + a_s
            report.merged += 1
            report.weights[u.origin] = a_s
        # A rejected push keeps its weight (module docstring): the accepted ones
        # mix as if it had never arrived, then its alpha joins ours.
        self.alpha += rejected_weight
        report.coordinates = int(touched.sum())
        return report


class Averaging(MixingRule):
    """Plain averaging with the newest update of each peer received within the window.

    Staleness bounds: an update older than the newest one seen from its origin is
    ignored on arrival (so a reordered or replayed update cannot pull the model
    back), a newer one replaces a buffered older one, and a buffered update older
    than ``window`` at merge time expires. Merged updates are consumed: each peer
    state is averaged in once, so a silent peer does not keep pulling the model
    towards its old parameters.
    """

    name = "average"

    def __init__(
        self,
        config: MixingConfig,
        *,
        size: int,
        self_id: bytes = b"",
        limits: UpdateLimits = DEFAULT_UPDATE_LIMITS,
        defense: Defense | None = None,
    ) -> None:
        super().__init__(config, size=size, self_id=self_id, limits=limits, defense=defense)
        self._latest: dict[bytes, int] = {}

    def should_push(self, rng: np.random.Generator) -> bool:
        if self._steps >= self.config.period:
            self._steps %= self.config.period
            return True
        return False

    def _accept(self, update: SparseUpdate) -> bool:
        if update.round <= self._latest.get(update.origin, -1):
            return False
        self._latest[update.origin] = update.round
        self._pending = [p for p in self._pending if p.update.origin != update.origin]
        return True

    def _fresh(self, local: torch.Tensor, now: float, report: MergeReport) -> list[SparseUpdate]:
        """The buffered updates within the window, screened by the defence if any."""
        fresh = [p.update for p in self._pending if now - p.arrived <= self.config.window]
        report.expired = len(self._pending) - len(fresh)
        self._pending.clear()
        if self.defense is None:
            return fresh
        screened = self.defense.screen(local, fresh, now)
        report.rejected = len(screened.rejected)
        report.held = screened.held
        # A poll may release an update older than a fresh one of the same origin.
        newest: dict[bytes, SparseUpdate] = {}
        for u in screened.accepted:
            if u.origin not in newest or u.round > newest[u.origin].round:
                newest[u.origin] = u
        report.rejected += len(screened.accepted) - len(newest)
        return list(newest.values())

    def _robust_merge(
        self, local: torch.Tensor, fresh: list[SparseUpdate], report: MergeReport
    ) -> bool:
        """Merge by the defence's robust rule if it has one (other than ``mean``).

        Returns False when the caller should merge as undefended. The result is
        the robust aggregate of ``{local} ∪ fresh``; when the rule cannot run and
        the defence keeps ``local``, nothing is merged.
        """
        if self.defense is None or self.defense.config.robust.rule == "mean":
            return False
        if not fresh:
            return True
        value = self.defense.aggregate(local, fresh)
        if value is None:
            report.rejected += len(fresh)
            return True
        report.coordinates = int((value != local).sum())
        local.copy_(value)
        report.merged = len(fresh)
        report.weights = {u.origin: 1.0 / (1 + len(fresh)) for u in fresh}
        return True

    def merge(self, local: torch.Tensor, now: float) -> MergeReport:
        report = MergeReport()
        fresh = self._fresh(local, now, report)
        if self._robust_merge(local, fresh, report):
            return report
        report.coordinates = weighted_merge(local, 1.0, [(u, 1.0) for u in fresh])
        report.merged = len(fresh)
        report.weights = {u.origin: 1.0 / (1 + len(fresh)) for u in fresh}
        return report


class TrustMixing(Averaging):
    """Averaging weighted by trust learned on the node's held-out data.

    Each fresh update is scored first (:meth:`TrustWeights.observe`: held-out loss
    of our parameters vs. ours with the peer's values substituted), then all are
    mixed with the resulting probability vector, renormalised per coordinate over
    self and the updates carrying it. Scoring before mixing means even a peer's
    first bad update enters with a tiny weight.
    """

    name = "trust"

    def __init__(
        self,
        config: MixingConfig,
        *,
        size: int,
        evaluator: Evaluator,
        self_id: bytes = b"",
        limits: UpdateLimits = DEFAULT_UPDATE_LIMITS,
        defense: Defense | None = None,
    ) -> None:
        super().__init__(config, size=size, self_id=self_id, limits=limits, defense=defense)
        self.evaluator = evaluator
        self.trust = TrustWeights(
            eta=config.trust_eta, decay=config.trust_decay, max_advantage=config.trust_max_advantage
        )

    def merge(self, local: torch.Tensor, now: float) -> MergeReport:
        report = MergeReport()
        fresh = self._fresh(local, now, report)
        if not fresh or self._robust_merge(local, fresh, report):
            return report
        own_loss = self.evaluator(local)
        for u in fresh:
            self.trust.observe(u.origin, own_loss, self.evaluator(u.to_dense(local)))
        self_weight, weights = self.trust.probabilities()
        pairs = [(u, weights[u.origin]) for u in fresh]
        # Weights can underflow to 0 for a peer that keeps sending garbage: skip it.
        pairs = [(u, c) for u, c in pairs if c > 0]
        report.coordinates = weighted_merge(local, self_weight, pairs)
        report.merged = len(pairs)
        report.weights = {u.origin: c for u, c in pairs}
        return report


_GOSGD_ROBUST = ("mean", "clipping", "balance")
"""Robust rules GoSGD can apply one push at a time (trust.defense.GOSGD_RULES)."""

RULES: dict[str, type[MixingRule]] = {
    "gosgd": GoSGD,
    "average": Averaging,
    "trust": TrustMixing,
    "none": NoMixing,
}


def make_rule(
    config: MixingConfig,
    *,
    size: int,
    self_id: bytes = b"",
    num_nodes: int = 1,
    evaluator: Evaluator | None = None,
    limits: UpdateLimits = DEFAULT_UPDATE_LIMITS,
    defense: Defense | None = None,
) -> MixingRule:
    """Build the rule named by ``config.rule`` for a model of ``size`` parameters.

    ``num_nodes`` (GoSGD's initial ``alpha = 1/N``; an estimate is fine, only
    ratios matter) and ``evaluator`` (trust: flat params -> held-out loss, e.g. a
    :class:`~.trust_weights.HoldoutEvaluator`) are required by those rules only.
    ``defense`` screens every merge (module docstring); ``none`` never merges.
    """
    if config.rule == "gosgd":
        return GoSGD(
            config,
            size=size,
            num_nodes=num_nodes,
            self_id=self_id,
            limits=limits,
            defense=defense,
        )
    if config.rule == "trust":
        if evaluator is None:
            raise ValueError("the trust rule needs an evaluator (held-out loss)")
        return TrustMixing(
            config, size=size, evaluator=evaluator, self_id=self_id, limits=limits, defense=defense
        )
    if config.rule == "average":
        return Averaging(config, size=size, self_id=self_id, limits=limits, defense=defense)
    return NoMixing(config, size=size, self_id=self_id, limits=limits, defense=defense)
