"""Signed blacklist gossip: the accusation record, quorum adoption, own evidence,
replays and retractions, neighbour polls, and whole simulated nodes.

Real Ed25519 keys (seeded) and the real message codec throughout: nothing here
mocks the crypto."""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest

from deepgossip.gossip.events import ItemDelivered
from deepgossip.net.runtime import Address, Send
from deepgossip.net.sim import SimNetwork
from deepgossip.node import Node
from deepgossip.session import Session
from deepgossip.trust.accusation import (
    ACCUSATION_KIND,
    FORMAT,
    SIGN_DOMAIN,
    Accusation,
    AccusationLimits,
    AccusationRejected,
    Evidence,
    open_accusation,
    sign_accusation,
)
from deepgossip.trust.blacklist import (
    BlacklistConfig,
    BlacklistCore,
    PeerBlacklisted,
    PeerUnblacklisted,
    PollDecided,
    PollReply,
    PollRequest,
    quorum_size,
)
from deepgossip.wire.identity import Identity
from deepgossip.wire.message import to_wire
from deepgossip.wire.session import new_join_secret, secret_fingerprint

T0 = 1_700_000_000.0  # wall-clock time of the unit tests (core time = wall time)
IDS = [Identity.from_private_bytes(hashlib.sha256(b"trust/%d" % i).digest()) for i in range(12)]
ME, ACCUSED = IDS[0], IDS[11]
EVIDENCE = (Evidence(hashlib.sha256(b"update-1").digest(), 7, 0.9),)


def accuse(
    accuser: Identity,
    accused: Identity = ACCUSED,
    *,
    seq: int = 1,
    at: float = T0,
    withdraw: bool = False,
    evidence: Sequence[Evidence] = EVIDENCE,
) -> bytes:
    return sign_accusation(
        accuser,
        accused.node_id,
        seq=seq,
        issued_at=at,
        reason="auror",
        suspicion=0.8,
        evidence=evidence,
        withdraw=withdraw,
    )


def delivered(body: bytes, origin: Identity, now: float = T0) -> ItemDelivered:
    """What RumorCore emits for a gossip item (its origin signature was checked)."""
    return ItemDelivered(
        hashlib.sha256(body).digest(),
        ACCUSATION_KIND,
        origin.node_id,
        1,
        body,
        len(body),
        now,
        origin.public_key_bytes,
        "rumour",
        now,
    )


def signed_payload(signer: Identity, fields: list[Any]) -> bytes:
    """A correctly signed body around an arbitrary payload (to test the receiver)."""
    payload = msgpack.packb(fields, use_bin_type=True)
    return msgpack.packb([FORMAT, payload, signer.sign(SIGN_DOMAIN + payload)], use_bin_type=True)


def fields_of(accuser: Identity, **changes: Any) -> list[Any]:
    acc = Accusation(
        accuser.node_id, accuser.public_key_bytes, ACCUSED.node_id, 1, T0, "auror", 0.8, EVIDENCE
    )
    _, fields = to_wire(acc)
    names = ["accuser", "public_key", "accused", "seq", "issued_at", "reason", "suspicion"]
    names += ["evidence", "withdraw"]
    for name, value in changes.items():
        fields[names.index(name)] = value
    return fields


@dataclass
class Harness:
    """One core with recording callbacks."""

    core: BlacklistCore
    published: list[bytes] = field(default_factory=list)
    suspicion: dict[bytes, float] = field(default_factory=dict)
    seen_evidence: list[tuple[bytes, tuple[Evidence, ...]]] = field(default_factory=list)
    own_evidence: dict[bytes, tuple[Evidence, ...]] = field(default_factory=dict)


def harness(
    me: Identity = ME,
    n: int = 10,
    live: Sequence[tuple[bytes, Address]] = (),
    config: BlacklistConfig | None = None,
    seed: int = 0,
) -> Harness:
    h: Harness

    def publish(body: bytes, kind: str, now: float) -> list[Any]:
        assert kind == ACCUSATION_KIND
        h.published.append(body)
        return []

    def own(peer: bytes, evidence: Sequence[Evidence]) -> float | None:
        h.seen_evidence.append((peer, tuple(evidence)))
        return h.suspicion.get(peer)

    core = BlacklistCore(
        signer=me,
        publish=publish,
        live_peers=lambda: list(live),
        n_estimate=lambda: n,
        own_suspicion=own,
        own_evidence=lambda peer: h.own_evidence.get(peer, ()),
        rng=random.Random(seed),
        config=config or BlacklistConfig(),
        now=T0,
    )
    h = Harness(core)
    return h


