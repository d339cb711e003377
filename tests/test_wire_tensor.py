"""Tensor frames: encodings, validation, zero copy (wire/tensor.py)."""

from __future__ import annotations

import struct
import warnings
from typing import Any

import msgpack
import numpy as np
import pytest
import torch

from deepgossip.wire.errors import BadVersion, MalformedTensor, NonFiniteTensor, WireError
from deepgossip.wire.limits import WireLimits
from deepgossip.wire.tensor import (
    DTYPES,
    SparseArray,
    decode_tensor_frame,
    decode_tensors,
    encode_sparse,
    encode_tensor_parts,
    encode_tensors,
    iter_slices,
    to_torch,
)

RNG = np.random.default_rng(1234)


def forge(entries: list[Any], data: bytes, *, data_len: int | None = None) -> bytes:
    """Build a tensor frame by hand from a raw header (for malicious inputs)."""
    header = msgpack.packb([entries], use_bin_type=True)
    start = -(-(20 + len(header)) // 64) * 64
    dlen = len(data) if data_len is None else data_len
    prefix = struct.pack(">4sB3xIQ", b"DGTF", 1, len(header), dlen)
    return prefix + header + bytes(start - 20 - len(header)) + data


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_dense_round_trip_every_dtype(dtype: str) -> None:
    if dtype == "bool":
        arr = RNG.random((3, 5)) > 0.5
    elif dtype.startswith("float"):
        arr = RNG.standard_normal((3, 5)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        arr = RNG.integers(info.min, info.max, size=(3, 5), dtype=dtype, endpoint=True)
    out = decode_tensors(encode_tensors({"t": arr}))["t"]
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


def test_shapes_scalars_and_empty() -> None:
    tensors = {
        "scalar": np.float32(3.5),
        "empty": np.zeros((0, 4), np.float32),
        "vec": np.arange(7, dtype=np.int64),
        "4d": RNG.standard_normal((2, 3, 4, 5)).astype(np.float32),
        "noncontig": RNG.standard_normal((6, 4)).astype(np.float32).T,
    }
    out = decode_tensors(encode_tensors(tensors))
    assert list(out) == list(tensors)
    for name, arr in tensors.items():
        np.testing.assert_array_equal(out[name], np.asarray(arr))
        assert out[name].shape == np.shape(arr)


def test_fp16_within_documented_error() -> None:
    x = RNG.standard_normal(10_000).astype(np.float32) * 100
    x[:10] = [0, 1e-7, -3e-6, 6.1e-5, 65504, -65504, 1e-3, 1, -1, 12345.678]
    y = decode_tensors(encode_tensors({"x": x}, encoding="fp16"))["x"]
    assert y.dtype == np.float32
    err = np.abs(y - x)
    bound = np.maximum(np.abs(x) * 2.0**-11, 2.0**-25)
    assert np.all(err <= bound)


def test_fp16_overflow_refused_at_encode() -> None:
    with pytest.raises(ValueError, match="overflow"):
        encode_tensors({"x": np.array([70000.0], np.float32)}, encoding="fp16")


def test_int8_within_documented_error() -> None:
    x = RNG.standard_normal((64, 33)).astype(np.float32)
    frame = encode_tensors({"x": x}, encoding="int8")
    y = decode_tensors(frame)["x"]
    scale = np.abs(x).max() / 127
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(y - x)) <= scale / 2 * (1 + 1e-5)
    assert len(frame) < x.nbytes / 2  # 1 B per value plus header
    zeros = decode_tensors(encode_tensors({"z": np.zeros(5, np.float32)}, encoding="int8"))
    np.testing.assert_array_equal(zeros["z"], 0)


def test_quantized_encodings_leave_other_dtypes_dense() -> None:
    state = {"w": np.ones(4, np.float32), "steps": np.array(10, np.int64)}
    for enc in ("fp16", "int8"):
        out = decode_tensors(encode_tensors(state, encoding=enc))
        assert out["steps"].dtype == np.int64 and int(out["steps"]) == 10
    per_name = encode_tensors(state, encoding={"w": "int8"})
    assert decode_tensors(per_name)["w"].dtype == np.float32


def test_sparse_round_trip() -> None:
    idx = np.array([40, 3, 17], np.int64)  # unsorted: the encoder sorts
    vals = np.array([1.5, -2.0, 0.25], np.float32)
    frame = encode_sparse("delta", idx, vals, (5, 10))
    kept = decode_tensor_frame(frame)["delta"]
    assert isinstance(kept, SparseArray)
    np.testing.assert_array_equal(kept.indices, [3, 17, 40])
    np.testing.assert_array_equal(kept.values, [-2.0, 0.25, 1.5])
    assert kept.indices.dtype == np.int32  # small dense size: 32-bit indices suffice
    dense = decode_tensors(frame)["delta"]
    expected = np.zeros(50, np.float32)
    expected[idx] = vals
    np.testing.assert_array_equal(dense, expected.reshape(5, 10))


def test_sparse_encoding_of_dense_array() -> None:
    x = np.zeros((100, 100), np.float32)
    x[3, 4], x[99, 99] = 1.0, -2.0
    frame = encode_tensors({"x": x}, encoding="sparse")
    assert len(frame) < 400
    np.testing.assert_array_equal(decode_tensors(frame)["x"], x)


def test_sparse_encoder_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        encode_sparse("s", np.array([1, 1]), np.array([1.0, 2.0], np.float32), (4,))
    with pytest.raises(ValueError, match="out of range"):
        encode_sparse("s", np.array([4]), np.array([1.0], np.float32), (4,))
    with pytest.raises(ValueError, match="indices but"):
        encode_sparse("s", np.array([0, 1]), np.array([1.0], np.float32), (4,))


def test_torch_in_and_out() -> None:
    t = torch.randn(4, 3)
    frame = encode_tensors({"w": t, "b": torch.arange(3)})
    arrays = decode_tensors(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable" warning from torch
        tensors = to_torch(arrays)
    assert torch.equal(tensors["w"], t) and tensors["b"].dtype == torch.int64
    tensors["w"].add_(1)  # safe: read-only views were copied
    with pytest.raises(ValueError, match="bfloat16"):
        encode_tensors({"x": torch.ones(2, dtype=torch.bfloat16)})


def test_zero_copy_views() -> None:
    x = np.arange(1000, dtype=np.float32)
    frame = encode_tensors({"x": x})
    ro = decode_tensors(frame)["x"]
    assert not ro.flags.writeable and not ro.flags.owndata  # a view of the bytes
    buf = bytearray(frame)
    rw = decode_tensors(buf)["x"]
    assert rw.flags.writeable
    t = to_torch({"x": rw})["x"]
    t[0] = 42.0  # shares memory with the receive buffer: no copy was made
    assert rw[0] == 42.0


def test_parts_reference_sources_and_slice() -> None:
    x = np.arange(300_000, dtype=np.float32)
    parts = encode_tensor_parts({"x": x, "y": np.ones(3, np.int8)})
    assert any(isinstance(p, memoryview) and p.obj is not None for p in parts)
    joined = b"".join(parts)
    assert joined == encode_tensors({"x": x, "y": np.ones(3, np.int8)})
    slices = list(iter_slices(parts, max_chunk=100_000))
    assert max(s.nbytes for s in slices) <= 100_000
    assert b"".join(slices) == joined


def test_dtype_whitelist() -> None:
    for bad in (np.array([1 + 2j]), np.array(["a"]), np.array([1], np.uint64)):
        with pytest.raises(ValueError, match="not allowed"):
            encode_tensors({"x": bad})
    frame = forge([["x", "dense", "complex64", [1], [[0, 8]], None]], bytes(8))
    with pytest.raises(MalformedTensor, match="dtype"):
        decode_tensors(frame)
    frame = forge([["x", "dense", "object", [1], [[0, 8]], None]], bytes(8))
    with pytest.raises(MalformedTensor):
        decode_tensors(frame)


def test_nonfinite_rejected_unless_allowed() -> None:
    x = np.array([1.0, np.nan, 2.0], np.float32)
    with pytest.raises(ValueError, match="NaN"):
        encode_tensors({"x": x})
    frame = encode_tensors({"x": x}, allow_nonfinite=True)
    with pytest.raises(NonFiniteTensor):
        decode_tensors(frame)
    assert np.isnan(decode_tensors(frame, allow_nonfinite=True)["x"][1])
    inf = encode_tensors({"x": np.array([np.inf], np.float16)}, allow_nonfinite=True)
    with pytest.raises(NonFiniteTensor):
        decode_tensors(inf)
    with pytest.raises(ValueError):
        encode_tensors({"x": x}, encoding="int8", allow_nonfinite=True)  # int8 has no NaN
    sparse = encode_tensors({"s": SparseArray(np.array([0]), x[1:2], (3,))}, allow_nonfinite=True)
    with pytest.raises(NonFiniteTensor):
        decode_tensors(sparse)


@pytest.mark.parametrize(
    ("entry", "data"),
    [
        (["x", "dense", "float32", [3], [[0, 8]], None], bytes(8)),  # 3 x 4 != 8
        (["x", "dense", "float32", [2], [[0, 8]], None], bytes(4)),  # outside frame
        (["x", "dense", "float32", [-2], [[0, 8]], None], bytes(8)),  # negative dim
        (["x", "dense", "float32", [2.0], [[0, 8]], None], bytes(8)),  # float dim
        (["x", "dense", "float32", [True], [[0, 4]], None], bytes(4)),  # bool dim
        (["x", "dense", "float32", [1] * 9, [[0, 4]], None], bytes(4)),  # too many dims
        (["x", "dense", "float32", 4, [[0, 16]], None], bytes(16)),
        (["x", "dense", "float32", [1], [[-4, 4]], None], bytes(8)),
        (["x", "dense", "float32", [1], [[0, 4], [4, 4]], None], bytes(8)),
        (["x", "dense", "float32", [1], [[0, 4]], 1.0], bytes(4)),  # stray param
        (["x", "rle", "float32", [1], [[0, 4]], None], bytes(4)),  # unknown encoding
        (["", "dense", "float32", [1], [[0, 4]], None], bytes(4)),  # empty name
        ([b"x", "dense", "float32", [1], [[0, 4]], None], bytes(4)),
        (["x", "fp16", "float64", [1], [[0, 2]], None], bytes(2)),
        (["x", "int8", "float32", [1], [[0, 1]], None], bytes(1)),  # missing scale
        (["x", "int8", "float32", [1], [[0, 1]], float("nan")], bytes(1)),
        (["x", "int8", "float32", [1], [[0, 1]], -1.0], bytes(1)),
        (["x", "int8", "float32", [1], [[0, 1]], 1e300], bytes(1)),  # inf in float32
        (["x", "int8", "float32", [1], [[0, 1]], 1.0], b"\x80"),  # -128
        (["x", "dense", "bool", [1], [[0, 1]], None], b"\x02"),
        (["x", "sparse", "float32", [4], [[0, 4], [64, 8]], "int32"], bytes(72)),  # nnz
        (["x", "sparse", "float32", [4], [[0, 4], [64, 4]], "int16"], bytes(68)),
        (["x", "sparse", "float32", [4], [[0, 4], [64, 4]], "int32"], bytes(68)[:0]),
        (["x", "dense", "float32", [1]], bytes(4)),
    ],
)
def test_inconsistent_headers_rejected(entry: list[Any], data: bytes) -> None:
    with pytest.raises(MalformedTensor):
        decode_tensors(forge([entry], data))


def test_sparse_indices_validated() -> None:
    def frame(indices: list[int]) -> bytes:
        idx = np.array(indices, "<i4").tobytes()
        vals = np.ones(len(indices), "<f4").tobytes()
        data = idx + bytes(64 - len(idx)) + vals
        entry = ["s", "sparse", "float32", [10], [[0, len(idx)], [64, len(vals)]], "int32"]
        return forge([entry], data)

    assert decode_tensors(frame([0, 5, 9]))["s"].sum() == 3
    for bad in ([10], [-1], [3, 3], [5, 2]):
        with pytest.raises(MalformedTensor):
            decode_tensors(frame(bad))


def test_overlapping_segments_rejected() -> None:
    entries = [
        ["a", "dense", "float32", [4], [[0, 16]], None],
        ["b", "dense", "float32", [4], [[8, 16]], None],
    ]
    with pytest.raises(MalformedTensor, match="overlap"):
        decode_tensors(forge(entries, bytes(24)))
    dup = [entries[0], ["a", "dense", "float32", [4], [[64, 16]], None]]
    with pytest.raises(MalformedTensor, match="duplicate"):
        decode_tensors(forge(dup, bytes(80)))


def test_frame_length_must_match_prefix() -> None:
    frame = encode_tensors({"x": np.ones(10, np.float32)})
    for bad in (frame[:-1], frame + b"\x00"):
        with pytest.raises(MalformedTensor, match="declares"):
            decode_tensors(bad)
    with pytest.raises(BadVersion):
        decode_tensors(b"XXXX" + frame[4:])


def test_huge_declared_shape_refused_without_allocating() -> None:
    # 10^12 float32 elements would be 4 TB: the header alone must refuse it.
    frame = forge([["x", "dense", "float32", [10**6, 10**6], [[0, 4 * 10**12]], None]], b"")
    with pytest.raises(MalformedTensor, match="too many"):
        decode_tensors(frame)
    sparse = forge([["s", "sparse", "float32", [10**12], [[0, 0], [0, 0]], "int64"]], b"")
    with pytest.raises(MalformedTensor):
        decode_tensors(sparse)


def test_max_elements_is_a_frame_total() -> None:
    frame = encode_tensors({"a": np.ones(60, np.float32), "b": np.ones(60, np.float32)})
    assert len(decode_tensors(frame, max_elements=120)) == 2
    with pytest.raises(MalformedTensor):
        decode_tensors(frame, max_elements=100)
    small = WireLimits(max_tensor_elements=50)
    with pytest.raises(MalformedTensor):
        decode_tensors(frame, limits=small)


def test_errors_are_wire_errors() -> None:
    assert issubclass(MalformedTensor, WireError) and issubclass(NonFiniteTensor, WireError)
