"""Property tests: decoders raise only WireError, fast, without big allocations.

Whatever bytes a peer sends, ``FrameCodec.decode`` and ``decode_tensors`` either
return or raise a :class:`WireError` subclass; anything else escaping is a bug a
peer could use to crash a node. Examples are derandomized so the suite is
deterministic.
"""

from __future__ import annotations

import contextlib
import struct
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepgossip.wire.envelope import HEADER_SIZE, FrameCodec
from deepgossip.wire.errors import WireError
from deepgossip.wire.identity import Identity, KeyBook
from deepgossip.wire.message import MessageRegistry, message, record, to_wire
from deepgossip.wire.session import SessionKey
from deepgossip.wire.tensor import SparseArray, decode_tensor_frame, encode_tensors

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=400,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

REG = MessageRegistry()


@record
@dataclass(frozen=True, slots=True)
class Update:
    node: bytes
    incarnation: int
    status: str
    addr: str | None = None


@message("f.ping", REG)
@dataclass(frozen=True, slots=True)
class Ping:
    seq: int
    piggyback: tuple[Update, ...] = ()
    meta: dict[str, float] | None = None


@message("f.alive", REG, signed=True, key_field="key")
@dataclass(frozen=True, slots=True)
class Alive:
    key: bytes
    incarnation: int
    flag: bool = False


ALICE = Identity.from_private_bytes(b"\x11" * 32)
BOB = Identity.from_private_bytes(b"\x22" * 32)
SESSION = SessionKey.derive("fuzzing secret, long enough", "fuzz")
MAX = 1400


def sealed_pair() -> tuple[FrameCodec, FrameCodec]:
    return (
        FrameCodec(ALICE, SESSION, registry=REG),
        FrameCodec(BOB, SESSION, registry=REG, keys=KeyBook()),
    )


def plain_pair() -> tuple[FrameCodec, FrameCodec]:
    return (
        FrameCodec.plaintext(ALICE, registry=REG),
        FrameCodec.plaintext(BOB, registry=REG, keys=KeyBook()),
    )


def only_wire_errors(fn: Callable[[], Any]) -> None:
    """Run ``fn``; success or a WireError are fine, anything else fails the test."""
    with contextlib.suppress(WireError):
        fn()


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)

VALID = [
    Ping(1),
    Ping(2, (Update(b"\x01" * 16, 3, "alive", "10.0.0.1:7000"),), {"rtt": 0.5}),
    Alive(ALICE.public_key_bytes, 7, True),
]


def valid_frames(codec: FrameCodec) -> list[bytes]:
    return [codec.encode(m) for m in VALID] + [codec.encode(Ping(3), sign=True)]


# -- FrameCodec.decode ---------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes(data: bytes) -> None:
    for make in (sealed_pair, plain_pair):
        _, b = make()
        only_wire_errors(lambda b=b: b.decode(data, max_size=MAX))


@FUZZ
@given(
    st.sampled_from(range(len(VALID) + 1)),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 7)), min_size=1, max_size=8),
    st.booleans(),
)
def test_bit_flipped_valid_frames(which: int, flips: list[tuple[int, int]], plain: bool) -> None:
    a, b = plain_pair() if plain else sealed_pair()
    frame = bytearray(valid_frames(a)[which])
    for pos, bit in flips:
        frame[pos % len(frame)] ^= 1 << bit
    only_wire_errors(lambda: b.decode(bytes(frame), max_size=MAX))


@FUZZ
@given(st.sampled_from(range(len(VALID) + 1)), st.integers(0, 2000), st.booleans())
def test_truncated_and_extended_valid_frames(which: int, cut: int, plain: bool) -> None:
    a, b = plain_pair() if plain else sealed_pair()
    frame = valid_frames(a)[which]
    only_wire_errors(lambda: b.decode(frame[:cut], max_size=MAX))
    only_wire_errors(lambda: b.decode(frame + bytes(cut % 50), max_size=MAX))


