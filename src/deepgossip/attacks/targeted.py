"""Targeted model poisoning by alternating minimization (Bhagoji et al. 2019).

Bhagoji, Chakraborty, Mittal and Calo, "Analyzing federated learning through an
adversarial lens", ICML 2019. For experiments and tests only.

The attacker wants a few chosen examples ``target_x`` (e.g. test images) classified
as a chosen wrong label ``target_label``, while its published model still looks and
performs like an honest one. Let ``G`` be its parameters before the round (its
view of the global model), ``w`` the current parameters and ``delta = w - G``.
:func:`alternating_minimization` runs ``steps`` rounds of:

1. **Boosted adversarial step.** From ``w``, take ``adversarial_steps`` full-batch
   optimizer steps on the adversarial objective ``CE(model(target_x),
   target_label)``; call the change ``delta_adv``; then set
   ``w <- w_before + boost * delta_adv`` (explicit boosting: the receiver divides
   the attacker's contribution by the number of updates it averages, so ``boost``
   = that number lets the adversarial part arrive whole).
2. **Stealth step.** From there, take ``benign_steps`` mini-batch optimizer steps on
   ``CE(model(x_b), y_b) + rho * ||delta - delta_benign||^2``: the benign loss on the
   attacker's own data keeps accuracy up (so accuracy checks pass), and the
   distance penalty keeps the published delta near ``delta_benign``, the attacker's
   estimate of an honest delta (so distance-based defences pass).

``delta_benign`` is, as in the paper, either supplied (e.g. the last change of the
global model) or estimated by training a copy of the model from ``G`` with plain
benign steps on the attacker's own data, as many as the stealth phase takes in
total. With ``rho = 0`` no estimate is made.

The phases use the repository's optimizers
(:func:`deepgossip.learn.train.make_optimizer`) and the estimate its training loop
(:func:`deepgossip.learn.train.train_steps`); two separate optimizers keep the two
phases' optimizer state apart. The default is plain SGD (:data:`ATTACK_TRAIN`), not
the nodes' Adam: Adam normalises every coordinate's step, so a boosted Adam step
moves *every* parameter by about ``boost * lr`` whether or not it matters for the
targets. On digits with logistic regression (boost 5-10, 20 rounds of 1-3
adversarial and 5-10 benign steps, Adam at lr 1e-3 or 1e-2) that left the malicious
model at 50-61% test accuracy against 85% with SGD at lr 0.1, for the same 100%
attack success.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from deepgossip.learn.params import assign, flatten
from deepgossip.learn.train import TrainConfig, make_optimizer, train_steps

__all__ = ["ATTACK_TRAIN", "alternating_minimization", "attack_success", "estimate_benign_delta"]

ATTACK_TRAIN = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.0)
"""The attacker's optimizer by default: plain SGD at 0.1 (see the module docstring)."""


@torch.no_grad()
def attack_success(model: nn.Module, target_x: torch.Tensor, target_label: int) -> float:
    """Fraction of ``target_x`` that ``model`` classifies as ``target_label``.

    Also the trigger success of a backdoor, given the triggered test images
    (:func:`deepgossip.attacks.data.apply_trigger`) of the non-target classes.
    """
    if len(target_x) == 0:
        raise ValueError("no target examples")
    model.eval()
    predicted = model(target_x).argmax(dim=1)
    return float((predicted == target_label).float().mean())


def estimate_benign_delta(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    *,
    batch_size: int = 64,
    train_config: TrainConfig | None = None,
    generator: torch.Generator,
) -> torch.Tensor:
    """What an honest round of ``steps`` benign steps would change, on a copy of ``model``."""
    shadow = copy.deepcopy(model)
    start = flatten(shadow)
    optimizer = make_optimizer(list(shadow.parameters()), train_config or ATTACK_TRAIN)
    train_steps(shadow, optimizer, x, y, steps, batch_size, generator)
    return flatten(shadow) - start


def alternating_minimization(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target_x: torch.Tensor,
    target_label: int,
    steps: int,
    *,
    adversarial_steps: int = 1,
    benign_steps: int = 1,
    batch_size: int = 64,
    train_config: TrainConfig | None = None,
    boost: float = 1.0,
    rho: float = 0.0,
    benign_delta: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Train ``model`` in place by alternating minimization; return its flat parameters.

    ``steps`` rounds, each of ``adversarial_steps`` boosted adversarial steps then
    ``benign_steps`` stealth steps (see the module docstring); the stealth steps
    draw mini-batches of ``batch_size`` from ``(x, y)`` with ``generator``.
    ``train_config`` chooses the optimizer and learning rate (default
    :data:`ATTACK_TRAIN`; its ``epochs`` and ``schedule`` are not used); ``boost``
    multiplies each round's adversarial change; ``rho`` weighs the distance penalty
    to ``benign_delta`` (estimated when ``None`` and ``rho > 0``). The model should
    start at the attacker's reference point ``G``. The returned vector is the
    malicious model to publish as is: the boost is already inside it.
    """
    if steps < 0 or adversarial_steps < 1 or benign_steps < 1:
        raise ValueError(
            f"need steps >= 0, adversarial_steps >= 1, benign_steps >= 1; got {steps}, "
            f"{adversarial_steps}, {benign_steps}"
        )
    if not (math.isfinite(boost) and boost > 0):
        raise ValueError(f"boost must be a finite number > 0, got {boost}")
    if not (math.isfinite(rho) and rho >= 0):
        raise ValueError(f"rho must be a finite number >= 0, got {rho}")
    if len(target_x) == 0:
        raise ValueError("no target examples")
    config = train_config or ATTACK_TRAIN
    generator = generator or torch.Generator().manual_seed(0)
    reference = flatten(model)
    if rho > 0 and benign_delta is None:
        benign_delta = estimate_benign_delta(
            model,
            x,
            y,
            steps * benign_steps,
            batch_size=batch_size,
            train_config=config,
            generator=torch.Generator().manual_seed(
                int(torch.randint(0, 2**62, (1,), generator=generator))
            ),
        )
    anchor = None if benign_delta is None else reference + benign_delta

    params = list(model.parameters())
    adversarial_opt = make_optimizer(params, config)
    benign_opt = make_optimizer(params, config)
    target_y = torch.full((len(target_x),), int(target_label), dtype=torch.int64)
    loss_fn = nn.functional.cross_entropy
    for _ in range(steps):
        before = flatten(model)
        model.train()
        for _ in range(adversarial_steps):
            # Full batch: the targets are a handful of examples, and every one counts.
            adversarial_opt.zero_grad(set_to_none=True)
            loss_fn(model(target_x), target_y).backward()
            adversarial_opt.step()
        assign(model, before + boost * (flatten(model) - before))

        for _ in range(benign_steps):
            idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=generator)
            benign_opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            if rho > 0 and anchor is not None:
                # ||delta - delta_benign||^2 = ||w - (G + delta_benign)||^2
                w = torch.cat([p.reshape(-1) for p in params])
                loss = loss + rho * (w - anchor).pow(2).sum()
            loss.backward()
            benign_opt.step()
    return flatten(model)