# -- the record ---------------------------------------------------------------------


def test_sign_open_roundtrip() -> None:
    evidence = [Evidence(hashlib.sha256(b"u%d" % i).digest(), i, i / 10) for i in range(16)]
    body = accuse(IDS[1], seq=42, evidence=evidence)
    acc = open_accusation(body)
    assert acc.accuser == IDS[1].node_id and acc.public_key == IDS[1].public_key_bytes
    assert (acc.accused, acc.seq, acc.issued_at) == (ACCUSED.node_id, 42, T0)
    assert (acc.reason, acc.suspicion, acc.withdraw) == ("auror", 0.8, False)
    assert acc.evidence == tuple(evidence)
    assert len(body) <= AccusationLimits().max_body_bytes


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        # A flipped signature bit, a payload altered after signing, no signature.
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "bad_signature"),
        (lambda b: b.replace(ACCUSED.node_id, IDS[5].node_id), "bad_signature"),
        (lambda b: msgpack.packb([FORMAT, msgpack.unpackb(b)[1], b""]), "bad_signature"),
        (lambda b: msgpack.packb(["dg-accuse/9", *msgpack.unpackb(b)[1:]]), "unknown_format"),
        (lambda b: b[:40], "malformed"),
        (lambda b: b"\x93\x01\x02", "malformed"),
        (lambda b: msgpack.packb([FORMAT, b"\xc1", bytes(64)]), "malformed"),
        (lambda b: b + bytes(5000), "oversized"),
    ],
)
def test_forged_unsigned_and_garbled_accusations_are_refused(mutate: Any, reason: str) -> None:
    body = mutate(accuse(IDS[1]))
    with pytest.raises(AccusationRejected) as info:
        open_accusation(body)
    assert info.value.reason == reason
    h = harness()
    assert h.core.on_item(delivered(body, IDS[1])) == []
    assert h.core.dropped == {reason: 1} and not h.core.blacklisted()


class _Impostor:
    """Claims one node's id while holding another's key (or signing with it)."""

    def __init__(self, node_id: bytes, public_key: bytes, signer: Identity) -> None:
        self.node_id, self.public_key_bytes, self._signer = node_id, public_key, signer

    def sign(self, data: bytes) -> bytes:
        return self._signer.sign(data)


def test_wrong_signer_is_refused() -> None:
    a, b = IDS[1], IDS[2]
    # b's key under a's id: the key does not hash to the claimed accuser.
    body = accuse(_Impostor(a.node_id, b.public_key_bytes, b))
    with pytest.raises(AccusationRejected, match="wrong_signer"):
        open_accusation(body)
    # a's id and key, but b signed: the signature does not verify.
    body = accuse(_Impostor(a.node_id, a.public_key_bytes, b))
    with pytest.raises(AccusationRejected, match="bad_signature"):
        open_accusation(body)
    # A genuine record of a's published by b (re-published under another origin).
    h = harness()
    h.core.on_item(delivered(accuse(a), origin=b))
    assert h.core.dropped == {"origin_mismatch": 1}


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"evidence": [[bytes(32), 1, 0.5]] * 17}, "oversized"),  # msgpack limit
        ({"reason": "x" * 65}, "oversized"),
        ({"evidence": [[bytes(31), 1, 0.5]]}, "bad_evidence"),
        ({"evidence": [[bytes(32), -1, 0.5]]}, "bad_evidence"),
        ({"evidence": [[bytes(32), 1, math.nan]]}, "bad_evidence"),
        ({"evidence": [[bytes(32), 1]]}, "malformed"),
        ({"evidence": "not a list"}, "malformed"),
        ({"seq": -1}, "bad_value"),
        ({"suspicion": 1.5}, "bad_value"),
        ({"issued_at": math.inf}, "bad_value"),
        ({"accused": IDS[1].node_id}, "self_accusation"),
        ({"accused": b"short"}, "bad_id"),
        ({"withdraw": 1}, "malformed"),
    ],
)
def test_malformed_and_oversized_fields_are_refused(changes: dict[str, Any], reason: str) -> None:
    # Correctly signed by the accuser: only the receiver's validation stands in the way.
    body = signed_payload(IDS[1], fields_of(IDS[1], **changes))
    with pytest.raises(AccusationRejected) as info:
        open_accusation(body)
    assert info.value.reason == reason


