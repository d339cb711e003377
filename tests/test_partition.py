"""Partitioners are disjoint, complete, seeded, and skew data the way they claim.

Most checks run on the real MNIST training labels (60k, from the npz cache) so
the class imbalance of a real dataset is part of every test.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepgossip.learn.data import load_dataset
from deepgossip.learn.partition import (
    PARTITIONERS,
    PartitionError,
    dirichlet,
    disjoint_labels,
    format_histogram,
    iid,
    label_histogram,
    partition,
    shards,
    unbalanced,
)

OPTIONS: dict[str, dict[str, object]] = {
    "iid": {},
    "dirichlet": {"alpha": 0.5},
    "shards": {"classes_per_node": 2},
    "unbalanced": {"sigma": 1.0},
    "disjoint": {},
}


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return load_dataset("mnist").train_labels


def assert_disjoint_complete(parts: list[np.ndarray], n: int) -> None:
    assert all(len(part) > 0 for part in parts), "no node is empty"
    assert all(part.dtype == np.int64 for part in parts)
    assert all(np.all(np.diff(part) > 0) for part in parts), "sorted, no duplicates"
    joined = np.sort(np.concatenate(parts))
    assert np.array_equal(joined, np.arange(n)), "every index exactly once"


def classes_of(labels: np.ndarray, part: np.ndarray) -> set[int]:
    return {int(c) for c in np.unique(labels[part])}


# ---------------------------------------------------------------- common contract


@pytest.mark.parametrize("name", sorted(PARTITIONERS))
def test_disjoint_complete_and_seeded(labels: np.ndarray, name: str) -> None:
    parts = partition(name, labels, 10, seed=7, **OPTIONS[name])
    assert len(parts) == 10
    assert_disjoint_complete(parts, len(labels))
    again = partition(name, labels, 10, seed=7, **OPTIONS[name])
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition(name, labels, 10, seed=8, **OPTIONS[name])
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_partition_dispatches_to_the_named_function(labels: np.ndarray) -> None:
    direct = dirichlet(labels, 5, alpha=0.3, seed=1)
    named = partition("dirichlet", labels, 5, seed=1, alpha=0.3)
    assert all(np.array_equal(a, b) for a, b in zip(direct, named, strict=True))


def test_accepts_lists() -> None:
    parts = iid([0, 1, 0, 1, 2], 2, seed=0)
    assert_disjoint_complete(parts, 5)


# --------------------------------------------------------------------------- iid


def test_iid_sizes_and_proportions(labels: np.ndarray) -> None:
    parts = iid(labels, 7, seed=0)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    hist = label_histogram(labels, parts, 10)
    shares = hist / hist.sum(axis=1, keepdims=True)
    overall = np.bincount(labels) / len(labels)
    assert np.abs(shares - overall).max() < 0.02


# --------------------------------------------------------------------- dirichlet


def total_variation(hist: np.ndarray, overall: np.ndarray) -> np.ndarray:
    shares = hist / hist.sum(axis=1, keepdims=True)
    return 0.5 * np.abs(shares - overall).sum(axis=1)


def test_dirichlet_large_alpha_is_close_to_iid(labels: np.ndarray) -> None:
    parts = dirichlet(labels, 10, alpha=1e3, seed=3)
    hist = label_histogram(labels, parts, 10)
    overall = np.bincount(labels) / len(labels)
    assert total_variation(hist, overall).max() < 0.05
    sizes = np.array([len(p) for p in parts])
    assert sizes.max() / sizes.min() < 1.2


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_dirichlet_tiny_alpha_gives_each_class_to_about_one_node(
    labels: np.ndarray, seed: int
) -> None:
    parts = dirichlet(labels, 10, alpha=1e-3, seed=seed)
    assert_disjoint_complete(parts, len(labels))
    hist = label_histogram(labels, parts, 10)
    # Dir(1e-3) over 10 nodes still splits a class ~3% of the time (numpy's
    # sampler is exact), so look at the typical class, not the worst one.
    top_node_share = hist.max(axis=0) / hist.sum(axis=0)
    assert np.median(top_node_share) > 0.99 and np.mean(top_node_share > 0.95) >= 0.8
    # With 10 classes thrown at 10 nodes a node can collect 3-4 of them; IID
    # nodes would need all 10 to cover 95% of their samples.
    shares = np.sort(hist / hist.sum(axis=1, keepdims=True), axis=1)[:, ::-1]
    classes_for_95 = (np.cumsum(shares, axis=1) < 0.95).sum(axis=1) + 1
    assert classes_for_95.max() <= 5 and classes_for_95.mean() <= 3
    overall = np.bincount(labels) / len(labels)
    assert total_variation(hist, overall).min() > 0.5, "every node is far from IID"


def test_dirichlet_tops_up_small_nodes(labels: np.ndarray) -> None:
    for min_size in (None, 1, 500):
        parts = dirichlet(labels, 30, alpha=1e-3, seed=5, min_size=min_size)
        assert_disjoint_complete(parts, len(labels))
        assert min(len(p) for p in parts) >= (min_size or 10)


def test_dirichlet_skew_grows_as_alpha_shrinks(labels: np.ndarray) -> None:
    overall = np.bincount(labels) / len(labels)
    skew = [
        total_variation(
            label_histogram(labels, dirichlet(labels, 10, a, seed=0), 10), overall
        ).mean()
        for a in (100.0, 1.0, 0.1, 0.01)
    ]
    assert skew == sorted(skew)


# ------------------------------------------------------------------------ shards


@pytest.mark.parametrize(("nodes", "k"), [(10, 1), (10, 2), (20, 2), (7, 3), (5, 10), (100, 2)])
def test_shards_exactly_k_classes_per_node(labels: np.ndarray, nodes: int, k: int) -> None:
    parts = shards(labels, nodes, classes_per_node=k, seed=0)
    assert_disjoint_complete(parts, len(labels))
    assert all(len(classes_of(labels, p)) == k for p in parts)
    hist = label_histogram(labels, parts, 10)
    holders = (hist > 0).sum(axis=0)
    assert holders.max() - holders.min() <= 1, "classes spread evenly over nodes"


def test_shards_combinations_are_random(labels: np.ndarray) -> None:
    parts = shards(labels, 10, classes_per_node=2, seed=0)
    pairs = {frozenset(classes_of(labels, p)) for p in parts}
    assert len(pairs) > 5, "not a fixed cyclic pattern that repeats the same pairs"


# -------------------------------------------------------------------- unbalanced


def test_unbalanced_sizes_are_skewed(labels: np.ndarray) -> None:
    sizes = np.array([len(p) for p in unbalanced(labels, 20, seed=0, sigma=2.0)])
    assert sizes.max() / sizes.min() > 20
    assert sizes.std() / sizes.mean() > 1.0
    assert sizes.min() >= 10
    equal = np.array([len(p) for p in unbalanced(labels, 20, seed=0, sigma=0.0)])
    assert equal.max() - equal.min() <= 1


def test_unbalanced_keeps_labels_iid(labels: np.ndarray) -> None:
    parts = unbalanced(labels, 5, seed=1, sigma=0.5)
    hist = label_histogram(labels, parts, 10)
    overall = np.bincount(labels) / len(labels)
    assert total_variation(hist, overall).max() < 0.05


# --------------------------------------------------------------- disjoint labels


def test_disjoint_default_label_sets_do_not_overlap(labels: np.ndarray) -> None:
    parts = disjoint_labels(labels, 4, seed=0)
    assert_disjoint_complete(parts, len(labels))
    sets = [classes_of(labels, p) for p in parts]
    assert sorted(len(s) for s in sets) == [2, 2, 3, 3]
    assert set().union(*sets) == set(range(10))
    assert sum(len(s) for s in sets) == 10, "pairwise disjoint"


def test_disjoint_more_nodes_than_classes(labels: np.ndarray) -> None:
    parts = disjoint_labels(labels, 25, seed=0)
    assert_disjoint_complete(parts, len(labels))
    sets = [frozenset(classes_of(labels, p)) for p in parts]
    assert all(len(s) == 1 for s in sets)
    assert set().union(*sets) == set(range(10))
    assert all(a == b or not a & b for a in sets for b in sets)


def test_disjoint_with_k_classes_and_explicit_assignment(labels: np.ndarray) -> None:
    parts = disjoint_labels(labels, 6, seed=0, classes_per_node=3)
    sets = [classes_of(labels, p) for p in parts]
    assert all(len(s) == 3 for s in sets) and set().union(*sets) == set(range(10))

    plan = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [0, 9]]
    parts = disjoint_labels(labels, 3, seed=0, assignment=plan)
    assert_disjoint_complete(parts, len(labels))
    assert [classes_of(labels, p) for p in parts] == [set(c) for c in plan]
    hist = label_histogram(labels, parts, 10)
    assert abs(int(hist[0, 0]) - int(hist[2, 0])) <= 1, "a shared class is split evenly"


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ([[0, 1, 2, 3, 4], [5, 6, 7, 8]], "leaves classes \\[9\\]"),
        ([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10]], "no samples: \\[10\\]"),
        ([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], []], "no class"),
        ([[0, 0, 1, 2, 3, 4], [5, 6, 7, 8, 9]], "repeats"),
        ([list(range(10))], "lists 1 nodes"),
    ],
)
def test_disjoint_bad_assignment(labels: np.ndarray, plan: list[list[int]], message: str) -> None:
    with pytest.raises(PartitionError, match=message):
        disjoint_labels(labels, 2, seed=0, assignment=plan)


# ------------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    ("name", "nodes", "options", "message"),
    [
        ("iid", 0, {}, "nodes must be"),
        ("iid", -3, {}, "nodes must be"),
        ("iid", 2.5, {}, "nodes must be"),
        ("iid", True, {}, "nodes must be"),
        ("iid", 60_001, {}, "only 60000 samples"),
        ("dirichlet", 5, {}, "needs option"),
        ("dirichlet", 5, {"alpha": 0}, "alpha"),
        ("dirichlet", 5, {"alpha": -1.0}, "alpha"),
        ("dirichlet", 5, {"alpha": float("nan")}, "alpha"),
        ("dirichlet", 5, {"alpha": float("inf")}, "alpha"),
        ("dirichlet", 5, {"alpha": 1.0, "min_size": 0}, "min_size"),
        ("dirichlet", 5, {"alpha": 1.0, "min_size": 20_000}, "min_size"),
        ("shards", 5, {}, "needs option"),
        ("shards", 5, {"classes_per_node": 0}, "classes_per_node"),
        ("shards", 5, {"classes_per_node": 11}, "classes_per_node"),
        ("shards", 4, {"classes_per_node": 2}, "cannot cover"),
        ("unbalanced", 5, {"sigma": -0.1}, "sigma"),
        ("disjoint", 5, {"classes_per_node": 2, "assignment": [[0]] * 5}, "not both"),
        ("iid", 5, {"alpha": 1.0}, "does not take"),
        ("dirichlet", 5, {"alpha": 1.0, "beta": 2}, "does not take"),
        ("kmeans", 5, {}, "unknown partitioner"),
    ],
)
def test_bad_options_raise(
    labels: np.ndarray, name: str, nodes: int, options: dict[str, object], message: str
) -> None:
    with pytest.raises(PartitionError, match=message):
        partition(name, labels, nodes, seed=0, **options)


@pytest.mark.parametrize(
    ("bad_labels", "seed", "message"),
    [
        (np.zeros((4, 2), np.int64), 0, "one-dimensional"),
        (np.array([0.0, 1.0]), 0, "integers"),
        (np.array([0, -1]), 0, "non-negative"),
        (np.array([0, 1]), None, "seed"),
        (np.array([0, 1]), 1.5, "seed"),
    ],
)
def test_bad_labels_or_seed_raise(bad_labels: np.ndarray, seed: object, message: str) -> None:
    with pytest.raises(PartitionError, match=message):
        iid(bad_labels, 1, seed=seed)  # type: ignore[arg-type]


def test_partition_error_is_a_value_error() -> None:
    assert issubclass(PartitionError, ValueError)


# -------------------------------------------------------------------- histograms


def test_histogram_and_table(labels: np.ndarray) -> None:
    parts = shards(labels, 4, classes_per_node=3, seed=0)
    hist = label_histogram(labels, parts, 10)
    assert hist.shape == (4, 10) and hist.dtype == np.int64
    assert hist.sum(axis=1).tolist() == [len(p) for p in parts]
    assert np.array_equal(hist.sum(axis=0), np.bincount(labels))
    names = load_dataset("fashion-mnist").classes
    table = format_histogram(hist, names)
    lines = table.splitlines()
    assert lines[0].split() == ["node", *map(str, range(10)), "total", "classes"]
    assert len({len(line) for line in lines[:-1]}) == 1, "fixed-width columns"
    assert lines[-2].split()[-2:] == ["60000", "10"]
    assert "9=Ankle boot" in lines[-1]
    long = format_histogram(label_histogram(labels, iid(labels, 50, seed=0), 10), max_rows=6)
    assert "..." in long and len(long.splitlines()) == 6 + 1 + 4
    with pytest.raises(PartitionError):
        label_histogram(labels, parts, 5)


# ---------------------------------------------------------------- property test


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 400),
    nodes=st.integers(1, 40),
    num_classes=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    alpha=st.floats(1e-3, 1e3),
    sigma=st.floats(0.0, 3.0),
)
def test_property_disjoint_and_complete(
    n: int, nodes: int, num_classes: int, seed: int, alpha: float, sigma: float
) -> None:
    nodes = min(nodes, n)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n)
    for parts in (
        iid(labels, nodes, seed),
        dirichlet(labels, nodes, alpha, seed),
        unbalanced(labels, nodes, seed, sigma=sigma),
    ):
        assert len(parts) == nodes
        assert_disjoint_complete(parts, n)

    # Class-assignment splits need enough samples per class for the nodes sharing it.
    balanced = rng.permutation(np.arange(nodes * num_classes + n) % num_classes)
    k = max(1, -(-num_classes // nodes), seed % num_classes + 1)
    for parts in (
        shards(balanced, nodes, k, seed),
        disjoint_labels(balanced, nodes, seed),
        disjoint_labels(balanced, nodes, seed, classes_per_node=k),
    ):
        assert len(parts) == nodes
        assert_disjoint_complete(parts, len(balanced))
    assert all(len(np.unique(balanced[p])) == k for p in shards(balanced, nodes, k, seed))
