"""One SWIM core driven by hand: probing, Lifeguard, refutation, precedence,
piggyback limits, leave, peer sampling and bad input."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepgossip.membership import (
    Ack,
    Claim,
    Gossip,
    MemberDead,
    MemberJoined,
    MemberLeft,
    MemberState,
    MemberSuspected,
    Nack,
    NeedPeers,
    Ping,
    PingReq,
    PushPull,
    Refuted,
    Swim,
    SwimConfig,
    SwimIdentity,
    insecure_identity,
)
from deepgossip.membership.precedence import Verdict, decide
from deepgossip.membership.signing import accusation_payload, alive_payload, left_payload
from deepgossip.net.runtime import Address, Send
from deepgossip.wire.plain import PlainCodec

ALIVE, SUSPECT, DEAD, LEFT = (int(s) for s in MemberState)
ME: Address = ("10.0.0.1", 7946)


def addr(i: int) -> Address:
    return (f"10.0.1.{i}", 7946)


def alive(ident: SwimIdentity, address: Address, inc: int = 0) -> Claim:
    sig = ident.sign(alive_payload(ident.node_id, inc, address[0], address[1]))
    return Claim(ALIVE, ident.node_id, inc, address[0], address[1], ident.public_key, sig)


def accuse(kind: int, subject: bytes, inc: int, accuser: SwimIdentity) -> Claim:
    payload = accusation_payload(MemberState(kind), subject, inc, accuser.node_id)
    return Claim(kind, subject, inc, accuser=accuser.node_id, signature=accuser.sign(payload))


def left(ident: SwimIdentity, inc: int) -> Claim:
    return Claim(LEFT, ident.node_id, inc, signature=ident.sign(left_payload(ident.node_id, inc)))


class Rig:
    """A core with ``n`` preloaded peers and a tiny driver."""

    def __init__(
        self,
        n: int = 5,
        config: SwimConfig | None = None,
        seed: int = 0,
        name: str = "me",
        address: Address = ME,
        verify: Callable[[bytes, bytes, bytes, bytes], bool] | None = None,
    ) -> None:
        self.me = insecure_identity(name)
        if verify is not None:
            self.me = SwimIdentity(self.me.node_id, self.me.public_key, self.me.sign, verify)
        self.core = Swim(self.me, address, random.Random(seed), config or SwimConfig())
        self.peers = [insecure_identity(f"peer{i}") for i in range(n)]
        self.addr_of = {p.node_id: addr(i) for i, p in enumerate(self.peers)}
        self.id_at = {a: i for i, a in self.addr_of.items()}
        assert self.core.preload([alive(p, addr(i)) for i, p in enumerate(self.peers)], 0.0) == n
        self.now = 0.0
        self.sends: list[tuple[float, Send]] = []
        self.events: list[tuple[float, Any]] = []

    def feed(self, effects: list[Any], responder: Callable[[Send], list[Any]] | None) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                self.sends.append((self.now, effect))
                if responder is not None:
                    self.feed(responder(effect), responder)
            else:
                self.events.append((self.now, effect))

    def handle(self, msg: Any, src: Address | None = None) -> list[Any]:
        out = self.core.handle(src or addr(0), msg, self.now)
        self.feed(out, None)
        return out

    def run(self, until: float, responder: Callable[[Send], list[Any]] | None = None) -> None:
        while (deadline := self.core.next_deadline()) <= until:
            self.now = max(self.now, deadline)
            self.feed(self.core.tick(self.now), responder)
        self.now = until

    def healthy(self, dead: set[bytes] = frozenset()) -> Callable[[Send], list[Any]]:  # type: ignore[assignment]
        """Peers answer pings at once, except those in ``dead``."""

        def respond(send: Send) -> list[Any]:
            msg = send.message
            if isinstance(msg, Ping) and msg.target not in dead:
                return self.core.handle(send.to, Ack(msg.seq), self.now)
            return []

        return respond

    def pings(self) -> list[tuple[float, Ping]]:
        return [(t, s.message) for t, s in self.sends if isinstance(s.message, Ping)]

    def of(self, kind: type) -> list[Any]:
        return [e for _, e in self.events if isinstance(e, kind)]

    def state(self, ident: SwimIdentity) -> tuple[MemberState, int] | None:
        info = self.core.member(ident.node_id)
        return (info.state, info.incarnation) if info else None


# -- probing -----------------------------------------------------------------


def test_ping_is_acked_and_misdirected_ping_is_not() -> None:
    rig = Rig()
    out = rig.handle(Ping(42, rig.me.node_id), src=addr(3))
    assert out == [Send(addr(3), Ack(42, ()), False)]
    assert rig.handle(Ping(43, rig.peers[0].node_id)) == []
    assert rig.core.stats["bad.misdirected_ping"] == 1


def test_healthy_peers_are_probed_round_robin_and_never_suspected() -> None:
    rig = Rig(n=5)
    rig.run(20.5, rig.healthy())
    targets = [p.target for _, p in rig.pings()][:20]
    assert len(targets) == 20
    for start in range(0, 20, 5):  # each pass probes every peer exactly once
        assert sorted(targets[start : start + 5]) == sorted(p.node_id for p in rig.peers)
    assert rig.of(MemberSuspected) == []
    assert rig.core.awareness.score == 0


def test_failed_direct_ping_goes_indirect_then_suspects_at_period_end() -> None:
    rig = Rig(n=5)
    victim = rig.peers[2]
    rig.run(30, rig.healthy(dead={victim.node_id}))
    first_ping_time, _ = next((t, p) for t, p in rig.pings() if p.target == victim.node_id)
    period = (first_ping_time, first_ping_time + 1.0)
    reqs = [
        (t, s)
        for t, s in rig.sends
        if isinstance(s.message, PingReq) and period[0] <= t < period[1]
    ]
    assert len(reqs) == 3  # k intermediaries, none of them the victim
    assert {s.message.target for _, s in reqs} == {victim.node_id}
    assert all(s.to != rig.addr_of[victim.node_id] for _, s in reqs)
    assert reqs[0][0] == pytest.approx(first_ping_time + 0.5)
    retries = [t for t, p in rig.pings() if p.target == victim.node_id]
    assert retries[1] == pytest.approx(first_ping_time + 0.5)  # the fallback ping
    suspected = rig.of(MemberSuspected)
    assert [e.member.node_id for e in suspected] == [victim.node_id]
    assert suspected[0].accuser == rig.me.node_id
    [(t_suspect, _)] = [(t, e) for t, e in rig.events if isinstance(e, MemberSuspected)]
    assert t_suspect >= first_ping_time + 1.0  # only once the whole period passed


def test_ack_through_intermediary_rescues_the_probe() -> None:
    rig = Rig(n=5)
    victim = rig.peers[1]

    def respond(send: Send) -> list[Any]:
        msg = send.message
        if isinstance(msg, Ping) and msg.target != victim.node_id:
            return rig.core.handle(send.to, Ack(msg.seq), rig.now)
        if isinstance(msg, PingReq):  # the intermediary reaches it and relays the ack
            return rig.core.handle(send.to, Ack(msg.seq), rig.now)
        return []

    rig.run(30, respond)
    assert rig.of(MemberSuspected) == []
    assert any(isinstance(s.message, PingReq) for _, s in rig.sends)


def test_suspicion_becomes_dead_and_is_broadcast() -> None:
    rig = Rig(n=5)
    victim = rig.peers[0]
    rig.run(60, rig.healthy(dead={victim.node_id}))
    [dead] = rig.of(MemberDead)
    assert dead.member.node_id == victim.node_id
    assert dead.reason == "suspicion_timeout"
    assert rig.state(victim) == (MemberState.DEAD, 0)
    # The verdict travels on pings and on gossip pushes while it is news.
    carriers = [s.message for _, s in rig.sends if isinstance(s.message, Ping | Gossip)]
    carried = [c for m in carriers for c in m.updates if c.node == victim.node_id]
    assert {c.kind for c in carried} >= {SUSPECT, DEAD}
    gossip = [(t, s.message) for t, s in rig.sends if isinstance(s.message, Gossip)]
    assert any(c.kind == DEAD for _, m in gossip for c in m.updates)
    # Dead members are no longer probed.
    t_dead = next(t for t, e in rig.events if isinstance(e, MemberDead))
    assert all(p.target != victim.node_id for t, p in rig.pings() if t > t_dead + 0.5)


def test_news_is_gossiped_quickly_and_gossip_stops_when_there_is_none() -> None:
    rig = Rig(n=5)
    victim = rig.peers[0]
    rig.run(60, rig.healthy(dead={victim.node_id}))
    t_dead = next(t for t, e in rig.events if isinstance(e, MemberDead))
    gossip_times = [t for t, s in rig.sends if isinstance(s.message, Gossip)]
    pushes_after = [t for t in gossip_times if t >= t_dead]
    assert pushes_after and pushes_after[0] - t_dead < 0.25  # pushed at once, not on a probe
    assert max(gossip_times) < t_dead + 10  # the retransmit budget runs out, then silence


def test_probing_a_suspect_carries_the_suspicion_buddy_system() -> None:
    rig = Rig(n=3)
    victim, accuser = rig.peers[0], rig.peers[1]
    rig.handle(Gossip((accuse(SUSPECT, victim.node_id, 0, accuser),)))
    rig.run(10, rig.healthy())
    to_victim = [p for _, p in rig.pings() if p.target == victim.node_id]
    assert to_victim
    assert to_victim[0].updates[0].kind == SUSPECT
    assert to_victim[0].updates[0].node == victim.node_id


# -- Lifeguard ---------------------------------------------------------------


def _time_to_dead(confirmers: int) -> float:
    rig = Rig(n=100)
    victim = rig.peers[0]
    rig.handle(Gossip((accuse(SUSPECT, victim.node_id, 0, rig.peers[1]),)))
    rig.now = 1.0
    for i in range(confirmers):
        rig.handle(Gossip((accuse(SUSPECT, victim.node_id, 0, rig.peers[2 + i]),)))
    rig.run(200, rig.healthy(dead={victim.node_id}))
    return next(t for t, e in rig.events if isinstance(e, MemberDead))


def test_independent_confirmations_shrink_the_suspicion_timeout() -> None:
    low, high = SwimConfig().suspicion_bounds(101)  # 100 peers + us
    alone = _time_to_dead(0)
    one = _time_to_dead(1)
    three = _time_to_dead(3)
    # Our own probes of the victim add our own confirmation at some point, so
    # "alone" is at most max; with K = 3 confirmations it is exactly min.
    assert three == pytest.approx(low, abs=0.01)
    assert three < one < alone <= high + 0.01
    assert alone > 2 * low


def test_missing_nacks_raise_local_health_and_stretch_the_period() -> None:
    rig = Rig(n=6)
    rig.run(40)  # nobody answers anything, intermediaries never nack
    starts: dict[int, float] = {}
    for t, p in rig.pings():
        starts.setdefault(p.seq, t)  # the fallback ping reuses the seq
    times = sorted(starts.values())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # 3 nacks missing per failed probe: score 0, 3, 6, 8 (saturated)
    assert gaps[:4] == pytest.approx([1.0, 4.0, 7.0, 9.0])
    assert rig.core.awareness.score == 8
    # the direct timeout stretched as well: ping_req goes out 9 x 0.5 s after the ping
    reqs = [t for t, s in rig.sends if isinstance(s.message, PingReq)]
    assert any(r - t == pytest.approx(4.5) for r in reqs for t in times[4:])


def test_nacks_prove_we_are_healthy() -> None:
    rig = Rig(n=6)

    def respond(send: Send) -> list[Any]:  # nobody answers pings, everyone nacks
        if isinstance(send.message, PingReq):
            return rig.core.handle(send.to, Nack(send.message.seq), rig.now)
        return []

    rig.run(10, respond)  # (before the suspicions of everyone run out)
    assert rig.core.awareness.score == 0
    assert len({p.seq for _, p in rig.pings()}) >= 9  # the period never stretched


def test_acks_lower_the_score_and_refuting_raises_it() -> None:
    rig = Rig(n=6)
    rig.core.awareness.apply(3)
    rig.run(2.5, rig.healthy())
    assert rig.core.awareness.score < 3
    score = rig.core.awareness.score
    rig.handle(Gossip((accuse(SUSPECT, rig.me.node_id, 0, rig.peers[0]),)))
    assert rig.core.awareness.score == score + 1


# -- refutation and claims about ourselves -------------------------------------


def test_suspicion_about_us_is_refuted_with_a_higher_incarnation() -> None:
    rig = Rig(n=4)
    rig.handle(Gossip((accuse(SUSPECT, rig.me.node_id, 0, rig.peers[0]),)))
    assert rig.core.incarnation == 1
    [refuted] = rig.of(Refuted)
    assert refuted == Refuted(1, MemberState.SUSPECT, rig.peers[0].node_id)
    out = rig.handle(Ping(7, rig.me.node_id))
    [claim] = out[0].message.updates
    assert (claim.kind, claim.node, claim.incarnation) == (ALIVE, rig.me.node_id, 1)
    # Old news about us is ignored; dead at our incarnation is refuted too.
    rig.handle(Gossip((accuse(SUSPECT, rig.me.node_id, 0, rig.peers[1]),)))
    assert rig.core.incarnation == 1
    rig.handle(Gossip((accuse(DEAD, rig.me.node_id, 1, rig.peers[1]),)))
    assert rig.core.incarnation == 2


def test_an_old_alive_of_ours_from_a_previous_run_is_refuted() -> None:
    rig = Rig(n=2)
    rig.handle(Gossip((alive(rig.me, ME, inc=5),)))
    assert rig.core.incarnation == 6
    assert rig.of(Refuted)[0].accusation == MemberState.ALIVE


# -- precedence through the core ---------------------------------------------

SETUP = {
    "alive": [],
    "suspect": [SUSPECT],
    "dead": [DEAD],
    "left": [LEFT],
}


def _claim_for(kind: int, rig: Rig, inc: int) -> Claim:
    x, accuser = rig.peers[0], rig.peers[1]
    if kind == ALIVE:
        return alive(x, addr(0), inc)
    if kind == LEFT:
        return left(x, inc)
    return accuse(kind, x.node_id, inc, accuser)


EXPECTED = {  # (state, claim) -> state after, for j = i-1, i, i+1
    ("alive", ALIVE): ("alive", "alive", "alive"),
    ("alive", SUSPECT): ("alive", "suspect", "suspect"),
    ("alive", DEAD): ("alive", "dead", "dead"),
    ("alive", LEFT): ("alive", "left", "left"),
    ("suspect", ALIVE): ("suspect", "suspect", "alive"),
    ("suspect", SUSPECT): ("suspect", "suspect", "suspect"),
    ("suspect", DEAD): ("suspect", "dead", "dead"),
    ("suspect", LEFT): ("suspect", "left", "left"),
    ("dead", ALIVE): ("dead", "dead", "alive"),
    ("dead", SUSPECT): ("dead", "dead", "dead"),
    ("dead", DEAD): ("dead", "dead", "dead"),
    ("dead", LEFT): ("dead", "left", "left"),
    ("left", ALIVE): ("left", "left", "alive"),
    ("left", SUSPECT): ("left", "left", "left"),
    ("left", DEAD): ("left", "left", "left"),
    ("left", LEFT): ("left", "left", "left"),
}


@pytest.mark.parametrize(("state", "kind"), list(EXPECTED))
def test_precedence_through_the_core(state: str, kind: int) -> None:
    i = 5
    for offset, expected in zip((-1, 0, 1), EXPECTED[(state, kind)], strict=True):
        rig = Rig(n=3)
        x = rig.peers[0]
        rig.handle(Gossip((alive(x, addr(0), i),)))
        for setup_kind in SETUP[state]:
            rig.handle(Gossip((_claim_for(setup_kind, rig, i),)))
        assert rig.state(x) == (MemberState[state.upper()], i)
        rig.handle(Gossip((_claim_for(kind, rig, i + offset),)))
        j = i + offset
        verdict = decide(MemberState(kind), j, MemberState[state.upper()], i)
        expected_inc = j if verdict is not Verdict.IGNORE else i
        assert rig.state(x) == (MemberState[expected.upper()], expected_inc), (kind, offset)


def test_left_member_is_never_suspected_again_at_that_incarnation() -> None:
    rig = Rig(n=3)
    x = rig.peers[0]
    rig.handle(Gossip((left(x, 0),)))
    [event] = rig.of(MemberLeft)
    assert event.member.node_id == x.node_id
    rig.handle(Gossip((accuse(SUSPECT, x.node_id, 0, rig.peers[1]),)))
    rig.handle(Gossip((accuse(DEAD, x.node_id, 0, rig.peers[1]),)))
    assert rig.state(x) == (MemberState.LEFT, 0)
    assert rig.of(MemberSuspected) == [] and rig.of(MemberDead) == []
    rig.run(30, rig.healthy())
    assert all(p.target != x.node_id for _, p in rig.pings())


def test_only_the_member_itself_can_say_it_left() -> None:
    # Only b"ok" verifies here; the real Ed25519 path is in test_swim_signed.py.
    rig = Rig(n=0, verify=lambda n, k, s, d: s == b"ok")
    x = insecure_identity("x")
    rig.core.preload([Claim(ALIVE, x.node_id, 0, *addr(0), x.public_key, b"ok")], 0.0)
    rig.handle(Gossip((Claim(LEFT, x.node_id, 0, signature=b"forged"),)))
    assert rig.state(x) == (MemberState.ALIVE, 0)
    assert rig.core.stats["bad.bad_signature"] == 1


# -- leave -------------------------------------------------------------------


def test_leave_tells_peers_stops_probing_and_keeps_acking() -> None:
    config = SwimConfig(leave_fanout=3)
    rig = Rig(n=5, config=config)
    rig.run(5, rig.healthy())
    pings_before = len(rig.pings())
    out = rig.core.leave(rig.now)
    assert rig.core.leave(rig.now) == []  # idempotent
    gossips = [s for s in out if isinstance(s.message, Gossip)]
    assert len(gossips) == 3
    assert gossips[0].message.updates[0].kind == LEFT
    rig.run(20, rig.healthy())
    assert len(rig.pings()) == pings_before
    ack = rig.handle(Ping(1, rig.me.node_id))[0].message
    assert ack.updates and ack.updates[0].kind == LEFT
    rig.handle(Gossip((accuse(SUSPECT, rig.me.node_id, 0, rig.peers[0]),)))
    assert rig.of(Refuted) == []  # leaving: we do not fight for our life


# -- piggybacking ----------------------------------------------------------------


def test_datagrams_stay_within_the_byte_budget_and_transmit_limit() -> None:
    rig = Rig(n=5)
    newcomers = [insecure_identity(f"new{i}") for i in range(300)]
    claims = [alive(p, (f"10.9.{i // 250}.{i % 250}", 7946)) for i, p in enumerate(newcomers)]
    for start in range(0, 300, 60):
        rig.handle(Gossip(tuple(claims[start : start + 60])))
    assert len(rig.of(MemberJoined)) == 300
    codec = PlainCodec()
    sizes, per_claim, counts = [], {}, []
    for seq in range(400):
        out = rig.core.handle(addr(1), Ping(seq, rig.me.node_id), rig.now)
        updates = out[0].message.updates
        counts.append(len(updates))
        sizes.append(len(codec.encode(out[0].message)))
        for c in updates:
            per_claim[c.node] = per_claim.get(c.node, 0) + 1
    assert max(sizes) <= 1400 - 80
    assert max(sizes) > 1200  # the budget is actually used
    assert max(counts) <= SwimConfig().max_piggyback
    limit = SwimConfig().retransmit_limit(306)
    assert set(per_claim.values()) == {limit}  # every claim exactly `limit` times
    assert len(per_claim) == 300
    assert rig.core.pending_broadcasts == 0


def test_piggyback_over_the_limit_is_dropped_whole() -> None:
    rig = Rig(n=2)
    newcomers = [insecure_identity(f"n{i}") for i in range(65)]
    rig.handle(Gossip(tuple(alive(p, addr(100 + i)) for i, p in enumerate(newcomers))))
    assert rig.core.stats["bad.piggyback_over_limit"] == 1
    assert rig.of(MemberJoined) == []


# -- push-pull and bootstrap -----------------------------------------------------


def test_push_pull_request_is_merged_and_answered() -> None:
    a, b = Rig(n=3, seed=1), Rig(n=0, seed=2, name="b", address=("10.0.0.2", 7946))
    request = a.core.join([ME], 0.0)  # own address skipped
    assert request == []
    [send] = a.core.join([("10.0.0.2", 7946)], 0.0)
    assert send.reliable and isinstance(send.message, PushPull) and send.message.join
    reply = b.handle(send.message, src=ME)
    assert len(b.of(MemberJoined)) == 4  # a and a's three peers
    [answer] = [s for s in reply if isinstance(s, Send)]
    assert answer.reliable and answer.message.reply
    back = a.core.handle(("10.0.0.2", 7946), answer.message, 0.0)
    assert [type(e) for e in back] == [MemberJoined]  # a learns b; no reply to a reply


def test_a_peers_dead_verdict_only_makes_us_suspect() -> None:
    b_addr = ("10.0.0.2", 7946)
    a, b = Rig(n=3, seed=1), Rig(n=3, seed=2, name="b", address=b_addr)  # same peers
    victim = a.peers[0]
    b.handle(Gossip((accuse(DEAD, victim.node_id, 0, b.peers[1]),)))
    assert b.state(victim) == (MemberState.DEAD, 0)
    [send] = b.core.join([ME], 0.0)
    a.handle(send.message, src=b_addr)
    assert a.state(victim) == (MemberState.SUSPECT, 0)
    assert a.of(MemberDead) == []


def test_lonely_node_asks_for_peers_and_retries_seeds() -> None:
    rig = Rig(n=1)
    seeds = [("10.0.5.1", 7946), ("10.0.5.2", 7946)]
    rig.core.join(seeds, 0.0)
    rig.run(10.5, rig.healthy())
    [need] = rig.of(NeedPeers)
    assert need == NeedPeers(live=1, wanted=4)
    bootstrap = [s.to for t, s in rig.sends if isinstance(s.message, PushPull) and t > 9]
    assert set(bootstrap) == set(seeds)


# -- peer sampling -------------------------------------------------------------------


def test_sample_returns_distinct_live_peers_never_ourselves() -> None:
    rig = Rig(n=10)
    rig.handle(Gossip((accuse(DEAD, rig.peers[0].node_id, 0, rig.peers[1]),)))
    live = {m.node_id for m in rig.core.live_members()}
    assert len(live) == 9 and rig.peers[0].node_id not in live
    for k in (0, 1, 5, 9, 50):
        picked = rig.core.sample(k, random.Random(k))
        ids = [m.node_id for m in picked]
        assert len(ids) == len(set(ids)) == min(k, 9)
        assert set(ids) <= live and rig.me.node_id not in ids


# -- bad input -------------------------------------------------------------------


def test_semantically_bad_input_is_ignored_and_counted() -> None:
    rig = Rig(n=3)
    x, y = rig.peers[0], rig.peers[1]
    stranger = insecure_identity("stranger")
    cases: list[tuple[Any, str]] = [
        (Ping(-1, rig.me.node_id), "bad.seq_range"),
        (Ping(2**32, rig.me.node_id), "bad.seq_range"),
        (Ack(12345), "bad.unknown_ack"),
        (Nack(12345), "bad.unknown_nack"),
        (PingReq(1, rig.me.node_id, "10.0.0.9", 1), "bad.ping_req_fields"),
        (PingReq(1, x.node_id, "10.0.0.9", 0), "bad.ping_req_fields"),
        (Gossip((Claim(ALIVE, b"abc", 1, "h", 1, b"k", b""),)), "bad.claim_fields"),
        (Gossip((Claim(ALIVE, x.node_id, 1, "h", 0, x.public_key, b""),)), "bad.claim_fields"),
        (Gossip((Claim(ALIVE, x.node_id, 1, "h", 1, y.public_key, b""),)), "bad.key_mismatch"),
        (Gossip((Claim(7, x.node_id, 1),)), "bad.claim_fields"),
        (Gossip((Claim(SUSPECT, x.node_id, 1, accuser=b"short"),)), "bad.claim_fields"),
        (Gossip((accuse(SUSPECT, x.node_id, 2**33, y),)), "bad.incarnation_jump"),
        (Gossip((accuse(SUSPECT, rig.me.node_id, 2**40, y),)), "bad.incarnation_jump"),
        (Gossip((accuse(SUSPECT, stranger.node_id, 0, y),)), "ignored.unknown_member"),
        (Gossip((accuse(SUSPECT, x.node_id, 0, stranger),)), "ignored.unknown_accuser"),
        (PushPull(False, False, b"\xc1"), "bad.push_pull_undecodable"),
        (PushPull(False, False, msgpack.packb([1])), "bad.push_pull_shape"),
        (object(), "bad.unknown_message"),
    ]
    for msg, counter in cases:
        before = rig.core.stats[counter]
        out = rig.handle(msg)
        assert rig.core.stats[counter] == before + 1, counter
        assert not [e for e in out if not isinstance(e, Send)], counter
    assert rig.state(x) == (MemberState.ALIVE, 0)
    assert rig.core.incarnation == 0
    assert rig.core.stats["internal_error"] == 0


claims = st.builds(
    Claim,
    kind=st.integers(-2, 6),
    node=st.binary(min_size=0, max_size=20),
    incarnation=st.integers(-(2**64), 2**64),
    host=st.text(max_size=300),
    port=st.integers(-5, 70000),
    public_key=st.binary(max_size=40),
    signature=st.binary(max_size=10),
    accuser=st.binary(max_size=20),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(claims, max_size=8),
    st.integers(-(2**40), 2**40),
    st.binary(max_size=64),
    st.sampled_from(["ping", "ack", "nack", "ping_req", "gossip", "push_pull"]),
)
def test_fuzzed_messages_never_raise(
    updates: list[Claim], seq: int, blob: bytes, kind: str
) -> None:
    rig = Rig(n=3)
    u = tuple(updates)
    msg = {
        "ping": Ping(seq, rig.me.node_id, u),
        "ack": Ack(seq, u),
        "nack": Nack(seq, u),
        "ping_req": PingReq(seq, blob[:16], "h", seq % 70000, u),
        "gossip": Gossip(u),
        "push_pull": PushPull(seq % 2 == 0, False, blob),
    }[kind]
    rig.core.handle(addr(1), msg, 1.0)
    rig.run(3.0, rig.healthy())
    assert rig.core.stats["internal_error"] == 0
    assert math.isfinite(rig.core.next_deadline())