def test_limits_are_enforced_before_allocation() -> None:
    # A payload that declares a 4-billion-entry evidence list in a few bytes.
    fields = msgpack.packb(fields_of(IDS[1])[:7], use_bin_type=True)
    payload = b"\x99" + fields[1:] + b"\xdd\xff\xff\xff\xff"
    body = msgpack.packb([FORMAT, payload, IDS[1].sign(SIGN_DOMAIN + payload)])
    with pytest.raises(AccusationRejected, match="oversized"):
        open_accusation(body)
    # Stricter limits than the sender's: refused by count, not by msgpack.
    limits = AccusationLimits(max_evidence=1)
    body = accuse(IDS[1], evidence=EVIDENCE * 2)
    with pytest.raises(AccusationRejected, match="oversized"):
        open_accusation(body, limits)


def test_signing_refuses_records_peers_would_drop() -> None:
    with pytest.raises(AccusationRejected, match="oversized"):
        accuse(IDS[1], evidence=EVIDENCE * 17)
    with pytest.raises(AccusationRejected, match="self_accusation"):
        accuse(IDS[1], IDS[1])
    with pytest.raises(ValueError):
        harness().core.local_verdict(IDS[1].node_id, 0.9, [Evidence(b"x", 1, 0.5)], T0)


def test_garbage_never_escapes_the_core() -> None:
    rng = random.Random(7)
    valid = accuse(IDS[1])
    h = harness()
    for i in range(300):
        body = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        if i % 3 == 0:
            body = body[: rng.randrange(len(body))]
        h.core.on_item(delivered(bytes(body), IDS[1]))
    assert sum(h.core.dropped.values()) + h.core.events["accepted"] == 300
    assert h.core.events["accepted"] == 0  # no corruption of a signed record passes


# -- replays and freshness ------------------------------------------------------------


def test_replayed_old_and_future_accusations_are_dropped() -> None:
    h = harness()
    core = h.core
    core.on_item(delivered(accuse(IDS[1], seq=5), IDS[1]))
    core.on_item(delivered(accuse(IDS[1], seq=5, at=T0 + 1), IDS[1]))  # same seq, new bytes
    core.on_item(delivered(accuse(IDS[1], seq=4), IDS[1]))  # older
    assert core.dropped == {"replayed": 2}
    core.on_item(delivered(accuse(IDS[2], at=T0 - 601), IDS[2]))
    core.on_item(delivered(accuse(IDS[2], at=T0 + 61), IDS[2]))
    core.on_item(delivered(accuse(IDS[2], at=T0 + 59), IDS[2]))  # within clock skew
    core.on_item(delivered(accuse(IDS[3], ME), IDS[3]))
    assert core.dropped == {"replayed": 2, "too_old": 1, "from_future": 1, "about_self": 1}
    assert core.accusers_of(ACCUSED.node_id) == tuple(sorted([IDS[1].node_id, IDS[2].node_id]))
    assert core.accused() == {ACCUSED.node_id}  # it stands accused here ...
    assert not core.is_blacklisted(ACCUSED.node_id)  # ... by fewer than a quorum


def test_memory_per_accuser_is_bounded() -> None:
    h = harness(config=BlacklistConfig(max_accused_per_accuser=2))
    for target in IDS[3:6]:
        h.core.on_item(delivered(accuse(IDS[1], target), IDS[1]))
    assert h.core.dropped == {"accuser_over_limit": 1}


# -- quorum and own evidence -----------------------------------------------------------


def test_quorum_strictly_exceeds_the_malicious_fraction() -> None:
    assert [quorum_size(n, 0.3, 2) for n in (1, 3, 4, 10, 20, 100)] == [2, 2, 2, 4, 7, 31]
    for n in range(1, 2000):
        q = quorum_size(n, 0.3, 1)
        assert q > 0.3 * n - 1e-9 and 10 * (q - 1) <= 3 * n  # the smallest such integer


def test_the_quorum_does_not_shrink_with_the_live_count() -> None:
    # Blacklisting one attacker of 10 (or SWIM lies declaring it dead) drops the
    # live estimate to 9; the quorum must stay at 4, or 3 colluders would suffice.
    sizes = itertools.chain([10], itertools.repeat(9))
    h = harness()
    h.core._n_estimate = lambda: next(sizes)
    assert h.core.quorum() == 4
    for colluder in IDS[1:4]:
        assert h.core.on_item(delivered(accuse(colluder), colluder)) == []
    assert not h.core.is_blacklisted(ACCUSED.node_id) and h.core.quorum() == 4


