"""Signed accusations: the record a node gossips when it blacklists a peer.

When a node's local defence (AUROR, a robust aggregator) blacklists a peer, it
tells the network with an :class:`Accusation`: who accuses (node id and public
key), whom, when (the accuser's wall clock), a per-accuser sequence number, a
short reason, the accuser's overall suspicion, and its *evidence*: the digests,
rounds and scores of the updates that convicted the peer, so a receiver can
compare them with what it saw itself. An accuser withdraws an accusation with a
later record (higher sequence number) that has ``withdraw=True``.

**Wire form.** The accusation travels as the body of a gossip item of kind
:data:`ACCUSATION_KIND`. The body is ``msgpack([FORMAT, payload, signature])``
where ``payload`` is the msgpack encoding of the accusation's fields (the
repository's :func:`~deepgossip.wire.message.message` codec, in a private
registry: an accusation is an item body, never a frame a host should route) and
``signature`` is the accuser's Ed25519 signature over ``SIGN_DOMAIN + payload``.
Signing the exact payload bytes, rather than a re-encoding of the decoded
fields, means a receiver verifies precisely what the accuser signed, whatever
msgpack encoder either side uses. The signature lives inside the body, not only
in the gossip layer's item signature, because the record must stand on its own:
anyone can check it after it was stored, relayed or served by anti-entropy, and
it stays authenticated in simulations whose gossip layer uses insecure signers.

**Checks before work.** :func:`open_accusation` rejects a body by its length
before parsing, parses with msgpack limits derived from
:class:`AccusationLimits` (a declared array or string longer than allowed is
refused before anything is allocated for it), validates every field, checks
that the public key hashes to the claimed accuser id, and only then spends an
Ed25519 verification. Every rejection raises :class:`AccusationRejected` with a
short, stable ``reason`` (the key of drop counters); nothing else escapes.

Freshness (too old, from the future), replays (sequence numbers) and whether the
gossip origin matches the accuser are decided by the state machine in
:mod:`deepgossip.trust.blacklist`, which knows the local clock and what it saw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import msgpack

from deepgossip.wire.errors import MalformedMessage
from deepgossip.wire.identity import (
    NODE_ID_SIZE,
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    node_id_of,
    verify,
)
from deepgossip.wire.message import MessageRegistry, from_wire, message, record, to_wire

__all__ = [
    "ACCUSATION_KIND",
    "DIGEST_SIZE",
    "FORMAT",
    "MAX_SEQ",
    "SIGN_DOMAIN",
    "Accusation",
    "AccusationLimits",
    "AccusationRejected",
    "AccusationSigner",
    "Evidence",
    "check_claim",
    "open_accusation",
    "sign_accusation",
]

ACCUSATION_KIND: Final = "trust.accuse"
"""Gossip item kind of accusation bodies (what ``ItemDelivered.kind`` says)."""
FORMAT: Final = "dg-accuse/1"
"""Tag of the body layout; a new layout gets a new tag and old nodes drop it."""
SIGN_DOMAIN: Final = b"deepgossip/trust/accusation/v1\x00"
"""Prefix of the signed bytes: an accusation signature can never be mistaken for
(or replayed as) a signature of a frame, a gossip item or a membership claim."""
DIGEST_SIZE: Final = 32
"""Update digests are SHA-256, like gossip item ids."""
MAX_SEQ: Final = 2**63 - 1
"""Sequence numbers and rounds fit a signed 64-bit integer (msgpack's native range)."""

_FORMATS = MessageRegistry()
"""Private registry: accusation payloads are decoded only here, never by a host."""


@record
@dataclass(frozen=True, slots=True)
class Evidence:
    """One update that convinced the accuser: its digest, round and score.

    ``digest`` is the update's 32-byte SHA-256 (the gossip item id when the
    update travelled as an item), ``round`` the accused's training round that
    the update claimed, ``score`` what the accuser's detector gave it (for
    AUROR: the fraction of indicative features on which it sat in the minority
    cluster).
    """

    digest: bytes
    round: int
    score: float


@message("trust.accusation", registry=_FORMATS)
@dataclass(frozen=True, slots=True)
class Accusation:
    """A decoded, validated accusation (or withdrawal, if ``withdraw``)."""

    accuser: bytes
    """Node id of the accuser: must be ``node_id_of(public_key)``."""
    public_key: bytes
    """The accuser's raw Ed25519 public key (the receiver may not know it yet)."""
    accused: bytes
    """Node id of the accused peer."""
    seq: int
    """Per-accuser counter: a later record about the same peer has a higher one."""
    issued_at: float
    """Accuser's wall clock (Unix seconds) when it signed: bounds the record's life."""
    reason: str
    """Short machine-readable reason (``"auror"``, ``"krum"``, ``"equivocation"``)."""
    suspicion: float = 1.0
    """The accuser's overall suspicion of the accused, in [0, 1]."""
    evidence: tuple[Evidence, ...] = ()
    withdraw: bool = False
    """True: the accuser takes back its earlier accusations of ``accused``."""


@dataclass(frozen=True, slots=True)
class AccusationLimits:
    """Size limits of an accusation body, checked before parsing.

    An accusation encodes to about 180 bytes, plus its reason, plus 53 bytes per
    evidence entry: ~1.1 KB at the default limits. Up to ~15 entries it fits the
    gossip layer's ``inline_max_bytes`` (1 KiB) and rides inside the announcement,
    with no body pull.
    """

    max_evidence: int = 16
    """Updates cited per accusation. AUROR convicts on a window of a few updates;
    16 digests are plenty to let others cross-check, and keep the record small."""
    max_reason_bytes: int = 64
    """UTF-8 bytes of ``reason``: a label, not prose."""
    max_body_bytes: int = 4096
    """Whole signed body. Well above a maximal record under the defaults (~1.1 KB),
    so it never refuses an honest accusation, and small enough that parsing a
    hostile one costs nothing."""

    def __post_init__(self) -> None:
        if self.max_evidence < 0 or self.max_reason_bytes < 1 or self.max_body_bytes < 256:
            raise ValueError("max_evidence >= 0, max_reason_bytes >= 1, max_body_bytes >= 256")


DEFAULT_LIMITS = AccusationLimits()


class AccusationRejected(ValueError):
    """A body is not a valid accusation; ``reason`` is the drop-counter key.

    Reasons: ``oversized`` (body, evidence list or reason beyond the limits),
    ``malformed`` (not the expected shape or types), ``unknown_format``,
    ``bad_id`` (a node id or key of the wrong length), ``bad_evidence`` (digest
    length, negative round, non-finite score), ``bad_value`` (sequence number,
    time or suspicion out of range), ``self_accusation``, ``wrong_signer`` (the
    key does not belong to the claimed accuser) and ``bad_signature``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class AccusationSigner(Protocol):
    """What signing needs from an identity (:class:`~deepgossip.wire.identity.Identity`)."""

    @property
    def node_id(self) -> bytes: ...

    @property
    def public_key_bytes(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


def _check(acc: Accusation, limits: AccusationLimits) -> None:
    """Raise :class:`AccusationRejected` unless every field is in range."""
    if len(acc.accuser) != NODE_ID_SIZE or len(acc.accused) != NODE_ID_SIZE:
        raise AccusationRejected("bad_id", "node ids are 16 bytes")
    if len(acc.public_key) != PUBLIC_KEY_SIZE:
        raise AccusationRejected("bad_id", "public keys are 32 bytes")
    if acc.accuser == acc.accused:
        raise AccusationRejected("self_accusation")
    if not 0 <= acc.seq <= MAX_SEQ:
        raise AccusationRejected("bad_value", "seq out of range")
    if not math.isfinite(acc.issued_at) or acc.issued_at < 0:
        raise AccusationRejected("bad_value", "issued_at")
    check_claim(acc.suspicion, acc.reason, acc.evidence, limits)


def check_claim(
    suspicion: float, reason: str, evidence: Sequence[Evidence], limits: AccusationLimits
) -> None:
    """Raise :class:`AccusationRejected` unless what an accusation claims (its
    suspicion, reason and evidence) is in range; also checks saved verdicts."""
    if not 0.0 <= suspicion <= 1.0:  # also refuses NaN
        raise AccusationRejected("bad_value", "suspicion must be in [0, 1]")
    if len(reason.encode()) > limits.max_reason_bytes:
        raise AccusationRejected("oversized", "reason too long")
    if len(evidence) > limits.max_evidence:
        raise AccusationRejected("oversized", "too much evidence")
    for item in evidence:
        if len(item.digest) != DIGEST_SIZE:
            raise AccusationRejected("bad_evidence", "digests are 32 bytes")
        if not 0 <= item.round <= MAX_SEQ:
            raise AccusationRejected("bad_evidence", "round out of range")
        if not math.isfinite(item.score):
            raise AccusationRejected("bad_evidence", "score must be finite")


def sign_accusation(
    signer: AccusationSigner,
    accused: bytes,
    *,
    seq: int,
    issued_at: float,
    reason: str,
    suspicion: float = 1.0,
    evidence: Sequence[Evidence] = (),
    withdraw: bool = False,
    limits: AccusationLimits = DEFAULT_LIMITS,
) -> bytes:
    """Build, check and sign an accusation; returns the body to publish.

    Raises :class:`AccusationRejected` (a ``ValueError``) on local misuse: the
    same checks a receiver applies, so a node never publishes a record its
    peers would drop.
    """
    acc = Accusation(
        accuser=bytes(signer.node_id),
        public_key=bytes(signer.public_key_bytes),
        accused=bytes(accused),
        seq=int(seq),
        issued_at=float(issued_at),
        reason=reason,
        suspicion=float(suspicion),
        evidence=tuple(evidence),
        withdraw=bool(withdraw),
    )
    _check(acc, limits)
    _, fields = to_wire(acc)
    payload = msgpack.packb(fields, use_bin_type=True)
    signature = signer.sign(SIGN_DOMAIN + payload)
    body: bytes = msgpack.packb([FORMAT, payload, signature], use_bin_type=True)
    if len(body) > limits.max_body_bytes:
        raise AccusationRejected("oversized", f"body of {len(body)} bytes")
    return body


def _unpack(data: bytes, **limits: int) -> Any:
    """msgpack with explicit length limits; limit breaches are ``oversized``."""
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_map_len=0,  # no maps anywhere in an accusation
            max_ext_len=0,
            timestamp=0,
            **limits,
        )
    except ValueError as exc:  # ExtraData, FormatError, StackError, limits
        # msgpack reports a declared length beyond a limit as "N exceeds max_..._len";
        # it raises before allocating the container.
        reason = "oversized" if "exceeds max" in str(exc) else "malformed"
        raise AccusationRejected(reason, str(exc)) from None
    except Exception as exc:  # msgpack's C decoder may raise others on garbage
        raise AccusationRejected("malformed", type(exc).__name__) from None


def open_accusation(body: bytes, limits: AccusationLimits = DEFAULT_LIMITS) -> Accusation:
    """Parse, validate and verify a signed accusation body.

    Returns the accusation; raises :class:`AccusationRejected` for anything else.
    Never raises any other exception, whatever ``body`` holds.
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        raise AccusationRejected("malformed", "body is not bytes")
    if len(body) > limits.max_body_bytes:
        raise AccusationRejected("oversized", f"body of {len(body)} bytes")
    outer = _unpack(
        bytes(body),
        max_array_len=3,
        max_str_len=len(FORMAT),
        max_bin_len=limits.max_body_bytes,
    )
    if not isinstance(outer, list) or len(outer) != 3:
        raise AccusationRejected("malformed", "body is not [format, payload, signature]")
    tag, payload, signature = outer
    if tag != FORMAT:
        raise AccusationRejected("unknown_format", repr(tag)[:40])
    if type(payload) is not bytes or type(signature) is not bytes:
        raise AccusationRejected("malformed", "payload and signature are bytes")
    if len(signature) != SIGNATURE_SIZE:
        raise AccusationRejected("bad_signature", "wrong length")
    # The payload's arrays: 9 fields, 3 per evidence entry, the evidence list.
    fields = _unpack(
        payload,
        max_array_len=max(limits.max_evidence, 9),
        max_str_len=limits.max_reason_bytes,
        max_bin_len=PUBLIC_KEY_SIZE,
    )
    try:
        acc = from_wire(Accusation.TYPE, fields, _FORMATS)  # type: ignore[attr-defined]
    except MalformedMessage as exc:
        raise AccusationRejected("malformed", str(exc)) from None
    if not isinstance(acc, Accusation):  # pragma: no cover - the registry is private
        raise AccusationRejected("malformed")
    _check(acc, limits)
    # Cheap before costly: a key that is not the accuser's is refused without
    # spending a signature verification on it.
    if node_id_of(acc.public_key) != acc.accuser:
        raise AccusationRejected("wrong_signer", "key does not hash to the accuser id")
    if not verify(acc.public_key, signature, SIGN_DOMAIN + payload):
        raise AccusationRejected("bad_signature")
    return acc
