"""AUROR: exact 1-D 2-means, the alpha/tau rules, suspicion, blacklist and window."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from deepgossip.trust.auror import (
    DEFAULT_AUROR,
    AurorConfig,
    AurorDetector,
    Verdict,
    indicative_features,
    sample_coordinates,
    two_means_1d,
)

P = 10
F = 1000
PEERS = [f"peer-{i:02d}".encode() for i in range(P)]
ATTACKERS = PEERS[:3]


def brute_force(column: np.ndarray) -> tuple[float, int]:
    """Smallest within-cluster sum of squares over every split of the sorted column."""
    s = np.sort(column)
    best, best_k = np.inf, 0
    for k in range(1, len(s)):
        lo, hi = s[:k], s[k:]
        sse = float(((lo - lo.mean()) ** 2).sum() + ((hi - hi.mean()) ** 2).sum())
        if sse < best:
            best, best_k = sse, k
    return best, best_k


def sse_of(column: np.ndarray, high: np.ndarray) -> float:
    total = 0.0
    for part in (column[high], column[~high]):
        if part.size:
            total += float(((part - part.mean()) ** 2).sum())
    return total


# ------------------------------------------------------------------------- 2-means


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_two_means_is_exact_against_brute_force(offset: float) -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        p = int(rng.integers(2, 10))
        x = rng.standard_normal((p, 20)) * rng.choice([1e-3, 1.0, 1e3]) + offset
        tm = two_means_1d(x)
        assert np.all(tm.n_low + tm.n_high == p) and np.all(tm.low <= tm.high)
        for f in range(x.shape[1]):
            col, high = x[:, f], tm.members_high[:, f]
            best, best_k = brute_force(col)
            # Continuous values: the optimal split is unique, membership must match.
            assert np.array_equal(high, col > np.sort(col)[best_k - 1])
            assert sse_of(col, high) == pytest.approx(best, rel=1e-9, abs=1e-12)
            assert tm.low[f] == pytest.approx(col[~high].mean(), rel=1e-12)
            assert tm.high[f] == pytest.approx(col[high].mean(), rel=1e-12)


def test_two_means_with_ties_never_splits_equal_values() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, size=(7, 400)).astype(np.float64)
    tm = two_means_1d(x)
    for f in range(x.shape[1]):
        col, high = x[:, f], tm.members_high[:, f]
        assert sse_of(col, high) == pytest.approx(brute_force(col)[0], abs=1e-12)
        if high.any():
            assert col[~high].max() < col[high].min()


def test_two_means_constant_column_and_float32() -> None:
    x = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 10.0], [1.0, 10.0]], dtype=np.float32)
    tm = two_means_1d(x)
    assert tm.n_high.tolist() == [0, 2] and tm.gap.tolist() == [0.0, 10.0]
    assert tm.low.tolist() == [1.0, 0.0] and tm.high.tolist() == [1.0, 10.0]
    # A 2/2 split is a tie: nobody is the minority.
    assert not tm.minority.any()


def test_two_means_minority_is_the_smaller_cluster() -> None:
    x = np.array([[0.0], [0.1], [0.2], [5.0]])
    tm = two_means_1d(x)
    assert tm.minority[:, 0].tolist() == [False, False, False, True]
    tm = two_means_1d(-x)
    assert tm.minority[:, 0].tolist() == [False, False, False, True]


def test_two_means_spans_several_blocks() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 20_000))
    tm = two_means_1d(x)
    for f in (0, 8191, 8192, 16_384, 19_999):
        assert sse_of(x[:, f], tm.members_high[:, f]) == pytest.approx(brute_force(x[:, f])[0])


@pytest.mark.parametrize(
    "bad",
    [
        np.array([[0.0, np.nan], [1.0, 2.0]]),
        np.array([[np.inf], [0.0]]),
        np.zeros(3),
        np.zeros((1, 4)),
    ],
)
def test_two_means_rejects_bad_input(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        two_means_1d(bad)


# ------------------------------------------------------------------------- scenarios


Scenario = Callable[[np.random.Generator], np.ndarray]


def honest_base(rng: np.random.Generator) -> np.ndarray:
    """One round of features: a drift common to all peers plus per-peer noise."""
    common = 3.0 * rng.standard_normal(F)
    return common + rng.standard_normal((P, F))


def run(detector: AurorDetector, rounds: int, scenario: Scenario, seed: int = 0) -> list[Verdict]:
    rng = np.random.default_rng(seed)
    verdicts = []
    for _ in range(rounds):
        x = scenario(rng)
        for peer, row in zip(PEERS, x, strict=True):
            detector.observe(peer, row)
        verdicts.append(detector.evaluate())
    return verdicts


def sign_flip(rng: np.random.Generator) -> np.ndarray:
    common = 3.0 * rng.standard_normal(F)
    x = common + rng.standard_normal((P, F))
    x[:3] = -common + rng.standard_normal((3, F))
    return x


def shifted_scenario() -> Scenario:
    """Label-flip-like: attackers share a fixed push on 30% of the coordinates."""
    fixed = np.random.default_rng(99)
    shift = np.where(fixed.random(F) < 0.3, 8.0 * fixed.choice([-1.0, 1.0], F), 0.0)

    def scenario(rng: np.random.Generator) -> np.ndarray:
        x = honest_base(rng)
        x[:3] += shift
        return x

    return scenario


@pytest.mark.parametrize("scenario", [sign_flip, shifted_scenario()], ids=["sign-flip", "shift"])
def test_planted_attackers_are_flagged_and_blacklisted(scenario: Scenario) -> None:
    det = AurorDetector()
    verdicts = run(det, 4, scenario)
    for v in verdicts[:3]:
        # Evaluation 3 blacklists them (1, 1.75, 2.31 >= 2.0) and drops them from
        # the window; the fourth judges the seven honest peers alone.
        assert v.evaluated and v.indicative >= DEFAULT_AUROR.min_indicative
        assert v.flagged == frozenset(ATTACKERS)
        assert all(v.fractions[a] > 0.7 for a in ATTACKERS)
        assert all(v.fractions[h] < 0.2 for h in PEERS[3:])
    assert verdicts[0].blacklisted == verdicts[1].blacklisted == frozenset()
    assert verdicts[2].blacklisted == frozenset(ATTACKERS)
    assert det.blacklisted == frozenset(ATTACKERS)
    assert all(det.suspicion(h) == 0.0 and not det.is_blacklisted(h) for h in PEERS[3:])
    # Blacklisted peers are ignored from then on.
    assert not det.observe(ATTACKERS[0], np.zeros(F))
    assert ATTACKERS[0] not in det.window_peers
    assert verdicts[3].flagged == frozenset() and len(verdicts[3].peers) == 7


def test_single_attacker_among_minimum_peers() -> None:
    rng = np.random.default_rng(3)
    det = AurorDetector()
    for _ in range(3):
        x = honest_base(rng)[:4]
        x[0] += 10.0
        for peer, row in zip(PEERS[:4], x, strict=True):
            det.observe(peer, row)
        assert det.evaluate().flagged == {PEERS[0]}
    assert det.blacklisted == {PEERS[0]}


def test_honest_iid_peers_are_never_flagged() -> None:
    det = AurorDetector()
    verdicts = run(det, 30, honest_base)
    assert all(v.evaluated and not v.flagged for v in verdicts)
    assert max(max(v.fractions.values()) for v in verdicts) < 0.4
    assert det.blacklisted == frozenset()


def groups_scenario(sizes: list[int]) -> Scenario:
    """Non-IID: every peer group has its own fixed mean per feature."""
    fixed = np.random.default_rng(7)
    group = np.repeat(np.arange(len(sizes)), sizes)
    means = 3.0 * fixed.standard_normal((len(sizes), F))
    return lambda rng: honest_base(rng) + means[group]


def dirichlet_scenario(concentration: float) -> Scenario:
    """Non-IID like Dirichlet label skew: a peer's mean mixes 10 class effects."""
    fixed = np.random.default_rng(8)
    mix = fixed.dirichlet([concentration] * 10, size=P)
    class_effect = 2.0 * fixed.standard_normal((10, F))
    return lambda rng: honest_base(rng) + mix @ class_effect


