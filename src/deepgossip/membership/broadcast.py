"""The piggyback queue: which membership news rides on the next datagram.

Rules (memberlist's TransmitLimitedQueue, restated):

* **Fewest-sent first.** Fresh news has reached the fewest members, so it gets
  the space first; among claims sent equally often, the one that reached that
  count last goes first (so a batch that was sent together rotates evenly).
* **Transmit limit.** Each claim is sent at most ``limit`` times by this node
  (``lambda * ceil(log10(n + 1))``, computed by the caller from the current size),
  then dropped: by then the epidemic has reached everyone with high probability.
* **Newer news replaces older.** A claim about a member drops the queued ones it
  supersedes. The exception are suspect claims from *different* accusers at the
  same incarnation: each is an independent Lifeguard confirmation and travels
  separately.
* **Byte budget.** A datagram never exceeds its budget: claims are packed by
  their exact encoded size, skipping ones that do not fit.

Claims sit in buckets indexed by transmit count, so taking claims costs
O(buckets + taken), never O(queue).
"""

from __future__ import annotations

import msgpack

from deepgossip.membership.messages import Claim
from deepgossip.membership.state import SUSPECT

_CLAIM_CODEC = Claim._wire_codec  # type: ignore[attr-defined]
MIN_CLAIM_SIZE = 24
"""No encoded claim is smaller (8 fields, a 16-byte id): stop packing below it."""


def claim_size(claim: Claim) -> int:
    """Exact msgpack size of ``claim`` as an element of an ``updates`` list."""
    return len(msgpack.packb(_CLAIM_CODEC.encode(claim), use_bin_type=True))


class _Item:
    __slots__ = ("claim", "key", "size", "transmits")

    def __init__(self, claim: Claim, key: tuple[bytes, bytes], size: int) -> None:
        self.claim = claim
        self.key = key
        self.size = size
        self.transmits = 0


class BroadcastQueue:
    """Transmit-limited, size-aware queue of claims to piggyback."""

    def __init__(self) -> None:
        self._buckets: list[dict[tuple[bytes, bytes], _Item]] = [{}]
        self._by_node: dict[bytes, dict[tuple[bytes, bytes], _Item]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def push(self, claim: Claim) -> None:
        """Queue ``claim``, dropping the queued news it makes obsolete."""
        node = claim.node
        is_suspect = claim.kind == SUSPECT
        key = (node, claim.accuser if is_suspect else b"")
        queued = self._by_node.get(node)
        if queued:
            for item in list(queued.values()):
                keep = (
                    is_suspect
                    and item.claim.kind == SUSPECT
                    and item.key != key
                    and item.claim.incarnation >= claim.incarnation
                )
                if not keep:
                    self._remove(item)
        item = _Item(claim, key, claim_size(claim))
        self._buckets[0][key] = item
        self._by_node.setdefault(node, {})[key] = item
        self._count += 1

    def _remove(self, item: _Item) -> None:
        del self._buckets[item.transmits][item.key]
        per_node = self._by_node[item.key[0]]
        del per_node[item.key]
        if not per_node:
            del self._by_node[item.key[0]]
        self._count -= 1

    def has_fresh(self, below: int) -> bool:
        """True if a queued claim was transmitted fewer than ``below`` times."""
        return any(self._buckets[: max(0, below)])

    def take(
        self, budget: int, limit: int, max_items: int, fresh_below: int | None = None
    ) -> list[Claim]:
        """Claims for one message: at most ``budget`` encoded bytes, ``max_items``.

        Each returned claim counts one transmission; claims reaching ``limit``
        transmissions leave the queue. With ``fresh_below``, only claims sent
        fewer times than that are taken.
        """
        if not self._count or budget < MIN_CLAIM_SIZE or max_items <= 0:
            return []
        buckets = self._buckets
        if len(buckets) > limit:  # the cluster shrank: the limit did too
            for bucket in buckets[limit:]:
                for item in list(bucket.values()):
                    self._remove(item)
            del buckets[limit:]
        taken: list[_Item] = []
        remaining = budget
        for bucket in buckets if fresh_below is None else buckets[:fresh_below]:
            if not bucket:
                continue
            for item in reversed(bucket.values()):
                if item.size <= remaining:
                    taken.append(item)
                    remaining -= item.size
                    if len(taken) >= max_items or remaining < MIN_CLAIM_SIZE:
                        break
            if len(taken) >= max_items or remaining < MIN_CLAIM_SIZE:
                break
        if not taken:
            return []
        # Promote oldest-first so that, read newest-first, the batch keeps its order.
        for item in reversed(taken):
            del buckets[item.transmits][item.key]
            item.transmits += 1
            if item.transmits >= limit:
                per_node = self._by_node[item.key[0]]
                del per_node[item.key]
                if not per_node:
                    del self._by_node[item.key[0]]
                self._count -= 1
                continue
            if item.transmits == len(buckets):
                buckets.append({})
            buckets[item.transmits][item.key] = item
        return [item.claim for item in taken]

    def discard(self, node: bytes) -> int:
        """Drop every queued claim about ``node`` (an excluded member: we stop
        spreading news about it); returns how many were dropped."""
        queued = self._by_node.get(node)
        if not queued:
            return 0
        items = list(queued.values())
        for item in items:
            self._remove(item)
        return len(items)

    def has(self, node: bytes) -> bool:
        """True if any claim about ``node`` is queued."""
        return node in self._by_node

    def pending(self, node: bytes) -> list[tuple[Claim, int]]:
        """Queued claims about ``node`` with their transmit counts (for tests)."""
        return [(item.claim, item.transmits) for item in self._by_node.get(node, {}).values()]

    def transmit_counts(self) -> list[int]:
        """Transmit count of every queued claim (for tests and metrics)."""
        return [item.transmits for bucket in self._buckets for item in bucket.values()]
