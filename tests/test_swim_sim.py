"""SWIM clusters in the deterministic simulator: the transitions end to end,
indirect probing, Lifeguard under a sick node, partitions, restarts, bootstrap
without a tracker, graceful leave and determinism."""

from __future__ import annotations

from deepgossip.membership import (
    MemberAlive,
    MemberDead,
    MemberJoined,
    MemberLeft,
    MemberReaped,
    MemberState,
    MemberSuspected,
    MemberUpdated,
    NeedPeers,
    Refuted,
    SwimConfig,
)
from deepgossip.membership.cluster import SimCluster, sim_address
from deepgossip.membership.messages import Claim, Gossip
from deepgossip.membership.signing import accusation_payload
from deepgossip.net.sim import LinkModel

ALIVE, SUSPECT, DEAD, LEFT = MemberState


def cluster(n: int, *, seed: int = 1, loss: float = 0.0, **config: object) -> SimCluster:
    c = SimCluster(seed=seed, config=SwimConfig(**config), link=LinkModel(loss=loss))  # type: ignore[arg-type]
    c.add_nodes(sim_address(i) for i in range(n))
    c.converge()
    return c


def node_id(c: SimCluster, i: int) -> bytes:
    return c.nodes[sim_address(i)].identity.node_id


def about(entries: list, subject: bytes) -> list:
    return [e for e in entries if e.event.member.node_id == subject]


def test_nodes_joining_through_one_seed_converge() -> None:
    c = SimCluster(seed=3)
    addresses = [sim_address(i) for i in range(12)]
    c.add_nodes(addresses)
    for i, address in enumerate(addresses[1:], start=1):
        c.run_until(i * 0.3)
        c.join(address, [addresses[0]])
    c.run_until(40)
    assert c.converged()
    joined = c.events(MemberJoined)
    assert len(joined) == 12 * 11  # everyone learned everyone exactly once
    assert c.events(MemberSuspected) == []


def test_crash_is_suspected_then_declared_dead_everywhere() -> None:
    c = cluster(10, loss=0.05)
    c.run_until(10)
    victim = sim_address(4)
    c.crash(victim)
    c.run_until(60)
    assert c.all_see(victim, DEAD)
    subject = node_id(c, 4)
    for node in c.running():
        mine = [e.event for e in c.trace if e.node == node.address]
        kinds = [
            type(e).__name__
            for e in mine
            if getattr(e, "member", None) and e.member.node_id == subject
        ]
        assert kinds == ["MemberSuspected", "MemberDead"] or kinds == ["MemberDead"], kinds
    dead = c.events(MemberDead)
    assert {e.event.member.node_id for e in dead} == {subject}
    reasons = {e.event.reason for e in dead}
    assert "suspicion_timeout" in reasons  # someone's timer ran out ...
    first = min(e.time for e in dead)
    assert first - 10 < 20
    assert max(e.time for e in dead) - first < 15  # ... and the verdict spread


def test_a_suspected_live_node_refutes_and_is_never_declared_dead() -> None:
    c = cluster(10)
    c.run_until(5)
    accuser, target = c.nodes[sim_address(1)], c.nodes[sim_address(2)]
    sig = accuser.identity.sign(
        accusation_payload(SUSPECT, target.identity.node_id, 0, accuser.identity.node_id)
    )
    claim = Claim(
        int(SUSPECT), target.identity.node_id, 0, accuser=accuser.identity.node_id, signature=sig
    )
    holder = c.nodes[sim_address(3)]
    holder.host.execute(holder.swim.handle(accuser.address, Gossip((claim,)), c.net.now()))
    c.run_until(40)
    [refuted] = c.events(Refuted)
    assert refuted.node == target.address and refuted.event.incarnation == 1
    assert c.events(MemberDead) == []
    assert c.all_see(target.address, ALIVE)
    assert all(
        c.nodes[n.address].swim.member(target.identity.node_id).incarnation == 1  # type: ignore[union-attr]
        for n in c.running()
        if n is not target
    )
    recovered = c.events(MemberAlive)
    assert recovered and all(e.event.previous == SUSPECT for e in recovered)


def test_indirect_probes_rescue_a_node_behind_a_broken_direct_link() -> None:
    def run(indirect_checks: int) -> SimCluster:
        c = cluster(6, fallback_ping="off", indirect_checks=indirect_checks)
        a, b = sim_address(0), sim_address(1)
        c.net.set_link_loss(a, b, 1.0)
        c.net.set_link_loss(b, a, 1.0)
        c.run_until(120)
        return c

    rescued = run(indirect_checks=3)
    assert rescued.events(MemberSuspected) == []
    assert rescued.nodes[sim_address(0)].swim.stats["probe_failed"] == 0
    control = run(indirect_checks=0)  # textbook SWIM without ping-req: false suspicions
    accused = {e.event.member.address for e in control.events(MemberSuspected)}
    assert accused == {sim_address(0), sim_address(1)}
    assert control.events(Refuted)  # ... which the accused refute through others


def test_stream_fallback_ping_reaches_a_node_whose_datagrams_are_lost() -> None:
    c = cluster(4, fallback_ping="stream", indirect_checks=0)
    a, b = sim_address(0), sim_address(1)
    c.net.set_link_loss(a, b, 1.0)
    c.net.set_link_loss(b, a, 1.0)
    c.run_until(60)
    assert c.events(MemberSuspected) == []


