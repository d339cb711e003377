"""Content-addressed store of item bodies, with bounded memory and garbage collection.

Why it looks like this:

* the id *is* the SHA-256 of the body, so ``put`` re-hashes every body and a
  body that is not its id is refused, whoever sent it;
* memory is bounded by item count, bytes and age; collection is oldest first by
  local receipt time (the only clock a node can trust);
* a collected id becomes a *tombstone* for ``tombstone_ttl`` so announcements
  that still circulate do not make the node fetch and deliver it a second time;
  when a tombstone expires, the origin's sequence *floor* rises to its seq, so an
  item that old is refused for good (honest origins number their items upwards);
* items are also indexed by (origin, seq) so anti-entropy can describe what a
  node holds as a few sequence ranges per origin.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum

from deepgossip.gossip.config import StoreLimits
from deepgossip.gossip.item import ItemMeta, item_id_of


class PutResult(Enum):
    STORED = "stored"
    KNOWN = "known"  # held already, or collected recently (tombstone)
    STALE = "stale"  # at or below the origin's floor
    HASH_MISMATCH = "hash_mismatch"  # body does not hash to its id (or wrong size)
    TOO_LARGE = "too_large"  # bigger than the whole store may hold


@dataclass(slots=True)
class StoredItem:
    meta: ItemMeta
    body: bytes
    received_at: float


@dataclass(slots=True)
class PutOutcome:
    result: PutResult
    evicted: list[ItemMeta] = field(default_factory=list)
    """Items collected to make room (they become tombstones)."""
    conflict: bytes | None = None
    """Id of another item with the same (origin, seq): the origin equivocated."""


class ItemStore:
    """Bodies by id, with (origin, seq) index, tombstones and per-origin floors."""

    def __init__(self, limits: StoreLimits | None = None) -> None:
        self.limits = limits or StoreLimits()
        self._items: OrderedDict[bytes, StoredItem] = OrderedDict()  # receipt order
        self._bytes = 0
        self._by_origin: dict[bytes, dict[int, bytes]] = {}
        self._tombstones: OrderedDict[bytes, tuple[float, bytes, int]] = OrderedDict()
        self._gone_seqs: dict[bytes, dict[int, int]] = {}  # origin -> seq -> count
        self._floors: OrderedDict[bytes, int] = OrderedDict()
        self.collected = 0

    # -- queries -----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def get(self, item_id: bytes) -> StoredItem | None:
        return self._items.get(item_id)

    def is_known(self, item_id: bytes) -> bool:
        """Held now, or collected recently: either way, never fetch it again."""
        return item_id in self._items or item_id in self._tombstones

    def is_stale(self, origin: bytes, seq: int) -> bool:
        return seq <= self._floors.get(origin, -1)

    def floor(self, origin: bytes) -> int:
        return self._floors.get(origin, -1)

    def items(self) -> Iterator[StoredItem]:
        """Held items, oldest received first."""
        return iter(self._items.values())

    def origins(self) -> set[bytes]:
        """Every origin the store knows something about (held, collected or floor)."""
        return set(self._by_origin) | set(self._gone_seqs) | set(self._floors)

    def held_seqs(self, origin: bytes) -> dict[int, bytes]:
        return self._by_origin.get(origin, {})

    def known_seqs(self, origin: bytes) -> list[int]:
        """Seqs of ``origin`` held or collected (the floor is separate)."""
        return [*self._by_origin.get(origin, ()), *self._gone_seqs.get(origin, ())]

    def next_expiry(self) -> float:
        """When :meth:`collect` next has something to do (``inf``: nothing)."""
        t = float("inf")
        if self._items:
            t = next(iter(self._items.values())).received_at + self.limits.max_age
        if self._tombstones:
            t = min(t, next(iter(self._tombstones.values()))[0])
        return t

    # -- updates -----------------------------------------------------------------

    def put(self, meta: ItemMeta, body: bytes, now: float, *, revive: bool = False) -> PutOutcome:
        """Store a body after checking it hashes to its id.

        ``revive`` (local publish) stores it even if the id was collected before.
        """
        if len(body) != meta.size or item_id_of(body) != meta.item_id:
            return PutOutcome(PutResult.HASH_MISMATCH)
        if meta.item_id in self._items:
            return PutOutcome(PutResult.KNOWN)
        if meta.item_id in self._tombstones:
            if not revive:
                return PutOutcome(PutResult.KNOWN)
            self._drop_tombstone(meta.item_id)
        if not revive and self.is_stale(meta.origin, meta.seq):
            return PutOutcome(PutResult.STALE)
        if len(body) > self.limits.max_bytes:
            return PutOutcome(PutResult.TOO_LARGE)
        evicted: list[ItemMeta] = []
        while self._items and (
            len(self._items) + 1 > self.limits.max_items
            or self._bytes + len(body) > self.limits.max_bytes
        ):
            evicted.append(self._collect_oldest(now))
        self._items[meta.item_id] = StoredItem(meta, body, now)
        self._bytes += len(body)
        index = self._by_origin.setdefault(meta.origin, {})
        conflict = index.get(meta.seq)
        if conflict is None:
            index[meta.seq] = meta.item_id
        return PutOutcome(PutResult.STORED, evicted, conflict)

    def collect(self, now: float) -> list[ItemMeta]:
        """Collect items older than ``max_age``; expire old tombstones into floors."""
        out: list[ItemMeta] = []
        horizon = now - self.limits.max_age
        while self._items and next(iter(self._items.values())).received_at <= horizon:
            out.append(self._collect_oldest(now))
        while self._tombstones and next(iter(self._tombstones.values()))[0] <= now:
            self._drop_tombstone(next(iter(self._tombstones)), raise_floor=True)
        return out

    def _collect_oldest(self, now: float) -> ItemMeta:
        item_id, item = self._items.popitem(last=False)
        meta = item.meta
        self._bytes -= meta.size
        index = self._by_origin.get(meta.origin)
        if index is not None and index.get(meta.seq) == item_id:
            del index[meta.seq]
            if not index:
                del self._by_origin[meta.origin]
        self._tombstones[item_id] = (now + self.limits.tombstone_ttl, meta.origin, meta.seq)
        gone = self._gone_seqs.setdefault(meta.origin, {})
        gone[meta.seq] = gone.get(meta.seq, 0) + 1
        while len(self._tombstones) > self.limits.max_tombstones:
            self._drop_tombstone(next(iter(self._tombstones)), raise_floor=True)
        self.collected += 1
        return meta

    def _drop_tombstone(self, item_id: bytes, raise_floor: bool = False) -> None:
        _, origin, seq = self._tombstones.pop(item_id)
        gone = self._gone_seqs[origin]
        gone[seq] -= 1
        if gone[seq] <= 0:
            del gone[seq]
            if not gone:
                del self._gone_seqs[origin]
        if raise_floor and seq > self._floors.get(origin, -1):
            self._floors[origin] = seq
            self._floors.move_to_end(origin)
            while len(self._floors) > self.limits.max_origins:
                self._floors.popitem(last=False)
