"""AUROR poisoning detection, run locally by every node over its peers' updates.

AUROR (Shen, Tople & Saxena, "AUROR: Defending against poisoning attacks in
collaborative deep learning systems", ACSAC 2016) never sees training data, only
what participants share (the paper's *masked features*). Its premise: honest
participants' shared values follow one distribution, poisoners' values deviate
from it in a consistent direction. So, per feature:

1. cluster the participants' values into two clusters (2-means);
2. the feature is *indicative* when the two cluster centres are far apart
   (further than a threshold alpha);
3. a participant is *suspicious* when it sits in the minority cluster on at
   least a fraction ``tau`` of the indicative features.

The paper runs this at a central server. Here every node runs it over the peers
it hears from (DESIGN.md, "Trust"): :class:`AurorDetector` keeps the newest
feature vector of each peer inside a window, clusters them on demand and keeps a
decaying suspicion score per peer; a peer whose score crosses a threshold is
blacklisted *locally*. Spreading the accusation (signed blacklist rumours) is the
caller's business.

What to feed it (the "masked features")
---------------------------------------
For each received update of peer ``j``, pass
``features = v_j[C] - w[C]``, computed when the update arrives: the peer's
parameters as received minus the node's own current parameters, on a coordinate
subset ``C`` that is the same for every peer. For a sparse ``"values"``
:class:`~deepgossip.learn.sharing.SparseUpdate`, ``v_j`` is the peer's public
state: keep, per peer, the last value it published for each coordinate of ``C``
(starting from the common initial model) and overwrite the ones the update
carries. Why differences: honest peers track the same consensus, the node's own
model too, so ``v_j - w`` is a small offset for every honest peer and a
poisoner's push away from the consensus stands out. Were all vectors taken at
the same moment, subtracting ``w`` would change nothing (the clustering is
translation invariant per feature); it matters because updates arrive at
different times and ``w`` moves in between, carrying the common trajectory that
raw parameters of different ages would not share.

``C`` may be the whole model; vectors longer than ``max_features`` are
subsampled on a seeded, fixed subset (:meth:`AurorDetector.coordinates_for`),
which the caller can use to compute only the coordinates that will be kept.
The detector itself is agnostic: any per-peer vector of the same length works.

The node does not observe itself: its own feature vector is all zeros by
construction and would add one certain member to whichever cluster sits near 0.

Exact, vectorized 2-means
-------------------------
In one dimension the optimal 2-means partition is a threshold between two
consecutive sorted values, and the within-cluster sum of squares of every
threshold follows from prefix sums. :func:`two_means_1d` sorts each column once
and scores all ``P - 1`` splits of all ``F`` columns with numpy operations over
whole blocks of columns: ``O(P log P * F)``, no Python loop over features
(50 peers x 100k features in 0.12-0.3 s, 10 peers x 10k in 3-12 ms on the
shared 2-core machines; ``bench/bench_auror.py``). It is exact, not Lloyd's
heuristic, so the detector never depends on an initialisation.

The alpha rule (which features are indicative)
----------------------------------------------
The paper sets alpha from the data at hand. We need a rule without units: the
scale of a coordinate differs by orders of magnitude between layers and shrinks
as training converges. A feature ``f`` is indicative when::

    gap_f > alpha_mult * max(sigma_f, spread_floor * median_g(sigma_g))
    sigma_f = 1.4826 * MAD_f   (MAD: median absolute deviation across peers)

``sigma_f`` is the robust standard deviation of that feature across the peers
being judged. Why this one:

* it is per feature, so a coordinate with a naturally wide spread (a large
  layer, a noisy bias) is judged against its own spread, not the model's, and
  multiplying all features by any constant changes nothing;
* the MAD has a 50% breakdown point: with at most 30% attackers (DESIGN.md) it
  is still set by the honest peers (inflated by about 1.6x for a Gaussian
  crowd: it becomes roughly the 71% quantile of the honest deviations), so
  planted outliers widen the gap far more than the scale, and they are found
  (requirement a);
* for honest peers the gap is a small multiple of the spread: ``1.6 sigma`` for
  a Gaussian crowd; when honest peers are non-IID (each peer its own mean, as
  with Dirichlet label skew) the spread of those means enters the MAD too, so
  the gap stays a small multiple of it (requirement b);
* the floor ``spread_floor * median(sigma)`` keeps coordinates on which nearly
  all peers agree exactly (unused weights, coordinates no one has updated yet,
  MAD = 0) from turning every rounding difference into an indicative feature.

Alpha alone cannot keep honest crowds quiet: with few peers the MAD is itself
noisy, so with ``alpha_mult = 4`` about 15-18% of honest Gaussian features
are indicative with 4-5 peers, 6% with 10, 0.2% with 30 and ~0 with 50 (bench,
``honest_indicative_share``). That is
harmless: those features isolate whoever happens to be extreme, a different peer
each time, and ``tau`` (below) ignores them. What alpha must do is make the
indicative set dominated by an attack when there is one, also when the attack
touches only part of the coordinates. It is a trade-off, measured by the
``sweep`` of ``bench/bench_auror.py`` (10 runs of 20 evaluations, tau = 0.6):
alpha 3 misses 3 of 10 peers shifting 10% of the coordinates by 8 sigma (all
caught in 0/10 runs, 9/10 at alpha 4), because honest noise features outnumber
the attacked ones; alpha 5 misses a 30% coalition among 30 peers shifting every
coordinate by 4 sigma (0/10, 10/10 at alpha 4), because the coalition inflates
the MAD. 4 is the only value of the three that passes both and keeps the
honest non-IID crowds quiet. Its price: among 50 peers a 30% coalition must
shift by about 6 sigma to be caught (4 sigma: 0/10 runs, 6 sigma: 10/10).

Who is flagged
--------------
Per indicative feature, the *minority* is the smaller cluster; on a tie neither
is a minority. A peer is flagged in one evaluation when it is in the minority on
at least ``tau = 0.6`` of the indicative features, and there are at least
``min_indicative`` of them. An honest peer in an IID crowd is in the minority on
about ``1/P`` of the indicative features (never above 0.3 in the simulations);
in a non-IID crowd (3-4 peer groups with their own means, or Dirichlet(0.5)
mixes of 10 class effects, between-peer spread 2-3x the noise) the most atypical
peer reaches 0.5-0.6. Colluding attackers, or a lone attacker pushing
consistently, sit at 0.75-1.0. 0.6 lies between the two; 0.5, the obvious
choice, blacklists an honest Dirichlet peer in 2 of 10 bench runs (``sweep``).
``min_indicative`` keeps a handful of noise features from deciding.

Peeling: strong attackers must not hide weaker ones
---------------------------------------------------
2-means splits each feature once. When one attacker pushes far harder than the
others (a boosted update beside mild label flippers, or two coalitions pushing
in opposite directions), the split of nearly every feature isolates the strong
one and leaves the weak ones in the majority with the honest peers: they would
be judged only after the strong one is blacklisted and dropped, three
evaluations later. So :meth:`AurorDetector.evaluate` *peels*: it removes the
peers it just flagged and clusters the rest again, up to ``peel_passes`` more
times, until a pass flags nobody. A peeled pass over an honest crowd is the
same judgement as an evaluation with no attacker at all (``tau`` keeps it
quiet), and a pass that would flag half the peers or more is discarded: with
at most 30% attackers (DESIGN.md) such a verdict says more about the crowd than
about its members.

Suspicion then decays: ``s <- decay * s + flagged`` for every peer with a *fresh*
vector (observed since its last judgement), so the same evidence is never counted
twice when the caller evaluates more often than a peer sends. With
``decay = 0.75`` and ``blacklist_threshold = 2.0`` a peer is blacklisted after
three flagged updates in a row (1, 1.75, 2.31) or when flagged about half the
time (steady state ``p / (1 - decay) = 4p``); a single false flag peaks at 1 and
fades by a factor 0.75 per judgement, so an honest peer recovers. Blacklisting
is sticky until :meth:`AurorDetector.forget`; a blacklisted peer's vectors are
dropped from the window and no longer observed, so it cannot shape later
clusterings.

Limits (inherent to AUROR, not to this implementation)
------------------------------------------------------
* A coherent honest minority whose updates sit apart from everyone else's on most
  features (say 3 of 10 peers that hold only two classes, while the other 7
  hold the rest) is indistinguishable from colluding attackers: it is flagged and
  blacklisted (bench scenario ``groups:3-7``). Skew where each peer has its own
  mix, or where several groups differ from each other, is not.
* A peer consistently further from the crowd than the others for an honest
  reason is an outlier too: one honest peer with twice the others' noise (far
  less data, a higher learning rate) is blacklisted (bench scenario
  ``noisy-peer``), and so is a peer that just reconnected after a partition until
  it merges back. Decay forgives it only if it is not flagged three times
  running.
* Attackers that stay within the honest spread on every coordinate are not
  detected by construction (nor do they move the model far).

Everything here is deterministic and sans-I/O: no clocks, threads or randomness
other than the seeded choice of coordinates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import numpy as np

__all__ = [
    "DEFAULT_AUROR",
    "AurorConfig",
    "AurorDetector",
    "TwoMeans",
    "Verdict",
    "indicative_features",
    "sample_coordinates",
    "two_means_1d",
]

MAD_TO_SIGMA: Final = 1.4826
"""``1 / Phi^-1(3/4)``: the MAD of a Gaussian sample times this estimates its sigma."""


# ------------------------------------------------------------------------- 2-means


@dataclass(frozen=True, slots=True, eq=False)
class TwoMeans:
    """Exact 2-means of every column of a ``(peers, features)`` matrix.

    ``low``/``high`` are the cluster centres per feature (``low <= high``);
    ``members_high[p, f]`` is True when peer ``p`` is in feature ``f``'s high
    cluster; ``n_low + n_high == peers``. A constant column has everyone in the
    low cluster, ``n_high = 0`` and ``high == low`` (gap 0).
    """

    low: np.ndarray
    high: np.ndarray
    members_high: np.ndarray
    n_low: np.ndarray
    n_high: np.ndarray

    @property
    def gap(self) -> np.ndarray:
        """Distance between the two centres, per feature (>= 0)."""
        return self.high - self.low

    @property
    def minority(self) -> np.ndarray:
        """``(peers, features)`` bool: peer is in that feature's smaller cluster.

        On a tie (equal sizes) neither cluster is the minority: all False.
        """
        high_is_minority = self.n_high < self.n_low
        low_is_minority = self.n_low < self.n_high
        return (self.members_high & high_is_minority) | (~self.members_high & low_is_minority)


_BLOCK: Final = 8192
"""Columns per block in :func:`two_means_1d`: 50 peers x 8192 float64 is 3.3 MB, so a
block's working set stays in cache (8k was as fast as or faster than 2k and 32k)."""


