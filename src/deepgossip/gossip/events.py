"""What the gossip core reports upward: delivery events and counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ItemDelivered:
    """A new item whose origin signature and body hash were verified.

    Emitted exactly once per item id per node (never for the node's own
    publications). ``via`` is how the node first heard of it: ``"rumour"`` (a
    push) or ``"anti_entropy"`` (a digest exchange).
    """

    item_id: bytes
    kind: str
    origin: bytes
    seq: int
    body: bytes
    size: int
    created: float
    public_key: bytes
    via: str
    delivered_at: float


@dataclass(frozen=True, slots=True)
class Equivocation:
    """An origin signed two different items with the same sequence number.

    Both are delivered; this is evidence for the trust layer (two valid
    signatures of one origin over conflicting claims).
    """

    origin: bytes
    seq: int
    item_ids: tuple[bytes, bytes]


@dataclass(slots=True)
class KindStats:
    """Per item kind ("model_update", "accusation", ...)."""

    published: int = 0
    delivered: int = 0
    bytes_delivered: int = 0
    bodies_served: int = 0
    bytes_served: int = 0
    announcements_sent: int = 0


@dataclass(slots=True)
class GossipStats:
    """Counters of one gossip core; frame bytes on the wire are in ``HostStats``."""

    sent: Counter[str] = field(default_factory=Counter)
    """Messages sent, by wire type (``gossip.push``, ...)."""
    received: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    """Input refused, by reason (``hash_mismatch``, ``bad_signature``, ...)."""
    events: Counter[str] = field(default_factory=Counter)
    """Protocol events: ``pull_timeout``, ``pull_abandoned``, ``collected``, ..."""
    kinds: dict[str, KindStats] = field(default_factory=dict)

    def kind(self, kind: str) -> KindStats:
        stats = self.kinds.get(kind)
        if stats is None:
            stats = self.kinds[kind] = KindStats()
        return stats

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": dict(self.sent),
            "received": dict(self.received),
            "dropped": dict(self.dropped),
            "events": dict(self.events),
            "kinds": {k: {f: getattr(v, f) for f in v.__slots__} for k, v in self.kinds.items()},
        }