def test_thirty_percent_of_colluders_cannot_banish_an_honest_node() -> None:
    h = harness(n=10)
    out = []
    for colluder in IDS[1:4]:  # 3 of 10
        out += h.core.on_item(delivered(accuse(colluder), colluder))
    assert out == [] and not h.core.is_blacklisted(ACCUSED.node_id)
    assert len(h.core.accusers_of(ACCUSED.node_id)) == 3
    # A fourth distinct accuser makes a quorum (4 > 0.3 * 10).
    [event] = h.core.on_item(delivered(accuse(IDS[4]), IDS[4]))
    assert event == PeerBlacklisted(
        ACCUSED.node_id, "quorum", tuple(sorted(i.node_id for i in IDS[1:5]))
    )
    assert h.core.is_blacklisted(ACCUSED.node_id) and h.core.blacklisted() == {ACCUSED.node_id}
    entry = h.core.entry(ACCUSED.node_id)
    assert entry is not None and entry.by == "quorum" and entry.reasons == ("auror",)


def test_one_accuser_counts_once_however_often_it_accuses() -> None:
    h = harness(n=4)  # quorum 2
    for seq in range(1, 6):
        h.core.on_item(delivered(accuse(IDS[1], seq=seq, at=T0 + seq), IDS[1]))
    assert h.core.accusers_of(ACCUSED.node_id) == (IDS[1].node_id,)
    assert not h.core.is_blacklisted(ACCUSED.node_id)
    h.core.on_item(delivered(accuse(IDS[2]), IDS[2]))
    assert h.core.is_blacklisted(ACCUSED.node_id)


def test_own_agreeing_evidence_adopts_a_single_accusation() -> None:
    h = harness(n=10)
    h.suspicion[ACCUSED.node_id] = 0.2  # our detector disagrees: not adopted
    assert h.core.on_item(delivered(accuse(IDS[1]), IDS[1])) == []
    assert h.seen_evidence == [(ACCUSED.node_id, EVIDENCE)]  # it could check the digests
    h.suspicion[ACCUSED.node_id] = 0.45  # it leans the same way
    [event] = h.core.on_item(delivered(accuse(IDS[2]), IDS[2]))
    assert isinstance(event, PeerBlacklisted) and event.by == "own_evidence"
    # The detector changes its mind: the periodic review lifts the entry.
    h.suspicion[ACCUSED.node_id] = 0.1
    now = h.core.next_deadline()
    assert now == T0 + 30.0
    assert h.core.tick(now) == [PeerUnblacklisted(ACCUSED.node_id, "review")]


def test_reconsider_adopts_a_held_accusation_once_own_evidence_agrees() -> None:
    h = harness(n=10)
    h.suspicion[ACCUSED.node_id] = 0.2
    assert h.core.on_item(delivered(accuse(IDS[1]), IDS[1])) == []
    assert h.core.reconsider(T0 + 1.0) == []  # nothing changed: still held
    h.suspicion[ACCUSED.node_id] = 0.45  # the next evaluation leans the same way
    [event] = h.core.reconsider(T0 + 2.0)
    assert event == PeerBlacklisted(ACCUSED.node_id, "own_evidence", (IDS[1].node_id,))
    assert h.core.reconsider(T0 + 3.0) == []  # listed peers are not re-judged here


def test_own_evidence_adoption_endorses_while_the_evidence_lasts() -> None:
    h = harness(n=10)
    h.suspicion[ACCUSED.node_id] = 0.45
    h.own_evidence[ACCUSED.node_id] = EVIDENCE[:1]
    [event] = h.core.on_item(delivered(accuse(IDS[1]), IDS[1]))
    assert event.by == "own_evidence"  # type: ignore[attr-defined]
    [body] = h.published  # our endorsement, with our own score and evidence
    endorsement = open_accusation(body)
    assert (endorsement.accuser, endorsement.accused) == (ME.node_id, ACCUSED.node_id)
    assert endorsement.reason == "endorse" and endorsement.suspicion == 0.45
    assert endorsement.evidence == EVIDENCE[:1] and not endorsement.withdraw
    # It counts toward another node's quorum like any accusation.
    other = harness(IDS[5], n=4)  # quorum 2
    assert other.core.on_item(delivered(accuse(IDS[1]), IDS[1])) == []
    [adopted] = other.core.on_item(delivered(body, ME))
    assert adopted == PeerBlacklisted(ACCUSED.node_id, "quorum", (ME.node_id, IDS[1].node_id))
    # Renewed like a verdict while it stands ...
    assert h.core.next_deadline() == T0 + 30.0  # the review comes first
    h.core.tick(T0 + 30.0)
    assert len(h.published) == 1  # still backed: nothing to say
    h.core.tick(T0 + 240.0)
    renewed = open_accusation(h.published[-1])
    assert renewed.reason == "endorse" and renewed.seq > endorsement.seq
    # ... and withdrawn once our detector no longer agrees, lifting the quorum.
    h.suspicion[ACCUSED.node_id] = 0.1
    assert h.core.tick(T0 + 270.0) == [PeerUnblacklisted(ACCUSED.node_id, "review")]
    withdrawal = open_accusation(h.published[-1])
    assert withdrawal.withdraw and withdrawal.accuser == ME.node_id
    assert other.core.on_item(delivered(h.published[-1], ME, now=T0 + 271)) == [
        PeerUnblacklisted(ACCUSED.node_id, "withdrawn")
    ]


