"""The per-node defence and its hooks: mixing rules and the node's gossiped blacklist."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from deepgossip.learn.mixing import Averaging, GoSGD, MixingConfig, make_rule
from deepgossip.learn.sharing import SparseUpdate
from deepgossip.net.sim import SimNetwork
from deepgossip.node import Node
from deepgossip.session import Session
from deepgossip.trust.auror_memory import DeviationMemory
from deepgossip.trust.blacklist import BlacklistConfig, PeerBlacklisted
from deepgossip.trust.defense import Conviction, Defense, DefenseConfig, update_digest
from deepgossip.trust.robust import RobustConfig, coordinate_median
from deepgossip.wire.identity import Identity

SIZE = 400


def dense(
    values: np.ndarray | list[float], origin: bytes, rnd: int = 1, **kw: object
) -> SparseUpdate:
    array = np.asarray(values, dtype=np.float32)
    return SparseUpdate(values=array, size=array.size, origin=origin, round=rnd, **kw)  # type: ignore[arg-type]


def peer_id(i: int) -> bytes:
    return bytes([i]) * 16


# ----------------------------------------------------------------------- the config


@pytest.mark.parametrize(
    ("name", "auror", "rule"),
    [
        ("none", False, "mean"),
        ("auror", True, "mean"),
        ("median", False, "median"),
        ("trimmed_mean", False, "trimmed_mean"),
        ("krum", False, "krum"),
        ("clipping", False, "clipping"),
        ("balance", False, "balance"),
        ("auror+clipping", True, "clipping"),
        ("Clipping+AUROR", True, "clipping"),
    ],
)
def test_defense_names_parse_and_round_trip(name: str, auror: bool, rule: str) -> None:
    config = DefenseConfig.from_name(name)
    assert (config.auror, config.robust.rule) == (auror, rule)
    assert DefenseConfig.from_name(config.name) == config
    assert config.active == (name != "none")


@pytest.mark.parametrize("name", ["", "foo", "median+krum", "none+auror", "auror+auror"])
def test_bad_defense_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        DefenseConfig.from_name(name)


def test_from_name_keeps_the_rule_parameters_and_fields() -> None:
    config = DefenseConfig.from_name(
        "auror+trimmed_mean", robust=RobustConfig(trim=0.2), polling=True, blacklist=False
    )
    assert config.robust == RobustConfig(rule="trimmed_mean", trim=0.2)
    assert config.polling and not config.blacklist
    with pytest.raises(ValueError):
        DefenseConfig(fallback="panic")


# ------------------------------------------------------------------------- screening


def test_blacklisted_origins_are_dropped_before_anything_else() -> None:
    banned = {peer_id(2)}
    defense = Defense(DefenseConfig(), size=3, is_blacklisted=banned.__contains__)
    local = torch.zeros(3)
    ups = [dense([1, 1, 1], peer_id(1)), dense([9, 9, 9], peer_id(2)), dense([2, 2, 2], peer_id(3))]
    screened = defense.screen(local, ups)
    assert [u.origin for u in screened.accepted] == [peer_id(1), peer_id(3)]
    assert [(u.origin, why) for u, why in screened.rejected] == [(peer_id(2), "blacklisted")]
    # Through the averaging rule: the banned peer's values never enter.
    rule = Averaging(MixingConfig(rule="average"), size=3, defense=defense)
    for u in ups:
        assert rule.offer(u, now=0)
    report = rule.merge(local, now=0)
    assert report.merged == 2 and report.rejected == 1
    assert torch.allclose(local, torch.full((3,), 1.0))  # mean of 0, 1, 2


def _crowd(rng: np.random.Generator, base: np.ndarray, bad: set[int], n: int) -> list[SparseUpdate]:
    """``n`` peers around ``base``; the ``bad`` ones all shifted the same way."""
    out = []
    for i in range(n):
        v = base + rng.normal(0, 0.01, base.size)
        if i in bad:
            v = v + 0.2  # a consistent push, 20 honest sigmas
        out.append(dense(v, peer_id(i + 1), rnd=0))
    return out


def test_auror_verdicts_reach_the_callback_and_drop_the_poisoners() -> None:
    rng = np.random.default_rng(0)
    convictions: list[Conviction] = []
    defense = Defense(DefenseConfig(auror=True), size=SIZE, seed=3, on_verdict=convictions.append)
    local = torch.zeros(SIZE)
    bad = {0, 4, 7}
    reasons: list[set[str]] = []
    for rnd in range(1, 6):
        ups = [dense(u.values, u.origin, rnd=rnd) for u in _crowd(rng, np.zeros(SIZE), bad, n=10)]
        screened = defense.screen(local, ups)
        reasons.append({why for _, why in screened.rejected})
        # Honest peers always pass (in IID noise nobody honest is in a minority).
        assert {u.origin for u in screened.accepted} == {peer_id(i + 1) for i in range(10)} - {
            peer_id(i + 1) for i in bad
        }
    assert {c.peer_id for c in convictions} == {peer_id(i + 1) for i in bad}
    assert reasons[0] == {"auror_flagged"}  # dropped at once, convicted on the third flag
    assert "auror_blacklisted" in reasons[2] and reasons[-1] == {"blacklisted"}
    for c in convictions:
        assert c.reason == "auror" and 0.5 <= c.suspicion <= 1.0
        assert 1 <= len(c.evidence) <= 8
        assert c.evidence[0].round == 3 and c.evidence[-1].round == 1  # newest first
        assert all(e.score >= 0.6 and len(e.digest) == 32 for e in c.evidence)
    assert defense.suspicion(peer_id(2)) is not None and defense.suspicion(peer_id(2)) < 0.25
    assert defense.suspicion(peer_id(99)) is None  # never judged: no opinion
    assert defense.stats["verdicts"] == 3


def test_peers_blacklisted_elsewhere_leave_the_window_but_keep_their_score() -> None:
    rng = np.random.default_rng(0)
    banned: set[bytes] = set()
    defense = Defense(DefenseConfig(auror=True), size=SIZE, is_blacklisted=banned.__contains__)
    for rnd in range(2):  # two flags of peer 1: suspicion 1.75 of 2.0, not convicted yet
        ups = _crowd(rng, np.zeros(SIZE), {0}, n=8)
        defense.screen(torch.zeros(SIZE), [dense(u.values, u.origin, rnd=rnd) for u in ups])
    before = defense.suspicion(peer_id(1))
    assert before == pytest.approx(1.75 / 4)
    banned.add(peer_id(1))  # the node's blacklist adopts an accusation
    defense.screen(torch.zeros(SIZE), [])
    assert all(peer_id(1) not in d.window_peers for d in defense.detectors)
    assert defense.suspicion(peer_id(1)) == pytest.approx(before)  # what reviews read
    banned.clear()  # lifted: judged afresh
    defense.screen(torch.zeros(SIZE), [])
    assert defense.suspicion(peer_id(1)) is None


def test_per_tensor_detectors_must_agree_to_convict() -> None:
    groups = [200, 200]
    convictions: list[Conviction] = []
    defense = Defense(
        DefenseConfig(auror=True, auror_solo=None),  # no single-detector conviction
        size=SIZE,
        groups=groups,
        on_verdict=convictions.append,
    )
    assert len(defense.detectors) == 2 and defense.agree == 2
    rng = np.random.default_rng(3)
    both, one = peer_id(1), peer_id(2)
    for rnd in range(6):
        ups = []
        for i in range(9):
            v = rng.normal(0, 0.01, SIZE)
            if i == 0:
                v += 0.2  # pushes every tensor
            if i == 1:
                v[:200] += 0.2  # pushes the first tensor only
            ups.append(dense(v, peer_id(i + 1), rnd=rnd))
        screened = defense.screen(torch.zeros(SIZE), ups)
        if rnd == 0:  # both flagged at once, their updates dropped
            assert {u.origin for u, _ in screened.rejected} == {both, one}
    assert [c.peer_id for c in convictions] == [both]
    assert defense.blacklisted == {both}
    assert defense.detectors[0].is_blacklisted(one)  # one tensor convicted it ...
    assert not defense.is_blacklisted(one)  # ... which is not enough
    assert defense.suspicion(one) is not None and defense.suspicion(one) < 0.5
    # auror_agree=1: any detector convicts alone.
    alone = Defense(DefenseConfig(auror=True, auror_agree=1), size=SIZE, groups=groups)
    assert alone.agree == 1


def test_one_detector_convicts_alone_only_at_the_solo_score() -> None:
    """``auror_solo``: a peer flagged by one tensor at every evaluation is convicted
    once that detector's score reaches 3.0 (five flags: 1, 1.75, 2.31, 2.73,
    3.05); one flagged every other evaluation settles near 2.0 and never is."""
    groups = [200, 200]
    convictions: list[Conviction] = []
    defense = Defense(
        # auror_solo = 3.0 by default. Without the memory panel, which would see
        # the second peer's half-time push as a steady one and convict it too.
        DefenseConfig(auror=True, auror_memory=0),
        size=SIZE,
        groups=groups,
        on_verdict=convictions.append,
    )
    rng = np.random.default_rng(3)
    steady, sometimes = peer_id(1), peer_id(2)
    convicted_at = None
    for rnd in range(16):
        ups = []
        for i in range(9):
            v = rng.normal(0, 0.01, SIZE)
            if i == 0:
                v[:200] += 0.2  # the first tensor, every time
            if i == 1 and rnd % 2 == 0:
                v[200:] += 0.2  # the second tensor, every other time
            ups.append(dense(v, peer_id(i + 1), rnd=rnd))
        defense.screen(torch.zeros(SIZE), ups)
        if convictions and convicted_at is None:
            convicted_at = rnd
    assert [c.peer_id for c in convictions] == [steady]
    assert convicted_at == 4  # the fifth evaluation
    assert convictions[0].suspicion == pytest.approx(min(1.0, 3.05 / 4), abs=0.01)
    assert not defense.is_blacklisted(sometimes)
    # Past the conviction threshold at times (2.29 after a flag), never near 3.0.
    assert 1.5 < defense.detectors[1].suspicion(sometimes) < 2.5
    assert not defense.detectors[1].is_blacklisted(sometimes)
    with pytest.raises(ValueError, match="auror_solo"):
        DefenseConfig(auror=True, auror_solo=1.0)  # below the conviction threshold
    with pytest.raises(ValueError, match="auror_solo"):
        DefenseConfig(auror=True, auror_solo="often")  # type: ignore[arg-type]
    # Sessions (TOML has no null) and --defense-option turn it off with "none".
    assert DefenseConfig(auror=True, auror_solo="none").auror_solo is None  # type: ignore[arg-type]
    assert DefenseConfig.from_section({"name": "auror", "auror_solo": "none"}).auror_solo is None


def test_honest_crowds_are_never_dropped() -> None:
    rng = np.random.default_rng(1)
    convictions: list[Conviction] = []
    defense = Defense(DefenseConfig(auror=True), size=SIZE, seed=5, on_verdict=convictions.append)
    for _ in range(10):
        defense.screen(torch.zeros(SIZE), _crowd(rng, np.zeros(SIZE), set(), n=9))
    assert convictions == []
    assert defense.stats["rejected_auror_flagged"] <= 2  # rare false flags, never convictions


def test_sparse_updates_are_judged_on_the_public_state() -> None:
    initial = torch.arange(SIZE, dtype=torch.float32)
    defense = Defense(DefenseConfig(auror=True), size=SIZE, seed=0, initial=initial)
    local = initial + 1.0
    update = SparseUpdate(
        values=np.array([7.0, 8.0], dtype=np.float32),
        indices=np.array([3, 10], dtype=np.int32),
        size=SIZE,
        origin=peer_id(1),
    )
    features = defense._deviation(defense._own_coordinates(local), update)
    expected = initial.numpy().astype(np.float64) - local.numpy()
    expected[3], expected[10] = 7.0 - 4.0, 8.0 - 11.0
    assert np.allclose(features, expected)
    # The next update overwrites only what it carries.
    later = SparseUpdate(
        values=np.array([0.0], dtype=np.float32),
        indices=np.array([10], dtype=np.int64),
        size=SIZE,
        origin=peer_id(1),
    )
    features = defense._deviation(defense._own_coordinates(local), later)
    assert features[3] == pytest.approx(3.0) and features[10] == pytest.approx(-11.0)


def test_update_digest_covers_indices_and_values() -> None:
    a = SparseUpdate(values=np.ones(2, np.float32), indices=np.array([0, 1], np.int32), size=4)
    b = SparseUpdate(values=np.ones(2, np.float32), indices=np.array([0, 2], np.int32), size=4)
    assert update_digest(a) != update_digest(b)
    assert update_digest(a) == update_digest(
        SparseUpdate(values=np.ones(2, np.float32), indices=np.array([0, 1], np.int32), size=4)
    )


# --------------------------------------------------------------------- robust rules


def test_averaging_merges_by_the_robust_aggregate() -> None:
    defense = Defense(DefenseConfig.from_name("median"), size=3)
    rule = make_rule(MixingConfig(rule="average"), size=3, defense=defense)
    peers = [[1.0, 5.0, 0.0], [2.0, -5.0, 0.0], [100.0, 100.0, 100.0]]
    for i, v in enumerate(peers):
        rule.offer(dense(v, peer_id(i + 1)), now=0)
    local = torch.tensor([0.0, 0.0, 0.0])
    expected = coordinate_median(local, [torch.tensor(v) for v in peers])
    report = rule.merge(local, now=0)
    assert torch.equal(local, expected)
    assert local.tolist() == [1.5, 2.5, 0.0]
    assert report.merged == 3


def test_krum_without_enough_peers_keeps_local_and_counts_it() -> None:
    defense = Defense(DefenseConfig.from_name("krum"), size=2)
    rule = Averaging(MixingConfig(rule="average"), size=2, defense=defense)
    rule.offer(dense([4.0, 4.0], peer_id(1)), now=0)
    rule.offer(dense([8.0, 8.0], peer_id(2)), now=0)
    local = torch.zeros(2)
    report = rule.merge(local, now=0)
    assert local.tolist() == [0.0, 0.0] and report.merged == 0 and report.rejected == 2
    assert defense.stats["fallback_keep"] == 1
    # The "mean" fallback averages instead.
    mean = Defense(DefenseConfig.from_name("krum", fallback="mean"), size=2)
    rule = Averaging(MixingConfig(rule="average"), size=2, defense=mean)
    rule.offer(dense([3.0, 3.0], peer_id(1)), now=0)
    rule.merge(local, now=0)
    assert local.tolist() == [1.5, 1.5] and mean.stats["fallback_mean"] == 1


def test_auror_then_robust_rule_compose() -> None:
    rng = np.random.default_rng(2)
    defense = Defense(DefenseConfig.from_name("auror+trimmed_mean"), size=SIZE, seed=1)
    rule = Averaging(MixingConfig(rule="average"), size=SIZE, defense=defense)
    for u in _crowd(rng, np.zeros(SIZE), {0, 1}, n=8):
        rule.offer(u, now=0)
    local = torch.zeros(SIZE)
    report = rule.merge(local, now=0)
    assert report.rejected == 2 and report.merged == 6  # AUROR dropped the pushers
    assert float(local.abs().max()) < 0.05  # nothing of their +0.2 got through


# ------------------------------------------------------------------------------ GoSGD


def test_gosgd_keeps_a_rejected_push_weight_and_never_its_values() -> None:
    banned = {peer_id(2)}
    defense = Defense(DefenseConfig(), size=2, is_blacklisted=banned.__contains__)
    rule = GoSGD(MixingConfig(rule="gosgd"), size=2, num_nodes=4, defense=defense)
    rule.offer(dense([1.0, 1.0], peer_id(1), weight=0.25), now=0)
    rule.offer(dense([50.0, 50.0], peer_id(2), weight=0.125), now=0)
    assert rule.pending_weight == pytest.approx(0.375)
    local = torch.zeros(2)
    report = rule.merge(local, now=0)
    assert rule.alpha == pytest.approx(0.25 + 0.25 + 0.125)  # total conserved
    assert local.tolist() == pytest.approx([0.5, 0.5])  # (0.25*0 + 0.25*1) / 0.5
    assert report.merged == 1 and report.rejected == 1


def test_gosgd_refuses_rules_that_need_a_set() -> None:
    with pytest.raises(ValueError, match="one push at a time"):
        GoSGD(
            MixingConfig(rule="gosgd"),
            size=2,
            num_nodes=2,
            defense=Defense(DefenseConfig.from_name("median"), size=2),
        )


def test_gosgd_clipping_bounds_each_pull_and_balance_refuses_far_updates() -> None:
    clip = DefenseConfig.from_name("clipping", robust=RobustConfig(clip_radius=1.0))
    rule = GoSGD(MixingConfig(rule="gosgd"), size=2, num_nodes=2, defense=Defense(clip, size=2))
    rule.offer(dense([30.0, 40.0], peer_id(1), weight=0.5), now=0)  # distance 50
    local = torch.zeros(2)
    rule.merge(local, now=0)
    # Clipped to (0.6, 0.8), then mixed with weight 0.5 / (0.5 + 0.5).
    assert local.tolist() == pytest.approx([0.3, 0.4])

    balance = Defense(DefenseConfig.from_name("balance"), size=2)
    rule = GoSGD(MixingConfig(rule="gosgd"), size=2, num_nodes=2, defense=balance)
    rule.offer(dense([10.0, 10.0], peer_id(1), weight=0.5), now=0)  # far: refused
    rule.offer(dense([1.1, 1.0], peer_id(2), weight=0.5), now=0)  # near: merged
    local = torch.ones(2)
    report = rule.merge(local, now=0)
    assert report.merged == 1 and report.rejected == 1
    assert rule.alpha == pytest.approx(1.5)


# ---------------------------------------------------------------- defense=None vs no-op


@pytest.mark.parametrize("rule_name", ["average", "gosgd"])
def test_a_defence_that_does_nothing_changes_nothing(rule_name: str) -> None:
    rng = np.random.default_rng(4)
    ups = [dense(rng.normal(size=16), peer_id(i + 1), weight=0.05, rnd=1) for i in range(5)] + [
        SparseUpdate(
            values=rng.normal(size=3).astype(np.float32),
            indices=np.array([1, 5, 9], np.int32),
            size=16,
            origin=peer_id(9),
            round=1,
            weight=0.05,
        )
    ]
    results = []
    for defense in (None, Defense(DefenseConfig(), size=16)):
        rule = make_rule(MixingConfig(rule=rule_name), size=16, num_nodes=4, defense=defense)
        for u in ups:
            rule.offer(u, now=0)
        local = torch.linspace(-1, 1, 16)
        rule.merge(local, now=0)
        results.append(local)
    assert torch.equal(results[0], results[1])


# --------------------------------------------------------------------------- polling


class FakePoller:
    def __init__(self, defense_ref: list[Defense], decide_now: bool | None = None) -> None:
        self.asked: list[bytes] = []
        self.defense_ref = defense_ref
        self.decide_now = decide_now

    def is_borderline(self, suspicion: float) -> bool:
        return True

    def poll(self, peer: bytes) -> int | None:
        self.asked.append(peer)
        poll_id = len(self.asked)
        if self.decide_now is not None:  # decided before poll() returns
            self.defense_ref[0].poll_decided(poll_id, self.decide_now)
        return poll_id


@pytest.mark.parametrize("early", [False, True])
def test_flagged_updates_wait_for_the_poll_and_come_back(early: bool) -> None:
    rng = np.random.default_rng(0)
    ref: list[Defense] = []
    poller = FakePoller(ref, decide_now=False if early else None)
    defense = Defense(DefenseConfig(auror=True, polling=True), size=SIZE, poller=poller)
    ref.append(defense)
    rule = Averaging(MixingConfig(rule="average"), size=SIZE, defense=defense)
    for u in _crowd(rng, np.zeros(SIZE), {0}, n=8):
        rule.offer(u, now=0)
    report = rule.merge(torch.zeros(SIZE), now=0)
    assert poller.asked == [peer_id(1)] and report.held == 1 and report.merged == 7
    if not early:
        assert defense.held == 1
        defense.poll_decided(1, discard=False)  # the neighbours say keep
    local = torch.zeros(SIZE)
    report = rule.merge(local, now=1)  # nothing new buffered: only the released update
    assert report.merged == 1 and float(local.mean()) > 0.05
    assert defense.held == 0 and defense.held_weight == 0


# ------------------------------------------------------------ the node's blacklist


def _nodes(count: int, config: BlacklistConfig | None = None) -> tuple[SimNetwork, list[Node]]:
    net = SimNetwork(seed=1)
    rng = random.Random(1)
    nodes = []
    for i in range(count):
        address = (f"10.0.0.{i + 1}", 7000)
        node = Node(
            net,
            address,
            Identity.from_private_bytes(rng.randbytes(32)),
            Session("defense-test"),
            rng=net.rng_for(address),
            wall_clock=net.now,
            blacklist=config or BlacklistConfig(),
        )
        net.attach(address, node.host.receive)
        nodes.append(node)
    for i, node in enumerate(nodes):
        node.start([nodes[0].address] if i else [])
    net.run_until(8.0)
    return net, nodes


@pytest.mark.parametrize("endorse", [True, False])
def test_node_spreads_a_verdict_and_peers_adopt_it_on_their_own_evidence(endorse: bool) -> None:
    net, nodes = _nodes(4, BlacklistConfig(endorse=endorse))
    accuser, suspect = nodes[0], nodes[3]
    events: list[PeerBlacklisted] = []
    nodes[1].host.subscribe(lambda e: events.append(e) if isinstance(e, PeerBlacklisted) else None)
    nodes[1].own_suspicion = lambda peer, evidence: 0.45 if peer == suspect.node_id else None
    assert len(accuser.live_peers()) == 3
    accuser.accuse(suspect.node_id, 0.6, (), reason="auror")
    net.run_until(net.now() + 3.0)
    assert accuser.is_blacklisted(suspect.node_id)
    assert suspect.node_id not in {m.node_id for m in accuser.live_peers()}
    # One accuser is below the quorum (2), but node 1's own evidence agrees ...
    assert nodes[1].is_blacklisted(suspect.node_id)
    assert [(e.peer_id, e.by) for e in events] == [(suspect.node_id, "own_evidence")]
    # ... node 2 has no opinion: one accusation is not enough, but node 1's
    # endorsement makes two accusers, the quorum.
    assert nodes[2].is_blacklisted(suspect.node_id) == endorse
    if endorse:
        assert nodes[2].blacklist is not None
        assert nodes[2].blacklist.entry(suspect.node_id).by == "quorum"  # type: ignore[union-attr]
    # The suspect itself ignores accusations about itself.
    assert not suspect.is_blacklisted(suspect.node_id)


def test_nodes_without_a_blacklist_are_unchanged() -> None:
    net = SimNetwork(seed=2)
    node = Node(
        net,
        ("10.0.0.1", 7000),
        Identity.from_private_bytes(bytes(32)),
        Session("defense-test"),
        wall_clock=net.now,
    )
    assert node.blacklist is None and not node.is_blacklisted(b"x" * 16)
    with pytest.raises(RuntimeError):
        node.accuse(b"x" * 16, 1.0, ())


def _memory_defense(memory: int) -> tuple[Defense, list[Conviction]]:
    """A defence with ``auror_memory = memory``, and the list its verdicts go to."""
    convicted: list[Conviction] = []
    config = DefenseConfig(auror=True, auror_memory=memory)
    return Defense(config, size=SIZE, seed=2, on_verdict=convicted.append), convicted


def _stealthy_rounds(memory: int, bad: set[int], rounds: int = 15) -> set[bytes]:
    """Peers convicted when ``bad`` push one honest sigma the same way every round."""
    rng = np.random.default_rng(4)
    defense, convicted = _memory_defense(memory)
    for rnd in range(1, rounds + 1):
        ups = []
        for i in range(10):
            v = rng.normal(0, 0.01, SIZE) + (0.01 if i in bad else 0.0)
            ups.append(dense(v, peer_id(i + 1), rnd=rnd))
        defense.screen(torch.zeros(SIZE), ups)
    return {c.peer_id for c in convicted}


def test_memory_exposes_a_push_too_small_for_any_single_round() -> None:
    bad = {1, 5, 8}
    assert _stealthy_rounds(0, bad) == set()  # one sigma per round: never indicative
    assert _stealthy_rounds(10, bad) == {peer_id(i + 1) for i in bad}
    assert _stealthy_rounds(10, set()) == set()  # honest noise averages out, stays a crowd


@pytest.mark.parametrize("memory", [-1, 1, 0.9, True, "10"])
def test_memory_is_off_or_a_window_of_at_least_two_updates(memory: object) -> None:
    with pytest.raises(ValueError, match="auror_memory"):
        DefenseConfig(auror=True, auror_memory=memory)  # type: ignore[arg-type]


def _lagging_rounds(bad: set[int], stale: int, rounds: int = 15) -> set[bytes]:
    """Our model walks along ``g``; peer ``stale`` is always one step behind us,
    ``bad`` ones push a consistent one-sigma bias along another direction."""
    rng = np.random.default_rng(6)
    g = rng.normal(0, 0.01, SIZE)
    h = rng.normal(0, 0.01, SIZE)
    defense, convicted = _memory_defense(10)
    for rnd in range(1, rounds + 1):
        local = rnd * g
        ups = []
        for i in range(10):
            v = local + rng.normal(0, 0.01, SIZE)
            if i == stale:
                v = v - g  # its update left before our last step: it trails by one
            if i in bad:
                v = v + h
            ups.append(dense(v, peer_id(i + 1), rnd=rnd))
        defense.screen(torch.from_numpy(local.astype(np.float32)), ups)
    return {c.peer_id for c in convicted}


def test_memory_ignores_a_peer_that_only_lags_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = {2, 6, 9}
    assert _lagging_rounds(bad, stale=4) == {peer_id(i + 1) for i in bad}
    # Without removing the lag, it adds up and the honest laggard is convicted too.
    monkeypatch.setattr(DeviationMemory, "without_lag", lambda self, deviation: deviation)
    assert peer_id(5) in _lagging_rounds(bad, stale=4)


def _late_joiner(memory: int, push: float, common: float = 0.0) -> tuple[set[bytes], int]:
    """Nine peers from the start, peer 2 from screen 40 on, all with the same
    noise and a ``common`` offset (in noise sigmas: we are off the crowd);
    peer 2 adds ``push`` to every update. Returns the convicted peers and how
    many of peer 2's 40 updates were dropped."""
    defense, convicted = _memory_defense(memory)
    rng = np.random.default_rng(3)
    dropped = 0
    for screen in range(80):
        heard = [1, 3, 4, 5, 6, 7, 8, 9, 10] + ([2] if screen >= 40 else [])
        ups = [
            dense(
                rng.normal(common + (push if i == 2 else 0.0), 1.0, SIZE) * 1e-3, peer_id(i), screen
            )
            for i in heard
        ]
        out = defense.screen(torch.zeros(SIZE), ups)
        dropped += sum(u.origin == peer_id(2) for u, _ in out.rejected)
    return {c.peer_id for c in convicted}, dropped


