"""SWIM's exclusion hook (``Swim.exclude`` / ``Swim.readmit``): what a node does
with a member its blacklist convicted. One core driven by hand, then clusters in
the deterministic simulator where some nodes shut a member out."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from deepgossip.membership import (
    Ack,
    Claim,
    Gossip,
    MemberExcluded,
    MemberReadmitted,
    MemberState,
    MemberSuspected,
    Ping,
    PingReq,
    PushPull,
    Swim,
    SwimConfig,
    SwimIdentity,
    insecure_identity,
)
from deepgossip.membership.cluster import SimCluster, sim_address
from deepgossip.membership.pushpull import Row, encode_table
from deepgossip.membership.signing import accusation_payload, alive_payload
from deepgossip.membership.state import Member
from deepgossip.net.runtime import Address, Send

ALIVE, SUSPECT, DEAD, LEFT = MemberState
ME: Address = ("10.0.0.1", 7946)


def addr(i: int) -> Address:
    return (f"10.0.1.{i}", 7946)


def alive(ident: SwimIdentity, address: Address, inc: int = 0) -> Claim:
    sig = ident.sign(alive_payload(ident.node_id, inc, address[0], address[1]))
    return Claim(int(ALIVE), ident.node_id, inc, address[0], address[1], ident.public_key, sig)


def accuse(kind: MemberState, subject: bytes, inc: int, accuser: SwimIdentity) -> Claim:
    payload = accusation_payload(kind, subject, inc, accuser.node_id)
    return Claim(int(kind), subject, inc, accuser=accuser.node_id, signature=accuser.sign(payload))


class Rig:
    """A core with ``n`` preloaded peers that answer every ping at once."""

    def __init__(self, n: int = 5, seed: int = 0) -> None:
        self.me = insecure_identity("me")
        self.core = Swim(self.me, ME, random.Random(seed), SwimConfig())
        self.peers = [insecure_identity(f"peer{i}") for i in range(n)]
        assert self.core.preload([alive(p, addr(i)) for i, p in enumerate(self.peers)], 0.0) == n
        self.now = 0.0
        self.sends: list[tuple[float, Send]] = []
        self.events: list[Any] = []

    def feed(self, effects: list[Any]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                self.sends.append((self.now, effect))
                msg = effect.message
                if isinstance(msg, Ping):  # every peer is healthy
                    self.feed(self.core.handle(effect.to, Ack(msg.seq), self.now))
            else:
                self.events.append(effect)

    def handle(self, msg: Any, src: Address) -> list[Any]:
        out = self.core.handle(src, msg, self.now)
        self.feed(out)
        return out

    def run(self, until: float) -> None:
        while (deadline := self.core.next_deadline()) <= until:
            self.now = max(self.now, deadline)
            self.feed(self.core.tick(self.now))
        self.now = until

    def exclude(self, i: int) -> list[Any]:
        out = self.core.exclude(self.peers[i].node_id, self.now)
        self.feed(out)
        return out

    def live_ids(self) -> set[bytes]:
        return {m.node_id for m in self.core.live_members()}


def test_an_excluded_member_leaves_every_live_list_and_is_never_contacted() -> None:
    rig = Rig(n=5)
    rig.run(3.0)
    bad = rig.peers[2]
    [event] = rig.exclude(2)
    assert isinstance(event, MemberExcluded) and event.node_id == bad.node_id
    assert event.member is not None and event.member.address == addr(2)
    assert rig.exclude(2) == []  # idempotent
    assert rig.core.is_excluded(bad.node_id) and rig.core.excluded == {bad.node_id}
    assert bad.node_id not in rig.live_ids() and rig.core.live_count == 4
    assert rig.core.member(bad.node_id) is None
    for seed in range(20):
        sampled = rig.core.sample(4, random.Random(seed))
        assert bad.node_id not in {m.node_id for m in sampled}
    cut = len(rig.sends)
    rig.run(60.0)  # 60 periods: probes, ping_reqs, gossip and push-pulls
    later = [s for _, s in rig.sends[cut:]]
    assert not [s for s in later if s.to == addr(2)]  # not probed, not a relay, no gossip
    assert not [s for s in later if isinstance(s.message, Ping) and s.message.target == bad.node_id]
    assert any(isinstance(s.message, PushPull) for s in later)  # push-pulls did happen
    probed = Counter(s.message.target for s in later if isinstance(s.message, Ping))
    assert set(probed) == {p.node_id for i, p in enumerate(rig.peers) if i != 2}
    assert rig.core.stats["internal_error"] == 0


def test_indirect_probes_never_ask_an_excluded_member_to_relay() -> None:
    rig = Rig(n=4)
    rig.exclude(1)
    victim = rig.peers[0]
    rig.feed = _silent_for(rig, {victim.node_id})  # type: ignore[method-assign]
    rig.run(20.0)
    reqs = [s for _, s in rig.sends if isinstance(s.message, PingReq)]
    assert reqs and {s.to for s in reqs} == {addr(2), addr(3)}


def _silent_for(rig: Rig, dead: set[bytes]) -> Callable[[list[Any]], None]:
    """A ``feed`` under which the members in ``dead`` never answer."""

    def feed(effects: list[Any]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                rig.sends.append((rig.now, effect))
                msg = effect.message
                if isinstance(msg, Ping) and msg.target not in dead:
                    feed(rig.core.handle(effect.to, Ack(msg.seq), rig.now))
            else:
                rig.events.append(effect)

    return feed


def test_the_excluded_members_traffic_is_dropped_and_counted() -> None:
    rig = Rig(n=4)
    rig.exclude(3)
    src = addr(3)
    other = rig.peers[0]
    assert rig.handle(Ping(7, rig.me.node_id), src) == []  # no ack
    ping_req = PingReq(8, other.node_id, addr(0)[0], addr(0)[1])
    assert rig.handle(ping_req, src) == []  # no relay
    # Its claims about others (a suspicion, a move of peer 0) go unheard.
    moved = alive(other, ("10.9.9.9", 1), inc=1)
    assert rig.handle(Gossip((accuse(SUSPECT, other.node_id, 0, rig.peers[3]), moved)), src) == []
    assert rig.handle(PushPull(False, False, b"garbage"), src) == []
    assert rig.core.stats["ignored.excluded_sender"] == 4
    info = rig.core.member(other.node_id)
    assert info is not None and info.state == ALIVE and info.address == addr(0)
    # Others' traffic is unaffected.
    assert rig.handle(Ping(9, rig.me.node_id), addr(1)) == [Send(addr(1), Ack(9, ()), False)]


def test_claims_about_an_excluded_member_do_not_bring_it_back() -> None:
    rig = Rig(n=4)
    bad = rig.peers[2]
    rig.exclude(2)
    # An honest peer that has not excluded it relays its fresh alive claim ...
    rig.handle(Gossip((alive(bad, addr(2), inc=5),)), addr(0))
    # ... and a push-pull from another lists it alive at a higher incarnation.
    me_row = Row(
        rig.peers[1].node_id,
        ALIVE,
        0,
        0,
        addr(1)[0],
        addr(1)[1],
        rig.peers[1].public_key,
        alive(rig.peers[1], addr(1)).signature,
        b"",
        b"",
    )
    listed = Member(bad.node_id, addr(2), bad.public_key, 7, alive(bad, addr(2), 7).signature, 0.0)
    rig.handle(PushPull(True, False, encode_table(me_row, [listed])), addr(1))
    assert rig.core.member(bad.node_id) is None
    assert bad.node_id not in rig.live_ids()
    assert rig.core.stats["ignored.excluded_member"] == 2
    about_it = [
        e
        for e in rig.events
        if not isinstance(e, MemberExcluded)
        and getattr(e, "member", None) is not None
        and e.member.node_id == bad.node_id
    ]
    assert about_it == []  # no MemberJoined / MemberAlive


def test_accusations_signed_by_an_excluded_member_are_ignored_when_relayed() -> None:
    rig = Rig(n=4)
    bad, victim = rig.peers[3], rig.peers[0]
    rig.exclude(3)
    # An honest peer relays the excluded member's suspicion and dead verdict.
    suspect = accuse(SUSPECT, victim.node_id, 0, bad)
    dead = accuse(DEAD, victim.node_id, 0, bad)
    rig.handle(Gossip((suspect, dead)), addr(1))
    info = rig.core.member(victim.node_id)
    assert info is not None and info.state == ALIVE
    assert rig.core.stats["ignored.excluded_accuser"] == 2
    assert not [e for e in rig.events if isinstance(e, MemberSuspected)]
    # An honest accuser's word still counts.
    rig.handle(Gossip((accuse(SUSPECT, victim.node_id, 0, rig.peers[1]),)), addr(1))
    info = rig.core.member(victim.node_id)
    assert info is not None and info.state == SUSPECT


def test_excluding_the_member_under_probe_ends_the_probe_without_penalty() -> None:
    rig = Rig(n=3)
    out = rig.core.tick(rig.core.next_deadline())  # the first probe goes out
    [ping] = [e.message for e in out if isinstance(e, Send) and isinstance(e.message, Ping)]
    index = next(i for i, p in enumerate(rig.peers) if p.node_id == ping.target)
    rig.now = rig.core.next_deadline()
    rig.exclude(index)
    rig.run(rig.now + 5.0)
    assert rig.core.awareness.score == 0
    assert rig.core.stats["probe_failed"] == 0
    assert not [e for e in rig.events if isinstance(e, MemberSuspected)]


def test_readmitted_member_comes_back_as_it_was_and_is_probed_again() -> None:
    rig = Rig(n=4)
    bad = rig.peers[1]
    rig.exclude(1)
    rig.run(10.0)
    [event] = rig.core.readmit(bad.node_id, rig.now)
    assert isinstance(event, MemberReadmitted) and event.member is not None
    assert event.member.address == addr(1) and event.member.state == ALIVE
    assert rig.core.readmit(bad.node_id, rig.now) == []  # not excluded any more
    assert bad.node_id in rig.live_ids() and not rig.core.is_excluded(bad.node_id)
    assert rig.handle(Ping(3, rig.me.node_id), addr(1)) == [Send(addr(1), Ack(3, ()), False)]
    cut = len(rig.sends)
    rig.run(20.0)
    assert any(
        isinstance(s.message, Ping) and s.message.target == bad.node_id for _, s in rig.sends[cut:]
    )
    # Claims about it count again.
    rig.handle(Gossip((alive(bad, addr(1), inc=2),)), addr(0))
    info = rig.core.member(bad.node_id)
    assert info is not None and info.incarnation == 2


def test_a_member_excluded_before_we_met_it_is_never_learned() -> None:
    rig = Rig(n=2)
    stranger = insecure_identity("stranger")
    [event] = rig.core.exclude(stranger.node_id, 0.0)
    assert event == MemberExcluded(stranger.node_id, None)
    rig.handle(Gossip((alive(stranger, addr(9)),)), addr(0))
    assert rig.core.member(stranger.node_id) is None
    [back] = rig.core.readmit(stranger.node_id, 0.0)
    assert back == MemberReadmitted(stranger.node_id, None)
    rig.handle(Gossip((alive(stranger, addr(9)),)), addr(0))  # now it may join
    assert rig.core.member(stranger.node_id) is not None


def test_excluding_ourselves_or_a_malformed_id_is_refused() -> None:
    rig = Rig(n=1)
    with pytest.raises(ValueError):
        rig.core.exclude(rig.me.node_id, 0.0)
    with pytest.raises(ValueError):
        rig.core.exclude(b"short", 0.0)


# -- in the simulator ----------------------------------------------------------------


def _excluding_cluster(seed: int, excluders: range) -> tuple[SimCluster, Address, list[Address]]:
    """8 nodes, converged; node 7 is excluded by the nodes in ``excluders`` at t=5.

    Frames that reach node 7 are recorded by sender (the return value's list).
    """
    c = SimCluster(seed=seed)
    c.add_nodes(sim_address(i) for i in range(8))
    c.converge()
    bad = sim_address(7)
    senders: list[Address] = []
    receive = c.nodes[bad].host.receive

    def tap(src: Address, frame: bytes, reliable: bool = False) -> None:
        senders.append(src)
        receive(src, frame, reliable)

    c.net.detach(bad)
    c.net.attach(bad, tap)
    c.run_until(5.0)
    bad_id = c.nodes[bad].identity.node_id
    for i in excluders:
        node = c.nodes[sim_address(i)]
        node.host.execute(node.swim.exclude(bad_id, c.net.now()))
    senders.clear()
    return c, bad, senders


def test_nodes_that_exclude_a_member_never_talk_to_it_and_nobody_honest_is_hurt() -> None:
    c, bad, senders = _excluding_cluster(seed=4, excluders=range(7))
    c.run_until(90.0)
    assert senders == []  # no probe, relay, gossip or push-pull reached it
    bad_id = c.nodes[bad].identity.node_id
    honest = [sim_address(i) for i in range(7)]
    for address in honest:
        swim = c.nodes[address].swim
        assert swim.member(bad_id) is None and swim.live_count == 6
        assert swim.stats["ignored.excluded_sender"] > 0  # it kept pinging
        assert swim.stats["internal_error"] == 0
    # Shunned, the excluded node suspects everyone and spreads it; nobody listens.
    assert c.events(MemberSuspected, node=bad)
    for entry in c.events(MemberSuspected):
        assert entry.node == bad or entry.event.member.node_id == bad_id
    assert all(c.state_of(a, b) == ALIVE for a in honest for b in honest if a != b)


def test_a_member_excluded_by_some_stays_out_there_while_others_keep_it() -> None:
    c, bad, senders = _excluding_cluster(seed=5, excluders=range(3))
    c.run_until(90.0)
    bad_id = c.nodes[bad].identity.node_id
    excluders = [sim_address(i) for i in range(3)]
    keepers = [sim_address(i) for i in range(3, 7)]
    assert senders and not set(senders) & set(excluders)
    for address in excluders:  # gossip and push-pulls from keepers never resurrect it
        assert c.nodes[address].swim.member(bad_id) is None
        assert c.nodes[address].swim.stats["ignored.excluded_member"] > 0
    for address in keepers:  # the excluded node still answers them
        assert c.state_of(address, bad) == ALIVE
    # The node still sees the excluders alive (keepers relay their acks and news).
    honest = excluders + keepers
    assert all(c.state_of(a, b) == ALIVE for a in honest for b in honest if a != b)


def test_exclusion_keeps_the_simulation_deterministic() -> None:
    def trace(seed: int) -> list[tuple[float, Address, str]]:
        c, _, _ = _excluding_cluster(seed=seed, excluders=range(4))
        c.run_until(40.0)
        return [(e.time, e.node, type(e.event).__name__) for e in c.trace]

    assert trace(9) == trace(9)
