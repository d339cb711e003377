"""A node's blacklist reaches its membership: whole nodes (AES-GCM frames,
Ed25519, SWIM, gossip, the trust core) on the simulated network, where a
convicted peer is excluded from SWIM and readmitted when the verdict is lifted."""

from __future__ import annotations

import random

from deepgossip.learn.collaboration import DefenseSummary
from deepgossip.membership.events import MemberExcluded, MemberReadmitted
from deepgossip.net.sim import SimNetwork
from deepgossip.node import Node
from deepgossip.session import Session
from deepgossip.trust.blacklist import BlacklistConfig
from deepgossip.wire.identity import Identity
from deepgossip.wire.session import new_join_secret, secret_fingerprint

SECRET = new_join_secret()
SESSION = Session("blacklist-nodes", secret_sha256=secret_fingerprint(SECRET))


def _cluster(n: int, seed: int) -> tuple[SimNetwork, list[Node], list[list[object]]]:
    net = SimNetwork(seed=seed)
    rng = random.Random(seed)
    nodes: list[Node] = []
    events: list[list[object]] = []
    for i in range(n):
        address = (f"10.2.0.{i + 1}", 7000)
        identity = Identity.from_private_bytes(rng.randbytes(32))
        node = Node(
            net,
            address,
            identity,
            SESSION,
            SECRET,
            rng=net.rng_for(address),
            wall_clock=net.now,
            blacklist=BlacklistConfig(),
        )
        seen: list[object] = []
        node.host.subscribe(seen.append)
        events.append(seen)
        net.attach(address, node.host.receive)
        nodes.append(node)
    for i, node in enumerate(nodes):
        node.start([nodes[0].address] if i else [])
    return net, nodes, events


def test_a_blacklisted_peer_is_excluded_from_membership_and_readmitted_when_lifted() -> None:
    net, nodes, events = _cluster(6, seed=7)
    net.run_until(20)
    assert all(node.swim.live_count == 5 for node in nodes)
    bad = nodes[5]
    # Four local verdicts: a quorum for everyone else (floor(0.3 * 6) + 1 = 2).
    for i in (1, 2, 3, 4):
        nodes[i].accuse(bad.node_id, 0.9, ())
    net.run_for(10)
    honest = nodes[:5]
    for node, seen in zip(honest, events, strict=False):
        assert node.is_blacklisted(bad.node_id)
        assert node.swim.is_excluded(bad.node_id)
        assert node.swim.member(bad.node_id) is None
        assert bad.node_id not in {m.node_id for m in node.live_peers()}
        assert node.swim.live_count == 4
        assert [e.node_id for e in seen if isinstance(e, MemberExcluded)] == [bad.node_id]
    trust = nodes[0].status()["trust"]
    assert trust["blacklisted"] == [bad.node_id.hex()] and trust["blacklisted_count"] == 1
    assert trust["blacklist"]["blacklisted"][bad.node_id.hex()]["by"] == "quorum"
    assert trust["defense"] == "none" and trust["updates_rejected"] == 0
    # It keeps pinging; nobody answers, so it loses everyone, while the honest
    # nodes keep a full view of each other.
    net.run_for(30)
    assert all(node.swim.stats["ignored.excluded_sender"] > 0 for node in honest)
    assert bad.swim.live_count == 0
    assert all(node.swim.live_count == 4 for node in honest)
    # Node 1 forgives; node 0 adopted on the quorum, which still stands.
    nodes[1].host.execute(nodes[1].blacklist.forgive(bad.node_id, net.now()))  # type: ignore[union-attr]
    net.run_for(5)
    assert nodes[1].is_blacklisted(bad.node_id)  # the others' accusations still count
    # Everyone withdraws: the blacklist lifts the entry, and SWIM lets it back in.
    for i in (2, 3, 4):
        nodes[i].host.execute(nodes[i].blacklist.forgive(bad.node_id, net.now()))  # type: ignore[union-attr]
    net.run_for(10)
    node0 = nodes[0]
    assert not node0.is_blacklisted(bad.node_id)
    assert not node0.swim.is_excluded(bad.node_id)
    assert [e.node_id for e in events[0] if isinstance(e, MemberReadmitted)] == [bad.node_id]
    assert node0.swim.member(bad.node_id) is not None
    assert all(node.codec.stats.dropped.total() == 0 for node in nodes)


def test_status_reports_the_defence_and_its_own_verdicts() -> None:
    net, nodes, _ = _cluster(2, seed=3)
    node = nodes[0]
    convicted = b"\x07" * 16
    node.defense_summary = lambda: DefenseSummary(
        "auror+clipping", frozenset({convicted}), 5, {"auror_flagged": 4, "blacklisted": 1}
    )
    trust = node.status()["trust"]
    assert trust["defense"] == "auror+clipping"
    assert trust["blacklisted"] == [convicted.hex()] and trust["blacklisted_count"] == 1
    assert trust["updates_rejected"] == 5
    assert trust["rejected_by_reason"] == {"auror_flagged": 4, "blacklisted": 1}
    plain = Node(net, ("10.2.9.9", 7000), Identity.generate(), SESSION, SECRET)
    assert plain.status()["trust"] == {
        "defense": "none",
        "blacklisted": [],
        "blacklisted_count": 0,
        "updates_rejected": 0,
        "rejected_by_reason": {},
        "blacklist": None,
    }
