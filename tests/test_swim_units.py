"""The pure parts of SWIM: precedence, Lifeguard timeouts, local health, the
piggyback queue, probe order, config formulas and push-pull tables."""

from __future__ import annotations

import math
import random

import msgpack
import pytest

from deepgossip.membership.awareness import Awareness
from deepgossip.membership.broadcast import BroadcastQueue, claim_size
from deepgossip.membership.config import SwimConfig
from deepgossip.membership.messages import Claim
from deepgossip.membership.precedence import Verdict, decide
from deepgossip.membership.probe_order import ProbeOrder
from deepgossip.membership.pushpull import Row, decode_table, encode_table
from deepgossip.membership.state import ALIVE, DEAD, LEFT, SUSPECT, Member
from deepgossip.membership.suspicion import Suspicion, suspicion_timeout

A, S, D, L = ALIVE, SUSPECT, DEAD, LEFT
IGN, APP, CON, BUMP = Verdict.IGNORE, Verdict.APPLY, Verdict.CONFIRM, Verdict.BUMP

# (claim kind, our state) -> verdict for j = i - 1, j = i, j = i + 1
TABLE = {
    (A, A): (IGN, IGN, APP),
    (A, S): (IGN, IGN, APP),
    (A, D): (IGN, IGN, APP),
    (A, L): (IGN, IGN, APP),
    (S, A): (IGN, APP, APP),
    (S, S): (IGN, CON, APP),
    (S, D): (IGN, IGN, IGN),
    (S, L): (IGN, IGN, IGN),
    (D, A): (IGN, APP, APP),
    (D, S): (IGN, APP, APP),
    (D, D): (IGN, IGN, BUMP),
    (D, L): (IGN, IGN, IGN),
    (L, A): (IGN, APP, APP),
    (L, S): (IGN, APP, APP),
    (L, D): (IGN, APP, APP),
    (L, L): (IGN, IGN, BUMP),
}


@pytest.mark.parametrize(("kind", "state"), list(TABLE))
def test_precedence_table(kind: object, state: object) -> None:
    i = 7
    got = tuple(decide(kind, j, state, i) for j in (i - 1, i, i + 1))  # type: ignore[arg-type]
    assert got == TABLE[(kind, state)]


# -- Lifeguard suspicion timeout -------------------------------------------------


def test_suspicion_timeout_shrinks_logarithmically_to_min() -> None:
    low, high, k = 6.0, 36.0, 3
    values = [suspicion_timeout(c, k, low, high) for c in range(6)]
    assert values[0] == high
    assert values[1] == pytest.approx(high - (high - low) * math.log(2) / math.log(4))
    assert values[0] > values[1] > values[2] > values[3]
    assert values[3] == pytest.approx(low)
    assert values[4] == values[5] == low  # never below the minimum
    assert suspicion_timeout(0, 0, low, high) == low  # nobody could confirm: min


def test_suspicion_counts_distinct_accusers_only_and_stops_at_k() -> None:
    s = Suspicion(b"a", start=100.0, k=2, low=5.0, high=30.0)
    assert s.deadline == 130.0
    assert not s.confirm(b"a")  # the original accuser is not a confirmation
    assert s.confirm(b"b")
    after_one = s.deadline
    assert 105.0 < after_one < 130.0
    assert not s.confirm(b"b")  # duplicate
    assert s.confirm(b"c")
    assert s.deadline == pytest.approx(105.0)
    assert not s.confirm(b"d")  # enough confirmations: stop counting
    assert s.confirmations == 2


def test_config_formulas_match_memberlist() -> None:
    cfg = SwimConfig()
    assert cfg.retransmit_limit(1000) == 16  # 4 * ceil(log10(1001))
    assert cfg.retransmit_limit(100) == 12
    assert cfg.retransmit_limit(3) == 4
    low, high = cfg.suspicion_bounds(1000)
    assert (low, high) == pytest.approx((4.5, 27.0))  # 1.5 * log10(1000) * 1 s, x6
    assert cfg.suspicion_bounds(5)[0] == pytest.approx(1.5)  # log10 floored at 1
    assert cfg.push_pull_period(20) == 30.0
    assert cfg.push_pull_period(100) == 90.0
    assert cfg.push_pull_period(1000) == 180.0
    with pytest.raises(ValueError):
        SwimConfig(probe_timeout=1.5)


