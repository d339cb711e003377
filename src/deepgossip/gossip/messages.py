"""Wire messages of the gossip layer (all ``gossip.*``, routed to the "gossip" core).

Datagrams (may be lost): ``Push`` (rumours) and ``Have`` (feedback).
Stream (``reliable=True``): ``Pull``/``Bodies`` (body transfer) and the
anti-entropy exchange ``Digest`` -> ``DigestReply`` -> ``Offer``, whose size
grows with the number of items and origins.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepgossip.wire.message import message, record


@record
@dataclass(frozen=True, slots=True)
class Announcement:
    """What a node says about an item: enough to verify the origin and fetch the body.

    ``signature`` is the origin's signature over
    :func:`~deepgossip.gossip.item.signing_digest` of every field but ``body``.
    ``body`` is present only for bodies small enough to ride in the datagram.
    """

    item_id: bytes
    origin: bytes
    public_key: bytes
    seq: int
    size: int
    kind: str
    created: float
    signature: bytes
    body: bytes | None = None


@message("gossip.push")
@dataclass(frozen=True, slots=True)
class Push:
    """Rumour mongering: the sender's hot rumours that the receiver may lack."""

    entries: tuple[Announcement, ...]


@message("gossip.have")
@dataclass(frozen=True, slots=True)
class Have:
    """Feedback to a push: these ids were already known (the push was redundant)."""

    ids: tuple[bytes, ...]


@message("gossip.pull")
@dataclass(frozen=True, slots=True)
class Pull:
    """Ask a holder for bodies; ``request`` is echoed in the answer."""

    request: int
    ids: tuple[bytes, ...]


@record
@dataclass(frozen=True, slots=True)
class Body:
    item_id: bytes
    data: bytes


@message("gossip.bodies")
@dataclass(frozen=True, slots=True)
class Bodies:
    """Answer to a pull: the bodies held, and the ids the holder no longer has."""

    request: int
    items: tuple[Body, ...]
    missing: tuple[bytes, ...] = ()


@record
@dataclass(frozen=True, slots=True)
class OriginSeqs:
    """The sequence numbers of one origin a node knows, as inclusive ranges.

    ``origin`` is the first 8 bytes of the origin id (the digest key);
    ``ranges`` is flat: ``(lo1, hi1, lo2, hi2, ...)``, sorted and disjoint.
    """

    origin: bytes
    ranges: tuple[int, ...]


@message("gossip.digest")
@dataclass(frozen=True, slots=True)
class Digest:
    """Anti-entropy, first leg: what I know for origins with key in ``[lo, hi]``.

    An origin in scope that is not listed is one I know nothing about.
    """

    lo: int
    hi: int
    origins: tuple[OriginSeqs, ...]


@record
@dataclass(frozen=True, slots=True)
class OfferEntry:
    """An announcement offered by anti-entropy; ``age``: seconds the donor has held it."""

    announcement: Announcement
    age: float


@message("gossip.digest_reply")
@dataclass(frozen=True, slots=True)
class DigestReply:
    """Second leg: what you lack (``offers``), and my own digest over ``[lo, hi]``.

    ``hi`` may be lower than asked when my digest had to be truncated; ``more``
    says that more offers were available than fit.
    """

    offers: tuple[OfferEntry, ...]
    lo: int
    hi: int
    origins: tuple[OriginSeqs, ...]
    more: bool = False


@message("gossip.offer")
@dataclass(frozen=True, slots=True)
class Offer:
    """Third leg (only when non-empty): what the replier lacks."""

    offers: tuple[OfferEntry, ...]
    more: bool = False
