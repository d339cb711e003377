"""Split a training set over nodes: IID, label skew, quantity skew, disjoint labels.

Every partitioner takes the training labels, the number of nodes and an integer
seed, and returns one sorted ``int64`` index array per node. All are deterministic
(a fresh :func:`numpy.random.default_rng` per call, so the same seed always gives
the same split and no global state is touched) and all are *disjoint and
complete*: every sample index lands on exactly one node, and no node is empty.
Completeness matters for experiments: a split that silently drops samples makes
"collaboration vs. alone" comparisons unfair.

Use :func:`partition` to pick one by name (as configs and the CLI do) and
:func:`label_histogram` / :func:`format_histogram` to see what each node got.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_MIN_SIZE",
    "PARTITIONERS",
    "PartitionError",
    "dirichlet",
    "disjoint_labels",
    "format_histogram",
    "iid",
    "label_histogram",
    "partition",
    "shards",
    "unbalanced",
]


class PartitionError(ValueError):
    """Options that cannot give a disjoint, complete split with no empty node."""


# ------------------------------------------------------------------------ validation


def _check_labels(labels: np.ndarray | Sequence[int]) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise PartitionError(f"labels must be one-dimensional, got shape {array.shape}")
    if array.size and array.dtype.kind not in "iu":
        raise PartitionError(f"labels must be integers, got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise PartitionError("labels must be non-negative")
    return array.astype(np.int64, copy=False)


def _check_common(labels: np.ndarray | Sequence[int], nodes: int, seed: int) -> np.ndarray:
    """Validate what every partitioner needs; return the labels as int64."""
    array = _check_labels(labels)
    if not _is_int(nodes) or nodes < 1:
        raise PartitionError(f"nodes must be an integer >= 1, got {nodes!r}")
    if nodes > len(array):
        raise PartitionError(
            f"{nodes} nodes but only {len(array)} samples: some node would be empty"
        )
    if not _is_int(seed):
        raise PartitionError(f"seed must be an integer, got {seed!r}")
    return array


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


DEFAULT_MIN_SIZE = 10
"""Default smallest node for the skewed splits (capped at ``n // nodes``)."""


def _resolve_min_size(min_size: int | None, nodes: int, samples: int) -> int:
    """Validate ``min_size``; ``None`` means ``min(DEFAULT_MIN_SIZE, samples // nodes)``.

    A node with one or two samples is technically non-empty but useless for
    training, so the skewed splits guarantee a few; the cap keeps tiny inputs valid.
    """
    if min_size is None:
        return max(1, min(DEFAULT_MIN_SIZE, samples // nodes))
    if not _is_int(min_size) or min_size < 1:
        raise PartitionError(f"min_size must be an integer >= 1, got {min_size!r}")
    if nodes * min_size > samples:
        raise PartitionError(
            f"{nodes} nodes x min_size {min_size} = {nodes * min_size} > {samples} samples"
        )
    return int(min_size)


def _finish(parts: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Sorted int64 index arrays: a canonical form, easy to compare and to slice with."""
    return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]


# ------------------------------------------------------------------------------- iid


def iid(labels: np.ndarray | Sequence[int], nodes: int, seed: int) -> list[np.ndarray]:
    """Shuffle, then cut into ``nodes`` parts whose sizes differ by at most one."""
    array = _check_common(labels, nodes, seed)
    rng = np.random.default_rng(seed)
    return _finish(np.array_split(rng.permutation(len(array)), nodes))


# ------------------------------------------------------------------------- dirichlet


def dirichlet(
    labels: np.ndarray | Sequence[int],
    nodes: int,
    alpha: float,
    seed: int,
    min_size: int | None = None,
) -> list[np.ndarray]:
    """Label skew: each class is spread over nodes in proportions drawn from Dir(alpha).

    For every class, ``p ~ Dir(alpha, ..., alpha)`` over the nodes and the class's
    shuffled samples are cut at the cumulative proportions (Hsu et al. 2019). Large
    ``alpha`` approaches IID; small ``alpha`` gives each class to about one node.

    Small ``alpha`` leaves some nodes with nothing. Instead of resampling (which
    for ``alpha -> 0`` almost never succeeds, so would loop for long or forever),
    nodes below ``min_size`` are topped up with random samples moved from the node
    that currently holds the most. At most ``nodes * min_size`` samples move, and a
    topped-up node gets the majority class of a large node, which keeps the skew.
    ``min_size=None`` means ``min(10, n // nodes)``.
    """
    array = _check_common(labels, nodes, seed)
    if not isinstance(alpha, int | float | np.floating) or not math.isfinite(alpha) or alpha <= 0:
        raise PartitionError(f"alpha must be a finite number > 0, got {alpha!r}")
    min_size = _resolve_min_size(min_size, nodes, len(array))
    rng = np.random.default_rng(seed)
    buckets: list[list[np.ndarray]] = [[] for _ in range(nodes)]
    for label in np.unique(array):
        members = rng.permutation(np.flatnonzero(array == label))
        proportions = _dirichlet_proportions(rng, alpha, nodes)
        cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(np.int64)
        for node, piece in enumerate(np.split(members, cuts)):
            buckets[node].append(piece)
    parts = [np.concatenate(bucket) for bucket in buckets]
    return _finish(_top_up(parts, min_size, rng))


def _dirichlet_proportions(rng: np.random.Generator, alpha: float, nodes: int) -> np.ndarray:
    """One Dir(alpha) draw; falls back to a one-hot if tiny alpha underflows."""
    proportions = rng.dirichlet(np.full(nodes, float(alpha)))
    total = proportions.sum()
    if not np.all(np.isfinite(proportions)) or total <= 0:
        proportions = np.zeros(nodes)
        proportions[rng.integers(nodes)] = 1.0
        return proportions
    return proportions / total


def _top_up(parts: list[np.ndarray], min_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Move random samples from the largest part to parts below ``min_size``.

    Terminates because the caller checked ``nodes * min_size <= samples``: while
    some part is short another has a surplus, and each move shrinks the total
    shortfall by at least one.
    """
    parts = [rng.permutation(part) for part in parts]
    while True:
        sizes = np.array([len(part) for part in parts])
        short = int(np.argmin(sizes))
        if sizes[short] >= min_size:
            return parts
        donor = int(np.argmax(sizes))
        take = min(min_size - sizes[short], sizes[donor] - min_size)
        parts[short] = np.concatenate([parts[short], parts[donor][:take]])
        parts[donor] = parts[donor][take:]


# ------------------------------------------------------- class-assignment partitions


def _balanced_assignment(
    classes: np.ndarray, nodes: int, per_node: int, rng: np.random.Generator
) -> list[list[int]]:
    """Give each node ``per_node`` distinct classes, every class to ~equally many nodes.

    Node by node, take the ``per_node`` least-used classes, breaking ties at
    random. Class usage then never differs by more than one, so once
    ``nodes * per_node >= len(classes)`` every class is held by someone, and the
    class combinations are random (a fixed cyclic pattern would, e.g. for 10 nodes
    x 2 of 10 classes, repeat the same 5 pairs twice).
    """
    usage = np.zeros(len(classes), dtype=np.int64)
    plan = []
    for _ in range(nodes):
        chosen = np.argsort(usage + rng.random(len(classes)), kind="stable")[:per_node]
        usage[chosen] += 1
        plan.append(sorted(int(classes[c]) for c in chosen))
    return plan


def _split_by_assignment(
    labels: np.ndarray, assignment: Sequence[Sequence[int]], rng: np.random.Generator
) -> list[np.ndarray]:
    """Split each class's samples evenly and at random over the nodes that hold it."""
    holders: dict[int, list[int]] = {}
    for node, node_classes in enumerate(assignment):
        for label in node_classes:
            holders.setdefault(int(label), []).append(node)
    buckets: list[list[np.ndarray]] = [[] for _ in assignment]
    for label, owners in sorted(holders.items()):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) < len(owners):
            raise PartitionError(
                f"class {label} has {len(members)} samples for {len(owners)} nodes"
            )
        for node, piece in zip(owners, np.array_split(members, len(owners)), strict=True):
            buckets[node].append(piece)
    return _finish([np.concatenate(bucket) for bucket in buckets])


def _check_per_node(name: str, per_node: int, present: np.ndarray, nodes: int) -> None:
    if not _is_int(per_node) or not 1 <= per_node <= len(present):
        raise PartitionError(
            f"{name} must be an integer in [1, {len(present)}] (classes present), got {per_node!r}"
        )
    if nodes * per_node < len(present):
        raise PartitionError(
            f"{nodes} nodes x {per_node} classes cannot cover all {len(present)} classes; "
            "samples of the uncovered classes would be dropped"
        )


def shards(
    labels: np.ndarray | Sequence[int], nodes: int, classes_per_node: int, seed: int
) -> list[np.ndarray]:
    """Pathological non-IID: each node holds exactly ``classes_per_node`` classes.

    In the spirit of McMahan et al. 2017 (label-sorted shards, k per node), but
    built to be exact: McMahan's sort-and-slice can hand a node a shard spanning
    two classes or two shards of one class. Here each node gets ``k`` distinct
    classes (see :func:`_balanced_assignment`) and each class's samples are cut into
    one equal shard per node holding it. Needs ``nodes * k >= classes`` so that no
    class, hence no sample, is left out.
    """
    array = _check_common(labels, nodes, seed)
    present = np.unique(array)
    _check_per_node("classes_per_node", classes_per_node, present, nodes)
    rng = np.random.default_rng(seed)
    return _split_by_assignment(
        array, _balanced_assignment(present, nodes, classes_per_node, rng), rng
    )


def disjoint_labels(
    labels: np.ndarray | Sequence[int],
    nodes: int,
    seed: int,
    classes_per_node: int | None = None,
    assignment: Sequence[Sequence[int]] | None = None,
) -> list[np.ndarray]:
    """Each node sees only some classes; together they see all of them.

    Made for "score a node on classes it never saw": a node's label set is known
    exactly (:func:`label_histogram` shows it), and every sample is still used.

    * Default: classes are dealt into ``min(nodes, classes)`` groups of near-equal
      size. With ``nodes <= classes`` label sets are pairwise disjoint; with more
      nodes than classes each node gets one class and nodes sharing a class split
      it, so two label sets are either equal or disjoint, never partly overlapping.
    * ``classes_per_node=k``: exactly ``k`` classes per node, spread as in
      :func:`shards` (overlaps are unavoidable once ``nodes * k > classes``).
    * ``assignment``: explicit class lists, one per node; must cover every class.

    A class held by several nodes is split evenly at random among them.
    """
    array = _check_common(labels, nodes, seed)
    present = np.unique(array)
    rng = np.random.default_rng(seed)
    if assignment is not None and classes_per_node is not None:
        raise PartitionError("give classes_per_node or assignment, not both")
    if assignment is not None:
        plan = _check_assignment(assignment, present, nodes)
    elif classes_per_node is not None:
        _check_per_node("classes_per_node", classes_per_node, present, nodes)
        plan = _balanced_assignment(present, nodes, classes_per_node, rng)
    else:
        groups = np.array_split(rng.permutation(present), min(nodes, len(present)))
        order = rng.permutation(nodes)
        plan = [[] for _ in range(nodes)]
        for position, node in enumerate(order):
            plan[node] = [int(c) for c in groups[position % len(groups)]]
    return _split_by_assignment(array, plan, rng)


def _check_assignment(
    assignment: Sequence[Sequence[int]], present: np.ndarray, nodes: int
) -> list[list[int]]:
    plan = [[int(c) for c in node_classes] for node_classes in assignment]
    if len(plan) != nodes:
        raise PartitionError(f"assignment lists {len(plan)} nodes, expected {nodes}")
    for node, node_classes in enumerate(plan):
        if not node_classes:
            raise PartitionError(f"assignment gives node {node} no class")
        if len(set(node_classes)) != len(node_classes):
            raise PartitionError(f"assignment repeats a class for node {node}: {node_classes}")
    known = {int(c) for c in present}
    listed = {c for node_classes in plan for c in node_classes}
    if unknown := sorted(listed - known):
        raise PartitionError(f"assignment names classes with no samples: {unknown}")
    if uncovered := sorted(known - listed):
        raise PartitionError(f"assignment leaves classes {uncovered} to no node")
    return plan


# ------------------------------------------------------------------------ unbalanced


def unbalanced(
    labels: np.ndarray | Sequence[int],
    nodes: int,
    seed: int,
    sigma: float = 1.0,
    min_size: int | None = None,
) -> list[np.ndarray]:
    """Quantity skew: IID labels, node sizes proportional to log-normal weights.

    Weights ``w_i ~ LogNormal(0, sigma)``; every node first gets ``min_size``
    samples (``None``: ``min(10, n // nodes)``) and the rest is shared in
    proportion to ``w`` (largest-remainder rounding, so sizes sum to ``n``
    exactly). ``sigma=0`` gives equal sizes; over 10 nodes the largest is
    typically (median) ~4x the smallest for ``sigma=0.5``, ~20x for ``1`` and
    ~300x for ``2`` (60k samples; ``min_size`` caps the ratio for small sets).
    """
    array = _check_common(labels, nodes, seed)
    if not isinstance(sigma, int | float | np.floating) or not math.isfinite(sigma) or sigma < 0:
        raise PartitionError(f"sigma must be a finite number >= 0, got {sigma!r}")
    min_size = _resolve_min_size(min_size, nodes, len(array))
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(mean=0.0, sigma=float(sigma), size=nodes)
    sizes = min_size + _largest_remainder(weights / weights.sum(), len(array) - nodes * min_size)
    cuts = np.cumsum(sizes)[:-1]
    return _finish(np.split(rng.permutation(len(array)), cuts))


def _largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to ``shares`` that sum to exactly ``total``."""
    exact = shares * total
    counts = np.floor(exact).astype(np.int64)
    leftover = total - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:leftover]] += 1
    return counts


# ------------------------------------------------------------------------- by name

PARTITIONERS: Mapping[str, tuple[Callable[..., list[np.ndarray]], frozenset[str]]] = {
    "iid": (iid, frozenset()),
    "dirichlet": (dirichlet, frozenset({"alpha", "min_size"})),
    "shards": (shards, frozenset({"classes_per_node"})),
    "unbalanced": (unbalanced, frozenset({"sigma", "min_size"})),
    "disjoint": (disjoint_labels, frozenset({"classes_per_node", "assignment"})),
}
"""Name -> (partitioner, the options it accepts)."""

_REQUIRED: Mapping[str, frozenset[str]] = {
    "dirichlet": frozenset({"alpha"}),
    "shards": frozenset({"classes_per_node"}),
}


def partition(
    name: str, labels: np.ndarray | Sequence[int], nodes: int, seed: int, **options: Any
) -> list[np.ndarray]:
    """Run the partitioner called ``name`` (a key of :data:`PARTITIONERS`).

    Unknown names, unknown or missing options and impossible values raise
    :class:`PartitionError` saying what is accepted.
    """
    if name not in PARTITIONERS:
        raise PartitionError(f"unknown partitioner {name!r}; choose one of {sorted(PARTITIONERS)}")
    function, accepted = PARTITIONERS[name]
    if unknown := sorted(set(options) - accepted):
        allowed = ", ".join(sorted(accepted)) or "none"
        raise PartitionError(f"{name} does not take option(s) {unknown}; it takes: {allowed}")
    if missing := sorted(_REQUIRED.get(name, frozenset()) - set(options)):
        raise PartitionError(f"{name} needs option(s) {missing}")
    return function(labels, nodes, seed=seed, **options)


# ------------------------------------------------------------------------ inspection


def label_histogram(
    labels: np.ndarray | Sequence[int], parts: Sequence[np.ndarray], num_classes: int
) -> np.ndarray:
    """Count each class on each node: an ``int64 (nodes, num_classes)`` array."""
    array = _check_labels(labels)
    if len(array) and array.max() >= num_classes:
        raise PartitionError(f"label {array.max()} >= num_classes {num_classes}")
    histogram = np.zeros((len(parts), num_classes), dtype=np.int64)
    for node, part in enumerate(parts):
        histogram[node] = np.bincount(
            array[np.asarray(part, dtype=np.int64)], minlength=num_classes
        )
    return histogram


def _table_row(first: str, counts: np.ndarray) -> list[str]:
    """One table row: a label, the per-class counts, the total, how many classes."""
    return [
        first,
        *(str(int(v)) for v in counts),
        str(int(counts.sum())),
        str(int((counts > 0).sum())),
    ]


def format_histogram(
    histogram: np.ndarray,
    class_names: Sequence[str] | None = None,
    max_rows: int | None = None,
) -> str:
    """Render a :func:`label_histogram` as a fixed-width per-node table.

    Columns are class indices (names, which may be long, are listed in a legend
    under the table), then the node's total and how many classes it holds; the
    last row sums over nodes. With ``max_rows`` the middle nodes of a long table
    are elided, so a 100-node split still fits a terminal.
    """
    histogram = np.asarray(histogram)
    header = ["node", *(str(c) for c in range(histogram.shape[1])), "total", "classes"]
    rows = [_table_row(str(node), counts) for node, counts in enumerate(histogram)]
    footer = _table_row("all", histogram.sum(axis=0))
    widths = [max(map(len, column)) for column in zip(header, *rows, footer, strict=True)]
    keep = max(max_rows, 2) if max_rows is not None else len(rows)
    if len(rows) > keep:
        elided = ["...", *[""] * (len(header) - 1)]
        rows = [*rows[: keep // 2], elided, *rows[len(rows) - (keep - keep // 2) :]]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True))

    rule = "-" * len(line(header))
    out = [line(header), rule, *(line(row).rstrip() for row in rows), rule, line(footer)]
    if class_names is not None:
        out.append("classes: " + ", ".join(f"{c}={name}" for c, name in enumerate(class_names)))
    return "\n".join(out)


def cli_options(name: str, *, alpha: float = 0.5, classes_per_node: int = 2) -> dict[str, Any]:
    """The options a ``--partition NAME [--alpha A]`` command line implies.

    Benchmarks and scenarios expose only ``alpha``; shards get
    ``classes_per_node`` (2, the classic pathological non-IID split); disjoint
    labels keep their default, which spreads all classes over the nodes.
    """
    if name == "dirichlet":
        return {"alpha": alpha}
    if name == "shards":
        return {"classes_per_node": classes_per_node}
    return {}
