"""Anti-entropy: periodic push-pull digest exchange that fills what rumours missed.

Every ``ae_period`` (jittered) a node sends a random peer a :class:`Digest`:
for each origin, the sequence numbers it knows, as inclusive ranges. Known means
held, collected (tombstone), at or below the origin's floor, or being fetched
from a holder that may still answer. With origins numbering their items 1, 2,
3, ... this is one range per origin in the steady state (a version vector), and
holes cost one more range each.

The digest is bounded: at most ``digest_max_origins`` origins, keyed by the first
8 bytes of their id, covering a contiguous key interval ``[lo, hi]``; a node
with more origins covers its key space in rotating chunks, one per exchange.
An origin in scope but absent from the digest is one the sender knows nothing of,
so a late joiner's empty digest covers everything.

The peer answers with a :class:`DigestReply`: announcements of what the sender
lacks (newest first, at most ``offer_max_items``, ``more`` if truncated) and its
own digest over the same interval; the sender then sends an :class:`Offer` of
what the peer lacks (push-pull: both sides heal in one exchange). Bodies are
then pulled like any other announced item, from whichever holders announced
them. A node that was told ``more`` runs its next exchange soon, with another
random peer, once its pull queue is short: catch-up goes in bounded steps, is
spread over donors, and resumes wherever it stopped.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterable, Sequence

from deepgossip.gossip.config import GossipConfig
from deepgossip.gossip.messages import OfferEntry, OriginSeqs
from deepgossip.gossip.store import ItemStore, StoredItem
from deepgossip.net.runtime import Address

KEY_LEN = 8
KEY_MAX = 2 ** (8 * KEY_LEN) - 1
MAX_DIGEST_ORIGINS = 4096
MAX_RANGES_PER_ORIGIN = 512
OUTSTANDING_TTL = 30.0
"""A digest reply later than this is treated as unsolicited."""


def origin_key(origin: bytes) -> int:
    """The digest key of an origin: its first 8 bytes as an unsigned integer."""
    return int.from_bytes(origin[:KEY_LEN].ljust(KEY_LEN, b"\0"), "big")


def to_ranges(seqs: Iterable[int], floor: int, max_ranges: int) -> tuple[int, ...]:
    """Flat inclusive ranges ``(lo1, hi1, ...)`` covering ``[0, floor]`` and ``seqs``.

    Beyond ``max_ranges`` the highest ranges are left out: the node then claims to
    lack items it holds, which only costs a redundant offer, never a missed item.
    """
    out: list[int] = [0, floor] if floor >= 0 else []
    for seq in sorted(set(seqs)):
        if seq <= floor:
            continue
        if out and seq == out[-1] + 1:
            out[-1] = seq
        elif out and seq <= out[-1]:
            continue
        else:
            if len(out) >= 2 * max_ranges:
                break
            out.extend((seq, seq))
    return tuple(out)


class RangeSet:
    """Membership test over flat inclusive ranges (validated by :func:`valid_ranges`)."""

    __slots__ = ("_his", "_los")

    def __init__(self, flat: Sequence[int]) -> None:
        self._los = flat[0::2]
        self._his = flat[1::2]

    def __contains__(self, seq: int) -> bool:
        i = bisect.bisect_right(self._los, seq) - 1
        return i >= 0 and seq <= self._his[i]


def valid_ranges(flat: Sequence[int]) -> bool:
    if len(flat) % 2 or len(flat) > 2 * MAX_RANGES_PER_ORIGIN:
        return False
    previous = -1
    for i in range(0, len(flat), 2):
        lo, hi = flat[i], flat[i + 1]
        if lo <= previous or hi < lo:
            return False
        previous = hi
    return True


def valid_digest(lo: int, hi: int, origins: Sequence[OriginSeqs]) -> bool:
    if not 0 <= lo <= hi <= KEY_MAX or len(origins) > MAX_DIGEST_ORIGINS:
        return False
    return all(len(o.origin) == KEY_LEN and valid_ranges(o.ranges) for o in origins)


def summarise(
    store: ItemStore,
    fetching: dict[bytes, list[int]],
    lo: int,
    hi: int,
    max_origins: int,
    max_ranges: int,
) -> tuple[tuple[OriginSeqs, ...], int]:
    """What this node knows for origin keys in ``[lo, hi]``, and the ``hi`` covered.

    ``fetching`` maps origins to seqs being pulled (known, not yet held). When
    more than ``max_origins`` keys are in scope, the interval is cut short before
    the first key left out.
    """
    by_key: dict[int, list[bytes]] = {}
    for origin in store.origins() | fetching.keys():
        key = origin_key(origin)
        if lo <= key <= hi:
            by_key.setdefault(key, []).append(origin)
    keys = sorted(by_key)
    if len(keys) > max_origins:
        hi = keys[max_origins] - 1
        keys = keys[:max_origins]
    out = []
    for key in keys:
        seqs: list[int] = []
        floor = -1
        for origin in by_key[key]:  # several only on an 8-byte prefix collision
            seqs.extend(store.known_seqs(origin))
            seqs.extend(fetching.get(origin, ()))
            floor = max(floor, store.floor(origin))
        out.append(OriginSeqs(key.to_bytes(KEY_LEN, "big"), to_ranges(seqs, floor, max_ranges)))
    return tuple(out), hi


def missing_from(
    store: ItemStore,
    origins: Sequence[OriginSeqs],
    lo: int,
    hi: int,
    cap: int,
    now: float,
    inline_max: int = 0,
) -> tuple[list[OfferEntry], bool]:
    """Announcements of held items in ``[lo, hi]`` the digest does not cover.

    Newest first (fresh updates matter most to a learner); ``True`` if truncated.
    Bodies up to ``inline_max`` bytes ride along (the exchange is on the stream
    transport), which saves a pull round trip per small item.
    """
    theirs = {origin_key(o.origin): RangeSet(o.ranges) for o in origins}
    chosen: list[StoredItem] = []
    more = False
    for item in reversed(list(store.items())):
        meta = item.meta
        key = origin_key(meta.origin)
        if not lo <= key <= hi:
            continue
        ranges = theirs.get(key)
        if ranges is not None and meta.seq in ranges:
            continue
        if len(chosen) >= cap:
            more = True
            break
        chosen.append(item)
    return [
        OfferEntry(
            i.meta.announcement(i.body if i.meta.size <= inline_max else None),
            max(0.0, now - i.received_at),
        )
        for i in chosen
    ], more


class AntiEntropySchedule:
    """When to exchange digests, with whom, over which key interval."""

    def __init__(self, config: GossipConfig, rng: random.Random, now: float) -> None:
        self.config = config
        self.rng = rng
        self.enabled = math.isfinite(config.ae_period)
        self.next_at = now + rng.random() * config.ae_first_delay if self.enabled else math.inf
        self.cursor = 0
        self.catching_up = False
        self._outstanding: dict[Address, float] = {}

    def begin(self, now: float, peers: Sequence[Address]) -> Address | None:
        """Pick the partner of the exchange due now; schedule the next one."""
        period = self.config.ae_period
        self.next_at = now + period * (0.5 + self.rng.random())  # mean = period
        self.catching_up = False
        for addr, expiry in list(self._outstanding.items()):
            if expiry <= now:
                del self._outstanding[addr]
        if not peers:
            return None
        peer = self.rng.choice(peers)
        self._outstanding[peer] = now + OUTSTANDING_TTL
        return peer

    def advance(self, hi: int) -> None:
        """The digest just sent covered keys up to ``hi``: start after it next time."""
        self.cursor = 0 if hi >= KEY_MAX else hi + 1

    def solicited(self, src: Address) -> bool:
        return self._outstanding.pop(src, None) is not None

    def want_more(self, now: float, pending: int) -> None:
        """A peer had more to offer: exchange again soon if the pull queue allows."""
        self.catching_up = True
        self.resume(now, pending)

    def resume(self, now: float, pending: int) -> None:
        if self.enabled and self.catching_up and pending < self.config.catchup_pending_max:
            self.catching_up = False
            self.next_at = min(self.next_at, now + self.config.ae_catchup_delay)