def test_adopting_on_a_quorum_alone_publishes_nothing() -> None:
    h = harness(n=4)  # quorum 2; our detector has no opinion
    h.core.on_item(delivered(accuse(IDS[1]), IDS[1]))
    [event] = h.core.on_item(delivered(accuse(IDS[2]), IDS[2]))
    assert event.by == "quorum"  # type: ignore[attr-defined]
    assert h.published == []  # no echo: an accusation cannot grow a quorum by itself
    h.suspicion[ACCUSED.node_id] = 0.3  # leaning, below the own-evidence threshold
    h.core.tick(T0 + 30.0)
    assert h.published == []


def test_endorsements_can_be_switched_off() -> None:
    h = harness(n=10, config=BlacklistConfig(endorse=False))
    h.suspicion[ACCUSED.node_id] = 0.45
    [event] = h.core.on_item(delivered(accuse(IDS[1]), IDS[1]))
    assert event.by == "own_evidence"  # type: ignore[attr-defined]
    assert h.published == []


def test_retraction_and_expiry_lift_an_adopted_entry() -> None:
    h = harness(n=4)  # quorum 2
    h.core.on_item(delivered(accuse(IDS[1], seq=1), IDS[1]))
    h.core.on_item(delivered(accuse(IDS[2], seq=1, at=T0 + 100), IDS[2], now=T0 + 100))
    assert h.core.is_blacklisted(ACCUSED.node_id)
    # IDS[1] withdraws: support falls below quorum.
    out = h.core.on_item(delivered(accuse(IDS[1], seq=2, withdraw=True), IDS[1], now=T0 + 101))
    assert out == [PeerUnblacklisted(ACCUSED.node_id, "withdrawn")]
    # Its old accusation replayed is refused: the withdrawal raised the floor.
    h.core.on_item(delivered(accuse(IDS[1], seq=1), IDS[1], now=T0 + 102))
    assert h.core.dropped == {"replayed": 1}
    h.core.on_item(delivered(accuse(IDS[3], seq=1, at=T0 + 103), IDS[3], now=T0 + 103))
    assert h.core.is_blacklisted(ACCUSED.node_id)
    # IDS[2]'s record, signed at T0 + 100, lapses at T0 + 700.
    assert h.core.tick(T0 + 699.9) == []
    assert h.core.next_deadline() == T0 + 700
    assert h.core.tick(T0 + 700) == [PeerUnblacklisted(ACCUSED.node_id, "expired")]
    assert h.core.accusers_of(ACCUSED.node_id) == (IDS[3].node_id,)


def test_a_blacklisted_accuser_no_longer_counts() -> None:
    h = harness(n=4)  # quorum 2
    liar = IDS[1]
    h.core.on_item(delivered(accuse(liar), liar))
    h.core.on_item(delivered(accuse(IDS[2]), IDS[2]))
    assert h.core.is_blacklisted(ACCUSED.node_id)
    # Our detector convicts the liar: its accusations are discarded, and what they
    # alone supported is lifted.
    out = h.core.local_verdict(liar.node_id, 0.9, EVIDENCE, T0 + 1)
    assert out == [
        PeerBlacklisted(liar.node_id, "local", ()),
        PeerUnblacklisted(ACCUSED.node_id, "accusers_blacklisted"),
    ]
    h.core.on_item(delivered(accuse(liar, seq=9, at=T0 + 2), liar, now=T0 + 2))
    assert h.core.dropped == {"accuser_blacklisted": 1}