def test_local_health_keeps_a_sick_node_from_accusing_healthy_peers() -> None:
    def failed_probes(awareness_max: int) -> tuple[int, float, float]:
        c = cluster(12, awareness_max=awareness_max, seed=5)
        sick = sim_address(0)
        for i in range(1, 12):  # the sick node loses 60% of what it receives
            c.net.set_link_loss(sim_address(i), sick, 0.6)
        c.run_until(100)
        sick_scores, healthy_scores = [], []
        for t in range(101, 201):  # sample health scores once a second
            c.run_until(t)
            sick_scores.append(c.nodes[sick].swim.awareness.score)
            healthy_scores.append(c.nodes[sim_address(1)].swim.awareness.score)
        mean_sick = sum(sick_scores) / len(sick_scores)
        mean_healthy = sum(healthy_scores) / len(healthy_scores)
        return c.nodes[sick].swim.stats["probe_failed"], mean_sick, mean_healthy

    (with_lhm, sick, healthy), (without, _, _) = failed_probes(8), failed_probes(0)
    assert sick > 2 and healthy < 0.5  # the sick node knows it is sick, others are fine ...
    assert with_lhm * 2 < without  # ... and accuses healthy peers far less often


def test_partitioned_halves_heal_into_one_view() -> None:
    c = cluster(12)
    left = [sim_address(i) for i in range(6)]
    right = [sim_address(i) for i in range(6, 12)]
    c.run_until(5)
    c.net.partition([left, right])
    c.run_until(90)
    for a in left:
        for b in right:
            assert c.state_of(a, b) == DEAD and c.state_of(b, a) == DEAD
    same_side_dead = [
        e for e in c.events(MemberDead) if (e.node in left) == (e.event.member.address in left)
    ]
    assert same_side_dead == []
    c.net.heal()
    healed = c.net.run_while(lambda: not c.converged(), limit=300)
    assert healed, "the two halves never converged"
    assert c.converged()
    back = c.events(MemberAlive)
    assert any(e.event.previous == DEAD for e in back)


def test_restarted_node_learns_its_old_incarnation_and_refutes() -> None:
    c = cluster(8)
    c.run_until(5)
    victim = sim_address(5)
    c.crash(victim)
    c.run_until(40)
    assert c.all_see(victim, DEAD)
    node = c.restart(victim, seeds=[sim_address(0)])
    assert node.swim.incarnation == 0
    c.run_until(80)
    assert c.all_see(victim, ALIVE)
    assert node.swim.incarnation >= 1
    assert c.events(Refuted, node=victim)
    assert c.converged()


def test_moved_member_is_updated_with_its_new_address() -> None:
    c = cluster(6)
    c.run_until(3)
    old = sim_address(2)
    identity = c.nodes[old].identity
    c.crash(old)
    new = ("10.200.0.2", 7946)
    c.add_node(new, identity=identity, incarnation=1)
    c.join(new, [sim_address(0)])
    c.run_until(20)
    moved = c.events(MemberUpdated)
    assert moved and all(
        e.event.old_address == old and e.event.member.address == new for e in moved
    )
    assert all(c.state_of(sim_address(i), new) == ALIVE for i in (0, 1, 3, 4, 5))


def test_tracker_outage_bootstraps_from_known_addresses() -> None:
    c = cluster(6, min_live_peers=4)
    c.run_until(5)
    gone = [sim_address(i) for i in (3, 4, 5)]
    for address in gone:
        c.crash(address)
    c.run_until(60)
    survivors = [sim_address(i) for i in range(3)]
    for address in survivors:
        asks = [e for e in c.events(NeedPeers, node=address)]
        assert asks and asks[0].event.wanted == 4 and asks[0].event.live < 4
    # The tracker is down, nobody calls join(); the crashed nodes come back
    # knowing no one. The survivors' periodic bootstrap contacts find them.
    for address in gone:
        c.add_node(address)
    healed = c.net.run_while(lambda: not c.converged(), limit=200)
    assert healed and c.converged()
    for address in survivors:
        assert c.nodes[address].swim.stats["bootstrap_attempts"] > 0


def test_graceful_leave_is_left_not_dead_and_never_suspected_again() -> None:
    c = cluster(8)
    c.run_until(5)
    leaver = sim_address(6)
    c.leave(leaver)
    c.run_until(7)
    c.stop(leaver)
    c.run_until(80)
    assert c.all_see(leaver, LEFT)
    subject = node_id(c, 6)
    assert len(about(c.events(MemberLeft), subject)) == 7
    assert about(c.events(MemberSuspected), subject) == []
    assert about(c.events(MemberDead), subject) == []


def test_tombstones_are_reaped_and_remembered_for_bootstrap() -> None:
    c = cluster(5, dead_reap_after=30.0)
    c.run_until(2)
    c.crash(sim_address(4))
    c.run_until(80)
    reaped = c.events(MemberReaped)
    assert len(reaped) == 4
    assert all(c.state_of(sim_address(i), sim_address(4)) is None for i in range(4))


def _trace(seed: int) -> list[tuple[float, object, object]]:
    c = cluster(15, seed=seed, loss=0.1)
    c.run_until(10)
    c.crash(sim_address(3))
    c.crash(sim_address(9))
    c.run_until(70)
    return [(e.time, e.node, e.event) for e in c.trace]


def test_same_seed_gives_the_same_event_trace() -> None:
    first = _trace(11)
    assert first == _trace(11)
    assert first != _trace(12)
    assert any(isinstance(e, MemberDead) for _, _, e in first)
