"""Robust aggregation rules: how a node combines its own parameters with its peers'.

DESIGN.md ("Trust") lets a node pass received updates through a robust aggregator
instead of plain averaging. This module holds those aggregators as pure functions
on flat, dense 1-D floating-point tensors (a flattened model; float32 in practice,
any floating dtype works as long as all inputs share it). The mixing rule calls
them after densifying the received updates (``SparseUpdate.to_dense(local)``), so
every input is a full parameter vector of the same length.

The setting is decentralized: there is no server and no global set of workers. A
node aggregates its OWN current parameters ``local`` with the vectors ``peers``
it received (possibly none). Rules that are defined on a set of ``n`` vectors run
on ``{local} ∪ peers``, ``n = 1 + len(peers)``; rules that are defined relative to
the node's own model (clipping, BALANCE) use ``local`` as the reference.

Rules
-----
========================== ===================================================
``mean``                   undefended reference: ``(1 - Σ a_j) w + Σ a_j v_j``,
                           uniform ``a_j = 1/n`` by default (what
                           :class:`~deepgossip.learn.mixing.Averaging` does).
``median``                 coordinate-wise median of ``{w} ∪ peers`` (Yin et
                           al. 2018); even ``n``: mean of the two middle values.
``trimmed_mean``           coordinate-wise: drop the ``b = floor(trim * n)``
                           largest and smallest values, average the rest (Yin
                           et al. 2018).
``krum``, ``multi_krum``   Blanchard et al. 2017 on ``[w] + peers``: the vector
                           (Krum) or the mean of the ``m`` vectors (Multi-Krum)
                           whose ``n - f - 2`` nearest neighbours are closest.
                           Needs ``n > 2f + 2``.
``clipping``               self-centred clipping (ClippedGossip, He et al.
                           2022): ``w + Σ a_j clip(v_j - w, radius)``.
``balance``                BALANCE (Fang et al. 2024): keep peers within a
                           distance of ``w`` that shrinks with training
                           progress; ``α w + (1 - α) mean(kept)``.
========================== ===================================================

Every rule's result is, coordinate by coordinate, a convex combination of the
input values (order statistics, averages of a subset, or ``w`` moved part of the
way towards peers). So, like every rule of :mod:`deepgossip.learn.mixing`, a
robust merge never moves a coordinate outside the range of the values it combines
(tests/test_trust_robust.py checks this for every rule).

Using it from a mixing rule
---------------------------
:func:`aggregate` is the single entry point: it takes a frozen
:class:`RobustConfig` (the session's choice of rule and its parameters) and
returns an :class:`AggregateResult` with the new parameters and the indices of
the peers whose vectors influenced them, so the caller can count and log
rejections (e.g. feed Krum's or BALANCE's rejections to the accusation logic of
:mod:`deepgossip.trust.accusation`). Rules compose: ``prefilter`` is a boolean mask
over ``peers`` from another defence (AUROR's verdict, the local blacklist); peers
it excludes are dropped before the rule runs and are never ``accepted``.

What the integrator must know:

* **Krum needs enough vectors.** With ``n <= 2f + 2`` Krum's guarantee is void and
  the functions raise :class:`NotEnoughPeers` (a ``ValueError``); :func:`aggregate`
  does not fall back silently to another rule. A mixing rule should catch it and
  keep the updates buffered (or skip the merge) until enough peers are heard.
* **Trimmed mean trims nothing for small n.** ``b = floor(trim * n)``, so with the
  default ``trim = 0.3`` a node that merges 2 peers (``n = 3``) trims nothing and
  computes the plain mean; ``n >= 4`` is needed to trim one value per side.
* **BALANCE is scale-relative.** Its threshold is ``gamma * exp(-kappa * progress)
  * ||w||``: a model whose parameters are all zero accepts only identical peers,
  and ``progress`` (``t / T`` in ``[0, 1]``) must be supplied by the caller.
* **Automatic clipping needs more than f peers to clip.** The radius is the
  ``(f + 1)``-th largest peer distance, the nearest one when ``f >= len(peers)``:
  a lone peer is never clipped (as in the authors' code). Set ``clip_radius`` or
  buffer more updates if single-peer merges must be defended.
* **Local is always index 0** of the vector list for Krum; selected indices
  returned by :func:`krum` / :func:`multi_krum` count ``local`` as 0, while
  :attr:`AggregateResult.accepted` indexes ``peers`` (the caller's list).
* Nothing is modified in place; results are fresh tensors (never views of an
  input), of ``local``'s dtype. Inputs with NaN/Inf, another shape, dtype or
  device raise ``ValueError`` (upstream ``validate_update`` already rejects
  non-finite values; this is defence in depth).

Numerics and cost
-----------------
Per-vector work (weighted sums, distances to ``local``, finiteness checks) runs
in place in one output or scratch buffer, one vector at a time: no ``n x d`` copy
and no per-peer allocation. Sums accumulate in the inputs' dtype: for a few dozen
terms float32 rounding is far below training noise, and upstream
``validate_update`` bounds values (1e4) far below overflow.

Median and trimmed mean stack the ``n`` vectors (one ``n x d`` copy) and sort each
column once (numpy's vectorized sort on CPU; no Python loop over coordinates).

Krum's ``n x n`` distances use the Gram identity ``||a - b||² = ||a||² + ||b||² -
2<a, b>`` (one matrix product instead of ``n²`` vector differences) on vectors
centred on ``vectors[0]`` (``local``), accumulated in float64 over column blocks:
centring removes the large offset all models share, which would otherwise cancel
the small honest-to-honest distances away, and blocks bound the float64 copy.

Measured for 30 vectors of 500k float32 parameters, one thread, on a shared
machine under load (so upper bounds): mean, clipping and BALANCE about 0.05 s,
Krum and Multi-Krum about 0.2 s, median and trimmed mean about 0.15 s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "RULES",
    "AggregateResult",
    "NotEnoughPeers",
    "RobustConfig",
    "aggregate",
    "auto_clip_radius",
    "balance",
    "balance_filter",
    "centered_clip",
    "coordinate_median",
    "krum",
    "krum_scores",
    "mean",
    "multi_krum",
    "trimmed_mean",
]

RULES: tuple[str, ...] = (
    "mean",
    "median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "clipping",
    "balance",
)
"""Names accepted by :attr:`RobustConfig.rule`."""

_GRAM_BLOCK = 1 << 16
"""Columns per float64 block of the Krum Gram matrix (n x 65536 x 8 bytes)."""

_WEIGHT_SLACK = 1e-9
"""Tolerance on ``Σ a_j <= 1`` for mixing weights computed in floating point."""


class NotEnoughPeers(ValueError):
    """A rule needs more vectors than it was given (Krum: ``n > 2f + 2``).

    A ``ValueError`` so generic validation handlers catch it, but a type of its own
    so a mixing rule can tell "wait for more updates" from "bad input".
    """


# ------------------------------------------------------------------------ validation


def _check_inputs(local: Tensor, peers: Sequence[Tensor]) -> None:
    """Same 1-D shape, floating dtype and device everywhere; all values finite."""
    if not isinstance(local, Tensor) or local.ndim != 1 or not local.is_floating_point():
        raise ValueError("local must be a 1-D floating-point tensor")
    for j, v in enumerate(peers):
        if not isinstance(v, Tensor):
            raise ValueError(f"peer {j} is a {type(v).__name__}, not a tensor")
        if v.shape != local.shape or v.dtype != local.dtype or v.device != local.device:
            raise ValueError(
                f"peer {j} is a {v.dtype} tensor of shape {tuple(v.shape)} on {v.device}; "
                f"expected {local.dtype}, {tuple(local.shape)} on {local.device} like local"
            )
    for name, v in [("local", local), *((f"peer {j}", v) for j, v in enumerate(peers))]:
        # min and max propagate NaN and expose Inf, in one pass with no boolean copy.
        if v.numel() and not all(math.isfinite(float(x)) for x in torch.aminmax(v)):
            raise ValueError(f"{name} contains NaN or Inf")


def _check_int(name: str, value: object, low: int) -> int:
    # bool is an int subclass; f=True is a bug, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_trim(trim: float) -> None:
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim}")


def _check_radius(radius: float) -> None:
    if math.isnan(radius) or radius <= 0:
        raise ValueError(f"clip radius must be > 0 (math.inf disables clipping), got {radius}")


def _check_balance(gamma: float, kappa: float, progress: float) -> None:
    if not (math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"BALANCE gamma must be finite and > 0, got {gamma}")
    if not (math.isfinite(kappa) and kappa >= 0):
        raise ValueError(f"BALANCE kappa must be finite and >= 0, got {kappa}")
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress (t / T) must be in [0, 1], got {progress}")


def _check_self_weight(self_weight: float) -> None:
    if not 0.0 <= self_weight <= 1.0:
        raise ValueError(f"self_weight must be in [0, 1], got {self_weight}")


def _peer_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """Mixing weights ``a_j`` of the peers; ``local`` implicitly gets ``1 - Σ a_j``.

    Default: uniform over ``{local} ∪ peers``, i.e. ``a_j = 1 / (count + 1)``.
    """
    if weights is None:
        return [1.0 / (count + 1)] * count
    a = [float(c) for c in weights]
    if len(a) != count:
        raise ValueError(f"{len(a)} weights for {count} peers")
    if not all(math.isfinite(c) and c >= 0 for c in a):
        raise ValueError("mixing weights must be finite and >= 0")
    if sum(a) > 1.0 + _WEIGHT_SLACK:
        raise ValueError(f"peer weights sum to {sum(a)} > 1 (local's weight is 1 - sum)")
    return a


# --------------------------------------------------------------------------- helpers


def _combine(vectors: Sequence[Tensor], coeffs: Sequence[float], like: Tensor) -> Tensor:
    """``Σ c_i v_i`` in a fresh tensor like ``like``, accumulated in place."""
    acc = torch.zeros_like(like)
    for v, c in zip(vectors, coeffs, strict=True):
        if c != 0.0:
            acc.add_(v, alpha=c)
    return acc


def _average(vectors: Sequence[Tensor], like: Tensor) -> Tensor:
    return _combine(vectors, [1.0 / len(vectors)] * len(vectors), like)


def _distances(local: Tensor, peers: Sequence[Tensor]) -> list[float]:
    """``||v_j - local||`` for each peer (one scratch buffer for all differences)."""
    diff = torch.empty_like(local)
    out = []
    for v in peers:
        torch.sub(v, local, out=diff)
        out.append(float(torch.linalg.vector_norm(diff)))
    return out


_NUMPY_SORTABLE = (torch.float16, torch.float32, torch.float64)


def _sorted_stack(local: Tensor, peers: Sequence[Tensor]) -> Tensor:
    """``n x d`` stack of ``[local] + peers``, each column sorted ascending."""
    stack = torch.stack([local, *peers])
    if stack.device.type == "cpu" and stack.dtype in _NUMPY_SORTABLE:
        # numpy's vectorized sort along axis 0 is several times faster than
        # torch.sort(dim=0) on CPU (30 x 500k float32: 0.1 s vs 0.7 s). In place:
        # the stack is our own copy and shares memory with its numpy view.
        stack.numpy().sort(axis=0)
        return stack
    return torch.sort(stack, dim=0).values


def _pairwise_sq_distances(x: Tensor) -> Tensor:
    """``n x n`` float64 squared Euclidean distances between the rows of ``x``.

    Gram identity on rows centred on row 0, accumulated in float64 blocks (see the
    module docstring for why centring matters).
    """
    n, d = x.shape
    gram = torch.zeros(n, n, dtype=torch.float64, device=x.device)
    for start in range(0, d, _GRAM_BLOCK):
        cols = slice(start, start + _GRAM_BLOCK)
        block = x[:, cols].to(torch.float64) - x[0, cols].to(torch.float64)
        gram += block @ block.T
    sq = gram.diagonal()
    dist = (sq[:, None] + sq[None, :] - 2.0 * gram).clamp_min_(0.0)
    dist.fill_diagonal_(0.0)
    return dist


# ----------------------------------------------------------------- the undefended mean


def _mean(local: Tensor, peers: Sequence[Tensor], weights: Sequence[float] | None) -> Tensor:
    a = _peer_weights(weights, len(peers))
    return _combine([local, *peers], [1.0 - sum(a), *a], local)


def mean(local: Tensor, peers: Sequence[Tensor], weights: Sequence[float] | None = None) -> Tensor:
    """Undefended gossip averaging, the reference every defence is compared with.

    Computes ``(1 - Σ_j a_j) * local + Σ_j a_j * peers[j]``: one row of a mixing
    matrix as in decentralized SGD (Lian et al., "Can decentralized algorithms
    outperform centralized algorithms?", NeurIPS 2017). ``weights`` are the peers'
    ``a_j`` (``>= 0``, summing to at most 1; ``local`` gets the rest); the default
    is uniform over ``{local} ∪ peers``, ``a_j = 1 / (1 + len(peers))``, which is
    :class:`~deepgossip.learn.mixing.Averaging`'s merge. A single peer of large
    magnitude moves the result arbitrarily far.
    """
    _check_inputs(local, peers)
    return _mean(local, peers, weights)


# ------------------------------------------------------------ coordinate-wise rules


def _coordinate_median(local: Tensor, peers: Sequence[Tensor]) -> Tensor:
    n = 1 + len(peers)
    ordered = _sorted_stack(local, peers)
    half = n // 2
    if n % 2:
        # clone: a row view would keep the whole n x d sort buffer alive.
        return ordered[half].clone()
    # Halving each term first cannot overflow and rounds like (a + b) / 2.
    return ordered[half - 1] * 0.5 + ordered[half] * 0.5


def coordinate_median(local: Tensor, peers: Sequence[Tensor]) -> Tensor:
    """Coordinate-wise median of ``{local} ∪ peers``.

    Yin, Chen, Ramchandran & Bartlett, "Byzantine-robust distributed learning:
    towards optimal statistical rates", ICML 2018 (the coordinate-wise median
    rule). For each coordinate ``k`` the result is the median of the ``n = 1 +
    len(peers)`` values ``local[k], peers[0][k], ...``. For an odd ``n`` that is the
    middle value of the sorted column; for an even ``n`` it is the mean of the two
    middle values (as :func:`numpy.median`), not the lower one that
    :func:`torch.median` returns. Robust while fewer than half of the values of a
    coordinate are Byzantine.
    """
    _check_inputs(local, peers)
    return _coordinate_median(local, peers)


def _trim_count(trim: float, n: int) -> int:
    # The epsilon keeps products like 0.3 * 10 = 3.0000000000000004 and
    # 0.29 * 100 = 28.999999999999996 at the integer the user meant.
    return math.floor(trim * n + 1e-9)


def _trimmed_mean(local: Tensor, peers: Sequence[Tensor], trim: float) -> Tensor:
    _check_trim(trim)
    n = 1 + len(peers)
    b = _trim_count(trim, n)
    if n - 2 * b < 1:  # cannot happen for trim < 0.5; kept as the invariant's guard
        raise ValueError(f"trimming {b} values per side leaves nothing of {n}")
    ordered = _sorted_stack(local, peers)
    return _average(list(ordered[b : n - b]), local)


def trimmed_mean(local: Tensor, peers: Sequence[Tensor], trim: float) -> Tensor:
    """Coordinate-wise trimmed mean of ``{local} ∪ peers``.

    Yin, Chen, Ramchandran & Bartlett, "Byzantine-robust distributed learning:
    towards optimal statistical rates", ICML 2018 (the beta-trimmed mean). With
    ``n = 1 + len(peers)`` and ``b = floor(trim * n)``: for each coordinate, sort
    the ``n`` values, drop the ``b`` largest and the ``b`` smallest and average the
    remaining ``n - 2b`` (at least one, since ``0 <= trim < 0.5``). ``b = 0``
    (e.g. ``trim * n < 1``) is the plain mean. Robust to up to ``b`` Byzantine
    values per coordinate.
    """
    _check_inputs(local, peers)
    return _trimmed_mean(local, peers, trim)


# ------------------------------------------------------------------------------ Krum


def _check_krum(n: int, f: int) -> None:
    _check_int("f", f, 0)
    if n <= 2 * f + 2:
        raise NotEnoughPeers(
            f"Krum needs n > 2f + 2 vectors to tolerate f = {f} Byzantine ones "
            f"(at least {2 * f + 3}), got n = {n}"
        )


def _krum_scores(x: Tensor, f: int) -> Tensor:
    n = x.shape[0]
    _check_krum(n, f)
    dist = _pairwise_sq_distances(x)
    # A vector is not its own neighbour: push the diagonal past every real distance.
    dist.fill_diagonal_(math.inf)
    nearest = torch.topk(dist, n - f - 2, dim=1, largest=False).values
    return nearest.sum(dim=1)


def krum_scores(vectors: Sequence[Tensor], f: int) -> Tensor:
    """Krum score of each vector (Blanchard, El Mhamdi, Guerraoui & Stainer,
    "Machine learning with adversaries: Byzantine tolerant gradient descent",
    NeurIPS 2017).

    ``score(i) = Σ_{j ∈ N_i} ||v_i - v_j||²`` where ``N_i`` are the ``n - f - 2``
    vectors closest to ``v_i`` (excluding ``v_i`` itself). Returns a float64 tensor
    of ``n`` scores. Requires ``n > 2f + 2`` (the paper's condition ``2f + 2 < n``:
    it makes every honest vector's neighbourhood mostly honest); raises
    :class:`NotEnoughPeers` otherwise. Distances are centred on ``vectors[0]``
    (pass the node's own model first; see the module docstring).
    """
    if not vectors:
        raise NotEnoughPeers("Krum needs at least one vector")
    _check_inputs(vectors[0], vectors[1:])
    return _krum_scores(torch.stack(list(vectors)), f)


def _multi_krum(vectors: Sequence[Tensor], f: int, m: int) -> tuple[Tensor, list[int]]:
    n = len(vectors)
    _check_krum(n, f)
    _check_int("m", m, 1)
    if m > n - f:
        raise ValueError(
            f"Multi-Krum m = {m} would average at least one of f = {f} Byzantine vectors "
            f"among n = {n}; use m <= n - f = {n - f}"
        )
    scores = _krum_scores(torch.stack(list(vectors)), f)
    # Stable sort: ties go to the lower index, so local (index 0) wins a tie.
    order = torch.sort(scores, stable=True).indices[:m].tolist()
    return _average([vectors[i] for i in order], vectors[0]), order


def multi_krum(vectors: Sequence[Tensor], f: int, m: int) -> tuple[Tensor, list[int]]:
    """Multi-Krum (Blanchard et al., NeurIPS 2017): mean of the ``m`` lowest-score vectors.

    Scores as :func:`krum_scores`; ``m = 1`` is Krum (the single lowest-score
    vector). Requires ``n > 2f + 2`` (:class:`NotEnoughPeers`) and ``1 <= m <= n -
    f`` (more would be certain to include a Byzantine vector when there are ``f``).
    Ties in score go to the lower index. Returns ``(value, selected)``: the mean of
    the selected vectors and their indices into ``vectors``, lowest score first.
    """
    if not vectors:
        raise NotEnoughPeers("Krum needs at least one vector")
    _check_inputs(vectors[0], vectors[1:])
    return _multi_krum(vectors, f, m)


def krum(local: Tensor, peers: Sequence[Tensor], f: int, m: int = 1) -> tuple[Tensor, list[int]]:
    """Krum (``m = 1``) or Multi-Krum on ``[local] + peers``; see :func:`multi_krum`.

    Returns ``(value, selected)`` with ``selected`` indexing ``[local] + peers``:
    0 is ``local``, ``j + 1`` is ``peers[j]``. With no peers there is nothing to
    choose from: returns ``(local.clone(), [0])`` without the ``n > 2f + 2`` check.
    """
    _check_inputs(local, peers)
    if not peers:
        return local.clone(), [0]
    return _multi_krum([local, *peers], f, m)


# -------------------------------------------------------------------------- clipping


def _auto_clip_radius(distances: Sequence[float], f: int) -> float:
    if not distances:
        return 0.0
    ordered = sorted(distances)
    return ordered[max(len(ordered) - 1 - f, 0)]


def auto_clip_radius(local: Tensor, peers: Sequence[Tensor], f: int) -> float:
    """Clipping radius when none is configured: the ``(f + 1)``-th largest peer distance.

    He, Karimireddy & Jaggi choose the radius from the distances ``||v_j - w||`` to
    the neighbours; the authors' released code uses the second-largest distance,
    i.e. tolerates one Byzantine neighbour. This is that rule for ``f`` of them:
    sort the distances and take the ``(f + 1)``-th from the top (the smallest when
    ``f >= len(peers)``; 0.0 with no peers). Why it bounds an attack: if at most
    ``f`` peers are Byzantine, at least one of the ``f + 1`` farthest is honest, so
    the radius is at most the largest honest distance: each Byzantine peer moves
    ``w`` no further than some honest peer does, and honest peers closer than the
    radius are not clipped at all.
    """
    _check_inputs(local, peers)
    _check_int("f", f, 0)
    return _auto_clip_radius(_distances(local, peers), f)


def _centered_clip(
    local: Tensor,
    peers: Sequence[Tensor],
    radius: float | None,
    weights: Sequence[float] | None,
    f: int,
) -> Tensor:
    a = _peer_weights(weights, len(peers))
    distances = _distances(local, peers)
    if radius is None:
        _check_int("f", f, 0)
        radius = _auto_clip_radius(distances, f)
    else:
        _check_radius(radius)
    acc = local.clone()
    diff = torch.empty_like(local)
    for v, a_j, dist in zip(peers, a, distances, strict=True):
        if a_j == 0.0 or dist == 0.0:
            continue  # clip(0, t) = 0 contributes nothing
        torch.sub(v, local, out=diff)
        acc.add_(diff, alpha=a_j * min(1.0, radius / dist))
    return acc


def centered_clip(
    local: Tensor,
    peers: Sequence[Tensor],
    radius: float | None = None,
    weights: Sequence[float] | None = None,
    *,
    f: int = 1,
) -> Tensor:
    """Self-centred clipping, the aggregation step of ClippedGossip.

    He, Karimireddy & Jaggi, "Byzantine-robust decentralized learning via
    ClippedGossip", arXiv:2202.01545, 2022. Computes::

        w + Σ_j a_j * clip(v_j - w, radius),   clip(z, t) = z * min(1, t / ||z||)

    with ``w = local``, ``v_j = peers[j]`` and ``a_j`` the mixing weights
    (``weights``: ``>= 0``, summing to at most 1; default uniform over ``{self} ∪
    peers``, ``a_j = 1 / (1 + len(peers))``; self's own term is ``clip(w - w) =
    0``). ``clip(0, t) = 0``. Since ``Σ a_j <= 1``, the result is within ``radius``
    of ``w`` whatever the peers send. ``radius = math.inf`` gives :func:`mean` with
    the same weights; ``radius = None`` picks it with :func:`auto_clip_radius`
    (tolerating ``f`` Byzantine peers).
    """
    _check_inputs(local, peers)
    return _centered_clip(local, peers, radius, weights, f)


# --------------------------------------------------------------------------- BALANCE


def _balance_filter(
    local: Tensor, peers: Sequence[Tensor], gamma: float, kappa: float, progress: float
) -> Tensor:
    _check_balance(gamma, kappa, progress)
    threshold = gamma * math.exp(-kappa * progress) * float(torch.linalg.vector_norm(local))
    return torch.tensor([d <= threshold for d in _distances(local, peers)], dtype=torch.bool)


def balance_filter(
    local: Tensor, peers: Sequence[Tensor], gamma: float, kappa: float, progress: float
) -> Tensor:
    """Which peers BALANCE accepts (Fang, Zhang, Hairi, Khanduri, Liu, Lu, Liu & Gong,
    "Byzantine-robust decentralized federated learning", ACM CCS 2024).

    Peer ``j`` is accepted iff ``||local - v_j|| <= gamma * exp(-kappa * progress) *
    ||local||``: the node's own model is the similarity reference, and the
    tolerated distance shrinks as training converges. ``progress`` is the paper's
    ``λ(t) = t / T`` in ``[0, 1]``; ``gamma > 0``, ``kappa >= 0``. Returns a boolean
    tensor of ``len(peers)`` (``True`` = accepted).
    """
    _check_inputs(local, peers)
    return _balance_filter(local, peers, gamma, kappa, progress)


def _self_weighted(
    local: Tensor, peers: Sequence[Tensor], mask: Tensor, self_weight: float
) -> Tensor:
    _check_self_weight(self_weight)
    kept = [v for v, ok in zip(peers, mask.tolist(), strict=True) if ok]
    if not kept:
        return local.clone()
    share = (1.0 - self_weight) / len(kept)
    return _combine([local, *kept], [self_weight] + [share] * len(kept), local)


def balance(
    local: Tensor,
    peers: Sequence[Tensor],
    gamma: float,
    kappa: float,
    progress: float,
    self_weight: float,
) -> Tensor:
    """BALANCE aggregation (Fang et al., ACM CCS 2024).

    ``self_weight * local + (1 - self_weight) * mean(accepted peers)``, with the
    peers accepted by :func:`balance_filter`; ``local`` (a copy) when none is
    accepted. ``self_weight`` is the paper's ``α`` in ``[0, 1]``.
    """
    _check_inputs(local, peers)
    mask = _balance_filter(local, peers, gamma, kappa, progress)
    return _self_weighted(local, peers, mask, self_weight)


# ---------------------------------------------------------------- config and dispatch


@dataclass(frozen=True)
class RobustConfig:
    """Session settings of the robust aggregator; every default is written here once.

    * ``rule = "mean"``: the undefended average, so enabling this module changes
      nothing until a defence is chosen on purpose (the rules trade accuracy in
      the benign case for robustness, a choice experiments must make explicitly).
    * ``f = 1``: Byzantine peers tolerated per merge, for Krum, Multi-Krum and the
      automatic clipping radius. A node merges the few updates received since its
      last merge, and Krum needs ``n > 2f + 2``: ``f = 1`` already asks for 4 peers;
      it is also the setting of ClippedGossip's reference radius rule.
    * ``m = None``: Multi-Krum averages ``n - f`` vectors (as many as can be honest),
      the setting of Blanchard et al.'s Multi-Krum. A fixed
      ``m`` larger than ``n - f`` in a round with few peers is lowered to ``n - f``.
    * ``trim = 0.3``: DESIGN.md assumes at most 30% malicious participants, so
      trimming 30% per side removes them all in any coordinate (``b = floor(0.3
      n)``; note that ``n < 4`` trims nothing).
    * ``clip_radius = None``: automatic, :func:`auto_clip_radius` with ``f``; a
      fixed radius is in parameter units and goes stale as training converges.
    * ``balance_gamma = 0.3``, ``balance_kappa = 1.0``, ``self_weight = 0.5``: the
      default setting of the BALANCE paper's experiments (Fang et al. 2024; ``γ``,
      ``κ``, ``α``) as we read it; ``γ`` is relative to ``||w||``, so it transfers
      across models. ``self_weight`` is used by ``balance`` only.
    """

    rule: str = "mean"
    f: int = 1
    m: int | None = None
    trim: float = 0.3
    clip_radius: float | None = None
    balance_gamma: float = 0.3
    balance_kappa: float = 1.0
    self_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown robust rule {self.rule!r}; choose one of {list(RULES)}")
        _check_int("f", self.f, 0)
        if self.m is not None:
            _check_int("m", self.m, 1)
        _check_trim(self.trim)
        if self.clip_radius is not None:
            _check_radius(self.clip_radius)
        _check_balance(self.balance_gamma, self.balance_kappa, 0.0)
        _check_self_weight(self.self_weight)


@dataclass(frozen=True)
class AggregateResult:
    """What :func:`aggregate` computed."""

    value: Tensor
    """The node's new parameters (a fresh tensor of ``local``'s dtype)."""
    accepted: list[int]
    """Ascending indices into ``peers`` of the vectors that influenced ``value``:
    all peers passing the prefilter for mean, median, trimmed mean and clipping
    (clipping bounds a peer's pull but never removes it); Krum's selection; the
    peers BALANCE accepted. Peers excluded by the prefilter are never accepted."""


def _prefiltered(prefilter: Sequence[bool] | Tensor | None, count: int) -> list[int]:
    """Indices of the peers a boolean mask keeps (all of them without a mask)."""
    if prefilter is None:
        return list(range(count))
    mask = torch.as_tensor(prefilter)
    # Reject integer masks: an index list like [0, 2] would silently read as truthiness.
    if mask.dtype != torch.bool or mask.shape != (count,):
        raise ValueError(
            f"prefilter must be a boolean mask over the {count} peers, "
            f"got {mask.dtype} of shape {tuple(mask.shape)}"
        )
    return [j for j, ok in enumerate(mask.tolist()) if ok]


def _krum_m(config: RobustConfig, n: int) -> int:
    if config.rule == "krum":
        return 1
    limit = max(n - config.f, 1)  # n - f >= 1 whenever Krum's n > 2f + 2 holds
    return limit if config.m is None else min(config.m, limit)


def aggregate(
    local: Tensor,
    peers: Sequence[Tensor],
    config: RobustConfig,
    progress: float = 0.0,
    *,
    prefilter: Sequence[bool] | Tensor | None = None,
) -> AggregateResult:
    """Combine ``local`` with ``peers`` by ``config.rule``; see the module docstring.

    ``prefilter`` (optional boolean mask over ``peers``, e.g. from AUROR or a
    blacklist) drops peers before the rule runs. ``progress`` is ``t / T`` in
    ``[0, 1]`` (BALANCE only). With no peers left, returns a copy of ``local`` and
    no accepted peers, whatever the rule. Raises ``ValueError`` on invalid inputs
    and :class:`NotEnoughPeers` when Krum has ``n <= 2f + 2`` vectors.
    """
    _check_inputs(local, peers)
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress (t / T) must be in [0, 1], got {progress}")
    kept = _prefiltered(prefilter, len(peers))
    chosen = [peers[j] for j in kept]
    if not chosen:
        return AggregateResult(local.clone(), [])
    rule = config.rule
    if rule == "mean":
        return AggregateResult(_mean(local, chosen, None), kept)
    if rule == "median":
        return AggregateResult(_coordinate_median(local, chosen), kept)
    if rule == "trimmed_mean":
        return AggregateResult(_trimmed_mean(local, chosen, config.trim), kept)
    if rule == "clipping":
        return AggregateResult(
            _centered_clip(local, chosen, config.clip_radius, None, config.f), kept
        )
    if rule == "balance":
        mask = _balance_filter(local, chosen, config.balance_gamma, config.balance_kappa, progress)
        value = _self_weighted(local, chosen, mask, config.self_weight)
        return AggregateResult(value, [kept[i] for i, ok in enumerate(mask.tolist()) if ok])
    # krum / multi_krum: selected indices count local as 0.
    vectors = [local, *chosen]
    value, selected = _multi_krum(vectors, config.f, _krum_m(config, len(vectors)))
    return AggregateResult(value, sorted(kept[i - 1] for i in selected if i > 0))