def plain_frame(payload: bytes, flags: int = 0, seq: int = 0) -> bytes:
    """A plaintext frame with a valid header around an arbitrary payload."""
    header = struct.pack(">2sBBB16s16sQ", b"DG", 1, 0, flags, ALICE.node_id, bytes(16), seq)
    assert len(header) == HEADER_SIZE
    return header + payload


@FUZZ
@given(st.binary(max_size=1300), st.integers(0, 3))
def test_plaintext_random_payload(payload: bytes, flags: int) -> None:
    # Without an AEAD in the way, random payloads reach msgpack and the schemas.
    _, b = plain_pair()
    only_wire_errors(lambda: b.decode(plain_frame(payload, flags), max_size=MAX))


@FUZZ
@given(st.sampled_from(["f.ping", "f.alive", "nope", ""]), msgpack_values, st.integers(0, 3))
def test_plaintext_random_bodies(name: str, body: Any, flags: int) -> None:
    _, b = plain_pair()
    for envelope in ([name, body], body, [name, body, body]):
        payload = msgpack.packb(envelope, use_bin_type=True)
        if flags & 2:
            payload = bytes(64) + payload  # room for a (bad) signature
        only_wire_errors(
            lambda payload=payload: b.decode(plain_frame(payload, flags), max_size=MAX)
        )


def mutate(value: Any, data: st.DataObject) -> Any:
    """Replace some leaves or containers of a valid body with random values."""
    if data.draw(st.integers(0, 9)) == 0:
        return data.draw(msgpack_values)
    if isinstance(value, list):
        items = [mutate(v, data) for v in value]
        cut = data.draw(st.integers(0, len(items) + 1))
        return items[:cut] if cut <= len(items) else [*items, data.draw(msgpack_values)]
    if isinstance(value, dict):
        return {k: mutate(v, data) for k, v in value.items()}
    return value


@FUZZ
@given(st.sampled_from(range(len(VALID))), st.integers(0, 3), st.data())
def test_plaintext_mutated_valid_bodies(which: int, flags: int, data: st.DataObject) -> None:
    # Bodies close to valid ones reach deep into the schemas (nested records,
    # optionals, dicts) rather than failing at the first field.
    name, body = to_wire(VALID[which])
    payload = msgpack.packb([name, mutate(body, data)], use_bin_type=True)
    if flags & 2:
        payload = bytes(64) + payload
    _, b = plain_pair()
    only_wire_errors(lambda: b.decode(plain_frame(payload, flags), max_size=MAX))


HUGE_PREFIXES = [
    b"\xdd\xff\xff\xff\xff",  # array32 of 4 billion elements
    b"\xdf\xff\xff\xff\xff",  # map32
    b"\xc6\xff\xff\xff\xff",  # bin32 of 4 GiB
    b"\xdb\xff\xff\xff\xff",  # str32
    b"\xc9\xff\xff\xff\xff\x01",  # ext32
    b"\x92\xa6f.ping\xdd\x7f\xff\xff\xff",  # a body that claims 2^31 fields
    b"\x91" * 5000,  # nesting beyond msgpack's stack
]