@pytest.mark.parametrize(
    "scenario",
    [groups_scenario([3, 3, 4]), groups_scenario([2, 2, 3, 3]), dirichlet_scenario(0.5)],
    ids=["groups-334", "groups-2233", "dirichlet-0.5"],
)
def test_honest_non_iid_peers_are_not_blacklisted(scenario: Scenario) -> None:
    det = AurorDetector()
    verdicts = run(det, 40, scenario)
    assert all(v.evaluated for v in verdicts)
    assert det.blacklisted == frozenset()
    assert all(det.suspicion(p) < DEFAULT_AUROR.blacklist_threshold for p in PEERS)


def test_min_peers_respected_and_window_still_ages() -> None:
    det = AurorDetector(AurorConfig(window=2))
    rng = np.random.default_rng(4)
    x = honest_base(rng)
    for peer, row in zip(PEERS[:3], x[:3], strict=True):
        det.observe(peer, row)
    v = det.evaluate()
    assert not v.evaluated and v.peers == () and not det.has_judged(PEERS[0])
    det.observe(PEERS[3], x[3])
    v = det.evaluate()
    assert v.evaluated and len(v.peers) == 4 and det.has_judged(PEERS[3])
    # The first three have now taken part in 2 evaluations (window = 2): expired.
    assert det.window_peers == (PEERS[3],)


