"""The signed path with real Ed25519 keys (``cryptography`` directly): a cluster
joins and detects a crash with every claim signed and verified, and forged
claims (refuting for someone else, hijacking an address, fake accusations,
fake goodbyes) are rejected and counted."""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from deepgossip.membership import (
    Claim,
    Gossip,
    MemberDead,
    MemberState,
    MemberSuspected,
    Refuted,
    SwimIdentity,
    node_id_from_public_key,
)
from deepgossip.membership.cluster import SimCluster, sim_address
from deepgossip.membership.signing import accusation_payload, alive_payload, left_payload
from deepgossip.net.runtime import Address

ALIVE, SUSPECT, DEAD, LEFT = MemberState


def verify_ed25519(node_id: bytes, public_key: bytes, signature: bytes, data: bytes) -> bool:
    if node_id_from_public_key(public_key) != node_id:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def ed25519_identity(name: object) -> tuple[SwimIdentity, Ed25519PrivateKey]:
    seed = hashlib.sha256(f"swim-test-key/{name!r}".encode()).digest()
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    identity = SwimIdentity(node_id_from_public_key(public), public, key.sign, verify_ed25519)
    return identity, key


def signed_cluster(n: int) -> tuple[SimCluster, dict[Address, Ed25519PrivateKey]]:
    keys: dict[Address, Ed25519PrivateKey] = {}

    def factory(address: Address) -> SwimIdentity:
        identity, key = ed25519_identity(address)
        keys[address] = key
        return identity

    c = SimCluster(seed=4, identity_factory=factory)
    addresses = [sim_address(i) for i in range(n)]
    c.add_nodes(addresses)
    for address in addresses[1:]:
        c.join(address, [addresses[0]])
    c.run_until(40)  # concurrent joins: gossip, then one push-pull round, converge
    return c, keys


def test_signed_cluster_joins_detects_a_crash_and_refutes() -> None:
    c, _ = signed_cluster(6)
    assert c.converged()
    node = c.nodes[sim_address(0)]
    assert all(len(m.public_key) == 32 for m in node.swim.members())
    assert len(node.swim.alive_claim.signature) == 64
    c.crash(sim_address(5))
    c.run_until(80)
    assert c.all_see(sim_address(5), DEAD)
    stats = sum((n.swim.stats for n in c.nodes.values()), start=__import__("collections").Counter())
    assert stats["bad.bad_signature"] == 0 and stats["internal_error"] == 0
    # A genuine accusation (signed by its accuser) makes the target refute.
    accuser, target = c.nodes[sim_address(1)], c.nodes[sim_address(2)]
    sig = accuser.identity.sign(
        accusation_payload(SUSPECT, target.identity.node_id, 0, accuser.identity.node_id)
    )
    claim = Claim(
        int(SUSPECT), target.identity.node_id, 0, accuser=accuser.identity.node_id, signature=sig
    )
    holder = c.nodes[sim_address(3)]
    holder.host.execute(holder.swim.handle(accuser.address, Gossip((claim,)), c.net.now()))
    c.run_until(110)
    assert [e.node for e in c.events(Refuted)] == [target.address]
    assert c.all_see(target.address, ALIVE)


def test_forged_claims_are_rejected_and_counted() -> None:
    c, keys = signed_cluster(4)
    victim = c.nodes[sim_address(1)]
    mallory_id, mallory_key = ed25519_identity("mallory")
    observer = c.nodes[sim_address(0)]
    vid = victim.identity.node_id
    evil: Address = ("10.66.6.6", 7946)

    def deliver(claim: Claim) -> None:
        observer.host.execute(observer.swim.handle(evil, Gossip((claim,)), c.net.now()))

    # 1. Hijack: the victim's id at Mallory's address, signed by Mallory.
    payload = alive_payload(vid, 5, evil[0], evil[1])
    deliver(Claim(int(ALIVE), vid, 5, *evil, victim.identity.public_key, mallory_key.sign(payload)))
    # 2. Same, but presenting Mallory's key: the id does not match the key.
    deliver(Claim(int(ALIVE), vid, 5, *evil, mallory_id.public_key, mallory_key.sign(payload)))
    # 3. An accusation in another member's name.
    other = c.nodes[sim_address(2)].identity.node_id
    fake = mallory_key.sign(accusation_payload(SUSPECT, vid, 0, other))
    deliver(Claim(int(SUSPECT), vid, 0, accuser=other, signature=fake))
    # 4. A goodbye on the victim's behalf.
    deliver(Claim(int(LEFT), vid, 0, signature=mallory_key.sign(left_payload(vid, 0))))
    # 5. A signature over different data (replayed from another incarnation).
    old = keys[victim.address].sign(alive_payload(vid, 0, *victim.address))
    deliver(Claim(int(ALIVE), vid, 9, *victim.address, victim.identity.public_key, old))

    info = observer.swim.member(vid)
    assert info is not None
    assert (info.state, info.incarnation, info.address) == (ALIVE, 0, victim.address)
    assert observer.swim.stats["bad.bad_signature"] == 4
    assert observer.swim.stats["bad.key_mismatch"] == 1
    c.run_until(60)
    assert c.events(MemberSuspected) == [] and c.events(MemberDead) == []


def test_nobody_can_refute_for_a_dead_member() -> None:
    c, keys = signed_cluster(4)
    c.crash(sim_address(3))
    c.run_until(80)
    assert c.all_see(sim_address(3), DEAD)
    dead = c.nodes[sim_address(3)]
    _, mallory_key = ed25519_identity("mallory")
    payload = alive_payload(dead.identity.node_id, 1, *dead.address)
    forged = Claim(
        int(ALIVE),
        dead.identity.node_id,
        1,
        *dead.address,
        dead.identity.public_key,
        mallory_key.sign(payload),
    )
    observer = c.nodes[sim_address(0)]
    observer.host.execute(observer.swim.handle(sim_address(1), Gossip((forged,)), c.net.now()))
    assert c.state_of(sim_address(0), sim_address(3)) == DEAD
    assert observer.swim.stats["bad.bad_signature"] == 1
    # The real owner of the key can (a restart would do exactly this).
    genuine = Claim(
        int(ALIVE),
        dead.identity.node_id,
        1,
        *dead.address,
        dead.identity.public_key,
        keys[dead.address].sign(payload),
    )
    observer.host.execute(observer.swim.handle(sim_address(1), Gossip((genuine,)), c.net.now()))
    assert c.state_of(sim_address(0), sim_address(3)) == ALIVE


def test_false_claims_about_ourselves_are_ignored_and_counted() -> None:
    c, keys = signed_cluster(3)
    me = c.nodes[sim_address(1)]
    vid = me.identity.node_id
    _, mallory_key = ed25519_identity("mallory")
    payload = alive_payload(vid, 7, *me.address)
    forged = [
        Claim(int(ALIVE), vid, 7, *me.address, me.identity.public_key, mallory_key.sign(payload)),
        Claim(int(LEFT), vid, 7, signature=mallory_key.sign(left_payload(vid, 7))),
    ]
    me.host.execute(me.swim.handle(sim_address(0), Gossip(tuple(forged)), c.net.now()))
    assert me.swim.stats["bad.false_self_claim"] == 2
    assert me.swim.incarnation == 0
    assert c.events(Refuted) == []
    # Our own old signature (a previous run) is genuine: we refute past it.
    genuine = keys[me.address].sign(payload)
    claim = Claim(int(ALIVE), vid, 7, *me.address, me.identity.public_key, genuine)
    me.host.execute(me.swim.handle(sim_address(0), Gossip((claim,)), c.net.now()))
    assert me.swim.incarnation == 8
