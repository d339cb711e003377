"""The gossip core: rumour mongering of announcements, body pulls, anti-entropy.

A sans-I/O state machine (see :mod:`deepgossip.net.runtime`): drive it with
``handle(src, msg, now)``, ``tick(now)`` at ``next_deadline()``, and
``publish(body, kind, now)``; it returns effects (``Send`` and events).

How an item travels (Demers et al. 1987, push rumour mongering with feedback
and counter, backed by push-pull anti-entropy):

1. ``publish`` stores the body, signs its metadata and makes it a *hot rumour*.
2. Every round (``round_period``, at a per-node random phase so nodes do not fire
   together) a node sends its hot rumours to ``fanout`` random peers in ``Push``
   datagrams, skipping peers known to hold them. A newly hot rumour is also
   pushed at once (``eager_push``).
3. The receiver answers ``Have`` for the ids it already knew. Each such reply is
   a redundant send: after ``redundancy_limit`` of them the sender loses
   interest (the rumour goes cold). ``max_push_rounds`` bounds a rumour whose
   feedback is lost.
4. A receiver that lacks the item verifies the origin's signature, then takes
   the body from the push (small items) or pulls it over the reliable channel
   from the announcers (:mod:`~deepgossip.gossip.pull`). Once the body hashes to
   its id it is stored, delivered upward once (``ItemDelivered``), and becomes
   hot at this node too: only holders push, so every announcer can serve.
5. Anti-entropy (:mod:`~deepgossip.gossip.anti_entropy`) finds what the rumour
   missed: nodes that were partitioned, crashed, joined late or were unlucky.

Bad input (malformed or absurd announcements, wrong hashes, bad signatures,
unsolicited bodies) is dropped and counted in ``stats.dropped``; ``handle`` never
raises on it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from deepgossip.gossip.anti_entropy import (
    KEY_MAX,
    AntiEntropySchedule,
    missing_from,
    summarise,
    valid_digest,
)
from deepgossip.gossip.config import DEFAULT_CONFIG, GossipConfig
from deepgossip.gossip.events import Equivocation, GossipStats, ItemDelivered
from deepgossip.gossip.item import (
    ID_LEN,
    ItemMeta,
    SignFn,
    VerifyFn,
    check_announcement,
    item_id_of,
    verify_origin,
)
from deepgossip.gossip.messages import (
    Announcement,
    Bodies,
    Body,
    Digest,
    DigestReply,
    Have,
    Offer,
    OfferEntry,
    Pull,
    Push,
)
from deepgossip.gossip.pull import PullScheduler
from deepgossip.gossip.store import ItemStore, PutResult, StoredItem
from deepgossip.net.runtime import Address, Effect, Send

PeersFn = Callable[[], Sequence[Address]]
"""Current live peers, excluding this node (the membership layer's view)."""

RUMOUR = "rumour"
ANTI_ENTROPY = "anti_entropy"
ENTRY_OVERHEAD = 40
"""Estimated msgpack bytes of an announcement besides its variable-length fields
(measured: ~33 with 5-byte seq and 9-byte float)."""
GC_MIN_INTERVAL = 1.0
"""Collection runs at most this often (expiries are coalesced)."""
SERVE_MAX_BYTES = 8 * 1024 * 1024
"""Bytes of bodies per pull answer (one body always goes, whatever its size)."""


def entry_cost(a: Announcement) -> int:
    """Estimated encoded size of an announcement (a slight overestimate)."""
    cost = ENTRY_OVERHEAD + len(a.item_id) + len(a.origin) + len(a.public_key)
    cost += len(a.signature) + len(a.kind.encode()) + (len(a.body) if a.body is not None else 0)
    return cost


@dataclass(slots=True)
class HotRumour:
    announcement: Announcement
    budget: int
    redundant: int = 0
    rounds: int = 0
    awaiting: set[Address] = field(default_factory=set)
    """Peers pushed to whose feedback is still due (only they may send ``Have``)."""
    holders: set[Address] = field(default_factory=set)
    """Peers known to hold the item: never pushed to."""


class RumorCore:
    """Rumour mongering with body pull and anti-entropy for one node.

    Args:
        node_id: this node's id (the origin of what it publishes).
        public_key: its public key, carried in announcements for verification.
        sign: signs 32-byte metadata digests with the node's private key.
        verify: ``verify(node_id, public_key, signature, data)`` for others' items.
        peers: current live peers, excluding self.
        rng: the only source of randomness (``SimNetwork.rng_for`` in simulation).
        config: tunables; ``ae_period=math.inf`` disables anti-entropy.
        now: current time (phases of rounds and the first exchange derive from it).
        first_seq: sequence number of the first publication. Must exceed every seq
            this node id published before (e.g. persist it, or use wall-clock ms).
    """

    def __init__(
        self,
        *,
        node_id: bytes,
        public_key: bytes,
        sign: SignFn,
        verify: VerifyFn,
        peers: PeersFn,
        rng: random.Random,
        config: GossipConfig = DEFAULT_CONFIG,
        now: float = 0.0,
        first_seq: int = 1,
    ) -> None:
        self.node_id = node_id
        self.public_key = public_key
        self.config = config
        self.stats = GossipStats()
        self.store = ItemStore(config.store)
        self.pulls = PullScheduler(config, rng)
        self.anti_entropy = AntiEntropySchedule(config, rng, now)
        self._sign = sign
        self._verify = verify
        self._peers = peers
        self._rng = rng
        self._seq = first_seq
        self._hot: dict[bytes, HotRumour] = {}
        self._fresh: list[bytes] = []  # became hot during the current call
        self._phase = rng.random() * config.round_period
        self._next_round = math.inf
        self._last_gc = now

    # -- queries -------------------------------------------------------------------

    def has(self, item_id: bytes) -> bool:
        return item_id in self.store

    def get(self, item_id: bytes) -> StoredItem | None:
        return self.store.get(item_id)

    def is_hot(self, item_id: bytes) -> bool:
        return item_id in self._hot

    @property
    def hot_count(self) -> int:
        return len(self._hot)

    @property
    def idle(self) -> bool:
        """No hot rumour and no body to fetch: the node's part for now is done."""
        return not self._hot and not len(self.pulls)

    # -- the sans-I/O contract -------------------------------------------------------

    def publish(self, body: bytes, kind: str, now: float) -> tuple[bytes, list[Effect]]:
        """Store ``body`` as a new item of ``kind`` and start spreading it.

        Returns the item id and the effects (an eager push). Publishing bytes the
        node already holds is a no-op. Raises ``ValueError`` on local misuse.
        """
        if not kind or len(kind) > self.config.max_kind_len:
            raise ValueError(f"kind must be 1..{self.config.max_kind_len} characters")
        if len(body) > self.config.max_item_bytes:
            raise ValueError(f"body exceeds max_item_bytes ({self.config.max_item_bytes})")
        item_id = item_id_of(body)
        if item_id in self.store:
            return item_id, []
        unsigned = ItemMeta(
            item_id, self.node_id, self.public_key, self._seq, len(body), kind, now, b""
        )
        meta = replace(unsigned, signature=self._sign(unsigned.digest()))
        self._seq += 1
        outcome = self.store.put(meta, body, now, revive=True)
        if outcome.result is not PutResult.STORED:
            raise ValueError(f"cannot store the item: {outcome.result.value}")
        effects: list[Effect] = []
        self._evicted(outcome.evicted)
        self.pulls.done(item_id)
        self.stats.kind(kind).published += 1
        self._make_hot(meta, body, self.config.redundancy_limit, (), now)
        effects.extend(self._flush_fresh())
        return item_id, effects

    def handle(self, src: Address, msg: Any, now: float) -> list[Effect]:
        self.stats.received[getattr(msg, "TYPE", type(msg).__name__)] += 1
        handler = self._handlers.get(type(msg))
        if handler is None:
            self.stats.dropped["unknown_message"] += 1
            return []
        effects = handler(self, src, msg, now)
        effects.extend(self._flush_fresh())
        effects.extend(self._pump(now))
        return effects

    def tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if now >= self._next_round:
            effects.extend(self._round(now))
        self.pulls.expire(now)
        if now >= self.anti_entropy.next_at:
            effects.extend(self._start_exchange(now))
        if now >= self._gc_deadline():
            self._collect(now)
        effects.extend(self._flush_fresh())
        effects.extend(self._pump(now))
        return effects

    def next_deadline(self) -> float:
        return min(
            self._next_round,
            self.anti_entropy.next_at,
            self.pulls.next_deadline(),
            self._gc_deadline(),
        )

    # -- rumour mongering ------------------------------------------------------------

    def _make_hot(
        self, meta: ItemMeta, body: bytes, budget: int, holders: Sequence[Address], now: float
    ) -> None:
        inline = body if self._fits_inline(meta, body) else None
        self._hot[meta.item_id] = HotRumour(meta.announcement(inline), budget, holders=set(holders))
        if self._next_round == math.inf:
            self._next_round = self._round_after(now)
        if self.config.eager_push:
            self._fresh.append(meta.item_id)

    def _flush_fresh(self) -> list[Effect]:
        """Eager push of the rumours that became hot during this call, in one batch
        (a pull answer carrying 30 bodies makes 30 rumours hot, not 30 datagrams)."""
        if not self._fresh:
            return []
        fresh = [i for i in self._fresh if i in self._hot]
        self._fresh.clear()
        return self._push(fresh)

    def _fits_inline(self, meta: ItemMeta, body: bytes) -> bool:
        """Small bodies ride in the announcement if the datagram stays within budget."""
        if len(body) > self.config.inline_max_bytes:
            return False
        return entry_cost(meta.announcement(body)) <= self.config.datagram_budget

    def _round_after(self, now: float) -> float:
        period = self.config.round_period
        at = self._phase + (math.floor((now - self._phase) / period) + 1) * period
        while at <= now:  # float rounding can land on ``now`` itself
            at += period
        return at

    def _round(self, now: float) -> list[Effect]:
        if not self._hot:
            self._next_round = math.inf
            return []
        self._next_round = self._round_after(now)
        effects = self._push(list(self._hot))
        for item_id, hot in list(self._hot.items()):
            hot.rounds += 1
            if hot.rounds >= self.config.max_push_rounds:
                self._cool(item_id, "max_rounds")
        return effects

    def _push(self, ids: list[bytes]) -> list[Effect]:
        """Send the given hot rumours to ``fanout`` random peers that may lack them."""
        peers = self._peers()
        if not peers or not ids:
            return []
        fanout = self.config.fanout
        candidates = self._rng.sample(peers, min(len(peers), 3 * fanout + 2))
        effects: list[Effect] = []
        chosen = 0
        for peer in candidates:
            if chosen >= fanout:
                break
            entries = [self._hot[i] for i in ids if peer not in self._hot[i].holders]
            if not entries:
                continue
            chosen += 1
            effects.extend(self._push_to(peer, entries))
        return effects

    def _push_to(self, peer: Address, entries: list[HotRumour]) -> list[Effect]:
        budget = self.config.datagram_budget
        batches: list[list[Announcement]] = [[]]
        size = 0
        for hot in entries:
            a = hot.announcement
            cost = entry_cost(a)
            if batches[-1] and size + cost > budget:
                batches.append([])
                size = 0
            batches[-1].append(a)
            size += cost
            hot.awaiting.add(peer)
            self.stats.kind(a.kind).announcements_sent += 1
        return [self._send(peer, Push(tuple(batch))) for batch in batches]

    def _cool(self, item_id: bytes, why: str) -> None:
        if self._hot.pop(item_id, None) is not None:
            self.stats.events[f"cold_{why}"] += 1

    def _on_push(self, src: Address, msg: Push, now: float) -> list[Effect]:
        if len(msg.entries) > self.config.max_entries_per_message:
            self.stats.dropped["oversized_message"] += 1
            return []
        effects: list[Effect] = []
        known: list[bytes] = []
        for a in msg.entries:
            status = self._accept(src, a, RUMOUR, 0.0, now, effects)
            if status == "known":
                known.append(a.item_id)
        if known:
            effects.append(self._send(src, Have(tuple(known))))
        return effects

    def _on_have(self, src: Address, msg: Have, now: float) -> list[Effect]:
        if len(msg.ids) > self.config.max_entries_per_message:
            self.stats.dropped["oversized_message"] += 1
            return []
        for item_id in msg.ids:
            hot = self._hot.get(item_id)
            if hot is None:
                self.stats.events["have_after_cold"] += 1  # late feedback: harmless
                continue
            if src not in hot.awaiting:
                self.stats.dropped["unsolicited_have"] += 1
                continue
            hot.awaiting.discard(src)
            hot.holders.add(src)
            hot.redundant += 1
            if hot.redundant >= hot.budget:
                self._cool(item_id, "feedback")
        return []

    # -- announcements (from pushes and anti-entropy) ----------------------------------

    def _accept(
        self,
        src: Address,
        a: Announcement,
        via: str,
        age: float,
        now: float,
        effects: list[Effect],
    ) -> str:
        """Take in one announcement: ``"known"``, ``"new"`` or ``"dropped"``."""
        reason = check_announcement(a, self.config.max_item_bytes, self.config.max_kind_len)
        if reason is not None:
            self.stats.dropped[reason] += 1
            return "dropped"
        item_id = a.item_id
        if self.store.is_known(item_id):
            hot = self._hot.get(item_id)
            if hot is not None:
                hot.holders.add(src)
            return "known"
        if item_id in self.pulls:
            self.pulls.add_holder(item_id, src, via)
            return "known"
        if self.store.is_stale(a.origin, a.seq):
            self.stats.dropped["stale"] += 1
            return "known"
        if a.body is not None and item_id_of(a.body) != item_id:
            self.stats.dropped["hash_mismatch"] += 1
            return "dropped"
        meta = ItemMeta.from_announcement(a)
        if not verify_origin(self._verify, meta):
            self.stats.dropped["bad_signature"] += 1
            return "dropped"
        rekindle = via == ANTI_ENTROPY and age <= self.config.rekindle_max_age
        if a.body is not None:
            effects.extend(self._stored(meta, a.body, via, rekindle, (src,), now))
        else:
            self.pulls.add(meta, src, via, rekindle, now)
        return "new"

    def _stored(
        self,
        meta: ItemMeta,
        body: bytes,
        via: str,
        rekindle: bool,
        holders: Sequence[Address],
        now: float,
    ) -> list[Effect]:
        """Store a verified body, deliver it, and make it hot if it is news."""
        outcome = self.store.put(meta, body, now)
        if outcome.result is PutResult.HASH_MISMATCH:
            self.stats.dropped["hash_mismatch"] += 1
            return []
        self.pulls.done(meta.item_id)
        if outcome.result is not PutResult.STORED:
            self.stats.dropped[outcome.result.value] += 1
            return []
        self._evicted(outcome.evicted)
        kind_stats = self.stats.kind(meta.kind)
        kind_stats.delivered += 1
        kind_stats.bytes_delivered += meta.size
        effects: list[Effect] = [
            ItemDelivered(
                meta.item_id,
                meta.kind,
                meta.origin,
                meta.seq,
                body,
                meta.size,
                meta.created,
                meta.public_key,
                via,
                now,
            )
        ]
        if outcome.conflict is not None:
            self.stats.events["equivocation"] += 1
            effects.append(Equivocation(meta.origin, meta.seq, (outcome.conflict, meta.item_id)))
        if via == RUMOUR:
            self._make_hot(meta, body, self.config.redundancy_limit, holders, now)
        elif rekindle and self.config.rekindle_redundancy > 0:
            self.stats.events["rekindled"] += 1
            self._make_hot(meta, body, self.config.rekindle_redundancy, holders, now)
        return effects

    # -- bodies --------------------------------------------------------------------------

    def _pump(self, now: float) -> list[Effect]:
        sends = self.pulls.pump(now)
        self.stats.sent[Pull.TYPE] += len(sends)
        self.anti_entropy.resume(now, len(self.pulls))
        return list(sends)

    def _on_pull(self, src: Address, msg: Pull, now: float) -> list[Effect]:
        if len(msg.ids) > self.config.max_entries_per_message:
            self.stats.dropped["oversized_message"] += 1
            return []
        items: list[Body] = []
        missing: list[bytes] = []
        size = 0
        for item_id in msg.ids:
            item = self.store.get(item_id)
            if item is None or (items and size + item.meta.size > SERVE_MAX_BYTES):
                missing.append(item_id)
                continue
            items.append(Body(item_id, item.body))
            size += item.meta.size
            kind_stats = self.stats.kind(item.meta.kind)
            kind_stats.bodies_served += 1
            kind_stats.bytes_served += item.meta.size
            hot = self._hot.get(item_id)
            if hot is not None:
                hot.holders.add(src)  # it will have it: pushing to it would be redundant
        return [self._send(src, Bodies(msg.request, tuple(items), tuple(missing)), True)]

    def _on_bodies(self, src: Address, msg: Bodies, now: float) -> list[Effect]:
        if len(msg.items) + len(msg.missing) > self.config.max_entries_per_message:
            self.stats.dropped["oversized_message"] += 1
            return []
        self.pulls.finish(msg.request, src, now)
        effects: list[Effect] = []
        for body in msg.items:
            p = self.pulls.claim(body.item_id, src)
            if p is None:
                self.stats.dropped["unsolicited_body"] += 1
                continue
            if len(body.data) != p.meta.size or item_id_of(body.data) != p.meta.item_id:
                self.stats.dropped["hash_mismatch"] += 1
                self.pulls.failed(body.item_id, src, now)
                continue
            holders = [h for h in p.holders if h == src or h not in p.failed]
            effects.extend(self._stored(p.meta, body.data, p.via, p.rekindle, holders, now))
        for item_id in msg.missing:
            if self.pulls.claim(item_id, src) is not None:
                self.pulls.failed(item_id, src, now)
        return effects

    # -- anti-entropy --------------------------------------------------------------------

    def _fetching(self) -> dict[bytes, list[int]]:
        out: dict[bytes, list[int]] = {}
        for p in self.pulls.active():
            out.setdefault(p.meta.origin, []).append(p.meta.seq)
        return out

    def _summary(self, lo: int, hi: int) -> tuple[Any, int]:
        return summarise(
            self.store,
            self._fetching(),
            lo,
            hi,
            self.config.digest_max_origins,
            self.config.digest_max_ranges,
        )

    def _start_exchange(self, now: float) -> list[Effect]:
        peer = self.anti_entropy.begin(now, self._peers())
        if peer is None:
            return []
        origins, hi = self._summary(self.anti_entropy.cursor, KEY_MAX)
        lo = self.anti_entropy.cursor
        self.anti_entropy.advance(hi)
        return [self._send(peer, Digest(lo, hi, origins), True)]

    def _missing_from(self, msg: Digest | DigestReply, now: float) -> tuple[list[OfferEntry], bool]:
        """What we hold that the digest in ``msg`` lacks, as offers (bounded)."""
        return missing_from(
            self.store,
            msg.origins,
            msg.lo,
            msg.hi,
            self.config.offer_max_items,
            now,
            self.config.inline_max_bytes,
        )

    def _on_digest(self, src: Address, msg: Digest, now: float) -> list[Effect]:
        if not valid_digest(msg.lo, msg.hi, msg.origins):
            self.stats.dropped["bad_digest"] += 1
            return []
        offers, more = self._missing_from(msg, now)
        origins, hi = self._summary(msg.lo, msg.hi)
        return [self._send(src, DigestReply(tuple(offers), msg.lo, hi, origins, more), True)]

    def _on_digest_reply(self, src: Address, msg: DigestReply, now: float) -> list[Effect]:
        if not self.anti_entropy.solicited(src):
            self.stats.dropped["unsolicited_digest_reply"] += 1
            return []
        if len(msg.offers) > self.config.max_entries_per_message or not valid_digest(
            msg.lo, msg.hi, msg.origins
        ):
            self.stats.dropped["bad_digest"] += 1
            return []
        effects = self._take_offers(src, msg.offers, msg.more, now)
        offers, more = self._missing_from(msg, now)
        if offers:
            effects.append(self._send(src, Offer(tuple(offers), more), True))
        return effects

    def _on_offer(self, src: Address, msg: Offer, now: float) -> list[Effect]:
        if len(msg.offers) > self.config.max_entries_per_message:
            self.stats.dropped["oversized_message"] += 1
            return []
        return self._take_offers(src, msg.offers, msg.more, now)

    def _take_offers(
        self, src: Address, offers: Sequence[OfferEntry], more: bool, now: float
    ) -> list[Effect]:
        effects: list[Effect] = []
        for entry in offers:
            age = entry.age if math.isfinite(entry.age) else math.inf
            self._accept(src, entry.announcement, ANTI_ENTROPY, age, now, effects)
        if more:
            self.anti_entropy.want_more(now, len(self.pulls))
        return effects

    # -- garbage collection --------------------------------------------------------------

    def _gc_deadline(self) -> float:
        return max(self.store.next_expiry(), self._last_gc + GC_MIN_INTERVAL)

    def _collect(self, now: float) -> None:
        self._last_gc = now
        self._evicted(self.store.collect(now))

    def _evicted(self, metas: Sequence[ItemMeta]) -> None:
        for meta in metas:
            self.stats.events["collected"] += 1
            self._cool(meta.item_id, "collected")

    # -- plumbing ------------------------------------------------------------------------

    def _send(self, to: Address, msg: Any, reliable: bool = False) -> Send:
        self.stats.sent[msg.TYPE] += 1
        return Send(to, msg, reliable)

    _handlers: ClassVar[dict[type, Callable[[RumorCore, Address, Any, float], list[Effect]]]] = {
        Push: _on_push,
        Have: _on_have,
        Pull: _on_pull,
        Bodies: _on_bodies,
        Digest: _on_digest,
        DigestReply: _on_digest_reply,
        Offer: _on_offer,
    }


__all__ = ["ANTI_ENTROPY", "ID_LEN", "RUMOUR", "HotRumour", "PeersFn", "RumorCore"]