def test_decay_lets_a_once_flagged_honest_peer_recover() -> None:
    det = AurorDetector()
    rng = np.random.default_rng(5)
    x = honest_base(rng)
    x[5] += 10.0  # one bad round (a stale model, a glitch)
    for peer, row in zip(PEERS, x, strict=True):
        det.observe(peer, row)
    assert det.evaluate().flagged == {PEERS[5]}
    assert det.suspicion(PEERS[5]) == 1.0
    run(det, 10, honest_base, seed=6)
    assert det.suspicion(PEERS[5]) == pytest.approx(DEFAULT_AUROR.decay**10)
    assert not det.is_blacklisted(PEERS[5])


def test_same_evidence_is_not_counted_twice() -> None:
    det = AurorDetector()
    x = honest_base(np.random.default_rng(9))
    x[0] += 10.0
    for peer, row in zip(PEERS, x, strict=True):
        det.observe(peer, row)
    first = det.evaluate()
    assert first.flagged == {PEERS[0]} and first.judged == frozenset(PEERS)
    for _ in range(4):  # evaluating again without news: flagged, but not judged
        v = det.evaluate()
        assert v.flagged == {PEERS[0]} and v.judged == frozenset()
    assert det.suspicion(PEERS[0]) == 1.0 and not det.blacklisted