def two_means_1d(values: np.ndarray) -> TwoMeans:
    """Optimal 2-means clustering of each column of ``values`` (shape (P, F), P >= 2).

    Exact: in one dimension an optimal partition is ``{x <= t}, {x > t}`` for a
    threshold ``t`` among the sorted values. Minimising the within-cluster sum of
    squares is the same as maximising the between-cluster one, which for a low
    cluster of the ``k`` smallest values, in a column centred to sum zero, is
    ``S_k ** 2 * P / (k (P - k))`` with ``S_k`` the prefix sum of the sorted
    column. So: sort each column, run the prefix sum, take the argmax over ``k``
    (the first on ties). Columns are centred before summing so that the prefix
    sums carry the differences, not a large common offset.

    Ties between equal values never straddle the optimal threshold (moving one of
    them across strictly lowers the cost), so membership is ``x > t`` with ``t``
    the largest value of the low cluster. Sizes are counted from that membership
    and the centres always agree with it.

    Vectorized over features. The prefix sum runs as a loop over the ``P - 1``
    split positions, each step one numpy operation on a block of columns, instead
    of materialising a ``(P - 1, F)`` cumulative-sum matrix: same ``O(P log P * F)``
    work, a working set that stays in cache, and no Python loop over features.
    Raises ``ValueError`` on non-finite values, a non-2-D input or P < 2.
    """
    x = np.asarray(values)
    if x.ndim != 2:
        raise ValueError(f"need a (peers, features) matrix, got shape {x.shape}")
    p, f = x.shape
    if p < 2:
        raise ValueError("2-means needs at least 2 peers")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError("features must be finite (no NaN or inf)")

    low = np.empty(f)
    high = np.empty(f)
    members_high = np.empty((p, f), dtype=bool)
    n_high = np.empty(f, dtype=np.int64)
    for start in range(0, f, _BLOCK):
        stop = min(start + _BLOCK, f)
        _two_means_block(
            x[:, start:stop],
            low[start:stop],
            high[start:stop],
            members_high[:, start:stop],
            n_high[start:stop],
        )
    return TwoMeans(low=low, high=high, members_high=members_high, n_low=p - n_high, n_high=n_high)


