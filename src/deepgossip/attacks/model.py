"""Update poisoning: what a malicious node publishes instead of its honest parameters.

For experiments and tests only. Every function is pure, takes and returns 1-D
float32 torch tensors (flat parameter vectors in :mod:`deepgossip.learn.params`
layout), never aliases or modifies its inputs, and draws randomness only from the
``torch.Generator`` it is given.

Deltas and values
-----------------
Nodes publish parameter *values* (:mod:`deepgossip.learn.sharing`), but every attack
below is defined on a *delta* relative to a reference point::

    reference   G = the attacker's parameters before its local training round
                    (what it had after its last merge: its view of the "global" model)
    honest      X = its parameters after an honest (or data-poisoned) round
    delta       d = X - G
    published       G + attack(d)          (:func:`to_values` / :func:`deltas_from`)

The peers' updates the attacker has received are turned into deltas against the
*same* reference, ``d_i = v_i - G``: in a gossip network there is no common global
model, and this is the point the attacker's own delta starts from. A sparse update
densified over ``G`` (``update.to_dense(G)``) has delta 0 on the coordinates it
does not carry.

The attacks
-----------
``sign_flip(d, factor)``    ``-factor * d`` (the sign-flipping Byzantine attack, e.g.
                            Li et al. 2019, "RSA: Byzantine-robust stochastic
                            aggregation methods", AAAI; factor 1 by default).
``scale(d, factor)``        ``factor * d``.
``explicit_boost(d, n)``    ``n * d``: Bhagoji et al. 2019 ("Analyzing federated
                            learning through an adversarial lens", ICML) boost the
                            malicious delta by ``lambda = 1 / alpha_m``, the inverse
                            of the attacker's weight in the average; with ``n`` equally
                            weighted updates averaged, ``lambda = n``, so the attacker's
                            delta survives averaging at full size.
``model_replacement``       Bagdasaryan et al. 2020 ("How to backdoor federated
                            learning", AISTATS): ``X~ = gamma * (X - G) + G`` with
                            ``gamma = n / eta`` (:func:`replacement_gamma`) so that
                            ``G + eta/n * sum_i (X_i - G)`` becomes ~``X`` when the
                            honest deltas roughly cancel. On deltas this is
                            :func:`scale` by ``gamma``; it is given here in its
                            published form, on values.
``gaussian_noise``          ``d + N(0, std^2 I)`` (``mode="add"``) or ``N(0, std^2 I)``
                            alone (``mode="replace"``: the "Gaussian" Byzantine
                            attack of Blanchard et al. 2017, "Krum").
``free_ride(source)``       a copy of ``source``, optionally disguised with
                            ``N(0, std^2)`` noise: republishing a stale model (Lin et
                            al. 2019, "Free-riders in federated learning: attacks and
                            defenses"; disguised free riders, Fraboni et al. 2021,
                            "Free-rider attacks on model aggregation in federated
                            learning", AISTATS).
``alie(deltas, z)``         Baruch et al. 2019 ("A little is enough: circumventing
                            defenses for distributed learning", NeurIPS): per
                            coordinate ``mu_j - z * sigma_j`` of the honest deltas,
                            with ``z`` from :func:`alie_z`.
``ipm(deltas, epsilon)``    Xie et al. 2020 ("Fall of empires: breaking Byzantine-
                            tolerant SGD by inner product manipulation", UAI 2019,
                            PMLR 115, 2020):
                            ``-epsilon * mean(d_i)``, whose inner product with the
                            honest mean is ``-epsilon * ||mean||^2 < 0``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Literal

import torch

__all__ = [
    "NoiseMode",
    "alie",
    "alie_z",
    "deltas_from",
    "explicit_boost",
    "free_ride",
    "gaussian_noise",
    "ipm",
    "model_replacement",
    "replacement_gamma",
    "scale",
    "sign_flip",
    "to_values",
]

NoiseMode = Literal["add", "replace"]


def _check(vector: torch.Tensor, name: str = "vector", size: int | None = None) -> None:
    if not isinstance(vector, torch.Tensor) or vector.ndim != 1 or vector.dtype != torch.float32:
        got = (
            f"{vector.dtype} tensor of shape {tuple(vector.shape)}"
            if isinstance(vector, torch.Tensor)
            else type(vector).__name__
        )
        raise ValueError(f"{name} must be a 1-D float32 tensor, got {got}")
    if size is not None and vector.numel() != size:
        raise ValueError(f"{name} has {vector.numel()} elements, expected {size}")


def _check_finite(value: float, name: str) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")


def deltas_from(values: Sequence[torch.Tensor], reference: torch.Tensor) -> list[torch.Tensor]:
    """``v - reference`` for each parameter vector ``v`` (see the module docstring)."""
    _check(reference, "reference")
    for i, v in enumerate(values):
        _check(v, f"values[{i}]", reference.numel())
    return [v - reference for v in values]


def to_values(delta: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The parameter vector to publish: ``reference + delta``."""
    _check(reference, "reference")
    _check(delta, "delta", reference.numel())
    return reference + delta


def sign_flip(delta: torch.Tensor, factor: float = 1.0) -> torch.Tensor:
    """``-factor * delta``: step against the honest direction."""
    _check(delta, "delta")
    _check_finite(factor, "factor")
    return delta * -factor


def scale(delta: torch.Tensor, factor: float) -> torch.Tensor:
    """``factor * delta``."""
    _check(delta, "delta")
    _check_finite(factor, "factor")
    return delta * factor