def test_observe_rejects_bad_vectors() -> None:
    det = AurorDetector()
    with pytest.raises(ValueError, match="finite"):
        det.observe(b"a", np.array([0.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="finite"):
        det.observe(b"a", np.array([0.0, np.inf, 1.0]))
    with pytest.raises(ValueError, match="1-D"):
        det.observe(b"a", np.zeros((2, 2)))
    det.observe(b"a", np.zeros(3))
    with pytest.raises(ValueError, match="expected 3"):
        det.observe(b"b", np.zeros(4))
    assert det.window_peers == (b"a",)


def test_newer_vector_replaces_older_and_forget_clears_everything() -> None:
    det = AurorDetector(AurorConfig(window=3))
    det.observe(b"a", np.zeros(5))
    det.evaluate()  # too few peers; ages "a" to 2 remaining evaluations
    det.observe(b"a", np.ones(5))  # replaced, window restarts
    det.evaluate()
    det.evaluate()
    assert det.window_peers == (b"a",)
    det.evaluate()
    assert det.window_peers == ()

    det = AurorDetector()
    verdicts = run(det, 3, sign_flip)
    assert verdicts[-1].blacklisted == frozenset(ATTACKERS)
    det.forget(ATTACKERS[0])
    assert not det.is_blacklisted(ATTACKERS[0]) and det.suspicion(ATTACKERS[0]) == 0.0
    assert det.observe(ATTACKERS[0], np.zeros(F))
    det.forget_all(PEERS)
    assert det.window_peers == () and det.blacklisted == frozenset()


def test_large_vectors_are_subsampled_on_a_fixed_seeded_subset() -> None:
    cfg = AurorConfig(max_features=100, seed=3)
    det = AurorDetector(cfg)
    coords = det.coordinates_for(10_000)
    assert coords.size == 100 and np.all(np.diff(coords) > 0)
    assert np.array_equal(coords, sample_coordinates(10_000, 100, 3))
    assert not np.array_equal(coords, sample_coordinates(10_000, 100, 4))
    assert np.array_equal(sample_coordinates(50, 100, 3), np.arange(50))

    full = np.random.default_rng(0).standard_normal((P, 10_000))
    for peer, row in zip(PEERS[:5], full[:5], strict=True):
        det.observe(peer, row)
    for peer, row in zip(PEERS[5:], full[5:], strict=True):
        det.observe(peer, row[coords])  # reduced by the caller: same thing
    v = det.evaluate()
    assert v.features == 100
    ref = AurorDetector(cfg)
    for peer, row in zip(PEERS, full[:, coords], strict=True):
        ref.observe(peer, row)
    assert ref.evaluate().fractions == v.fractions


def test_evaluation_is_deterministic() -> None:
    a = run(AurorDetector(), 5, shifted_scenario(), seed=11)
    b = run(AurorDetector(), 5, shifted_scenario(), seed=11)
    assert a == b


def test_indicative_rule_is_scale_free_and_floored() -> None:
    rng = np.random.default_rng(12)
    x = rng.standard_normal((P, 500))
    x[:2, :100] += 12.0
    masks = []
    for scale in (1e-6, 1.0, 1e6):
        tm = two_means_1d(x * scale)
        masks.append(indicative_features(x * scale, tm, 4.0, 0.1))
    assert np.array_equal(masks[0], masks[1]) and np.array_equal(masks[1], masks[2])
    assert masks[1][:100].all()
    # Coordinates where everybody agrees but one peer by a hair: MAD = 0, so the
    # floor (a fraction of the median sigma) keeps them from being indicative.
    y = np.concatenate([x, np.zeros((P, 500))], axis=1)
    y[0, 500:] = 1e-9
    tm = two_means_1d(y)
    assert not indicative_features(y, tm, 4.0, 0.1)[500:].any()


def test_config_validation() -> None:
    for bad in (
        {"min_peers": 2},
        {"tau": 0.0},
        {"tau": 1.5},
        {"decay": 1.0},
        {"alpha_mult": 0.0},
        {"window": 0},
        {"max_features": 0},
        {"min_indicative": 0},
        {"blacklist_threshold": 0.0},
    ):
        with pytest.raises(ValueError):
            AurorConfig(**bad)  # type: ignore[arg-type]


def strong_and_weak(rng: np.random.Generator) -> np.ndarray:
    """One attacker pushing far harder than two others, in the opposite direction."""
    x = honest_base(rng)
    x[0] += 60.0
    x[1:3] -= 8.0
    return x


def test_peeling_finds_weak_attackers_behind_a_strong_one() -> None:
    # Plain AUROR: nearly every split isolates peer 0 and leaves the weak pair
    # with the honest majority, so the first evaluation flags peer 0 alone.
    plain = run(AurorDetector(AurorConfig(peel_passes=0)), 1, strong_and_weak)[0]
    assert plain.flagged == {PEERS[0]}
    peeled = run(AurorDetector(), 1, strong_and_weak)[0]
    assert peeled.flagged == frozenset(ATTACKERS)
    assert all(peeled.fractions[h] < 0.2 for h in PEERS[3:])


def test_peeling_never_flags_half_the_crowd() -> None:
    det = AurorDetector(AurorConfig(min_peers=4))

    def halves(rng: np.random.Generator) -> np.ndarray:
        x = honest_base(rng)[:8]
        x[0] += 60.0  # flagged on the first pass
        x[1:4] -= 8.0  # would make 4 of 8 on the second: refused
        return x

    rng = np.random.default_rng(5)
    for peer, row in zip(PEERS[:8], halves(rng), strict=True):
        det.observe(peer, row)
    assert det.evaluate().flagged == {PEERS[0]}
