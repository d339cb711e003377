"""Pure pieces: digest ranges, digest chunking, offers, signing digests."""

from __future__ import annotations

from deepgossip.gossip.anti_entropy import (
    KEY_MAX,
    RangeSet,
    missing_from,
    origin_key,
    summarise,
    to_ranges,
    valid_ranges,
)
from deepgossip.gossip.item import ItemMeta, item_id_of, signing_digest
from deepgossip.gossip.messages import OriginSeqs
from deepgossip.gossip.store import ItemStore


def test_ranges_are_compact_and_exact() -> None:
    assert to_ranges([], -1, 8) == ()
    assert to_ranges([3, 1, 2, 2, 7, 8, 10], -1, 8) == (1, 3, 7, 8, 10, 10)
    assert to_ranges([4, 5, 9], 3, 8) == (0, 5, 9, 9)  # floor merges with the run after it
    assert to_ranges([1, 2], 5, 8) == (0, 5)
    # Truncation drops the highest ranges: the node claims to lack what it holds,
    # which costs a redundant offer but can never hide an item from it.
    assert to_ranges([1, 3, 5, 7], -1, 2) == (1, 1, 3, 3)
    rs = RangeSet((0, 5, 9, 9, 12, 20))
    assert [s for s in range(25) if s in rs] == [0, 1, 2, 3, 4, 5, 9, *range(12, 21)]
    assert valid_ranges((0, 5, 9, 9)) and not valid_ranges((0, 5, 5, 9))
    assert not valid_ranges((3, 2)) and not valid_ranges((1,))


def _meta(origin: bytes, seq: int) -> tuple[ItemMeta, bytes]:
    body = origin + seq.to_bytes(4, "big")
    return ItemMeta(item_id_of(body), origin, b"k", seq, len(body), "t", 0.0, b"s"), body


def _store(origins: list[bytes], seqs: range) -> ItemStore:
    store = ItemStore()
    t = 0.0
    for seq in seqs:
        for origin in origins:
            m, body = _meta(origin, seq)
            store.put(m, body, t)
            t += 1.0
    return store


def test_summary_is_chunked_by_origin_key() -> None:
    origins = [bytes([i]) * 16 for i in range(10)]
    store = _store(origins, range(1, 4))
    full, hi = summarise(store, {}, 0, KEY_MAX, 100, 8)
    assert hi == KEY_MAX and len(full) == 10
    assert all(o.ranges == (1, 3) for o in full)
    first, hi1 = summarise(store, {}, 0, KEY_MAX, 4, 8)
    assert len(first) == 4 and hi1 == origin_key(origins[4]) - 1
    second, _ = summarise(store, {origins[9]: [4]}, hi1 + 1, KEY_MAX, 4, 8)
    assert [o.origin for o in second] == [o[:8] for o in origins[4:8]]
    last, _ = summarise(store, {origins[9]: [4]}, origin_key(origins[8]), KEY_MAX, 4, 8)
    assert last[-1].ranges == (1, 4)  # being fetched counts as known


def test_missing_from_offers_newest_first_within_scope() -> None:
    origins = [bytes([i]) * 16 for i in range(3)]
    store = _store(origins, range(1, 6))
    theirs = (OriginSeqs(origins[0][:8], (1, 5)), OriginSeqs(origins[1][:8], (1, 2)))
    offers, more = missing_from(store, theirs, 0, KEY_MAX, 100, now=100.0)
    got = [(o.announcement.origin[0], o.announcement.seq) for o in offers]
    assert not more
    assert got == [(2, 5), (1, 5), (2, 4), (1, 4), (2, 3), (1, 3), (2, 2), (2, 1)]
    assert offers[0].age == 100.0 - 14.0
    capped, more = missing_from(store, theirs, 0, KEY_MAX, 3, now=100.0)
    assert len(capped) == 3 and more
    scoped, _ = missing_from(store, (), origin_key(origins[2]), KEY_MAX, 100, now=0.0)
    assert {o.announcement.origin for o in scoped} == {origins[2]}


def test_signing_digest_binds_every_field() -> None:
    base = (b"i" * 32, b"o" * 16, b"k" * 32, 1, 10, "update", 1.5)
    d = signing_digest(*base)
    for index, other in enumerate((b"j" * 32, b"p" * 16, b"l" * 32, 2, 11, "accuse", 2.5)):
        changed = list(base)
        changed[index] = other
        assert signing_digest(*changed) != d  # type: ignore[arg-type]
    # Length prefixes: moving bytes between origin and key changes the digest.
    assert signing_digest(b"i" * 32, b"ab", b"c", 1, 1, "k", 0.0) != signing_digest(
        b"i" * 32, b"a", b"bc", 1, 1, "k", 0.0
    )