def test_local_verdict_publishes_renews_and_withdraws_a_signed_accusation() -> None:
    h = harness()
    out = h.core.local_verdict(ACCUSED.node_id, 0.9, EVIDENCE, T0, reason="auror")
    assert out == [PeerBlacklisted(ACCUSED.node_id, "local", ())]
    [body] = h.published
    acc = open_accusation(body)
    assert (acc.accuser, acc.accused, acc.evidence) == (ME.node_id, ACCUSED.node_id, EVIDENCE)
    assert not acc.withdraw and acc.issued_at == T0
    # Renewed before it would lapse elsewhere, with a higher sequence number.
    assert h.core.next_deadline() == T0 + 240
    h.core.tick(T0 + 240)
    renewed = open_accusation(h.published[-1])
    assert renewed.seq > acc.seq and renewed.issued_at == T0 + 240
    # Forgiving publishes a signed withdrawal that a peer applies.
    peer = harness(IDS[1], n=2, config=BlacklistConfig(min_quorum=1))
    peer.core.on_item(delivered(h.published[-1], ME, now=T0 + 241))
    assert peer.core.is_blacklisted(ACCUSED.node_id)
    assert h.core.forgive(ACCUSED.node_id, T0 + 250) == [
        PeerUnblacklisted(ACCUSED.node_id, "forgiven")
    ]
    withdrawal = open_accusation(h.published[-1])
    assert withdrawal.withdraw and withdrawal.seq > renewed.seq
    assert peer.core.on_item(delivered(h.published[-1], ME, now=T0 + 251)) == [
        PeerUnblacklisted(ACCUSED.node_id, "withdrawn")
    ]


def test_forgiving_leaves_a_peer_the_quorum_still_condemns() -> None:
    h = harness(n=4)  # quorum 2
    h.core.local_verdict(ACCUSED.node_id, 0.9, EVIDENCE, T0)
    for accuser in IDS[1:3]:
        h.core.on_item(delivered(accuse(accuser), accuser))
    assert h.core.forgive(ACCUSED.node_id, T0 + 1) == []
    entry = h.core.entry(ACCUSED.node_id)
    assert entry is not None and entry.by == "quorum" and len(entry.accusers) == 2
    assert h.core.next_deadline() == T0 + 31  # the adopted entry is reviewed


# -- polls --------------------------------------------------------------------------------

NEIGHBOURS = [(IDS[i].node_id, (f"10.0.0.{i}", 7000)) for i in range(1, 6)]


def answer(voter: Identity, request: PollRequest, *, blacklisted: bool, s: float | None) -> Any:
    return PollReply(voter.public_key_bytes, request.poll_id, request.accused, blacklisted, s)


def open_poll(poll_size: int, **kw: Any) -> tuple[Harness, int, PollRequest, dict[bytes, Any]]:
    live = [*NEIGHBOURS, (ACCUSED.node_id, ("10.0.0.11", 7000))]
    h = harness(live=live, config=BlacklistConfig(poll_size=poll_size))
    poll_id, sends = h.core.poll(ACCUSED.node_id, T0, **kw)
    assert all(isinstance(s, Send) and isinstance(s.message, PollRequest) for s in sends)
    assert len(sends) == poll_size and len({s.to for s in sends}) == poll_size
    assert ("10.0.0.11", 7000) not in {s.to for s in sends}  # never the accused
    by_address = {addr: IDS[i] for i, (_, addr) in enumerate(NEIGHBOURS, start=1)}
    asked = {by_address[s.to].node_id: by_address[s.to] for s in sends}
    return h, poll_id, sends[0].message, asked


def test_a_neighbour_answers_a_poll_with_its_view() -> None:
    neighbour = harness(IDS[1])
    neighbour.suspicion[ACCUSED.node_id] = 0.7
    request = PollRequest(ME.public_key_bytes, 99, ACCUSED.node_id)
    [send] = neighbour.core.handle(("10.0.0.9", 7000), request, T0)
    assert send.to == ("10.0.0.9", 7000)
    assert send.message == PollReply(IDS[1].public_key_bytes, 99, ACCUSED.node_id, False, 0.7)
    neighbour.core.local_verdict(ACCUSED.node_id, 0.9, EVIDENCE, T0)
    [send] = neighbour.core.handle(("10.0.0.9", 7000), request, T0)
    assert send.message.blacklisted


