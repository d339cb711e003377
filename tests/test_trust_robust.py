"""Robust aggregation rules: textbook definitions, numpy references, robustness, contract."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from deepgossip.trust.robust import (
    RULES,
    AggregateResult,
    NotEnoughPeers,
    RobustConfig,
    aggregate,
    auto_clip_radius,
    balance,
    balance_filter,
    centered_clip,
    coordinate_median,
    krum,
    krum_scores,
    mean,
    multi_krum,
    trimmed_mean,
)

Tensor = torch.Tensor


def vec(*values: float) -> Tensor:
    return torch.tensor(values, dtype=torch.float32)


def random_vectors(n: int, d: int, seed: int) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(d, generator=gen) for _ in range(n)]


def as_numpy(vectors: list[Tensor]) -> np.ndarray:
    return torch.stack(vectors).numpy().astype(np.float64)


def close(actual: Tensor, expected: np.ndarray | Tensor) -> None:
    np.testing.assert_allclose(actual.numpy(), np.asarray(expected), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ mean


def test_mean_is_uniform_over_self_and_peers() -> None:
    close(mean(vec(0, 3), [vec(3, 0), vec(6, 9)]), [3, 4])


def test_mean_with_weights_gives_local_the_rest() -> None:
    # (1 - 0.5 - 0.25) * 4 + 0.5 * 8 + 0.25 * 0 = 5
    close(mean(vec(4), [vec(8), vec(0)], weights=[0.5, 0.25]), [5])


def test_mean_rejects_bad_weights() -> None:
    with pytest.raises(ValueError, match="sum"):
        mean(vec(1), [vec(2), vec(3)], weights=[0.7, 0.7])
    with pytest.raises(ValueError, match="weights for"):
        mean(vec(1), [vec(2)], weights=[0.5, 0.5])
    with pytest.raises(ValueError, match=">= 0"):
        mean(vec(1), [vec(2)], weights=[-0.1])


# ------------------------------------------------------------------ coordinate median


def test_median_odd_count_is_the_middle_value_per_coordinate() -> None:
    close(coordinate_median(vec(1, 10), [vec(2, 20), vec(3, -5)]), [2, 10])


def test_median_even_count_is_the_mean_of_the_two_middle_values() -> None:
    # sorted 1, 2, 4, 100: torch.median would say 2; the definition says 3.
    close(coordinate_median(vec(1), [vec(2), vec(4), vec(100)]), [3])


@pytest.mark.parametrize("n", [1, 2, 7, 8])
def test_median_matches_numpy(n: int) -> None:
    vs = random_vectors(n, 300, seed=n)
    close(coordinate_median(vs[0], vs[1:]), np.median(as_numpy(vs), axis=0))


# ------------------------------------------------------------------------ trimmed mean


def test_trimmed_mean_drops_b_extremes_per_side() -> None:
    # n = 5, trim 0.2: b = 1, so 1 and 1000 go, mean(2, 3, 4) = 3; per coordinate.
    local, peers = vec(1, 3), [vec(2, 1000), vec(3, -50), vec(4, 2), vec(1000, 4)]
    close(trimmed_mean(local, peers, 0.2), [3, 3])


def test_trimmed_mean_with_b_zero_is_the_mean() -> None:
    # n = 3, trim 0.3: floor(0.9) = 0, nothing trimmed.
    close(trimmed_mean(vec(0), [vec(3), vec(30)], 0.3), [11])


def test_trimmed_mean_count_is_floor_of_trim_times_n() -> None:
    # 0.3 * 10 is 3.0000000000000004 in floating point: still b = 3.
    values = [float(v) for v in range(10)]
    local, peers = vec(values[0]), [vec(v) for v in values[1:]]
    close(trimmed_mean(local, peers, 0.3), [np.mean(values[3:7])])


def numpy_trimmed_mean(x: np.ndarray, b: int) -> np.ndarray:
    """Per column: drop the b largest and b smallest, average the rest."""
    return np.array([np.mean(sorted(column)[b : len(column) - b]) for column in x.T])


@pytest.mark.parametrize(
    ("n", "trim", "b"), [(5, 0.0, 0), (9, 0.25, 2), (10, 0.3, 3), (12, 0.49, 5)]
)
def test_trimmed_mean_matches_numpy(n: int, trim: float, b: int) -> None:
    vs = random_vectors(n, 300, seed=10 + n)
    close(trimmed_mean(vs[0], vs[1:], trim), numpy_trimmed_mean(as_numpy(vs), b))


@pytest.mark.parametrize("trim", [-0.1, 0.5, 0.7, math.nan])
def test_trimmed_mean_rejects_bad_trim(trim: float) -> None:
    with pytest.raises(ValueError, match="trim"):
        trimmed_mean(vec(1), [vec(2)], trim)


# ------------------------------------------------------------------------------ Krum

# On a line: 0, 1, 2.5, 3, 100 with f = 1, each score sums the n - f - 2 = 2 smallest
# squared distances: 0 -> 1 + 6.25; 1 -> 1 + 2.25; 2.5 -> 0.25 + 2.25;
# 3 -> 0.25 + 4; 100 -> 97² + 97.5².
LINE = [vec(0, 0), vec(1, 0), vec(2.5, 0), vec(3, 0), vec(100, 0)]
LINE_SCORES = [7.25, 3.25, 2.5, 4.25, 97.0**2 + 97.5**2]


def test_krum_scores_by_hand() -> None:
    np.testing.assert_allclose(krum_scores(LINE, f=1).numpy(), LINE_SCORES, rtol=1e-9)


def test_krum_selects_the_lowest_score() -> None:
    value, selected = multi_krum(LINE, f=1, m=1)
    assert selected == [2]
    close(value, [2.5, 0])


def test_multi_krum_averages_the_m_lowest_scores_in_score_order() -> None:
    value, selected = multi_krum(LINE, f=1, m=3)
    assert selected == [2, 1, 3]
    close(value, [(2.5 + 1 + 3) / 3, 0])


def numpy_krum_scores(x: np.ndarray, f: int) -> np.ndarray:
    n = len(x)
    scores = []
    for i in range(n):
        dists = sorted(float(np.sum((x[i] - x[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(dists[: n - f - 2]))
    return np.array(scores)


@pytest.mark.parametrize(("n", "f"), [(5, 1), (9, 2), (12, 3)])
def test_krum_matches_numpy(n: int, f: int) -> None:
    # An offset shared by all vectors, as trained models share most of their values.
    vs = [v + 50.0 for v in random_vectors(n, 400, seed=20 + n)]
    x = as_numpy(vs)
    expected = numpy_krum_scores(x, f)
    np.testing.assert_allclose(krum_scores(vs, f).numpy(), expected, rtol=1e-6)
    m = n - f
    value, selected = multi_krum(vs, f, m)
    assert selected == list(np.argsort(expected, kind="stable")[:m])
    close(value, x[selected].mean(axis=0))


@pytest.mark.parametrize(("n", "f"), [(4, 1), (6, 2), (2, 0), (1, 0)])
def test_krum_requires_n_greater_than_2f_plus_2(n: int, f: int) -> None:
    with pytest.raises(NotEnoughPeers, match=r"n > 2f \+ 2"):
        krum_scores(random_vectors(n, 5, seed=0), f)
    if n > 1:  # with no peers the wrapper has nothing to choose and returns local
        vs = random_vectors(n, 5, seed=0)
        with pytest.raises(ValueError):  # NotEnoughPeers is a ValueError
            krum(vs[0], vs[1:], f)


def test_krum_accepts_the_smallest_valid_n() -> None:
    assert len(krum_scores(random_vectors(5, 5, seed=0), 1)) == 5


def test_multi_krum_rejects_m_beyond_n_minus_f() -> None:
    with pytest.raises(ValueError, match="n - f"):
        multi_krum(LINE, f=1, m=5)
    with pytest.raises(ValueError, match="m must be"):
        multi_krum(LINE, f=1, m=0)


def test_krum_wrapper_counts_local_as_index_zero() -> None:
    value, selected = krum(LINE[0], LINE[1:], f=1)
    assert selected == [2]  # peers[1]
    close(value, [2.5, 0])
    value, selected = krum(vec(7), [], f=1)
    assert selected == [0]
    close(value, [7])


def test_krum_ties_go_to_the_lower_index() -> None:
    same = [vec(1, 1) for _ in range(5)]
    assert multi_krum(same, f=1, m=2)[1] == [0, 1]


# -------------------------------------------------------------------------- clipping


def test_clipping_by_hand() -> None:
    # One peer at distance 5 clipped to radius 1, weight 1/2: w + 0.5 * (0.6, 0.8).
    close(centered_clip(vec(0, 0), [vec(3, 4)], radius=1.0), [0.3, 0.4])
    # A peer inside the radius is not clipped: plain averaging.
    close(centered_clip(vec(0, 0), [vec(0.3, 0.4)], radius=1.0), [0.15, 0.2])


def test_clipping_with_weights() -> None:
    # a = (0.5, 0.25); peer 0 at distance 10 -> 2 along x, peer 1 at distance 1 kept.
    local, peers = vec(1, 1), [vec(11, 1), vec(1, 2)]
    close(centered_clip(local, peers, radius=2.0, weights=[0.5, 0.25]), [2.0, 1.25])


def numpy_clip(x: np.ndarray, radius: float) -> np.ndarray:
    w, peers = x[0], x[1:]
    a = 1.0 / len(x)
    out = w.copy()
    for v in peers:
        z = v - w
        out += a * z * min(1.0, radius / np.linalg.norm(z))
    return out


def test_clipping_matches_numpy() -> None:
    vs = random_vectors(8, 300, seed=30)
    x = as_numpy(vs)
    distances = np.linalg.norm(x[1:] - x[0], axis=1)
    radius = float(np.median(distances))  # clips about half of the peers
    close(centered_clip(vs[0], vs[1:], radius=radius), numpy_clip(x, radius))


def test_clipping_with_infinite_radius_is_the_mean() -> None:
    vs = random_vectors(6, 50, seed=31)
    weights = [0.1, 0.2, 0.05, 0.3, 0.15]
    close(
        centered_clip(vs[0], vs[1:], radius=math.inf, weights=weights),
        mean(vs[0], vs[1:], weights=weights),
    )


def test_clipping_radius_bounds_the_move() -> None:
    vs = random_vectors(6, 50, seed=32)
    attackers = [torch.full((50,), 1e4), torch.full((50,), -1e4)]
    for radius in [0.01, 0.5, 3.0]:
        out = centered_clip(vs[0], vs[1:] + attackers, radius=radius)
        assert float(torch.linalg.vector_norm(out - vs[0])) <= radius * (1 + 1e-5)


def test_auto_radius_is_the_f_plus_first_largest_distance() -> None:
    local, peers = vec(0), [vec(1), vec(-2), vec(10), vec(50)]
    assert auto_clip_radius(local, peers, f=0) == pytest.approx(50)
    assert auto_clip_radius(local, peers, f=1) == pytest.approx(10)
    assert auto_clip_radius(local, peers, f=2) == pytest.approx(2)
    assert auto_clip_radius(local, peers, f=9) == pytest.approx(1)  # the nearest
    assert auto_clip_radius(local, [], f=1) == 0.0
    # radius=None uses it: f=1 clips the attacker at 50 to 10.
    close(centered_clip(local, peers, f=1), [(1 - 2 + 10 + 10) / 5])


def test_clipping_rejects_bad_radius() -> None:
    for radius in [0.0, -1.0, math.nan]:
        with pytest.raises(ValueError, match="radius"):
            centered_clip(vec(0), [vec(1)], radius=radius)


# --------------------------------------------------------------------------- BALANCE


def test_balance_filter_by_hand() -> None:
    # ||local|| = 5, gamma 0.5: threshold 2.5 at progress 0, 2.5 / e = 0.92 at 1.
    local, peers = vec(3, 4), [vec(3, 6), vec(3, 7), vec(3, 4.5)]
    assert balance_filter(local, peers, 0.5, 1.0, 0.0).tolist() == [True, False, True]
    assert balance_filter(local, peers, 0.5, 1.0, 1.0).tolist() == [False, False, True]
    # kappa 0: no decay.
    assert balance_filter(local, peers, 0.5, 0.0, 1.0).tolist() == [True, False, True]


def test_balance_mixes_self_with_the_accepted_mean() -> None:
    local, peers = vec(3, 4), [vec(3, 6), vec(3, 7), vec(3, 4.5)]
    # accepted (3, 6) and (3, 4.5): 0.5 * (3, 4) + 0.5 * (3, 5.25)
    close(balance(local, peers, 0.5, 1.0, 0.0, self_weight=0.5), [3, 4.625])
    # none accepted: local, as a copy
    out = balance(local, [vec(30, 40)], 0.5, 1.0, 0.0, self_weight=0.5)
    close(out, [3, 4])
    assert out.data_ptr() != local.data_ptr()


def test_balance_matches_numpy() -> None:
    vs = random_vectors(9, 200, seed=40)
    local = vs[0] + 3.0  # ||local|| ~ 45, peers at distance ~ 46 +- spread
    x = as_numpy([local, *vs[1:]])
    dist = np.linalg.norm(x[1:] - x[0], axis=1)
    kappa, progress = 0.5, 0.3
    # gamma chosen so that the threshold is the median distance: half are accepted.
    gamma = float(np.median(dist) / np.linalg.norm(x[0]) / math.exp(-kappa * progress))
    threshold = gamma * math.exp(-kappa * progress) * np.linalg.norm(x[0])
    ok = dist <= threshold
    assert 0 < ok.sum() < len(ok)
    mask = balance_filter(local, vs[1:], gamma, kappa, progress)
    assert mask.tolist() == ok.tolist()
    expected = 0.3 * x[0] + 0.7 * x[1:][ok].mean(axis=0)
    close(balance(local, vs[1:], gamma, kappa, progress, self_weight=0.3), expected)


@pytest.mark.parametrize(
    ("gamma", "kappa", "progress", "message"),
    [(0.0, 1.0, 0.5, "gamma"), (0.3, -1.0, 0.5, "kappa"), (0.3, 1.0, 1.5, "progress")],
)
def test_balance_rejects_bad_parameters(
    gamma: float, kappa: float, progress: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        balance_filter(vec(1), [vec(1)], gamma, kappa, progress)


# ---------------------------------------------------------------------- robustness

HONEST, DIM = 8, 64


def honest_and_attackers(f: int, magnitude: float) -> tuple[Tensor, list[Tensor], Tensor]:
    """Honest models around 1.0 (spread 0.01) and ``f`` huge ones; local is honest.

    The attackers push the same way (opposite pushes would cancel in the mean).
    """
    gen = torch.Generator().manual_seed(50)
    honest = [1.0 + 0.01 * torch.randn(DIM, generator=gen) for _ in range(HONEST)]
    attackers = [torch.full((DIM,), magnitude * (1 + 0.1 * i)) for i in range(f)]
    honest_mean = torch.stack(honest).mean(dim=0)
    return honest[0], honest[1:] + attackers, honest_mean


@pytest.mark.parametrize("rule", [r for r in RULES if r != "mean"])
def test_defences_stay_near_the_honest_mean_under_huge_outliers(rule: str) -> None:
    f = 2  # 2 of 9 peers (22%), within DESIGN.md's 30%
    local, peers, honest_mean = honest_and_attackers(f, magnitude=1e4)
    config = RobustConfig(rule=rule, f=f, trim=0.25)
    result = aggregate(local, peers, config, progress=0.5)
    # Honest models are 0.01 * sqrt(64) = 0.08 apart; an attacker is 1e4 * 8 away.
    assert float(torch.linalg.vector_norm(result.value - honest_mean)) < 0.3
    undefended = aggregate(local, peers, RobustConfig(rule="mean"))
    assert float(torch.linalg.vector_norm(undefended.value - honest_mean)) > 1e3 - 1


@pytest.mark.parametrize("rule", ["krum", "multi_krum", "balance"])
def test_selecting_defences_reject_exactly_the_attackers(rule: str) -> None:
    local, peers, _ = honest_and_attackers(f=2, magnitude=1e4)
    result = aggregate(local, peers, RobustConfig(rule=rule, f=2), progress=0.5)
    attackers = {len(peers) - 2, len(peers) - 1}
    assert not attackers & set(result.accepted)
    if rule != "krum":
        assert result.accepted == list(range(len(peers) - 2))


def test_the_mean_is_one_attacker_away_from_anywhere() -> None:
    local, peers, honest_mean = honest_and_attackers(f=1, magnitude=1e4)
    out = aggregate(local, peers, RobustConfig()).value
    assert float(torch.linalg.vector_norm(out - honest_mean)) > 1e3


# ------------------------------------------------------------------ config, aggregate


def test_config_defaults_are_valid_and_undefended() -> None:
    config = RobustConfig()
    assert config.rule == "mean"
    assert (config.f, config.m, config.trim, config.clip_radius) == (1, None, 0.3, None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rule": "bulyan"}, "unknown robust rule"),
        ({"f": -1}, "f must be"),
        ({"f": True}, "f must be"),
        ({"m": 0}, "m must be"),
        ({"trim": 0.5}, "trim"),
        ({"clip_radius": 0.0}, "radius"),
        ({"balance_gamma": -0.1}, "gamma"),
        ({"balance_kappa": math.inf}, "kappa"),
        ({"self_weight": 1.5}, "self_weight"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RobustConfig(**kwargs)  # type: ignore[arg-type]


Direct = Callable[[Tensor, list[Tensor]], Tensor]
DIRECT: dict[str, Direct] = {
    "mean": lambda w, p: mean(w, p),
    "median": coordinate_median,
    "trimmed_mean": lambda w, p: trimmed_mean(w, p, 0.3),
    "krum": lambda w, p: krum(w, p, 1)[0],
    "multi_krum": lambda w, p: krum(w, p, 1, m=len(p))[0],  # n - f = len(p)
    "clipping": lambda w, p: centered_clip(w, p, None, f=1),
    "balance": lambda w, p: balance(w, p, 0.3, 1.0, 0.25, 0.5),
}


@pytest.mark.parametrize("rule", RULES)
def test_aggregate_dispatches_to_the_rule(rule: str) -> None:
    vs = [v + 3.0 for v in random_vectors(7, 100, seed=60)]  # close enough for BALANCE
    result = aggregate(vs[0], vs[1:], RobustConfig(rule=rule), progress=0.25)
    assert isinstance(result, AggregateResult)
    close(result.value, DIRECT[rule](vs[0], vs[1:]))
    assert result.accepted == sorted(result.accepted)


def test_aggregate_accepted_for_krum_maps_back_to_peer_indices() -> None:
    result = aggregate(LINE[0], LINE[1:], RobustConfig(rule="krum", f=1))
    assert result.accepted == [1]  # the vector at 2.5 is peers[1]
    multi = aggregate(LINE[0], LINE[1:], RobustConfig(rule="multi_krum", f=1, m=3))
    assert multi.accepted == [0, 1, 2]  # 1, 2.5, 3 (local's score 7.25 ranks 4th)


def test_aggregate_lowers_a_fixed_m_to_n_minus_f() -> None:
    result = aggregate(LINE[0], LINE[1:], RobustConfig(rule="multi_krum", f=1, m=50))
    # n - f = 4 lowest: everything but the point at 100 (peers[3])
    assert result.accepted == [0, 1, 2]
    close(result.value, [(0 + 1 + 2.5 + 3) / 4, 0])


def test_aggregate_propagates_not_enough_peers_for_krum() -> None:
    with pytest.raises(NotEnoughPeers):
        aggregate(LINE[0], LINE[1:3], RobustConfig(rule="krum", f=1))


def test_prefilter_drops_peers_before_the_rule() -> None:
    local, peers, honest_mean = honest_and_attackers(f=1, magnitude=1e4)
    mask = [True] * (len(peers) - 1) + [False]  # e.g. AUROR flagged the attacker
    result = aggregate(local, peers, RobustConfig(rule="mean"), prefilter=mask)
    assert result.accepted == list(range(len(peers) - 1))
    close(result.value, honest_mean)
    # the same mask as a tensor; the rule then sees only the kept peers
    tensor_mask = torch.tensor(mask)
    median = aggregate(local, peers, RobustConfig(rule="median"), prefilter=tensor_mask)
    close(median.value, coordinate_median(local, peers[:-1]))


def test_prefilter_composes_with_a_selecting_rule() -> None:
    # Drop peers[0] (the point at 1): Krum runs on 0, 2.5, 3, 100 + a copy of 3.
    peers = [*LINE[1:], vec(3, 0)]
    result = aggregate(
        LINE[0], peers, RobustConfig(rule="krum", f=1), prefilter=[False, True, True, True, True]
    )
    assert result.accepted == [2]  # peers[2] (3) ties with peers[4]: lower index wins
    assert 0 not in result.accepted


def test_prefilter_must_be_a_boolean_mask_over_the_peers() -> None:
    with pytest.raises(ValueError, match="boolean mask"):
        aggregate(vec(0), [vec(1), vec(2)], RobustConfig(), prefilter=[0, 1])
    with pytest.raises(ValueError, match="boolean mask"):
        aggregate(vec(0), [vec(1), vec(2)], RobustConfig(), prefilter=[True])


@pytest.mark.parametrize("rule", RULES)
def test_no_peers_left_returns_a_copy_of_local(rule: str) -> None:
    local = vec(1, 2)
    for peers, mask in [([], None), ([vec(5, 5)], [False])]:
        result = aggregate(local, peers, RobustConfig(rule=rule), prefilter=mask)
        close(result.value, local)
        assert result.value.data_ptr() != local.data_ptr()
        assert result.accepted == []


@pytest.mark.parametrize("rule", RULES)
def test_result_is_a_per_coordinate_convex_combination(rule: str) -> None:
    vs = [v + 3.0 for v in random_vectors(9, 200, seed=70)]
    out = aggregate(vs[0], vs[1:], RobustConfig(rule=rule), progress=0.1).value
    stacked = torch.stack(vs)
    assert bool((out >= stacked.min(dim=0).values - 1e-6).all())
    assert bool((out <= stacked.max(dim=0).values + 1e-6).all())


@pytest.mark.parametrize("rule", RULES)
def test_inputs_are_never_modified(rule: str) -> None:
    vs = [v + 3.0 for v in random_vectors(7, 100, seed=80)]
    before = [v.clone() for v in vs]
    result = aggregate(vs[0], vs[1:], RobustConfig(rule=rule), progress=0.3)
    for v, b in zip(vs, before, strict=True):
        assert torch.equal(v, b)
        assert result.value.data_ptr() != v.data_ptr()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_inputs_are_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="NaN or Inf"):
        aggregate(vec(0, 1), [vec(1, 1), vec(2, bad)], RobustConfig())
    with pytest.raises(ValueError, match="NaN or Inf"):
        coordinate_median(vec(bad, 1), [vec(1, 1)])


def test_mismatched_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        aggregate(vec(0, 1), [vec(1, 1, 1)], RobustConfig())
    with pytest.raises(ValueError, match="float64"):
        mean(vec(0, 1), [torch.zeros(2, dtype=torch.float64)])
    with pytest.raises(ValueError, match="1-D"):
        trimmed_mean(torch.zeros(2, 2), [], 0.1)
    with pytest.raises(ValueError, match="progress"):
        aggregate(vec(0), [vec(1)], RobustConfig(), progress=2.0)