def _two_means_block(
    x: np.ndarray, low: np.ndarray, high: np.ndarray, members_high: np.ndarray, n_high: np.ndarray
) -> None:
    """:func:`two_means_1d` on a block of columns, writing into the given output views."""
    p, f = x.shape
    # Sort in the input's dtype (float32 sorts faster), sum in float64.
    s = np.sort(x, axis=0)
    mean = s.mean(axis=0, dtype=np.float64)
    c = s - mean  # float64
    # Second centring pass: removes the first pass's rounding, so the column total
    # is zero to rounding and the formula for the between-cluster score holds.
    correction = c.mean(axis=0)
    c -= correction
    mean += correction

    run = np.zeros(f)  # S_k: sum of the k smallest centred values
    best = np.full(f, -1.0)  # scores are >= 0, so k = 1 always wins first
    best_k = np.ones(f, dtype=np.intp)
    best_sum = np.zeros(f)
    score = np.empty(f)
    better = np.empty(f, dtype=bool)
    for k in range(1, p):
        run += c[k - 1]
        np.multiply(run, run, out=score)
        score *= p / (k * (p - k))
        np.greater(score, best, out=better)  # strict: the first k wins ties
        np.maximum(best, score, out=best)
        np.copyto(best_k, k, where=better)
        np.copyto(best_sum, run, where=better)

    # Threshold from the uncentred sort: (v - mean) + mean may be off by an ulp.
    threshold = s[best_k - 1, np.arange(f)]
    np.greater(x, threshold, out=members_high)
    n_high[:] = np.count_nonzero(members_high, axis=0)
    low[:] = mean + best_sum / best_k
    high[:] = mean - best_sum / (p - best_k)
    # Where the membership is not the k-split (a constant column: nobody is above
    # its only value; or rounding put equal values on both sides), take the centres
    # from the membership itself so that they always agree with it.
    odd = n_high != p - best_k
    if odd.any():
        xo = x[:, odd].astype(np.float64)
        mo = members_high[:, odd]
        nh = n_high[odd]
        lo = np.sum(xo, axis=0, where=~mo) / (p - nh)  # p - nh >= 1: the minimum is low
        low[odd] = lo
        high[odd] = np.divide(np.sum(xo, axis=0, where=mo), nh, out=lo.copy(), where=nh > 0)


