"""Mixing rules: GoSGD push-sum weights, windowed averaging, learned trust weights."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import replace

import numpy as np
import pytest
import torch

from deepgossip.learn.data import load_dataset, to_tensors
from deepgossip.learn.mixing import (
    Averaging,
    GoSGD,
    MixingConfig,
    TrustMixing,
    make_rule,
    weighted_merge,
)
from deepgossip.learn.models import build_model
from deepgossip.learn.params import flatten
from deepgossip.learn.sharing import Sharer, SharingConfig, SparseUpdate, UpdateRejected
from deepgossip.learn.train import TrainConfig, accuracy, train_epochs
from deepgossip.learn.trust_weights import HoldoutEvaluator, TrustWeights


def dense(values: list[float] | torch.Tensor, **kw: object) -> SparseUpdate:
    array = torch.as_tensor(values, dtype=torch.float32).numpy()
    return SparseUpdate(values=array, size=len(array), **kw)  # type: ignore[arg-type]


def sparse(indices: list[int], values: list[float], size: int, **kw: object) -> SparseUpdate:
    return SparseUpdate(
        values=np.asarray(values, dtype=np.float32),
        indices=np.asarray(indices, dtype=np.int32),
        size=size,
        **kw,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------------------- GoSGD


def test_gosgd_merge_formula_is_exact() -> None:
    rule = GoSGD(MixingConfig(rule="gosgd"), size=4, num_nodes=4)
    assert rule.alpha == 0.25
    local = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert rule.offer(dense([5.0, 6.0, 7.0, 8.0], origin=b"b", weight=0.125), now=0)
    rule.merge(local, now=0)
    expected = (0.25 * torch.tensor([1.0, 2.0, 3.0, 4.0]) + 0.125 * torch.tensor([5, 6, 7, 8])) / (
        0.375
    )
    assert torch.allclose(local, expected, rtol=0, atol=1e-6)
    assert rule.alpha == 0.375
    # Sparse: only the carried coordinates mix; alpha grows all the same.
    rule.offer(sparse([1, 3], [0.0, 0.0], 4, origin=b"c", weight=0.125), now=1)
    before = local.clone()
    report = rule.merge(local, now=1)
    assert report.coordinates == 2
    assert local[0] == before[0] and local[2] == before[2]
    assert torch.allclose(local[[1, 3]], before[[1, 3]] * 0.375 / 0.5, atol=1e-6)
    assert rule.alpha == 0.5


def test_gosgd_push_halves_alpha_and_drops_duplicates() -> None:
    rule = GoSGD(MixingConfig(rule="gosgd"), size=2, num_nodes=2)
    out = rule.make_outgoing(dense([1.0, 1.0], origin=b"a", round=1))
    assert out.weight == 0.25 and rule.alpha == 0.25
    receiver = GoSGD(MixingConfig(rule="gosgd"), size=2, num_nodes=2, self_id=b"b")
    assert receiver.offer(out, now=0)
    assert not receiver.offer(out, now=0)  # a duplicate would add its alpha twice
    assert not receiver.offer(replace(out, origin=b"b"), now=0)  # own echo
    receiver.merge(torch.zeros(2), now=0)
    assert receiver.alpha == 0.75
    three = GoSGD(MixingConfig(rule="gosgd", fanout=2), size=2, num_nodes=1)
    share = three.make_outgoing(dense([0.0, 0.0])).weight
    assert three.alpha + 2 * share == pytest.approx(1.0, abs=1e-15)


def test_gosgd_conserves_alpha_and_the_weighted_mean_with_messages_in_flight() -> None:
    """A long random run: pushes wait in flight for random delays, merges happen at
    random times. Sum of alphas (nodes + buffered + in flight) stays 1; with no
    local training the alpha-weighted mean of parameters is invariant, and all
    nodes converge to it."""
    n, size = 7, 16
    rng = np.random.default_rng(42)
    config = MixingConfig(rule="gosgd", push_prob=0.3)
    rules = [GoSGD(config, size=size, num_nodes=n, self_id=bytes([i])) for i in range(n)]
    params = [torch.from_numpy(rng.normal(size=size).astype(np.float32)) for _ in range(n)]
    in_flight: deque[tuple[int, int, SparseUpdate]] = deque()  # (due tick, receiver, update)

    def weighted_sum() -> torch.Tensor:
        total = sum(r.alpha * p.double() for r, p in zip(rules, params, strict=True))
        total += sum(p.update.weight * torch.from_numpy(p.update.values).double()
                     for r in rules for p in r._pending)  # fmt: skip
        total += sum(u.weight * torch.from_numpy(u.values).double() for _, _, u in in_flight)
        return total  # type: ignore[return-value]

    def total_alpha() -> float:
        return (
            sum(r.alpha for r in rules)
            + sum(r.pending_weight for r in rules)
            + sum(u.weight for _, _, u in in_flight)
        )

    mean0 = weighted_sum()
    sent = 0
    for tick in range(3000):
        for i, rule in enumerate(rules):
            rule.on_local_step(1)
            if rule.should_push(rng):
                update = rule.make_outgoing(dense(params[i].clone(), origin=bytes([i]), round=tick))
                j = int(rng.choice([k for k in range(n) if k != i]))
                in_flight.append((tick + int(rng.integers(0, 5)), j, update))
                sent += 1
        for _ in range(len(in_flight)):
            due, j, update = in_flight.popleft()
            if due <= tick:
                assert rules[j].offer(update, now=tick)
            else:
                in_flight.append((due, j, update))
        for i, rule in enumerate(rules):
            if rule.pending and rng.random() < 0.5:
                rule.merge(params[i], now=tick)
        assert total_alpha() == pytest.approx(1.0, abs=1e-12)
        if tick % 500 == 0:
            assert torch.allclose(weighted_sum(), mean0, atol=1e-5)
    assert sent > 3000
    while in_flight:
        _, j, update = in_flight.popleft()
        rules[j].offer(update, now=0)
    for i, rule in enumerate(rules):
        rule.merge(params[i], now=0)
    assert sum(r.alpha for r in rules) == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(weighted_sum(), mean0, atol=1e-5)
    spread = max(float((p.double() - mean0).abs().max()) for p in params)
    assert spread < 1e-4  # consensus on the conserved mean


def test_gosgd_push_probability_per_step() -> None:
    rng = np.random.default_rng(0)
    rule = GoSGD(MixingConfig(rule="gosgd", push_prob=0.1), size=1, num_nodes=1)
    pushes = 0
    for _ in range(2000):
        rule.on_local_step(10)
        pushes += rule.should_push(rng)
    assert pushes / 2000 == pytest.approx(1 - 0.9**10, abs=0.03)
    assert not rule.should_push(rng)  # no steps, no push


# ------------------------------------------------------------------------ averaging


def test_average_is_exact_for_dense_and_per_coordinate_for_sparse() -> None:
    rule = Averaging(MixingConfig(rule="average"), size=4)
    local = torch.tensor([0.0, 0.0, 0.0, 3.0])
    rule.offer(dense([3.0, 3.0, 3.0, 3.0], origin=b"b", round=1), now=0)
    rule.offer(dense([6.0, 0.0, 3.0, 0.0], origin=b"c", round=1), now=0)
    report = rule.merge(local, now=0)
    assert local.tolist() == pytest.approx([3.0, 1.0, 2.0, 2.0])
    assert report.merged == 2 and rule.pending == 0
    local = torch.tensor([0.0, 0.0, 0.0, 0.0])
    rule.offer(sparse([0, 1], [3.0, 3.0], 4, origin=b"b", round=2), now=1)
    rule.offer(sparse([1, 2], [6.0, 6.0], 4, origin=b"c", round=2), now=1)
    report = rule.merge(local, now=1)
    # coordinate 0: (0 + 3) / 2; 1: (0 + 3 + 6) / 3; 2: (0 + 6) / 2; 3: untouched
    assert local.tolist() == pytest.approx([1.5, 3.0, 3.0, 0.0])
    assert report.coordinates == 3


def test_average_window_and_staleness() -> None:
    rule = Averaging(MixingConfig(rule="average", window=2.0), size=2, self_id=b"a")
    local = torch.zeros(2)
    assert rule.offer(dense([1.0, 1.0], origin=b"b", round=5), now=0)
    report = rule.merge(local, now=5)  # arrived 5 ago, window 2: expired
    assert report.expired == 1 and report.merged == 0 and local.tolist() == [0.0, 0.0]
    assert not rule.offer(dense([9.0, 9.0], origin=b"b", round=4), now=6)  # older than seen
    assert not rule.offer(dense([9.0, 9.0], origin=b"b", round=5), now=6)  # replay
    assert not rule.offer(dense([9.0, 9.0], origin=b"a", round=9), now=6)  # own echo
    assert rule.offer(dense([2.0, 2.0], origin=b"b", round=6), now=6)
    assert rule.offer(dense([4.0, 4.0], origin=b"b", round=7), now=6)  # supersedes round 6
    assert rule.pending == 1
    rule.merge(local, now=7)
    assert local.tolist() == [2.0, 2.0]


def test_average_pushes_every_period() -> None:
    rule = Averaging(MixingConfig(rule="average", period=10), size=1)
    rng = np.random.default_rng(0)
    pattern = []
    for _ in range(6):
        rule.on_local_step(5)
        pattern.append(rule.should_push(rng))
    assert pattern == [False, True] * 3


def test_rules_reject_malformed_and_delta_updates() -> None:
    for name in ("gosgd", "average"):
        rule = make_rule(MixingConfig(rule=name), size=3, num_nodes=2)
        with pytest.raises(UpdateRejected):
            rule.offer(sparse([0, 5], [1.0, 1.0], 3), now=0)
        with pytest.raises(UpdateRejected, match="'values'"):
            rule.offer(replace(dense([1.0, 1.0, 1.0]), kind="delta"), now=0)
    with pytest.raises(ValueError, match="unknown mixing rule"):
        MixingConfig(rule="median")
    with pytest.raises(ValueError, match="evaluator"):
        make_rule(MixingConfig(rule="trust"), size=3)
    none = make_rule(MixingConfig(rule="none"), size=3)
    none.on_local_step(100)
    assert not none.should_push(np.random.default_rng(0))
    assert not none.offer(dense([1.0, 1.0, 1.0], origin=b"b"), now=0)


def test_weighted_merge_is_a_convex_combination() -> None:
    gen = torch.Generator().manual_seed(0)
    local = torch.randn(100, generator=gen)
    peers = [torch.randn(100, generator=gen) * 5 for _ in range(3)]
    lo = torch.minimum(local, torch.stack(peers).min(dim=0).values)
    hi = torch.maximum(local, torch.stack(peers).max(dim=0).values)
    weighted_merge(local, 0.2, [(dense(p), w) for p, w in zip(peers, [0.1, 0.3, 0.4], strict=True)])
    assert bool(((local >= lo - 1e-6) & (local <= hi + 1e-6)).all())
    with pytest.raises(ValueError, match="positive"):
        weighted_merge(local, 0.0, [(dense(peers[0]), 1.0)])


# ---------------------------------------------------------------------------- trust


def test_trust_weights_form_a_probability_vector() -> None:
    trust = TrustWeights(eta=1.0, decay=0.9)
    assert trust.probabilities() == (1.0, {})
    trust.observe(b"good", own_loss=1.0, peer_loss=0.5)
    trust.observe(b"bad", own_loss=1.0, peer_loss=float("nan"))
    for _ in range(200):
        trust.observe(b"bad", own_loss=1.0, peer_loss=1e9)
    self_w, peers = trust.probabilities()
    assert self_w + sum(peers.values()) == pytest.approx(1.0)
    assert all(0.0 <= w <= 1.0 for w in [self_w, *peers.values()])
    assert peers[b"good"] > self_w > peers[b"bad"]
    trust.forget(b"good")
    assert set(trust.probabilities()[1]) == {b"bad"}


@pytest.fixture(scope="module")
def digits() -> dict[str, torch.Tensor]:
    data = load_dataset("digits")
    x, y = to_tensors(data.train_images, data.train_labels)
    xt, yt = to_tensors(data.test_images, data.test_labels)
    return {"x": x, "y": y, "xt": xt, "yt": yt}


def test_trust_moves_toward_a_helpful_peer_and_away_from_noise(
    digits: dict[str, torch.Tensor],
) -> None:
    """Real data (scikit-learn digits): a node that has seen 40 images, a peer that
    trained on 1,000, and a peer that sends Gaussian noise."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x, y = digits["x"], digits["y"]
    base = build_model("logreg", (1, 8, 8), 10)
    helper = build_model("logreg", (1, 8, 8), 10)
    helper.load_state_dict(base.state_dict())
    train_epochs(helper, x[:1000], y[:1000], TrainConfig(epochs=30, lr=1e-2), seed=0)
    learner = build_model("logreg", (1, 8, 8), 10)
    learner.load_state_dict(base.state_dict())
    train_epochs(learner, x[1000:1040], y[1000:1040], TrainConfig(epochs=5, lr=1e-2), seed=0)
    evaluator = HoldoutEvaluator(learner, x[1100:1400], y[1100:1400])
    size = flatten(learner).numel()
    rule = make_rule(MixingConfig(rule="trust"), size=size, self_id=b"me", evaluator=evaluator)
    assert isinstance(rule, TrustMixing)
    helper_sharer = Sharer(flatten(base), SharingConfig(theta_u=0.5))
    rng = np.random.default_rng(0)
    local = flatten(learner)
    acc_before = _accuracy(learner, local, digits)
    history = []
    for r in range(1, 9):
        rule.offer(helper_sharer.make_update(flatten(helper), origin=b"helper", round=r), now=r)
        noise = rng.normal(scale=1.0, size=size).astype(np.float32)
        rule.offer(SparseUpdate(values=noise, size=size, origin=b"noise", round=r), now=r)
        rule.merge(local, now=r)
        self_w, peers = rule.trust.probabilities()
        assert self_w + sum(peers.values()) == pytest.approx(1.0)
        history.append((self_w, peers[b"helper"], peers[b"noise"]))
    assert history[0][1] > 1 / 3 > history[0][2]  # already after the first exchange
    assert history[-1][1] > 0.9 and history[-1][2] < 1e-3
    assert history[0][2] < 0.1 and all(h[2] < 1e-3 for h in history[3:])
    assert _accuracy(learner, local, digits) > acc_before + 0.1


def _accuracy(model: torch.nn.Module, params: torch.Tensor, data: dict[str, torch.Tensor]) -> float:
    from deepgossip.learn.params import assign

    assign(model, params)
    return accuracy(model, data["xt"], data["yt"])


def test_trust_equals_averaging_among_equally_good_peers() -> None:
    evaluator_calls = []

    def constant_loss(params: torch.Tensor) -> float:
        evaluator_calls.append(1)
        return 1.0

    rule = TrustMixing(MixingConfig(rule="trust"), size=3, evaluator=constant_loss)
    local = torch.zeros(3)
    rule.offer(dense([3.0, 3.0, 3.0], origin=b"b", round=1), now=0)
    rule.offer(dense([6.0, 6.0, 6.0], origin=b"c", round=1), now=0)
    rule.merge(local, now=0)
    assert local.tolist() == pytest.approx([3.0, 3.0, 3.0])
    assert len(evaluator_calls) == 3  # own loss once, then each update
    assert math.isclose(
        sum([rule.trust.probabilities()[0], *rule.trust.probabilities()[1].values()]), 1.0
    )
