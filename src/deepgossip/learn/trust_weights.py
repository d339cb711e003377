"""Learned trust weights (a DeGroot trust row), scored on the node's held-out data.

A node cannot see its peers' data, but it can see whether their models help on
its own held-out slice. Each received update is scored *before* it is mixed:

* ``L0`` = held-out loss of the node's current parameters ``w``;
* ``Lj`` = held-out loss of ``w`` with peer ``j``'s values substituted at the
  update's coordinates (for a dense update: the peer's model itself);
* advantage ``a = clip(ln(L0 / Lj), -a_max, a_max)``: positive if the peer's
  parameters beat ours, scale-free (a ratio of losses), symmetric;
* score ``S_j <- decay * S_j + a`` (a discounted sum: recent evidence counts most,
  old verdicts fade, so a peer that improves is forgiven);
* weights: softmax over the node itself (logit 0) and every peer heard from
  (logit ``eta * S_j``). They form a probability vector.

This is exponentiated-gradient / multiplicative weights with gain ``ln(L0/Lj)``:
``t_j`` is proportional to ``prod_t (L0_t / Lj_t) ** (eta * decay ** (T - t))``.
A peer as good as us gets the same weight as us (IID peers: plain averaging); a
peer sending noise (loss ratio ~100) gets ``exp(-eta * a_max)`` of our weight at
its first update and less after; a much better peer can take most of the weight
until our own model catches up, after which its advantage and weight fall back.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from deepgossip.learn.params import assign

__all__ = ["Evaluator", "HoldoutEvaluator", "TrustWeights"]

Evaluator = Callable[[torch.Tensor], float]
"""Flat parameter vector -> held-out loss (lower is better)."""


class TrustWeights:
    """Per-peer scores and the probability vector they induce (self first)."""

    def __init__(self, eta: float = 2.0, decay: float = 0.9, max_advantage: float = 5.0) -> None:
        if not eta > 0 or not 0.0 <= decay < 1.0 or not max_advantage > 0:
            raise ValueError("need eta > 0, 0 <= decay < 1 and max_advantage > 0")
        self.eta = eta
        self.decay = decay
        self.max_advantage = max_advantage
        self.scores: dict[bytes, float] = {}

    def advantage(self, own_loss: float, peer_loss: float) -> float:
        """``clip(ln(own / peer), -max, max)``; non-finite peer losses count as worst."""
        cap = self.max_advantage
        if not math.isfinite(peer_loss):
            return -cap
        if not math.isfinite(own_loss):
            return cap
        ratio = max(own_loss, 1e-12) / max(peer_loss, 1e-12)
        return max(-cap, min(cap, math.log(ratio)))

    def observe(self, origin: bytes, own_loss: float, peer_loss: float) -> float:
        """Fold one held-out comparison into ``origin``'s score; return the advantage."""
        a = self.advantage(own_loss, peer_loss)
        self.scores[origin] = self.decay * self.scores.get(origin, 0.0) + a
        return a

    def forget(self, origin: bytes) -> None:
        """Drop a peer (it left or was blacklisted); the others' weights renormalise."""
        self.scores.pop(origin, None)

    def probabilities(
        self, peers: Iterable[bytes] | None = None
    ) -> tuple[float, dict[bytes, float]]:
        """``(self_weight, {peer: weight})`` summing to 1 (over ``peers`` if given).

        Softmax with the largest logit subtracted, so it never overflows.
        """
        chosen = list(self.scores) if peers is None else list(peers)
        logits = [self.eta * self.scores.get(p, 0.0) for p in chosen]
        top = max([0.0, *logits])
        exp_self = math.exp(-top)
        exps = [math.exp(z - top) for z in logits]
        total = exp_self + sum(exps)
        return exp_self / total, {p: e / total for p, e in zip(chosen, exps, strict=True)}


class HoldoutEvaluator:
    """Held-out cross-entropy of a flat parameter vector, on a private model copy.

    The copy means scoring a candidate never disturbs the training model (or its
    optimizer); ``max_samples`` bounds the cost per received update.
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        max_samples: int = 1000,
        batch_size: int = 1000,
    ) -> None:
        if len(x) == 0 or len(x) != len(y):
            raise ValueError("held-out data must be non-empty with one label per sample")
        self.model = copy.deepcopy(model)
        self.model.eval()
        self.x = x[:max_samples]
        self.y = y[:max_samples]
        self.batch_size = batch_size
        self.calls = 0

    @torch.no_grad()
    def __call__(self, params: torch.Tensor) -> float:
        self.calls += 1
        assign(self.model, params)
        total = 0.0
        for i in range(0, len(self.x), self.batch_size):
            logits = self.model(self.x[i : i + self.batch_size])
            total += float(
                nn.functional.cross_entropy(
                    logits, self.y[i : i + self.batch_size], reduction="sum"
                )
            )
        return total / len(self.x)