# -- local health ------------------------------------------------------------


def test_awareness_saturates_and_scales() -> None:
    aw = Awareness(8)
    assert aw.scale(0.5) == 0.5
    aw.apply(-3)
    assert aw.score == 0
    aw.apply(5)
    assert aw.scale(1.0) == 6.0
    aw.apply(100)
    assert aw.score == 8
    assert aw.scale(1.0) == 9.0
    aw.apply(-1)
    assert aw.score == 7


# -- piggyback queue ---------------------------------------------------------


def _alive(node: int, inc: int = 0) -> Claim:
    return Claim(int(ALIVE), bytes([node]) * 16, inc, "10.0.0.1", 7946, b"k" * 32, b"")


def _suspect(node: int, inc: int, accuser: int) -> Claim:
    return Claim(int(SUSPECT), bytes([node]) * 16, inc, accuser=bytes([accuser]) * 16)


def test_queue_sends_fewest_sent_first_newest_first() -> None:
    q = BroadcastQueue()
    q.push(_alive(1))
    q.push(_alive(2))
    big = 10_000
    assert [c.node[0] for c in q.take(big, limit=5, max_items=1)] == [2]  # newest first
    assert [c.node[0] for c in q.take(big, limit=5, max_items=1)] == [1]  # then unsent
    q.push(_alive(3))
    # 3 was never sent; 1 and 2 were sent once, 1 most recently.
    assert [c.node[0] for c in q.take(big, limit=5, max_items=2)] == [3, 1]
    counts = {c.node[0]: n for node in (1, 2, 3) for c, n in q.pending(bytes([node]) * 16)}
    assert counts == {1: 2, 2: 1, 3: 1}
    assert sorted(q.transmit_counts()) == [1, 1, 2]


def test_queue_transmit_limit_drops_after_limit_sends() -> None:
    q = BroadcastQueue()
    q.push(_alive(1))
    sent = 0
    for _ in range(10):
        sent += len(q.take(10_000, limit=4, max_items=10))
    assert sent == 4
    assert len(q) == 0


def test_queue_limit_shrinking_drops_over_sent_claims() -> None:
    q = BroadcastQueue()
    q.push(_alive(1))
    for _ in range(3):
        q.take(10_000, limit=8, max_items=10)
    assert q.take(10_000, limit=3, max_items=10) == []  # sent 3 >= new limit 3
    assert len(q) == 0


def test_queue_newer_news_replaces_older_but_keeps_independent_accusers() -> None:
    q = BroadcastQueue()
    node = bytes([9]) * 16
    q.push(_alive(9, 0))
    q.push(_suspect(9, 0, accuser=1))
    assert [c.kind for c, _ in q.pending(node)] == [SUSPECT]
    q.push(_suspect(9, 0, accuser=2))  # a confirmation travels separately
    assert len(q.pending(node)) == 2
    q.push(_suspect(9, 0, accuser=2))  # same accuser again: replaced, not added
    assert len(q.pending(node)) == 2
    q.push(_alive(9, 1))  # refutation supersedes every suspicion
    assert [(c.kind, c.incarnation) for c, _ in q.pending(node)] == [(ALIVE, 1)]
    dead = Claim(int(DEAD), node, 1, accuser=bytes([3]) * 16)
    q.push(dead)
    assert [c for c, _ in q.pending(node)] == [dead]
    assert len(q) == 1