def test_poll_majority_decides_early_when_all_answered() -> None:
    h, poll_id, request, asked = open_poll(3)
    voters = list(asked.values())
    out = h.core.handle(("x", 1), answer(voters[0], request, blacklisted=True, s=None), T0)
    out += h.core.handle(("x", 1), answer(voters[1], request, blacklisted=False, s=0.8), T0)
    assert out == []
    [decided] = h.core.handle(("x", 1), answer(voters[2], request, blacklisted=False, s=0.1), T0)
    assert decided == PollDecided(poll_id, ACCUSED.node_id, True, 2, 1, 0, 0)
    assert h.core.open_polls == 0 and h.core.tick(T0 + 5) == []


def test_poll_tie_keeps_the_update() -> None:
    h, poll_id, request, asked = open_poll(4, default_discard=True)
    out = []
    for voter, s in zip(asked.values(), (0.9, 0.1, 0.6, 0.3), strict=True):
        out += h.core.handle(("x", 1), answer(voter, request, blacklisted=False, s=s), T0)
    assert out == [PollDecided(poll_id, ACCUSED.node_id, False, 2, 2, 0, 0)]


def test_poll_times_out_with_the_votes_that_arrived() -> None:
    h, poll_id, request, asked = open_poll(3)
    voter = next(iter(asked.values()))
    h.core.handle(("x", 1), answer(voter, request, blacklisted=False, s=0.55), T0)
    # Refused: a second answer, a node that was not asked, another poll's id.
    h.core.handle(("x", 1), answer(voter, request, blacklisted=False, s=0.0), T0)
    stranger = next(i for i in IDS[1:6] if i.node_id not in asked)
    h.core.handle(("x", 1), answer(stranger, request, blacklisted=False, s=0.0), T0)
    forged = PollReply(voter.public_key_bytes, request.poll_id + 1, ACCUSED.node_id, False, 0.0)
    h.core.handle(("x", 1), forged, T0)
    assert h.core.dropped == {"duplicate_reply": 1, "unsolicited_reply": 2}
    assert h.core.next_deadline() == T0 + 1.0
    assert h.core.tick(T0 + 0.99) == []
    assert h.core.tick(T0 + 1.0) == [PollDecided(poll_id, ACCUSED.node_id, True, 1, 0, 0, 2)]


def test_poll_without_votes_falls_back_on_the_callers_default() -> None:
    for default in (False, True):
        h, poll_id, request, asked = open_poll(2, default_discard=default)
        voter = next(iter(asked.values()))
        h.core.handle(("x", 1), answer(voter, request, blacklisted=False, s=None), T0)  # abstain
        [decided] = h.core.tick(T0 + 1.0)
        assert decided == PollDecided(poll_id, ACCUSED.node_id, default, 0, 0, 1, 1)
    # Nobody to ask at all: decided at once.
    lonely = harness(live=[(ACCUSED.node_id, ("10.0.0.11", 7000))])
    poll_id, out = lonely.core.poll(ACCUSED.node_id, T0, default_discard=True)
    assert out == [PollDecided(poll_id, ACCUSED.node_id, True, 0, 0, 0, 0)]


def _open_confirmation() -> tuple[Harness, int, PollRequest, list[Identity]]:
    live = [*NEIGHBOURS, (ACCUSED.node_id, ("10.0.0.11", 7000))]
    h = harness(live=live, n=6)
    assert h.core.quorum() == 2
    poll_id, sends = h.core.confirm(ACCUSED.node_id, T0)
    assert len(sends) == 2 * 2 - 1  # 2q - 1 neighbours, never the accused
    by_address = {addr: IDS[i] for i, (_, addr) in enumerate(NEIGHBOURS, start=1)}
    return h, poll_id, sends[0].message, [by_address[s.to] for s in sends]


def _vote(h: Harness, request: PollRequest, voter: Identity, s: float | None) -> list[Any]:
    return h.core.handle(("x", 1), answer(voter, request, blacklisted=False, s=s), T0)


def test_a_confirmation_needs_a_quorum_of_votes_not_a_majority() -> None:
    h, poll_id, request, voters = _open_confirmation()
    assert _vote(h, request, voters[0], 0.9) == []  # one vote to convict: not yet q
    assert _vote(h, request, voters[1], 0.1) == []  # the last vote can still make it
    decided = _vote(h, request, voters[2], 0.7)
    assert decided == [PollDecided(poll_id, ACCUSED.node_id, True, 2, 1, 0, 0)]
    # One vote to convict and two abstentions: a majority of the votes, not a quorum.
    h, poll_id, request, voters = _open_confirmation()
    _vote(h, request, voters[0], 0.9)
    _vote(h, request, voters[1], None)
    decided = _vote(h, request, voters[2], None)
    assert decided == [PollDecided(poll_id, ACCUSED.node_id, False, 1, 0, 2, 0)]


