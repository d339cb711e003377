"""Data poisoning: what a malicious node does to its *local training set* before training.

For experiments and tests only; nothing here runs unless an attack is configured.
Every function is pure: it returns fresh tensors and never changes its inputs (the
honest data may be shared with other nodes hosted in the same process).

Label flipping (Biggio et al. 2012, "Poisoning attacks against support vector
machines"; in federated learning, Fung et al. 2018 "Mitigating sybils in federated
learning poisoning" and Tolpegin et al. 2020 "Data poisoning attacks against
federated learning systems"):

* :func:`flip_labels` maps *every* label through a permutation ``y -> perm[y]``;
  the default permutation is the reversal ``y -> C - 1 - y``
  (:func:`reverse_permutation`), which moves every class when ``C`` is even (and
  all but the middle one when ``C`` is odd).
* :func:`flip_source_to_target` relabels only the samples of one source class as the
  target class (Tolpegin et al.'s targeted flip); every other label is untouched.

Backdoor trigger (Gu et al. 2017, "BadNets"; in federated learning, Bagdasaryan et
al. 2020, "How to backdoor federated learning"):

* :func:`apply_trigger` stamps a ``size x size`` square of intensity ``value`` into
  one corner of every image (the last two dimensions are height and width), without
  touching labels: the triggered *test* set on which trigger success is measured.
* :func:`stamp_backdoor` stamps exactly ``round(fraction * N)`` training images,
  chosen uniformly without replacement from a seeded generator, and relabels just
  those as the target class. Poisoned samples *replace* clean ones rather than being
  appended, so the node's sample count (which mixing rules may weight by) does not
  betray it.

``value=None`` means "the brightest value in the given images" (``x.max()``): that
is white both for images scaled to [0, 1] and for standardised ones, as long as the
set contains one white pixel (digit datasets do). Pass ``value`` explicitly when the
training and test sets are not scaled alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch

__all__ = [
    "CORNERS",
    "Corner",
    "apply_trigger",
    "check_permutation",
    "flip_labels",
    "flip_source_to_target",
    "reverse_permutation",
    "stamp_backdoor",
    "trigger_mask",
]

Corner = Literal["top_left", "top_right", "bottom_left", "bottom_right"]
CORNERS: tuple[str, ...] = get_args(Corner)


def reverse_permutation(num_classes: int) -> tuple[int, ...]:
    """The default label flip ``y -> C - 1 - y`` as a permutation tuple."""
    if num_classes < 2:
        raise ValueError(f"label flipping needs at least 2 classes, got {num_classes}")
    return tuple(range(num_classes - 1, -1, -1))


def check_permutation(permutation: Sequence[int], num_classes: int) -> None:
    """Raise ``ValueError`` unless ``permutation`` is a permutation of ``range(C)``."""
    if len(permutation) != num_classes or sorted(permutation) != list(range(num_classes)):
        raise ValueError(
            f"permutation must hold each of 0..{num_classes - 1} exactly once, "
            f"got {tuple(permutation)}"
        )


def _check_labels(y: torch.Tensor, num_classes: int) -> None:
    if y.ndim != 1 or y.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"labels must be a 1-D integer tensor, got {y.dtype} {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got {int(y.min())}..{int(y.max())}"
        )


def flip_labels(
    y: torch.Tensor, num_classes: int, permutation: Sequence[int] | None = None
) -> torch.Tensor:
    """Every label mapped through ``permutation`` (default: ``y -> C - 1 - y``)."""
    perm = reverse_permutation(num_classes) if permutation is None else tuple(permutation)
    check_permutation(perm, num_classes)
    _check_labels(y, num_classes)
    return torch.tensor(perm, dtype=y.dtype)[y]


def flip_source_to_target(
    y: torch.Tensor, source: int, target: int, num_classes: int | None = None
) -> torch.Tensor:
    """Labels equal to ``source`` become ``target``; all others are left as they are."""
    if source == target:
        raise ValueError(f"source and target class are both {source}: nothing would flip")
    if num_classes is not None:
        _check_labels(y, num_classes)
        for name, cls in (("source", source), ("target", target)):
            if not 0 <= cls < num_classes:
                raise ValueError(f"{name} class {cls} is not in [0, {num_classes})")
    out = y.clone()
    out[y == source] = target
    return out


def trigger_mask(
    height: int, width: int, size: int = 3, corner: Corner = "bottom_right"
) -> torch.Tensor:
    """Boolean ``(height, width)`` mask of the trigger square."""
    if corner not in CORNERS:
        raise ValueError(f"corner must be one of {CORNERS}, got {corner!r}")
    if not 1 <= size <= min(height, width):
        raise ValueError(f"trigger size must be in [1, {min(height, width)}], got {size}")
    mask = torch.zeros(height, width, dtype=torch.bool)
    rows = slice(0, size) if corner.startswith("top") else slice(height - size, height)
    cols = slice(0, size) if corner.endswith("left") else slice(width - size, width)
    mask[rows, cols] = True
    return mask


def apply_trigger(
    x: torch.Tensor,
    *,
    size: int = 3,
    value: float | None = None,
    corner: Corner = "bottom_right",
) -> torch.Tensor:
    """A copy of ``x`` (``(..., H, W)`` images) with the trigger stamped on every image."""
    if x.ndim < 2 or not x.dtype.is_floating_point:
        raise ValueError(
            f"images must be a float tensor (..., H, W), got {x.dtype} {tuple(x.shape)}"
        )
    mask = trigger_mask(x.shape[-2], x.shape[-1], size, corner)
    fill = _trigger_value(x, value)
    # masked_fill broadcasts the (H, W) mask over the leading dimensions.
    return x.masked_fill(mask, fill)


def stamp_backdoor(
    x: torch.Tensor,
    y: torch.Tensor,
    target: int,
    fraction: float,
    *,
    generator: torch.Generator,
    size: int = 3,
    value: float | None = None,
    corner: Corner = "bottom_right",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stamp the trigger on ``round(fraction * N)`` random images and label them ``target``.

    Returns ``(x', y', chosen)`` where ``chosen`` holds the sorted indices of the
    poisoned samples; every other sample is returned unchanged.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} images but {y.shape[0]} labels")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"poison fraction must be in (0, 1], got {fraction}")
    if target < 0:
        raise ValueError(f"target class must be >= 0, got {target}")
    count = round(fraction * x.shape[0])
    chosen = torch.randperm(x.shape[0], generator=generator)[:count].sort().values
    fill = _trigger_value(x, value)  # from the whole set, so every stamp is alike
    out_x = x.clone()
    out_y = y.clone()
    if count:
        out_x[chosen] = apply_trigger(x[chosen], size=size, value=fill, corner=corner)
        out_y[chosen] = target
    return out_x, out_y, chosen


def _trigger_value(x: torch.Tensor, value: float | None) -> float:
    if value is not None:
        return float(value)
    if x.numel() == 0:
        return 1.0  # nothing to stamp; any value will do
    return float(x.max())