def indicative_features(
    values: np.ndarray,
    clusters: TwoMeans,
    alpha_mult: float,
    spread_floor: float,
) -> np.ndarray:
    """Boolean mask of the indicative features (the alpha rule, module docstring).

    ``gap_f > alpha_mult * max(sigma_f, spread_floor * median(sigma))`` with
    ``sigma_f = 1.4826 * MAD_f`` across peers; a zero gap is never indicative.
    """
    x = np.asarray(values, dtype=np.float64)
    median = _column_median(x)
    sigma = MAD_TO_SIGMA * _column_median(np.abs(x - median))
    scale = np.maximum(sigma, spread_floor * float(np.median(sigma)))
    gap = clusters.gap
    return (gap > alpha_mult * scale) & (gap > 0.0)


def _column_median(a: np.ndarray) -> np.ndarray:
    """Median of each column. A full sort: for tens of rows numpy's sort is ~3x
    faster than the introselect behind ``np.median``/``np.partition``."""
    s = np.sort(a, axis=0)
    p = s.shape[0]
    if p % 2:
        return s[p // 2]
    return 0.5 * (s[p // 2 - 1] + s[p // 2])


def sample_coordinates(dim: int, max_features: int, seed: int) -> np.ndarray:
    """The fixed coordinate subset judged for vectors of length ``dim``.

    All of ``range(dim)`` if ``dim <= max_features``; otherwise ``max_features``
    distinct coordinates drawn uniformly with ``seed`` (sorted, int64). Same
    arguments, same subset, in every run.
    """
    if dim <= 0 or max_features <= 0:
        raise ValueError("dim and max_features must be positive")
    if dim <= max_features:
        return np.arange(dim, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(dim, size=max_features, replace=False)).astype(np.int64)


# ------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class AurorConfig:
    """Settings of :class:`AurorDetector`; the module docstring explains the rules.

    min_peers
        Do not judge with fewer peers in the window. 4 is the smallest crowd in
        which one deviant is a clear minority (1 vs 3) and the MAD (median of
        four deviations) is still set by honest peers; with 3, 2-means always
        isolates somebody.
    alpha_mult
        A feature is indicative when its centre gap exceeds this many robust
        sigmas (1.4826 * MAD across peers). 4: see "The alpha rule" above; 3
        loses attacks on a small share of the coordinates, 5 loses moderate
        attacks by a 30% coalition in larger crowds.
    spread_floor
        Per-feature sigma is floored at this fraction of the median sigma over
        all features, so coordinates where peers agree exactly (MAD 0) do not
        make rounding noise indicative. 0.1: small enough not to hide a feature
        that is merely quieter than most.
    tau
        Flag a peer in the minority on at least this fraction of the indicative
        features. 0.6: honest IID peers stay below 0.3, the most atypical honest
        non-IID peer reaches 0.5-0.6 in the simulations, attackers sit at
        0.75-1.0 (see "Who is flagged"). The paper leaves tau to the deployment.
    min_indicative
        Flag nobody when fewer features are indicative: a few noise features
        should not decide. 20: a flag then rests on at least 20 features, and
        at 10,000 sampled coordinates that is 0.2% of them; an attack touching
        fewer sampled coordinates than that is not judged at all.
    decay
        Suspicion ``s <- decay * s + flagged`` per judgement of a fresh vector.
        0.75: a single false flag fades (1, 0.75, 0.56, ...); steady state is
        ``4 * p`` for a peer flagged with probability ``p``.
    blacklist_threshold
        Blacklist when ``s >= threshold``. 2.0: reached by three flags in a row
        (1, 1.75, 2.31) or by being flagged about half the time; never by one or
        two isolated false flags.
    max_features
        Vectors longer than this are judged on a seeded subset of this many
        coordinates. 10,000: the fraction estimates need hundreds of features,
        not millions; 50 peers x 10k float64 is 4 MB, and an evaluation takes a
        few milliseconds with 10 peers, tens with 50 (bench).
    window
        A vector takes part in this many evaluations after it is observed, unless
        replaced by a newer one of the same peer. 8: long enough to gather
        ``min_peers`` when each peer reaches us only every few sharing periods
        (GoSGD pushes to one random peer), short enough that differences taken
        against our own, moving, parameters stay comparable. Tie the caller's
        evaluation cadence to the sharing period.
    peel_passes
        Extra clusterings per evaluation after removing the peers already
        flagged (see "Peeling"). 2: three attacker groups of clearly different
        strength are all caught in one evaluation; each pass costs one more
        2-means over the remaining peers. 0 is plain AUROR.
    seed
        Seed of the coordinate subset. Give every node its own, from private
        randomness: a node only compares its peers with each other, so nodes
        need not agree on the subset, and a subset the attackers can predict
        lets them poison only the coordinates nobody checks. 0 is for tests and
        benchmarks.
    """

    min_peers: int = 4
    alpha_mult: float = 4.0
    spread_floor: float = 0.1
    tau: float = 0.6
    min_indicative: int = 20
    decay: float = 0.75
    blacklist_threshold: float = 2.0
    max_features: int = 10_000
    window: int = 8
    peel_passes: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_peers < 3:
            raise ValueError("min_peers must be >= 3 (2-means on 2 peers splits them)")
        if not self.alpha_mult > 0 or not self.spread_floor >= 0:
            raise ValueError("need alpha_mult > 0 and spread_floor >= 0")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError("tau must be in (0, 1]")
        if self.min_indicative < 1:
            raise ValueError("min_indicative must be >= 1")
        if not 0.0 <= self.decay < 1.0 or not self.blacklist_threshold > 0:
            raise ValueError("need 0 <= decay < 1 and blacklist_threshold > 0")
        if self.max_features < 1 or self.window < 1:
            raise ValueError("max_features and window must be >= 1")
        if self.peel_passes < 0:
            raise ValueError("peel_passes must be >= 0")


DEFAULT_AUROR: Final = AurorConfig()


# ------------------------------------------------------------------------- detector


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of one :meth:`AurorDetector.evaluate`.

    ``evaluated`` is False when fewer than ``min_peers`` peers were in the window
    (then everything else is empty). ``peers`` are the peers clustered, in
    byte order; ``fractions[p]`` is the share of indicative features on which
    ``p`` is in the minority (0 if none is indicative) and ``minority[p]`` the
    count, both from the clustering pass that flagged ``p``, else the first
    one (``features`` and ``indicative`` are the first pass's; see "Peeling").
    ``flagged`` holds the peers at or above ``tau`` in any pass (a pass with
    fewer than ``min_indicative`` indicative features flags nobody); ``judged``
    the peers whose
    suspicion was updated (fresh vectors only); ``blacklisted`` the peers
    blacklisted by this evaluation.
    """

    evaluated: bool
    peers: tuple[bytes, ...] = ()
    features: int = 0
    indicative: int = 0
    fractions: dict[bytes, float] = field(default_factory=dict)
    minority: dict[bytes, int] = field(default_factory=dict)
    flagged: frozenset[bytes] = frozenset()
    judged: frozenset[bytes] = frozenset()
    blacklisted: frozenset[bytes] = frozenset()


@dataclass(slots=True)
class _Entry:
    features: np.ndarray
    remaining: int  # evaluations this vector still takes part in
    fresh: bool  # observed since its origin was last judged


class AurorDetector:
    """Windowed AUROR over peers' feature vectors, with suspicion and a local blacklist.

    Calling pattern (one node; see the module docstring for what to pass)::

        det = AurorDetector()
        coords = det.coordinates_for(num_params)           # optional: compute only these
        det.observe(update.origin, received[coords] - own[coords])
        ...
        verdict = det.evaluate()                           # e.g. once per sharing period
        if det.is_blacklisted(origin): drop its updates, announce the accusation

    Deterministic, no I/O, not thread-safe (one thread, or a lock).
    """

    def __init__(self, config: AurorConfig = DEFAULT_AUROR) -> None:
        self.config = config
        self._dim: int | None = None
        self._coords: np.ndarray | None = None
        self._entries: dict[bytes, _Entry] = {}
        self._suspicion: dict[bytes, float] = {}
        self._blacklisted: set[bytes] = set()

    # -- inputs

    def coordinates_for(self, dim: int) -> np.ndarray:
        """The coordinates kept from vectors of length ``dim`` (all, or a seeded subset)."""
        return sample_coordinates(dim, self.config.max_features, self.config.seed)

    def observe(self, origin: bytes, features: np.ndarray) -> bool:
        """Record ``origin``'s newest feature vector (replacing any older one).

        Every vector must have the same length as the first one observed (or be
        already reduced to :meth:`coordinates_for` of it). Returns False, and
        records nothing, for a blacklisted origin. Raises ``ValueError`` on a
        non-finite value, a wrong shape or a length mismatch.
        """
        vec = np.asarray(features)
        if vec.ndim != 1 or vec.size == 0:
            raise ValueError(f"features must be a non-empty 1-D vector, got shape {vec.shape}")
        if not np.issubdtype(vec.dtype, np.floating) and not np.issubdtype(vec.dtype, np.integer):
            raise ValueError(f"features must be numeric, got {vec.dtype}")
        if not np.isfinite(vec).all():
            raise ValueError("features must be finite (no NaN or inf)")
        if origin in self._blacklisted:
            return False
        if self._dim is None:
            self._dim = vec.size
            self._coords = self.coordinates_for(vec.size)
        assert self._coords is not None
        if vec.size == self._dim:
            kept = vec[self._coords] if self._coords.size < self._dim else vec
        elif vec.size == self._coords.size:
            kept = vec  # the caller already reduced it to coordinates_for(dim)
        else:
            raise ValueError(f"features have {vec.size} values, expected {self._dim}")
        self._entries[origin] = _Entry(
            features=np.array(kept, dtype=np.float64), remaining=self.config.window, fresh=True
        )
        return True

    def forget(self, origin: bytes) -> None:
        """Drop everything about ``origin``: its vector, suspicion and blacklisting."""
        self._entries.pop(origin, None)
        self._suspicion.pop(origin, None)
        self._blacklisted.discard(origin)

    # -- judgement

    def evaluate(self) -> Verdict:
        """Cluster the peers in the window, update suspicion, age the window.

        The window ages on every call, even when there are too few peers to
        judge, so an old vector does not wait forever for company.
        """
        cfg = self.config
        peers = tuple(sorted(self._entries))
        if len(peers) < cfg.min_peers:
            self._age()
            return Verdict(evaluated=False)

        fractions: dict[bytes, float] = {}
        minority: dict[bytes, int] = {}
        flagged: set[bytes] = set()
        features = n_ind = 0
        remaining = peers
        for depth in range(1 + cfg.peel_passes):
            if len(remaining) < cfg.min_peers:
                break
            x = np.stack([self._entries[p].features for p in remaining])
            clusters = two_means_1d(x)
            mask = indicative_features(x, clusters, cfg.alpha_mult, cfg.spread_floor)
            n_pass = int(mask.sum())
            counts = clusters.minority[:, mask].sum(axis=1)
            shares = counts / n_pass if n_pass else np.zeros(len(remaining))
            if depth == 0:
                features, n_ind = int(x.shape[1]), n_pass
            new = (
                {p for p, fr in zip(remaining, shares, strict=True) if fr >= cfg.tau}
                if n_pass >= cfg.min_indicative
                else set()
            )
            if 2 * (len(flagged) + len(new)) >= len(peers):
                new = set()  # see "Peeling": not a minority any more
            # Reported shares: from the pass that flagged the peer, else the first.
            for p, fr, c in zip(remaining, shares, counts, strict=True):
                if depth == 0 or p in new:
                    fractions[p], minority[p] = float(fr), int(c)
            if not new:
                break
            flagged |= new
            remaining = tuple(p for p in remaining if p not in new)

        # Only a vector not judged before adds evidence: evaluating more often than
        # a peer sends must not count the same update twice.
        judged = {p for p in peers if self._entries[p].fresh}
        newly: set[bytes] = set()
        for p in judged:
            self._entries[p].fresh = False
            s = cfg.decay * self._suspicion.get(p, 0.0) + (1.0 if p in flagged else 0.0)
            self._suspicion[p] = s
            if s >= cfg.blacklist_threshold and p not in self._blacklisted:
                self._blacklisted.add(p)
                newly.add(p)
        # A blacklisted peer leaves the window: it must not shape later clusterings.
        for p in newly:
            self._entries.pop(p, None)
        self._age()
        return Verdict(
            evaluated=True,
            peers=peers,
            features=features,
            indicative=n_ind,
            fractions=fractions,
            minority=minority,
            flagged=frozenset(flagged),
            judged=frozenset(judged),
            blacklisted=frozenset(newly),
        )

    def _age(self) -> None:
        for p in list(self._entries):
            entry = self._entries[p]
            entry.remaining -= 1
            if entry.remaining <= 0:
                del self._entries[p]

    # -- state

    def suspicion(self, origin: bytes) -> float:
        """Current decayed suspicion of ``origin`` (0.0 if never judged)."""
        return self._suspicion.get(origin, 0.0)

    def has_judged(self, origin: bytes) -> bool:
        """True once ``origin`` has been judged (it has a suspicion score, maybe 0)."""
        return origin in self._suspicion

    def is_blacklisted(self, origin: bytes) -> bool:
        return origin in self._blacklisted

    @property
    def blacklisted(self) -> frozenset[bytes]:
        """Peers blacklisted locally (sticky until :meth:`forget`)."""
        return frozenset(self._blacklisted)

    @property
    def window_peers(self) -> tuple[bytes, ...]:
        """Peers with a vector currently in the window, in byte order."""
        return tuple(sorted(self._entries))

    def forget_all(self, origins: Iterable[bytes]) -> None:
        """:meth:`forget` each of ``origins`` (e.g. peers that left the membership)."""
        for origin in origins:
            self.forget(origin)