def test_a_confirmation_ends_as_soon_as_the_quorum_is_out_of_reach() -> None:
    h, poll_id, request, voters = _open_confirmation()
    assert _vote(h, request, voters[0], 0.2) == []
    [decided] = _vote(h, request, voters[1], 0.0)
    assert decided == PollDecided(poll_id, ACCUSED.node_id, False, 0, 2, 0, 1)
    assert h.core.open_polls == 0


def test_borderline_band() -> None:
    core = harness().core
    assert [core.is_borderline(s) for s in (0.35, 0.4, 0.5, 0.6, 0.65)] == [
        False,
        True,
        True,
        True,
        False,
    ]


# -- whole nodes on the simulated network ----------------------------------------------

SECRET = new_join_secret()
SESSION = Session("trust-sim", secret_sha256=secret_fingerprint(SECRET))


def _trusted_cluster(n: int, seed: int = 3) -> tuple[SimNetwork, list[Node], list[BlacklistCore]]:
    """Real nodes (AES-GCM frames, Ed25519, SWIM, gossip) with the trust core wired
    in the way node.py is meant to do it."""
    net = SimNetwork(seed=seed)
    rng = random.Random(seed)
    nodes: list[Node] = []
    cores: list[BlacklistCore] = []
    for i in range(n):
        address = (f"10.1.0.{i + 1}", 7000)
        identity = Identity.from_private_bytes(rng.randbytes(32))
        node = Node(
            net, address, identity, SESSION, SECRET, rng=net.rng_for(address), wall_clock=net.now
        )
        core = BlacklistCore(
            signer=identity,
            publish=lambda body, kind, now, node=node: node.gossip.publish(body, kind, now)[1],
            live_peers=lambda node=node: [(m.node_id, m.address) for m in node.swim.live_members()],
            n_estimate=lambda node=node: node.swim.live_count + 1,
            rng=random.Random(rng.getrandbits(64)),
            now=net.now(),
        )
        node.host.add_core("trust", core)

        def on_event(event: object, node: Node = node, core: BlacklistCore = core) -> None:
            if isinstance(event, ItemDelivered) and event.kind == ACCUSATION_KIND:
                node.host.execute(core.on_item(event))

        node.host.subscribe(on_event)
        net.attach(address, node.host.receive)
        nodes.append(node)
        cores.append(core)
    for i, node in enumerate(nodes):
        node.start([nodes[0].address] if i else [])
    return net, nodes, cores


def test_accusations_spread_and_a_quorum_is_adopted_by_every_node() -> None:
    net, nodes, cores = _trusted_cluster(10)
    net.run_until(15)
    assert all(node.swim.live_count == 9 for node in nodes)
    events: list[tuple[int, object]] = []
    for i, node in enumerate(nodes):
        node.host.subscribe(lambda e, i=i: events.append((i, e)))
    accused, victim = nodes[9], nodes[0]
    evidence = [Evidence(hashlib.sha256(b"poisoned").digest(), 3, 0.9)]
    # Three colluders (30%) accuse an honest node; four honest nodes accuse node 9.
    for i in (6, 7, 8):
        nodes[i].host.execute(cores[i].local_verdict(victim.node_id, 0.9, evidence, net.now()))
    for i in (1, 2, 3, 4):
        nodes[i].host.execute(cores[i].local_verdict(accused.node_id, 0.9, evidence, net.now()))
    net.run_for(5)
    adopted = {i for i, e in events if isinstance(e, PeerBlacklisted) and e.by == "quorum"}
    assert adopted == {0, 5, 6, 7, 8}  # every node but the accusers and the accused
    assert all(core.is_blacklisted(accused.node_id) for core in cores[:9])
    assert not any(core.is_blacklisted(victim.node_id) for core in cores[:6])
    assert cores[9].dropped["about_self"] == 4
    assert all(core.dropped.keys() <= {"about_self"} for core in cores)
    # A borderline update from node 9 at node 5: its neighbours, asked over signed
    # frames, all vote to discard.
    poll_id, sends = cores[5].poll(accused.node_id, net.now())
    nodes[5].host.execute(sends)
    net.run_for(2)
    [decided] = [e for i, e in events if isinstance(e, PollDecided)]
    assert decided.poll_id == poll_id and decided.discard
    assert decided.votes_for == 5 and decided.unanswered == 0
    assert sum(node.codec.stats.dropped.total() for node in nodes) == 0
