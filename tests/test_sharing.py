"""Flat parameters, DSSGD selective sharing, download filtering and update validation."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from deepgossip.learn.models import build_model
from deepgossip.learn.params import assign, flatten, num_params, param_spec
from deepgossip.learn.sharing import (
    DownloadFilter,
    Sharer,
    SharingConfig,
    SparseUpdate,
    UpdateRejected,
    apply_delta,
    count_for_fraction,
    select_random_above,
    select_topk,
    validate_update,
)
from deepgossip.wire.tensor import decode_tensor_frame, encode_tensors

# ------------------------------------------------------------------------ params


def test_flatten_assign_round_trip_is_exact() -> None:
    torch.manual_seed(0)
    model = build_model("mlp")
    spec = param_spec(model)
    vector = flatten(model)
    assert vector.dtype == torch.float32 and vector.shape == (num_params(model),) == (spec.size,)
    assert spec.entries[0].offset == 0
    assert sum(e.numel for e in spec.entries) == spec.size
    last = spec.entries[-1]
    assert last.offset + last.numel == spec.size
    params = list(model.parameters())
    target = torch.randn(spec.size)
    assign(model, target)
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))  # in place
    assert torch.equal(flatten(model), target)
    for entry, p in zip(spec.entries, model.parameters(), strict=True):
        assert torch.equal(
            p.detach().reshape(-1), target[entry.offset : entry.offset + entry.numel]
        )
    vector.add_(1.0)  # a flattened copy never aliases the model
    assert torch.equal(flatten(model), target)


def test_assign_refuses_wrong_size_and_shape() -> None:
    model = build_model("logreg")
    n = num_params(model)
    with pytest.raises(ValueError, match=f"{n + 1} elements but the model has {n}"):
        assign(model, torch.zeros(n + 1))
    with pytest.raises(ValueError, match="1-D"):
        assign(model, torch.zeros(1, n))
    with pytest.raises(ValueError, match="floating-point"):
        assign(model, torch.zeros(n, dtype=torch.int64))
    with pytest.raises(ValueError, match="float32 vector"):
        flatten(model, out=torch.zeros(n - 1))


# --------------------------------------------------------------------- selection


@pytest.mark.parametrize(
    ("theta", "n", "k"), [(0.1, 199210, 19921), (0.01, 199210, 1993), (1.0, 7, 7), (0.3, 10, 3)]
)
def test_count_for_fraction_is_the_decimal_ceiling(theta: float, n: int, k: int) -> None:
    assert count_for_fraction(theta, n) == k


@pytest.mark.parametrize("theta", [0.01, 0.1, 0.25, 0.5])
def test_topk_selects_exactly_the_largest_magnitudes(theta: float) -> None:
    gen = torch.Generator().manual_seed(1)
    delta = torch.randn(10_007, generator=gen)
    sel = select_topk(delta, theta)
    k = math.ceil(round(theta * 10_007, 6))
    assert len(sel) == k
    assert torch.equal(sel, torch.sort(sel).values)
    expected = torch.argsort(delta.abs(), descending=True)[:k]
    assert set(sel.tolist()) == set(expected.tolist())


def test_sharer_bounds_values_and_keeps_the_excess_as_residual() -> None:
    start = torch.zeros(8)
    sharer = Sharer(start, SharingConfig(theta_u=0.25, gamma=0.5))
    params = torch.tensor([3.0, -2.0, 0.1, 0.0, 0.2, -0.3, 0.05, 0.0])
    update = sharer.make_update(params, origin=b"a", round=1, samples=10)
    assert update.indices is not None
    assert update.indices.tolist() == [0, 1]  # ceil(0.25 * 8) largest |delta|
    assert update.values.tolist() == [0.5, -0.5]  # public value moved by at most gamma
    assert sharer.residual(params).tolist() == pytest.approx(
        [2.5, -1.5, 0.1, 0.0, 0.2, -0.3, 0.05, 0.0]
    )
    delta_sharer = Sharer(start, SharingConfig(theta_u=0.25, gamma=0.5, kind="delta"))
    sent = delta_sharer.make_update(params + 1.0)
    assert sent.kind == "delta"
    assert np.all(np.abs(sent.values) <= 0.5)


def test_error_feedback_accumulates_unselected_coordinates() -> None:
    sharer = Sharer(torch.zeros(10), SharingConfig(theta_u=0.1, gamma=math.inf))
    params = torch.zeros(10)
    params[0], params[1] = 1.0, 0.6
    first = sharer.make_update(params)
    assert first.indices is not None and first.indices.tolist() == [0]
    assert sharer.residual(params)[1] == pytest.approx(0.6)  # not shared: kept
    params[0] += 0.5
    params[1] += 0.6
    second = sharer.make_update(params)  # |1.2| accumulated beats the fresh |0.5|
    assert second.indices is not None and second.indices.tolist() == [1]
    assert second.values.tolist() == pytest.approx([1.2])
    assert sharer.residual(params).tolist() == pytest.approx([0.5] + [0.0] * 9)
    assert torch.equal(sharer.reference + sharer.residual(params), params)


def test_theta_u_one_is_dense_and_exact() -> None:
    gen = torch.Generator().manual_seed(2)
    params = torch.randn(1000, generator=gen) * 0.01
    update = Sharer(torch.zeros(1000), SharingConfig(theta_u=1.0)).make_update(params)
    assert update.dense and update.indices is None
    assert torch.equal(torch.from_numpy(update.values), params)
    assert update.nbytes == 4000
    sparse = Sharer(torch.zeros(1000), SharingConfig(theta_u=0.1)).make_update(params)
    assert sparse.nbytes == 100 * (4 + 4)  # int32 indices + float32 values


def test_float16_values_and_reference_agree() -> None:
    params = torch.tensor([0.123456, -0.5, 0.0])
    sharer = Sharer(torch.zeros(3), SharingConfig(value_dtype="float16"))
    update = sharer.make_update(params)
    assert update.values.dtype == np.float16
    assert torch.equal(sharer.reference, torch.from_numpy(update.values.astype(np.float32)))


def test_random_selection_above_threshold() -> None:
    delta = torch.tensor([0.0, 0.5, -0.05, 2.0, -0.3, 0.01, 0.2, 0.0, -1.0, 0.09])
    above = {1, 3, 4, 6, 8}
    seen: set[int] = set()
    for seed in range(20):
        sel = select_random_above(delta, 0.2, 0.1, np.random.default_rng(seed))
        assert len(sel) == 2 and set(sel.tolist()) <= above
        assert sel.tolist() == sorted(sel.tolist())
        seen |= set(sel.tolist())
    assert seen == above  # random, not always the largest
    rng = np.random.default_rng(0)
    assert select_random_above(delta, 0.9, 0.1, rng).tolist() == sorted(above)  # fewer: all
    again = select_random_above(delta, 0.2, 0.1, np.random.default_rng(3))
    assert again.tolist() == select_random_above(delta, 0.2, 0.1, np.random.default_rng(3)).tolist()
    sharer = Sharer(torch.zeros(10), SharingConfig(theta_u=0.2, selection="random", tau=0.1))
    assert set(sharer.make_update(delta).indices.tolist()) <= above  # type: ignore[union-attr]


# ------------------------------------------------------------------------ download


def _update(indices: list[int], values: list[float], size: int, **kw: object) -> SparseUpdate:
    return SparseUpdate(
        values=np.asarray(values, dtype=np.float32),
        indices=np.asarray(indices, dtype=np.int32),
        size=size,
        **kw,  # type: ignore[arg-type]
    )


def test_theta_d_keeps_the_most_updated_coordinates() -> None:
    local = torch.zeros(10)
    keep = DownloadFilter(10, theta_d=0.2, decay=0.5)
    # Coordinates 7 and 8 have been updated recently, 1 and 2 long ago.
    keep(_update([1, 2], [0.1, 0.1], 10), local)
    keep(_update([7, 8, 9], [0.1, 0.1, 0.1], 10), local)
    keep(_update([7, 8], [0.1, 0.1], 10), local)
    out = keep(_update([1, 2, 3, 7, 8], [5.0, 5.0, 5.0, 0.1, 0.1], 10), local)
    assert out.indices is not None and out.indices.tolist() == [7, 8]
    assert out.values.tolist() == pytest.approx([0.1, 0.1])
    # Equal heat: the larger |value - local| wins, then the lower index.
    fresh = DownloadFilter(10, theta_d=0.2)
    out = fresh(_update([0, 4, 5, 6], [0.1, 0.3, 0.3, 0.2], 10), local)
    assert out.indices.tolist() == [4, 5]  # type: ignore[union-attr]
    update = _update([0, 1, 2], [1.0, 2.0, 3.0], 10)
    assert DownloadFilter(10, theta_d=1.0)(update, local) is update


# ----------------------------------------------------------------------- validation


def test_valid_updates_pass() -> None:
    validate_update(_update([0, 3, 9], [0.1, -0.2, 0.3], 10, origin=b"x" * 32, round=4), 10)
    validate_update(SparseUpdate(values=np.zeros(10, dtype=np.float16), size=10), 10)


@pytest.mark.parametrize(
    ("update", "message"),
    [
        (_update([0, 10], [1.0, 1.0], 10), "outside"),
        (_update([-1, 2], [1.0, 1.0], 10), "outside"),
        (_update([3, 2], [1.0, 1.0], 10), "strictly increasing"),
        (_update([2, 2], [1.0, 1.0], 10), "strictly increasing"),
        (_update([1, 2], [1.0, float("nan")], 10), "NaN or Inf"),
        (_update([1, 2], [1.0, float("inf")], 10), "NaN or Inf"),
        (_update([1, 2], [1.0, 1e6], 10), "exceeds"),
        (_update([1, 2], [1.0, 2.0], 11), "local model has 10"),
        (SparseUpdate(values=np.zeros(9, dtype=np.float32), size=10), "9 values"),
        (SparseUpdate(values=np.zeros(10, dtype=np.float64), size=10), "float32 or float16"),
        (
            SparseUpdate(
                values=np.zeros(2, dtype=np.float32), indices=np.array([1, 2], np.uint8), size=10
            ),
            "int32 or int64",
        ),
        (
            SparseUpdate(
                values=np.zeros(2, dtype=np.float32), indices=np.array([1, 2, 3]), size=10
            ),
            "3 indices for 2 values",
        ),
        (_update([1], [1.0], 10, origin=b"x" * 65), "origin"),
        (_update([1], [1.0], 10, weight=0.0), "weight"),
        (_update([1], [1.0], 10, weight=float("nan")), "weight"),
        (_update([1], [1.0], 10, weight=2.0), "weight"),
        (_update([1], [1.0], 10, round=-1), "round"),
        (_update([1], [1.0], 10, samples=True), "samples"),
        (_update([1], [1.0], 10, kind="delta"), "expected a 'values' update"),
    ],
)
def test_validation_rejects_bad_updates(update: SparseUpdate, message: str) -> None:
    with pytest.raises(UpdateRejected, match=message) as info:
        validate_update(update, 10)
    assert isinstance(info.value, ValueError)


def test_update_survives_a_wire_round_trip() -> None:
    sharer = Sharer(torch.zeros(50), SharingConfig(theta_u=0.1))
    params = torch.linspace(-1, 1, 50)
    for update in (
        sharer.make_update(params, origin=b"n1", round=3, samples=600, weight=0.25),
        SparseUpdate(values=params.numpy(), size=50, origin=b"n2", round=1),
    ):
        frame = encode_tensors(update.tensors())
        back = SparseUpdate.from_wire(update.header(), decode_tensor_frame(frame))
        validate_update(back, 50)
        assert back.header() == update.header()
        assert np.array_equal(back.values, update.values)
        if update.indices is None:
            assert back.indices is None
        else:
            assert np.array_equal(back.indices, update.indices)  # type: ignore[arg-type]
    with pytest.raises(UpdateRejected, match="lacks"):
        SparseUpdate.from_wire({"kind": "values"}, {})


def test_apply_delta_adds_scaled_values() -> None:
    local = torch.ones(5)
    apply_delta(local, replace(_update([1, 3], [1.0, -2.0], 5), kind="delta"), 0.5)
    assert local.tolist() == [1.0, 1.5, 1.0, 0.0, 1.0]
    with pytest.raises(UpdateRejected):
        apply_delta(local, _update([1], [1.0], 5), 1.0)
