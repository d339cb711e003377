"""Outer momentum on the mixed model (SlowMo, Wang et al., ICLR 2020, for gossip).

Every round a node trains locally, then merges what its peers sent. Call the
parameters it started the round with ``start`` and the merged result
``merged``; their difference is the round's step. With ``beta > 0`` the node
keeps a velocity of these steps and moves by it instead of by the step alone::

    d = start - merged        # the round's step, as a descent direction
    v = beta * v + d
    model = start - v         # beta = 0: model = merged (off)

Why: with every peer averaged each round, the nodes' models stay equal, and the
network trains like one model that takes one step per round on a batch as large
as all nodes' batches together. On the same compute it makes N times fewer
sequential steps than a centralized model, and on Fashion-MNIST that cost
1.6 pp (docs/learning.md). Momentum across rounds lengthens the steps in the
directions consecutive rounds agree on, which is where the large-batch run
falls behind; the local optimizer's own momentum cannot, because the merge
resets its trajectory every round.

It is applied by each node to its own model, so it needs no coordination, and
under GoSGD or partial averaging it smooths each node's own trajectory the same
way. The state (``velocity`` and the round's ``start``) belongs to the node
and is checkpointed with its mixing state.
"""

from __future__ import annotations

import torch

__all__ = ["OuterMomentum"]


class OuterMomentum:
    """The velocity of one node's rounds; :meth:`step` once per round, after the merge."""

    def __init__(
        self,
        beta: float,
        start: torch.Tensor,
        velocity: torch.Tensor | None = None,
    ) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"outer momentum beta must be in [0, 1), got {beta}")
        self.beta = beta
        self.start = start.detach().clone()
        if velocity is not None and velocity.shape != self.start.shape:
            raise ValueError(
                f"velocity has shape {tuple(velocity.shape)}, parameters {tuple(start.shape)}"
            )
        self.velocity = (
            velocity.detach().clone() if velocity is not None else torch.zeros_like(self.start)
        )

    def step(self, merged: torch.Tensor) -> None:
        """Turn ``merged`` (flat parameters, changed in place) into this round's
        result, and start the next round from it."""
        if merged.shape != self.start.shape:
            raise ValueError(
                f"parameters have shape {tuple(merged.shape)}, expected {tuple(self.start.shape)}"
            )
        self.velocity.mul_(self.beta).add_(self.start - merged)
        torch.sub(self.start, self.velocity, out=merged)
        self.start.copy_(merged)

    def restart(self, parameters: torch.Tensor) -> None:
        """Forget the velocity and start from ``parameters``: after the node
        adopted a peer's model (catching up), whose trajectory is not ours."""
        self.start.copy_(parameters)
        self.velocity.zero_()