@pytest.mark.parametrize("common", [0.0, 1.0])
def test_memory_judges_a_late_joiner_only_once_it_has_a_full_window(common: float) -> None:
    """Judged beside the crowd, an honest late joiner was flagged on each of its
    40 updates and convicted: with a decayed mean of its deviations (fewer
    updates, more noise) and, given a common offset, with a decayed sum (fewer
    updates, a smaller sum). Judged only with a full window, it is left alone ..."""
    assert _late_joiner(10, push=0.0, common=common) == (set(), 0)
    # ... and a late joiner pushing one sigma every round is still caught.
    assert _late_joiner(0, push=1.0)[0] == set()
    assert _late_joiner(10, push=1.0)[0] == {peer_id(2)}


class _ConfirmingPoller:
    """Records confirmations; the test decides them."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, bytes]] = []

    def is_borderline(self, suspicion: float) -> bool:
        return False

    def poll(self, peer_id: bytes) -> int | None:
        raise AssertionError("no update poll without config.polling")

    def confirm(self, peer_id: bytes) -> int | None:
        self.asked.append((len(self.asked) + 1, peer_id))
        return len(self.asked)


def test_the_memory_panels_verdicts_wait_for_the_neighbours_confirmation() -> None:
    """A memory verdict is what one node sees; a pair of honest nodes whose rounds
    run just apart saw each other that way. The neighbours confirm it or not."""
    poller = _ConfirmingPoller()
    convicted: list[Conviction] = []
    defense = Defense(
        DefenseConfig(auror=True, auror_memory=10),
        size=SIZE,
        seed=2,
        on_verdict=convicted.append,
        poller=poller,
    )
    rng = np.random.default_rng(4)
    bad = {peer_id(i + 1) for i in (1, 5, 8)}

    def screen(rnd: int) -> None:
        ups = [
            dense(
                rng.normal(0, 0.01, SIZE) + (0.01 if peer_id(i + 1) in bad else 0.0),
                peer_id(i + 1),
                rnd=rnd,
            )
            for i in range(10)
        ]
        defense.screen(torch.zeros(SIZE), ups)

    rnd = 0
    while not poller.asked and rnd < 30:
        rnd += 1
        screen(rnd)
    assert {peer for _, peer in poller.asked} <= bad and poller.asked
    assert convicted == []  # nobody convicted on the memory panel's word alone
    # Not confirmed: no conviction; the decision is read at the next screen and the
    # same peer is asked again CONFIRM_RETRY_SCREENS (3) screens after that.
    first_id, first_peer = poller.asked[0]
    defense.poll_decided(first_id, False)
    asked_before = len(poller.asked)
    for _ in range(3):
        rnd += 1
        screen(rnd)
    assert first_peer not in {p for _, p in poller.asked[asked_before:]}
    rnd += 1
    screen(rnd)
    assert first_peer not in {c.peer_id for c in convicted}
    again = [(i, p) for i, p in poller.asked[asked_before:] if p == first_peer]
    assert len(again) == 1
    # Confirmed: convicted at the next screen, like any verdict of ours.
    defense.poll_decided(again[0][0], True)
    rnd += 1
    screen(rnd)
    assert first_peer in {c.peer_id for c in convicted}
    assert defense.is_blacklisted(first_peer) and defense.stats["confirmations"] >= 2