@pytest.mark.parametrize("payload", HUGE_PREFIXES)
def test_huge_msgpack_length_prefixes(payload: bytes) -> None:
    _, b = plain_pair()
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(WireError):
            b.decode(plain_frame(payload + bytes(64)), max_size=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 0.5
    assert peak < 4 << 20


# -- decode_tensors ------------------------------------------------------------------


def tensor_frame(entries: Any, data: bytes) -> bytes:
    header = msgpack.packb([entries], use_bin_type=True)
    start = -(-(20 + len(header)) // 64) * 64
    prefix = struct.pack(">4sB3xIQ", b"DGTF", 1, len(header), len(data))
    return prefix + header + bytes(start - 20 - len(header)) + data


def decode_tensors_checked(frame: bytes) -> None:
    out = decode_tensor_frame(frame, max_elements=1 << 20)
    for value in out.values():  # touching the data must be safe as well
        arr = value.to_dense() if isinstance(value, SparseArray) else value
        arr.sum()


VALID_TENSOR_FRAMES = [
    encode_tensors({"w": np.arange(12, dtype=np.float32).reshape(3, 4), "n": np.arange(3)}),
    encode_tensors({"w": np.linspace(-1, 1, 50, dtype=np.float32)}, encoding="fp16"),
    encode_tensors({"w": np.linspace(-1, 1, 50, dtype=np.float32)}, encoding="int8"),
    encode_tensors({"s": SparseArray(np.array([1, 7]), np.ones(2, np.float32), (4, 4))}),
    encode_tensors({"b": np.array([True, False])}),
]


@FUZZ
@given(st.binary(max_size=3000))
def test_tensor_random_bytes(data: bytes) -> None:
    only_wire_errors(lambda: decode_tensors_checked(data))
    only_wire_errors(lambda: decode_tensors_checked(b"DGTF\x01\x00\x00\x00" + data))


@FUZZ
@given(
    st.sampled_from(range(len(VALID_TENSOR_FRAMES))),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 7)), min_size=1, max_size=8),
    st.integers(0, 10_000),
)
def test_tensor_bit_flips_and_truncation(
    which: int, flips: list[tuple[int, int]], cut: int
) -> None:
    frame = bytearray(VALID_TENSOR_FRAMES[which])
    only_wire_errors(lambda: decode_tensors_checked(bytes(frame[: cut % (len(frame) + 1)])))
    for pos, bit in flips:
        frame[pos % len(frame)] ^= 1 << bit
    only_wire_errors(lambda: decode_tensors_checked(bytes(frame)))


dims = st.integers(min_value=-2, max_value=10**13) | st.integers(0, 8)
entries_strategy = st.lists(
    st.tuples(
        st.sampled_from(["x", "y", "", 5]),
        st.sampled_from(["dense", "fp16", "int8", "sparse", "bogus", None]),
        st.sampled_from(["float32", "float16", "int64", "bool", "int8", "complex64", 3]),
        st.lists(dims, max_size=10) | msgpack_values,
        st.lists(st.lists(st.integers(-10, 10**12), max_size=3), max_size=3) | msgpack_values,
        st.sampled_from([None, 0.5, -1.0, float("inf"), "int32", "int64", "x", 1]),
    ).map(list)
    | msgpack_values,
    max_size=4,
)


@FUZZ
@given(entries_strategy, st.binary(max_size=512))
def test_tensor_forged_headers(entries: Any, data: bytes) -> None:
    only_wire_errors(lambda: decode_tensors_checked(tensor_frame(entries, data)))


@pytest.mark.parametrize(
    "entry",
    [
        ["x", "dense", "float32", [10**6, 10**6], [[0, 4 * 10**12]], None],
        ["x", "dense", "float64", [2**32, 2**32, 2**32], [[0, 2**64 - 1]], None],
        ["x", "sparse", "float32", [10**12], [[0, 8], [64, 16]], "int64"],
        ["x", "fp16", "float32", [2**40], [[0, 2**41]], None],
    ],
)
def test_huge_declared_shapes_fail_fast(entry: list[Any]) -> None:
    frame = tensor_frame([entry], bytes(128))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(WireError):
            decode_tensor_frame(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 0.1
    assert peak < 1 << 20


def test_huge_tensor_frame_prefix_fails_fast() -> None:
    frame = struct.pack(">4sB3xIQ", b"DGTF", 1, 0xFFFFFFFF, 2**64 - 1) + bytes(64)
    with pytest.raises(WireError):
        decode_tensor_frame(frame)
    frame = struct.pack(">4sB3xIQ", b"DGTF", 1, 5, 0) + b"\xdd\xff\xff\xff\xff"
    with pytest.raises(WireError):
        decode_tensor_frame(frame + bytes(-len(frame) % 64))
