"""Whole nodes (identity, AES-GCM frames, Ed25519-signed claims and items, SWIM,
gossip) in the simulator: the real crypto path, deterministic."""

from __future__ import annotations

import random

from deepgossip.gossip.events import ItemDelivered
from deepgossip.membership.events import MemberDead
from deepgossip.net.sim import LinkModel, SimNetwork
from deepgossip.node import Node
from deepgossip.session import Session
from deepgossip.wire.identity import Identity
from deepgossip.wire.session import new_join_secret, secret_fingerprint

SECRET = new_join_secret()
SESSION = Session("sim-nodes", secret_sha256=secret_fingerprint(SECRET))


def _cluster(n: int, seed: int = 0, loss: float = 0.0) -> tuple[SimNetwork, list[Node]]:
    net = SimNetwork(seed=seed, link=LinkModel(loss=loss))
    rng = random.Random(seed)
    nodes = []
    for i in range(n):
        address = (f"10.0.0.{i + 1}", 7000)
        identity = Identity.from_private_bytes(rng.randbytes(32))
        node = Node(
            net, address, identity, SESSION, SECRET, rng=net.rng_for(address), wall_clock=net.now
        )
        net.attach(address, node.host.receive)
        nodes.append(node)
    for i, node in enumerate(nodes):
        node.start([nodes[0].address] if i else [])
    return net, nodes


def _live_views(nodes: list[Node]) -> list[set[bytes]]:
    return [{m.node_id for m in node.swim.live_members()} for node in nodes]


def test_nodes_join_gossip_a_signed_item_and_detect_a_crash() -> None:
    net, nodes = _cluster(6, loss=0.02)
    ids = {node.node_id for node in nodes}
    net.run_until(40)
    assert all(view == ids - {n.node_id} for view, n in zip(_live_views(nodes), nodes, strict=True))

    delivered: list[tuple[int, ItemDelivered]] = []
    for i, node in enumerate(nodes):
        node.host.subscribe(
            lambda e, i=i: delivered.append((i, e)) if isinstance(e, ItemDelivered) else None
        )
    body = bytes(range(256)) * 64  # 16 KiB: announced, then pulled over the stream lane
    item_id = nodes[2].publish(body, "test")
    net.run_for(10)
    receivers = sorted(i for i, e in delivered if e.item_id == item_id)
    assert receivers == [0, 1, 3, 4, 5]
    assert all(e.body == body and e.origin == nodes[2].node_id for _, e in delivered)

    dead: list[tuple[int, MemberDead]] = []
    for i, node in enumerate(nodes):
        node.host.subscribe(
            lambda e, i=i: dead.append((i, e)) if isinstance(e, MemberDead) else None
        )
    victim = nodes[5]
    net.detach(victim.address)
    victim.stop()
    net.run_for(30)
    assert {i for i, e in dead if e.member.node_id == victim.node_id} == {0, 1, 2, 3, 4}
    assert all(e.member.node_id == victim.node_id for _, e in dead)  # no false positives
    status = nodes[0].status()
    assert status["members"]["live"] == 4
    assert status["gossip"]["items"] >= 1
    assert sum(status["dropped"].values()) == 0


def test_a_node_without_the_join_secret_cannot_join_or_inject() -> None:
    net, nodes = _cluster(3)
    net.run_until(20)
    outsider_secret = new_join_secret()
    outsider = Node(
        net,
        ("10.0.0.99", 7000),
        Identity.generate(),
        Session("sim-nodes", secret_sha256=secret_fingerprint(outsider_secret)),
        outsider_secret,
        rng=net.rng_for("outsider"),
        wall_clock=net.now,
    )
    net.attach(outsider.address, outsider.host.receive)
    outsider.start([nodes[0].address])
    outsider.publish(b"poison" * 100, "test")
    net.run_for(20)
    assert outsider.node_id not in set().union(*_live_views(nodes))
    assert outsider.swim.live_count == 0
    assert nodes[0].codec.stats.dropped["bad_tag"] > 0  # counted, not crashed
    assert all(node.swim.live_count == 2 for node in nodes)


def test_same_seed_same_run() -> None:
    def trace(seed: int) -> list[tuple[float, str]]:
        net, nodes = _cluster(4, seed=seed, loss=0.05)
        events: list[tuple[float, str]] = []
        for node in nodes:
            node.host.subscribe(lambda e: events.append((round(net.now(), 6), type(e).__name__)))
        net.run_until(30)
        return events

    assert trace(3) == trace(3)
