"""The gossip core driven by hand: every message in, every effect out.

No simulator here: each test feeds messages to one ``RumorCore`` and checks the
exact effects, so the protocol rules (who pulls from whom, when a rumour goes
cold, what is dropped) are pinned down one at a time.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepgossip.gossip import Equivocation, GossipConfig, ItemDelivered, RumorCore, StoreLimits
from deepgossip.gossip.item import ItemMeta, item_id_of
from deepgossip.gossip.messages import (
    Announcement,
    Bodies,
    Body,
    Digest,
    DigestReply,
    Have,
    Offer,
    OfferEntry,
    OriginSeqs,
    Pull,
    Push,
)
from deepgossip.gossip.simulation import UnsafeHashIdentity
from deepgossip.net.runtime import Address, Send

ME: Address = ("10.0.0.1", 1)
A: Address = ("10.0.0.2", 1)
B: Address = ("10.0.0.3", 1)
C: Address = ("10.0.0.4", 1)
NO_AE = GossipConfig(ae_period=math.inf)


def core(
    peers: list[Address] | None = None, config: GossipConfig = NO_AE, seed: int = 1
) -> RumorCore:
    ident = UnsafeHashIdentity(b"me")
    peer_list = peers if peers is not None else [A, B, C]
    return RumorCore(
        node_id=ident.node_id,
        public_key=ident.public_key,
        sign=ident.sign,
        verify=ident.verify,
        peers=lambda: peer_list,
        rng=random.Random(seed),
        config=config,
    )


def announce(body: bytes, seq: int = 1, kind: str = "update", inline: bool = False) -> Announcement:
    """An announcement correctly signed by a remote origin."""
    origin = UnsafeHashIdentity(b"origin")
    unsigned = ItemMeta(
        item_id_of(body), origin.node_id, origin.public_key, seq, len(body), kind, 0.0, b""
    )
    meta = replace(unsigned, signature=origin.sign(unsigned.digest()))
    return meta.announcement(body if inline else None)


def sends(effects: list[Any], kind: type | None = None) -> list[Send]:
    return [
        e for e in effects if isinstance(e, Send) and (kind is None or isinstance(e.message, kind))
    ]


def delivered(effects: list[Any]) -> list[ItemDelivered]:
    return [e for e in effects if isinstance(e, ItemDelivered)]


BIG = b"B" * 4096


# -- publishing and pushing ------------------------------------------------------------


def test_publish_signs_stores_and_pushes_at_once() -> None:
    c = core()
    item_id, effects = c.publish(BIG, "update", 0.0)
    assert item_id == item_id_of(BIG) and c.has(item_id) and c.is_hot(item_id)
    (push,) = sends(effects, Push)
    (a,) = push.message.entries
    assert push.to in (A, B, C) and not push.reliable
    assert a.body is None and a.size == 4096 and a.seq == 1 and a.kind == "update"
    assert UnsafeHashIdentity(b"me").verify(
        a.origin, a.public_key, a.signature, ItemMeta.from_announcement(a).digest()
    )
    assert c.publish(BIG, "update", 0.1) == (item_id, [])  # idempotent
    _, effects = c.publish(b"small", "update", 0.2)
    assert sends(effects, Push)[0].message.entries[0].body == b"small"  # rides inline


def test_loss_of_interest_after_k_redundant_sends() -> None:
    k = 3
    c = core(config=replace(NO_AE, redundancy_limit=k, max_push_rounds=100))
    item_id, effects = c.publish(BIG, "update", 0.0)
    pushes = sends(effects, Push)
    now = 0.0
    while c.is_hot(item_id):
        for push in pushes:  # every receiver already had it
            c.handle(push.to, Have((item_id,)), now + 0.001)
        now = c.next_deadline()
        pushes = sends(c.tick(now), Push)
    assert c.stats.sent["gossip.push"] == k
    assert c.stats.events["cold_feedback"] == 1
    assert c.next_deadline() == c.config.store.max_age  # no round left: only GC
    assert sends(c.tick(now + 10), Push) == []


def test_pushes_skip_known_holders_and_stop_after_max_rounds() -> None:
    c = core(peers=[A, B], config=replace(NO_AE, max_push_rounds=4))
    item_id, effects = c.publish(BIG, "update", 0.0)
    targets = [s.to for s in sends(effects, Push)]
    c.handle(A, Pull(1, (item_id,)), 0.01)  # A pulls: it will hold it
    now = 0.0
    while c.is_hot(item_id):  # feedback never arrives (all lost)
        now = c.next_deadline()
        targets += [s.to for s in sends(c.tick(now), Push)]
    assert set(targets[1:]) <= {B} and len(targets) == 5  # eager push + 4 rounds
    assert c.stats.events["cold_max_rounds"] == 1


def test_have_from_a_peer_not_pushed_to_is_ignored() -> None:
    c = core(config=replace(NO_AE, redundancy_limit=1))
    item_id, effects = c.publish(BIG, "update", 0.0)
    target = sends(effects, Push)[0].to
    stranger = next(p for p in (A, B, C) if p != target)
    c.handle(stranger, Have((item_id,)), 0.01)
    assert c.is_hot(item_id) and c.stats.dropped["unsolicited_have"] == 1
    c.handle(target, Have((item_id,)), 0.01)
    assert not c.is_hot(item_id)


# -- receiving rumours ------------------------------------------------------------------


def test_inline_rumour_is_delivered_once_and_spread() -> None:
    c = core()
    a = announce(b"tiny", inline=True)
    effects = c.handle(A, Push((a,)), 1.0)
    (event,) = delivered(effects)
    assert event.body == b"tiny" and event.via == "rumour" and event.kind == "update"
    assert sends(effects, Pull) == [] and c.is_hot(a.item_id)
    assert all(s.to != A for s in sends(effects, Push))  # A has it: not pushed back
    again = c.handle(B, Push((a,)), 1.1)
    assert delivered(again) == []
    assert sends(again, Have)[0].message.ids == (a.item_id,)


def test_large_rumour_is_pulled_from_the_announcer() -> None:
    c = core()
    a = announce(BIG)
    effects = c.handle(A, Push((a,)), 1.0)
    (pull,) = sends(effects, Pull)
    assert pull.to == A and pull.reliable and pull.message.ids == (a.item_id,)
    assert sends(c.handle(B, Push((a,)), 1.01), Have)  # pending counts as known
    effects = c.handle(A, Bodies(pull.message.request, (Body(a.item_id, BIG),)), 1.02)
    (event,) = delivered(effects)
    assert event.body == BIG and event.origin == a.origin and event.seq == 1
    assert {s.to for s in sends(effects, Push)} <= {C}  # A and B hold it
    # A second copy is unsolicited now: dropped, no second delivery.
    assert delivered(c.handle(A, Bodies(99, (Body(a.item_id, BIG),)), 1.03)) == []
    assert c.stats.dropped["unsolicited_body"] == 1


def test_pull_times_out_and_retries_another_holder() -> None:
    c = core()
    a = announce(BIG)
    first = sends(c.handle(A, Push((a,)), 0.0), Pull)[0]
    c.handle(B, Push((a,)), 0.1)  # B holds it too
    deadline = c.next_deadline()
    assert 2.0 <= deadline <= 2.01  # pull_timeout + 4 KiB at 1 MiB/s
    retry = sends(c.tick(deadline), Pull)
    assert [s.to for s in retry] == [B] and first.to == A
    assert c.pulls.events["pull_timeout"] == 1 and c.pulls.events["pull_retry"] == 1
    effects = c.handle(B, Bodies(retry[0].message.request, (Body(a.item_id, BIG),)), 2.1)
    assert len(delivered(effects)) == 1
    # The first holder's answer arrives late: ignored, nothing delivered twice.
    late = c.handle(A, Bodies(first.message.request, (Body(a.item_id, BIG),)), 2.2)
    assert delivered(late) == []


def test_holder_without_the_body_sends_us_elsewhere_at_once() -> None:
    c = core()
    a = announce(BIG)
    pull = sends(c.handle(A, Push((a,)), 0.0), Pull)[0]
    c.handle(B, Push((a,)), 0.0)
    retry = sends(c.handle(A, Bodies(pull.message.request, (), (a.item_id,)), 0.1), Pull)
    assert [s.to for s in retry] == [B]


def test_hash_mismatch_is_rejected_counted_and_retried() -> None:
    c = core()
    a = announce(BIG)
    pull = sends(c.handle(A, Push((a,)), 0.0), Pull)[0]
    c.handle(B, Push((a,)), 0.0)
    evil = b"E" * 4096  # right size, wrong content
    effects = c.handle(A, Bodies(pull.message.request, (Body(a.item_id, evil),)), 0.1)
    assert delivered(effects) == [] and not c.has(a.item_id)
    assert c.stats.dropped["hash_mismatch"] == 1
    assert [s.to for s in sends(effects, Pull)] == [B]
    # An inline body that is not its id is dropped as well.
    bad_inline = replace(announce(b"tiny", seq=2, inline=True), body=b"tinY")
    assert delivered(c.handle(A, Push((bad_inline,)), 0.2)) == []
    assert c.stats.dropped["hash_mismatch"] == 2


def test_bad_origin_signature_is_dropped() -> None:
    c = core()
    a = announce(BIG)
    forged = [
        replace(a, signature=b"\x00" * 32),
        replace(a, kind="accusation"),  # metadata altered by a relay
        replace(a, public_key=UnsafeHashIdentity(b"other").public_key),  # key not the id's
    ]
    for f in forged:
        assert c.handle(A, Push((f,)), 0.0) == []
    assert c.stats.dropped["bad_signature"] == 3 and len(c.pulls) == 0
    assert sends(c.handle(A, Push((a,)), 0.0), Pull)  # the genuine one still goes


def test_ed25519_signatures_end_to_end() -> None:
    """Real Ed25519 (cryptography) through the injected sign/verify callables."""

    def raw(key: Ed25519PublicKey) -> bytes:
        return key.public_bytes(Encoding.Raw, PublicFormat.Raw)

    def verify(node_id: bytes, public_key: bytes, signature: bytes, data: bytes) -> bool:
        if item_id_of(public_key)[:16] != node_id:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True

    def make(seed: int, peers: list[Address]) -> RumorCore:
        key = Ed25519PrivateKey.generate()
        pk = raw(key.public_key())
        return RumorCore(
            node_id=item_id_of(pk)[:16],
            public_key=pk,
            sign=key.sign,
            verify=verify,
            peers=lambda: peers,
            rng=random.Random(seed),
            config=NO_AE,
        )

    alice, bob = make(1, [B]), make(2, [A])
    mallory_key = Ed25519PrivateKey.generate()
    mallory_id = item_id_of(raw(mallory_key.public_key()))[:16]
    item_id, effects = alice.publish(b"weights", "update", 0.0)
    (push,) = sends(effects, Push)
    (event,) = delivered(bob.handle(A, push.message, 0.01))
    assert event.body == b"weights" and event.origin == alice.node_id
    # Mallory re-signs Alice's announcement with her own key but Alice's id/key...
    entry = push.message.entries[0]
    forged = replace(entry, kind="accusation", body=b"weights")
    forged = replace(
        forged, signature=mallory_key.sign(ItemMeta.from_announcement(forged).digest())
    )
    other = make(4, [B])
    assert delivered(other.handle(C, Push((forged,)), 0.0)) == []
    # ...or claims her own id with Alice's key: both rejected.
    stolen = replace(entry, origin=mallory_id)
    assert delivered(other.handle(C, Push((stolen,)), 0.0)) == []
    assert other.stats.dropped["bad_signature"] == 2
    assert item_id == entry.item_id
    assert delivered(other.handle(C, Push((entry,)), 0.0))  # the genuine one passes


def test_absurd_and_malformed_announcements_are_dropped() -> None:
    c = core()
    a = announce(BIG)
    cases = {
        "absurd_size": replace(a, size=2**40),
        "bad_id": replace(a, item_id=b"short"),
        "bad_seq": replace(a, seq=-1),
        "bad_kind": replace(a, kind="x" * 1000),
        "bad_created": replace(a, created=math.nan),
        "size_mismatch": replace(a, body=b"not 4096 bytes"),
    }
    for reason, bad in cases.items():
        assert c.handle(A, Push((bad,)), 0.0) == [], reason
        assert c.stats.dropped[reason] == 1, reason
    c.handle(A, Push((a,) * 600), 0.0)
    assert c.stats.dropped["oversized_message"] == 1
    assert len(c.pulls) == 0


def test_unsolicited_bodies_and_replies_are_dropped() -> None:
    c = core()
    assert c.handle(A, Bodies(7, (Body(item_id_of(BIG), BIG),)), 0.0) == []
    assert c.handle(A, DigestReply((), 0, 10, ()), 0.0) == []
    assert c.stats.dropped["unsolicited_body"] == 1
    assert c.stats.dropped["unsolicited_digest_reply"] == 1
    assert not c.has(item_id_of(BIG))


def test_pulls_in_flight_are_rate_limited() -> None:
    c = core(config=replace(NO_AE, max_pulls_in_flight=3, max_pulls_per_holder=1))
    bodies = [bytes([i]) * 2000 for i in range(8)]
    pulls: list[Send] = []
    for i, body in enumerate(bodies):
        holder = (A, B, C, ("10.0.0.5", 1))[i % 4]
        pulls += sends(c.handle(holder, Push((announce(body, seq=i + 1),)), 0.0), Pull)
    assert len(pulls) == 3 and len({p.to for p in pulls}) == 3
    assert c.pulls.in_flight == 3 and len(c.pulls) == 8
    # Answering one frees one slot and starts the next pull at once.
    p = pulls[0]
    ids = p.message.ids
    body = next(b for b in bodies if item_id_of(b) == ids[0])
    more = sends(c.handle(p.to, Bodies(p.message.request, (Body(ids[0], body),)), 0.1), Pull)
    assert c.pulls.in_flight == 3 and len(more) == 1


def test_small_items_from_one_holder_are_batched() -> None:
    c = core()
    anns = tuple(announce(bytes([i]) * 2000, seq=i + 1) for i in range(5))
    pulls = sends(c.handle(A, Push(anns), 0.0), Pull)
    assert len(pulls) == 1 and len(pulls[0].message.ids) == 5


# -- anti-entropy -----------------------------------------------------------------------


def test_digest_exchange_offers_both_ways() -> None:
    cfg = replace(NO_AE, ae_period=1.0)
    c = core(peers=[A], config=cfg)
    mine, _ = c.publish(BIG, "update", 0.0)
    now = c.anti_entropy.next_at
    (digest,) = sends(c.tick(now), Digest)
    assert digest.to == A and digest.reliable
    assert digest.message.origins == (OriginSeqs(c.node_id[:8], (1, 1)),)
    theirs = announce(b"their update")
    reply = DigestReply((OfferEntry(theirs, 100.0),), digest.message.lo, digest.message.hi, ())
    effects = c.handle(A, reply, now + 0.01)
    (offer,) = sends(effects, Offer)  # A's empty digest: it lacks my item
    assert offer.message.offers[0].announcement.item_id == mine
    (pull,) = sends(effects, Pull)  # and I pull what A offered
    assert pull.message.ids == (theirs.item_id,)
    done = c.handle(A, Bodies(pull.message.request, (Body(theirs.item_id, b"their update"),)), 1)
    (event,) = delivered(done)
    assert event.via == "anti_entropy" and not c.is_hot(theirs.item_id)  # old: not rekindled


def test_digest_answer_and_bad_digest() -> None:
    c = core()
    c.publish(BIG, "update", 0.0)
    (reply,) = sends(c.handle(A, Digest(0, 2**64 - 1, ()), 1.0), DigestReply)
    assert len(reply.message.offers) == 1 and reply.message.origins[0].ranges == (1, 1)
    assert c.handle(A, Digest(5, 1, ()), 1.0) == []
    assert c.handle(A, Digest(0, 9, (OriginSeqs(b"x" * 8, (5, 1)),)), 1.0) == []
    assert c.stats.dropped["bad_digest"] == 2


# -- garbage collection ----------------------------------------------------------------


def test_old_items_are_collected_and_not_fetched_again() -> None:
    cfg = replace(NO_AE, store=StoreLimits(max_age=10.0, tombstone_ttl=30.0))
    c = core(config=cfg)
    a = announce(b"tiny", inline=True)
    assert delivered(c.handle(A, Push((a,)), 0.0))
    c.tick(c.next_deadline())  # rumour rounds...
    while c.next_deadline() < 10.0:
        c.tick(c.next_deadline())
    c.tick(10.0)
    assert not c.has(a.item_id) and c.stats.events["collected"] == 1
    assert delivered(c.handle(B, Push((a,)), 11.0)) == []  # tombstone
    assert sends(c.handle(B, Push((a,)), 11.0), Have)
    c.tick(41.0)
    assert delivered(c.handle(B, Push((a,)), 42.0)) == []  # floor
    assert c.stats.dropped["stale"] == 1


# -- robustness -------------------------------------------------------------------------

blobs = st.binary(max_size=40)
announcements = st.builds(
    Announcement,
    item_id=st.one_of(blobs, st.just(item_id_of(b"x"))),
    origin=blobs,
    public_key=blobs,
    seq=st.integers(-5, 2**64 - 1),
    size=st.integers(-5, 2**40),
    kind=st.text(max_size=80),
    created=st.floats(allow_nan=True),
    signature=blobs,
    body=st.one_of(st.none(), st.just(b"x"), blobs),
)
ranges = st.lists(st.integers(0, 2**64 - 1), max_size=6).map(tuple)
messages = st.one_of(
    st.builds(Push, st.lists(announcements, max_size=4).map(tuple)),
    st.builds(Have, st.lists(blobs, max_size=4).map(tuple)),
    st.builds(Pull, st.integers(-5, 10), st.lists(blobs, max_size=4).map(tuple)),
    st.builds(
        Bodies,
        st.integers(-5, 10),
        st.lists(st.builds(Body, blobs, blobs), max_size=3).map(tuple),
        st.lists(blobs, max_size=3).map(tuple),
    ),
    st.builds(
        Digest,
        st.integers(-5, 2**64),
        st.integers(-5, 2**64),
        st.lists(st.builds(OriginSeqs, blobs, ranges), max_size=3).map(tuple),
    ),
    st.builds(
        Offer, st.lists(st.builds(OfferEntry, announcements, st.floats()), max_size=3).map(tuple)
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, max_size=6))
def test_handle_never_raises_on_garbage(msgs: list[Any]) -> None:
    c = core(config=replace(NO_AE, ae_period=1.0))
    c.publish(b"x", "update", 0.0)
    now = 0.0
    for msg in msgs:
        c.handle(A, msg, now)
        now += 0.5
        if c.next_deadline() <= now:
            c.tick(now)


def test_equivocating_origin_is_reported() -> None:
    c = core()
    first, second = announce(b"one", seq=5, inline=True), announce(b"two", seq=5, inline=True)
    c.handle(A, Push((first,)), 0.0)
    effects = c.handle(B, Push((second,)), 0.1)
    (event,) = [e for e in effects if isinstance(e, Equivocation)]
    assert event.seq == 5 and event.item_ids == (first.item_id, second.item_id)
    assert len(delivered(effects)) == 1  # both are valid signed items: the trust layer decides


def test_anti_entropy_offers_carry_small_bodies() -> None:
    c = core()
    small, _ = c.publish(b"small", "update", 0.0)
    big, _ = c.publish(BIG, "update", 0.0)
    (reply,) = sends(c.handle(A, Digest(0, 2**64 - 1, ()), 1.0), DigestReply)
    bodies = {o.announcement.item_id: o.announcement.body for o in reply.message.offers}
    assert bodies == {small: b"small", big: None}
    other = core(peers=[A], config=replace(NO_AE, ae_period=1.0), seed=2)
    other.tick(other.anti_entropy.next_at)  # sends its digest to A
    effects = other.handle(A, reply.message, 1.1)
    assert [e.item_id for e in delivered(effects)] == [small]  # no pull needed
    assert [s.message.ids for s in sends(effects, Pull)] == [(big,)]