def test_queue_respects_byte_budget_and_skips_what_does_not_fit() -> None:
    q = BroadcastQueue()
    small = _suspect(1, 0, accuser=2)
    large = Claim(int(ALIVE), bytes([3]) * 16, 0, "h" * 200, 1, b"k" * 32, b"s" * 64)
    q.push(small)
    q.push(large)  # newest, but does not fit
    budget = claim_size(small) + 10
    assert claim_size(large) > budget
    assert q.take(budget, limit=5, max_items=10) == [small]
    assert q.take(claim_size(large), limit=5, max_items=10) == [large]


def test_claim_size_is_exact() -> None:
    claim = _alive(1, 5)
    packed = msgpack.packb([[int(ALIVE), claim.node, 5, "10.0.0.1", 7946, b"k" * 32, b"", b""]])
    assert claim_size(claim) == len(packed) - 1  # minus the outer list header


# -- probe order -------------------------------------------------------------


def test_probe_order_visits_everyone_once_per_pass_and_reshuffles() -> None:
    rng = random.Random(1)
    members = [bytes([i]) * 16 for i in range(20)]
    order = ProbeOrder(rng)
    passes = []
    for _ in range(3):
        passes.append([order.next(lambda _: True, lambda: list(members)) for _ in members])
    for p in passes:
        assert sorted(p) == sorted(members)  # type: ignore[type-var]
    assert passes[0] != passes[1] != passes[2]


def test_probe_order_skips_gone_members_and_inserts_new_ones_in_this_pass() -> None:
    rng = random.Random(2)
    members = [bytes([i]) * 16 for i in range(10)]
    gone = {members[3], members[4]}
    order = ProbeOrder(rng)
    first = order.next(lambda m: m not in gone, lambda: list(members))
    newcomer = bytes([99]) * 16
    order.add(newcomer)
    rest = [order.next(lambda m: m not in gone, lambda: list(members)) for _ in range(8)]
    seen = [first, *rest]
    assert newcomer in seen
    assert not gone & set(seen)  # type: ignore[arg-type]
    assert len(set(seen)) == 9
    assert order.next(lambda _: False, lambda: list(members)) is None


# -- push-pull tables --------------------------------------------------------


def _member(i: int, state: object = ALIVE) -> Member:
    m = Member(bytes([i]) * 16, (f"10.0.0.{i}", 7946), b"k" * 32, i, b"sig", 0.0)
    m.state = state  # type: ignore[assignment]
    return m


def test_table_round_trip() -> None:
    me = Row(b"\x00" * 16, ALIVE, 3, 3, "10.0.0.0", 7946, b"k" * 32, b"s", b"", b"")
    blob = encode_table(me, [_member(1), _member(2, DEAD)])
    table = decode_table(blob, 100)
    assert not isinstance(table, str)
    rows = list(table.rows())
    assert rows[0] == me
    assert rows[2].state == DEAD and rows[2].incarnation == 2
    assert rows[1].host == "10.0.0.1"


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"\xc1", "push_pull_undecodable"),
        (msgpack.packb([1, 2, 3]), "push_pull_shape"),
        (
            msgpack.packb([b"x" * 16, b"\x00", [1], [1], ["h"], [1], [b""], [b""], [b""]]),
            "push_pull_shape",
        ),
        (
            msgpack.packb([b"x" * 15, b"\x00", [1], [1], ["h"], [1], [b""], [b""], [b""], [b""]]),
            "push_pull_ragged",
        ),
        (
            msgpack.packb(
                [b"x" * 16, b"\x00", [1], [True], ["h"], [1], [b""], [b""], [b""], [b""]]
            ),
            "push_pull_ragged",
        ),
        (
            msgpack.packb([b"x" * 16, b"\x07", [1], [1], ["h"], [1], [b""], [b""], [b""], [b""]]),
            "push_pull_bad_state",
        ),
        (
            msgpack.packb(
                [b"x" * 32, b"\x00\x00", [1, 1], [1, 1], ["h", "h"], [1, 1]] + [[b""] * 2] * 4
            ),
            "push_pull_too_large",
        ),
    ],
)
def test_table_rejects_bad_shapes(blob: bytes, reason: str) -> None:
    assert decode_table(blob, max_members=1) == reason
