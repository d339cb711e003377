"""The content-addressed item store: hash checks, limits, GC, tombstones, floors."""

from __future__ import annotations

from deepgossip.gossip.config import StoreLimits
from deepgossip.gossip.item import ItemMeta, item_id_of
from deepgossip.gossip.store import ItemStore, PutResult

ORIGIN = b"o" * 16


def meta(body: bytes, seq: int = 1, origin: bytes = ORIGIN) -> ItemMeta:
    return ItemMeta(item_id_of(body), origin, b"k" * 32, seq, len(body), "test", 0.0, b"s")


def test_put_checks_the_body_hashes_to_its_id() -> None:
    store = ItemStore()
    good = meta(b"hello")
    assert store.put(good, b"hellO", 0.0).result is PutResult.HASH_MISMATCH
    assert store.put(good, b"hell", 0.0).result is PutResult.HASH_MISMATCH
    assert good.item_id not in store
    assert store.put(good, b"hello", 0.0).result is PutResult.STORED
    assert store.put(good, b"hello", 1.0).result is PutResult.KNOWN
    assert store.get(good.item_id).body == b"hello"  # type: ignore[union-attr]
    assert store.total_bytes == 5 and len(store) == 1


def test_age_gc_leaves_tombstones_then_floors() -> None:
    store = ItemStore(StoreLimits(max_age=10.0, tombstone_ttl=20.0))
    old, new = meta(b"a", seq=1), meta(b"b", seq=2)
    store.put(old, b"a", 0.0)
    store.put(new, b"b", 5.0)
    assert store.next_expiry() == 10.0
    assert [m.item_id for m in store.collect(10.0)] == [old.item_id]
    assert old.item_id not in store and new.item_id in store
    # Remembered: a late announcement must not make it fetched and delivered again.
    assert store.is_known(old.item_id)
    assert store.put(old, b"a", 11.0).result is PutResult.KNOWN
    assert sorted(store.known_seqs(ORIGIN)) == [1, 2]
    store.collect(30.0)  # tombstone of seq 1 expires; seq 2 collected
    assert not store.is_known(old.item_id)
    assert store.is_stale(ORIGIN, 1) and store.floor(ORIGIN) == 1
    assert store.put(old, b"a", 31.0).result is PutResult.STALE


def test_capacity_evicts_oldest_first() -> None:
    store = ItemStore(StoreLimits(max_items=3, max_bytes=10))
    metas = [meta(bytes([i]) * 3, seq=i) for i in range(1, 5)]
    evicted = []
    for i, m in enumerate(metas):
        evicted += store.put(m, bytes([i + 1]) * 3, float(i)).evicted
    assert [m.seq for m in evicted] == [1]
    assert len(store) == 3 and store.total_bytes == 9
    big = meta(b"x" * 7, seq=9)
    out = store.put(big, b"x" * 7, 9.0)
    assert out.result is PutResult.STORED
    assert [m.seq for m in out.evicted] == [2, 3]  # 3 + 7 <= 10
    assert store.total_bytes == 10
    assert store.put(meta(b"y" * 11), b"y" * 11, 9.0).result is PutResult.TOO_LARGE


def test_tombstone_count_is_bounded() -> None:
    store = ItemStore(StoreLimits(max_items=1, max_tombstones=2))
    for seq in range(1, 6):
        store.put(meta(bytes([seq]), seq=seq), bytes([seq]), float(seq))
    # 4 collected, 2 remembered as tombstones, the older ones folded into the floor.
    assert store.floor(ORIGIN) == 2
    assert sorted(store.known_seqs(ORIGIN)) == [3, 4, 5]


def test_equivocation_is_reported_and_both_kept() -> None:
    store = ItemStore()
    a, b = meta(b"first", seq=7), meta(b"second", seq=7)
    assert store.put(a, b"first", 0.0).conflict is None
    out = store.put(b, b"second", 0.0)
    assert out.result is PutResult.STORED and out.conflict == a.item_id
    assert store.held_seqs(ORIGIN) == {7: a.item_id}


def test_revive_republishes_a_collected_id() -> None:
    store = ItemStore(StoreLimits(max_age=1.0))
    m = meta(b"z")
    store.put(m, b"z", 0.0)
    store.collect(2.0)
    assert store.put(m, b"z", 3.0).result is PutResult.KNOWN
    assert store.put(m, b"z", 3.0, revive=True).result is PutResult.STORED