def explicit_boost(delta: torch.Tensor, num_averaged: int) -> torch.Tensor:
    """Bhagoji et al. 2019: ``num_averaged * delta``.

    ``num_averaged`` is the number of equally weighted updates the receiver averages
    (its own included), so that the boosted delta, divided by it, arrives whole.
    """
    if num_averaged < 1:
        raise ValueError(f"num_averaged must be >= 1, got {num_averaged}")
    return scale(delta, float(num_averaged))


def replacement_gamma(num_averaged: int, eta: float = 1.0) -> float:
    """Bagdasaryan et al. 2020's scale ``gamma = n / eta`` (``eta``: global learning rate)."""
    if num_averaged < 1:
        raise ValueError(f"num_averaged must be >= 1, got {num_averaged}")
    if not (math.isfinite(eta) and eta > 0):
        raise ValueError(f"eta must be a finite number > 0, got {eta}")
    return num_averaged / eta


def model_replacement(
    malicious: torch.Tensor, global_model: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Bagdasaryan et al. 2020: ``gamma * (malicious - global_model) + global_model``."""
    _check(global_model, "global_model")
    _check(malicious, "malicious", global_model.numel())
    _check_finite(gamma, "gamma")
    return (malicious - global_model) * gamma + global_model


def gaussian_noise(
    delta: torch.Tensor,
    std: float,
    generator: torch.Generator,
    mode: NoiseMode = "add",
) -> torch.Tensor:
    """``delta + N(0, std^2 I)`` (``"add"``) or ``N(0, std^2 I)`` (``"replace"``)."""
    _check(delta, "delta")
    if not (math.isfinite(std) and std >= 0):
        raise ValueError(f"std must be a finite number >= 0, got {std}")
    noise = torch.randn(delta.shape, generator=generator, dtype=torch.float32) * std
    if mode == "add":
        return delta + noise
    if mode == "replace":
        return noise
    raise ValueError(f"noise mode must be 'add' or 'replace', got {mode!r}")


def free_ride(
    source: torch.Tensor, noise_std: float = 0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A copy of ``source`` (a stale model, or a peer's), plus optional disguise noise.

    ``noise_std > 0`` needs a ``generator``: the noise hides the exact copy from a
    defence that compares updates for equality.
    """
    _check(source, "source")
    if not (math.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std}")
    if noise_std == 0:
        return source.clone()
    if generator is None:
        raise ValueError("noise_std > 0 needs a generator")
    return source + torch.randn(source.shape, generator=generator) * noise_std


def alie_z(n: int, f: int) -> float:
    """Baruch et al. 2019, Algorithm 1: ``z_max`` for ``n`` workers of which ``f`` attack.

    ``s = floor(n / 2 + 1) - f`` honest workers must be "won over" to reach a
    majority; ``z_max = Phi^-1((n - s) / n)`` (``Phi``: the standard normal CDF) is
    the largest ``z`` such that, for normally distributed honest values, ``s`` of
    them are expected to lie farther from the mean than ``mu - z * sigma``.
    Raises ``ValueError`` when ``f`` attackers are a majority on their own (``s <=
    0``: ``z`` is unbounded and this attack is pointless) or ``f < 1``.
    """
    if n < 2:
        raise ValueError(f"ALIE needs n >= 2 workers, got {n}")
    if not 1 <= f < n:
        raise ValueError(f"ALIE needs 1 <= f < n attackers, got f={f}, n={n}")
    s = math.floor(n / 2 + 1) - f
    if s <= 0:
        raise ValueError(
            f"f={f} attackers of n={n} are already a majority (s={s}): ALIE's z is unbounded"
        )
    # s <= n/2, so (n - s)/n lies in [1/2, 1): the quantile is finite and z >= 0.
    return NormalDist().inv_cdf((n - s) / n)


def _stack(deltas: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    if isinstance(deltas, torch.Tensor):
        if deltas.ndim != 2 or deltas.dtype != torch.float32 or deltas.shape[0] == 0:
            raise ValueError(
                f"deltas must be a non-empty (k, d) float32 tensor, got {deltas.dtype} "
                f"{tuple(deltas.shape)}"
            )
        return deltas
    if not deltas:
        raise ValueError("need at least one honest delta")
    for i, d in enumerate(deltas):
        _check(d, f"deltas[{i}]", deltas[0].numel())
    return torch.stack(list(deltas))


def alie(deltas: Sequence[torch.Tensor] | torch.Tensor, z: float) -> torch.Tensor:
    """Baruch et al. 2019: per coordinate ``mean_j - z * std_j`` of the honest deltas.

    ``std`` is the sample standard deviation (Bessel-corrected, as the reference
    implementations' ``torch.std``); with a single delta it is 0 and the result is
    that delta. Every attacker publishes the same vector, which is what lets the
    ``f`` copies outvote ``s`` honest ones in a median or Krum.
    """
    _check_finite(z, "z")
    stacked = _stack(deltas)
    mean = stacked.mean(dim=0)
    if stacked.shape[0] < 2:
        return mean
    return mean - z * stacked.std(dim=0, correction=1)


def ipm(deltas: Sequence[torch.Tensor] | torch.Tensor, epsilon: float) -> torch.Tensor:
    """Xie et al. 2020: ``-epsilon * mean(deltas)``.

    A small ``epsilon`` (e.g. 0.1) stays close to the honest updates, which is what
    slips past distance-based rules such as Krum; a large one (e.g. 100) drags a
    mean or median the wrong way outright.
    """
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon}")
    return _stack(deltas).mean(dim=0) * -epsilon
