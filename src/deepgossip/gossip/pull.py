"""Body pulls: which item to fetch from which holder, with limits, timeouts and retries.

A node that learns of an item it lacks (and whose body did not ride along)
records it as *pending* with every peer that announced it as a *holder*. The
scheduler then sends ``Pull`` requests over the reliable channel:

* at most ``max_pulls_in_flight`` requests per node, and ``max_pulls_per_holder``
  per holder, so a node catching up never leans on one donor;
* among eligible holders, the least loaded, ties broken at random;
* small items for the same holder are batched into one request;
* a request that times out penalises its holder for every item for a while and
  sends its items to another holder; a holder that lacked or corrupted an item is
  not asked for it again until ``holder_retry`` has passed. An item with no
  eligible holder left waits (stalled) until a cooldown ends or a new holder
  announces it;
* state is per item, so catch-up is resumable: whatever arrived stays, the rest
  is retried elsewhere. A body never fetched within ``pending_ttl`` is forgotten
  (anti-entropy will offer it again if it still exists).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from deepgossip.gossip.config import GossipConfig
from deepgossip.gossip.item import ItemMeta
from deepgossip.gossip.messages import Pull
from deepgossip.net.runtime import Address, Send

SCAN_LIMIT = 256
"""Waiting items examined per pump: bounds the work per event during big catch-ups."""


@dataclass(slots=True)
class Pending:
    meta: ItemMeta
    via: str
    rekindle: bool
    first_seen: float
    holders: list[Address]
    failed: dict[Address, float] = field(default_factory=dict)
    """Holder -> time from which it may be asked for this item again."""
    requested: set[Address] = field(default_factory=set)
    """Every holder asked so far: a late body from any of them is still accepted."""
    in_flight: int | None = None


@dataclass(slots=True)
class Request:
    rid: int
    holder: Address
    ids: tuple[bytes, ...]
    deadline: float


class PullScheduler:
    """Pending bodies and the pull requests in flight for them."""

    def __init__(self, config: GossipConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.pending: dict[bytes, Pending] = {}  # insertion order = first_seen order
        self._waiting: OrderedDict[bytes, None] = OrderedDict()
        self._stalled: dict[bytes, float] = {}
        self._stall_heap: list[tuple[float, int, bytes]] = []
        self._requests: dict[int, Request] = {}
        self._per_holder: Counter[Address] = Counter()
        self._penalty: dict[Address, float] = {}
        self._rids = itertools.count(1)
        self._seq = itertools.count()
        self.events: Counter[str] = Counter()

    # -- queries -------------------------------------------------------------------

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.pending

    def __len__(self) -> int:
        return len(self.pending)

    @property
    def in_flight(self) -> int:
        return len(self._requests)

    def active(self) -> Iterator[Pending]:
        """Pending items that still have a holder to try (not stalled)."""
        return (p for i, p in self.pending.items() if i not in self._stalled)

    def next_deadline(self) -> float:
        t = min((r.deadline for r in self._requests.values()), default=math.inf)
        while (
            self._stall_heap
            and self._stalled.get(self._stall_heap[0][2]) != (self._stall_heap[0][0])
        ):
            heapq.heappop(self._stall_heap)  # stale entry
        if self._stall_heap:
            t = min(t, self._stall_heap[0][0])
        if self.pending:
            t = min(t, next(iter(self.pending.values())).first_seen + self.config.pending_ttl)
        return t

    # -- updates -------------------------------------------------------------------

    def add(self, meta: ItemMeta, holder: Address, via: str, rekindle: bool, now: float) -> bool:
        """Record a new pending item; False if the pending table is full."""
        if len(self.pending) >= self.config.max_pending:
            self.events["pending_full"] += 1
            return False
        self.pending[meta.item_id] = Pending(meta, via, rekindle, now, [holder])
        self._waiting[meta.item_id] = None
        return True

    def add_holder(self, item_id: bytes, holder: Address, via: str) -> None:
        """Another peer announced an item we are fetching: one more place to get it."""
        p = self.pending[item_id]
        if via == "rumour" and p.via != "rumour":
            p.via = "rumour"  # the rumour is still alive: spread it when we have it
        if holder in p.holders or len(p.holders) >= self.config.max_holders_per_item:
            return
        p.holders.append(holder)
        if item_id in self._stalled:
            del self._stalled[item_id]
            self._waiting[item_id] = None
            self._waiting.move_to_end(item_id, last=False)

    def claim(self, item_id: bytes, src: Address) -> Pending | None:
        """The pending item a body from ``src`` answers, or None if unsolicited."""
        p = self.pending.get(item_id)
        if p is None or src not in p.requested:
            return None
        return p

    def done(self, item_id: bytes) -> None:
        """The body arrived and was stored (or the item is otherwise settled)."""
        self.pending.pop(item_id, None)
        self._waiting.pop(item_id, None)
        self._stalled.pop(item_id, None)

    def failed(self, item_id: bytes, holder: Address, now: float) -> None:
        """``holder`` did not have the item or served a corrupt body."""
        p = self.pending.get(item_id)
        if p is None:
            return
        p.failed[holder] = now + self.config.holder_retry
        self.events["holder_failed"] += 1
        if p.in_flight is None:
            self._route(item_id, p, now)

    def finish(self, rid: int, src: Address, now: float) -> bool:
        """An answer to request ``rid`` came from ``src``: free its slot, requeue the
        items it carried (the answer's bodies then settle them)."""
        req = self._requests.get(rid)
        if req is None or req.holder != src:
            return False
        self._release(req, now)
        return True

    def expire(self, now: float) -> None:
        """Time out requests, wake stalled items, forget items pending too long."""
        for req in [r for r in self._requests.values() if r.deadline <= now]:
            self.events["pull_timeout"] += 1
            self._penalty[req.holder] = now + self.config.holder_penalty
            for item_id in req.ids:
                p = self.pending.get(item_id)
                if p is not None:
                    p.failed[req.holder] = now + self.config.holder_retry
            self._release(req, now)
        while self._stall_heap and self._stall_heap[0][0] <= now:
            wake, _, item_id = heapq.heappop(self._stall_heap)
            if self._stalled.get(item_id) == wake:
                del self._stalled[item_id]
                self._waiting[item_id] = None
        ttl = self.config.pending_ttl
        for item_id, p in list(self.pending.items()):
            if p.first_seen + ttl > now:
                break
            if p.in_flight is None:
                self.events["pull_abandoned"] += 1
                self.done(item_id)

    def pump(self, now: float) -> list[Send]:
        """Start as many pull requests as the limits allow."""
        sends: list[Send] = []
        if not self._waiting or len(self._requests) >= self.config.max_pulls_in_flight:
            return sends
        candidates = list(itertools.islice(self._waiting, SCAN_LIMIT))
        for index, item_id in enumerate(candidates):
            if len(self._requests) >= self.config.max_pulls_in_flight:
                break
            if item_id not in self._waiting:
                continue  # batched into an earlier request
            p = self.pending[item_id]
            holder = self._choose(p, now)
            if holder is None:
                if not any(t <= now for t in self._cooldowns(p)):
                    self._stall(item_id, p)
                continue  # eligible holders exist but are busy: wait for a slot
            batch = [item_id]
            size = p.meta.size
            for other_id in candidates[index + 1 :]:
                if len(batch) >= self.config.pull_batch_items:
                    break
                if other_id not in self._waiting:
                    continue
                other = self.pending[other_id]
                if (
                    holder in other.holders
                    and other.failed.get(holder, 0.0) <= now
                    and size + other.meta.size <= self.config.pull_batch_bytes
                ):
                    batch.append(other_id)
                    size += other.meta.size
            sends.append(self._request(holder, batch, size, now))
        return sends

    # -- internals -----------------------------------------------------------------

    def _cooldowns(self, p: Pending) -> Iterator[float]:
        return (p.failed.get(h, 0.0) for h in p.holders)

    def _choose(self, p: Pending, now: float) -> Address | None:
        limit = self.config.max_pulls_per_holder
        eligible = [
            h for h in p.holders if p.failed.get(h, 0.0) <= now and self._per_holder[h] < limit
        ]
        if not eligible:
            return None
        unpenalised = [h for h in eligible if self._penalty.get(h, 0.0) <= now]
        pool = unpenalised or eligible
        least = min(self._per_holder[h] for h in pool)
        return self.rng.choice([h for h in pool if self._per_holder[h] == least])

    def _request(self, holder: Address, ids: list[bytes], size: int, now: float) -> Send:
        rid = next(self._rids)
        retry = any(self.pending[i].requested for i in ids)
        timeout = self.config.pull_timeout + size / self.config.pull_min_bandwidth
        self._requests[rid] = Request(rid, holder, tuple(ids), now + timeout)
        self._per_holder[holder] += 1
        for item_id in ids:
            del self._waiting[item_id]
            p = self.pending[item_id]
            p.in_flight = rid
            p.requested.add(holder)
        if retry:
            self.events["pull_retry"] += 1
        return Send(holder, Pull(rid, tuple(ids)), reliable=True)

    def _release(self, req: Request, now: float) -> None:
        del self._requests[req.rid]
        self._per_holder[req.holder] -= 1
        if self._per_holder[req.holder] <= 0:
            del self._per_holder[req.holder]
        for item_id in req.ids:
            p = self.pending.get(item_id)
            if p is not None and p.in_flight == req.rid:
                p.in_flight = None
                self._route(item_id, p, now)

    def _route(self, item_id: bytes, p: Pending, now: float) -> None:
        """Put an idle pending item where it belongs: waiting, or stalled."""
        if any(t <= now for t in self._cooldowns(p)):
            self._stalled.pop(item_id, None)
            self._waiting[item_id] = None
            self._waiting.move_to_end(item_id, last=False)
        else:
            self._waiting.pop(item_id, None)
            self._stall(item_id, p)

    def _stall(self, item_id: bytes, p: Pending) -> None:
        wake = min(self._cooldowns(p))
        self._waiting.pop(item_id, None)
        self._stalled[item_id] = wake
        heapq.heappush(self._stall_heap, (wake, next(self._seq), item_id))
        self.events["stalled"] += 1
