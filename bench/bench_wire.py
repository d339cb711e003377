"""Micro-benchmark of the wire layer; prints JSON (not a test).

    .venv/bin/python bench/bench_wire.py [--out bench/results/wire.json] [--quick]

Control messages: encode + decode round trips per second of a SWIM-ping-sized
message (3 piggybacked membership updates, ~230 B frame) in plaintext, AES-256-GCM,
and AES-256-GCM with an Ed25519 signature. Tensor frames: MB/s to encode and decode
a 10M-element float32 state dict (40 MB), dense and quantized, and MB/s of a 40 MB
stream frame through the AEAD envelope. Each figure is the best of several runs
(least disturbed by other processes on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepgossip.wire.envelope import FrameCodec
from deepgossip.wire.identity import Identity, KeyBook
from deepgossip.wire.message import MessageRegistry, message, record
from deepgossip.wire.session import SessionKey
from deepgossip.wire.tensor import decode_tensors, encode_tensor_parts, encode_tensors, to_torch

REG = MessageRegistry()
MB = 1e6


@record
@dataclass(frozen=True, slots=True)
class Update:
    node: bytes
    incarnation: int
    status: int
    addr: str


@message("bench.ping", REG)
@dataclass(frozen=True, slots=True)
class Ping:
    seq: int
    target: bytes
    piggyback: tuple[Update, ...] = ()


@message("bench.body", REG)
@dataclass(frozen=True, slots=True)
class Body:
    digest: bytes
    data: bytes


def best_rate(fn: Callable[[], int], repeats: int) -> float:
    """Best of ``repeats`` runs of ``fn`` (which returns its unit count) per second."""
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        units = fn()
        best = max(best, units / (time.perf_counter() - t0))
    return best


def control(n: int, repeats: int) -> dict[str, Any]:
    alice, bob = Identity.generate(), Identity.generate()
    session = SessionKey.derive("benchmark secret, long enough", "bench")
    keys = KeyBook()
    keys.add(alice.public_key_bytes)
    msg = Ping(
        seq=1,
        target=bytes(16),
        piggyback=tuple(Update(bytes([i]) * 16, i, 1, f"10.0.0.{i}:7946") for i in range(3)),
    )
    modes = {
        "plaintext": (FrameCodec.plaintext, False),
        "aead": (lambda ident, **kw: FrameCodec(ident, session, **kw), False),
        "aead_signed": (lambda ident, **kw: FrameCodec(ident, session, **kw), True),
    }
    out: dict[str, Any] = {}
    for name, (make, sign) in modes.items():
        a = make(alice, registry=REG)
        b = make(bob, registry=REG, keys=keys)

        def run(a: FrameCodec = a, b: FrameCodec = b, sign: bool = sign) -> int:
            for _ in range(n):
                b.decode(a.encode(msg, sign=sign), max_size=1400)
            return n

        frame_size = len(a.encode(msg, sign=sign))
        rate = best_rate(run, repeats)
        out[name] = {
            "roundtrips_per_s": round(rate),
            "us_per_roundtrip": round(1e6 / rate, 2),
            "frame_bytes": frame_size,
        }
    return out


def tensors(elements: int, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(elements, dtype=np.float32)
    state = {"layer.weight": x}
    size_mb = x.nbytes / MB
    out: dict[str, Any] = {"elements": elements, "dense_mb": round(size_mb, 1)}
    for enc in ("dense", "fp16", "int8"):
        frame = encode_tensors(state, encoding=enc)
        res: dict[str, Any] = {"frame_mb": round(len(frame) / MB, 1)}
        res["encode_mb_s"] = round(
            size_mb
            * best_rate(lambda enc=enc: len(encode_tensors(state, encoding=enc)) and 1, repeats)
        )
        res["decode_mb_s"] = round(
            size_mb * best_rate(lambda frame=frame: len(decode_tensors(frame)) and 1, repeats)
        )
        out[enc] = res
    # Zero-copy paths: parts for a streaming writer, and decode from a receive buffer.
    out["dense"]["encode_parts_mb_s"] = round(
        size_mb * best_rate(lambda: len(encode_tensor_parts(state)) and 1, repeats)
    )
    buf = bytearray(encode_tensors(state))
    out["dense"]["decode_to_torch_from_bytearray_mb_s"] = round(
        size_mb * best_rate(lambda: len(to_torch(decode_tensors(buf))) and 1, repeats)
    )
    return out


def stream_frame(nbytes: int, repeats: int) -> dict[str, Any]:
    alice, bob = Identity.generate(), Identity.generate()
    session = SessionKey.derive("benchmark secret, long enough", "bench")
    keys = KeyBook()
    keys.add(alice.public_key_bytes)
    a = FrameCodec(alice, session, registry=REG)
    b = FrameCodec(bob, session, registry=REG, keys=keys)
    body = Body(bytes(32), np.random.default_rng(1).bytes(nbytes))
    out: dict[str, Any] = {"payload_mb": round(nbytes / MB, 1)}
    for sign in (False, True):

        def run(sign: bool = sign) -> int:
            b.decode(a.encode(body, sign=sign, reliable=True), max_size=1 << 27)
            return 1

        out["aead_signed_mb_s" if sign else "aead_mb_s"] = round(
            nbytes / MB * best_rate(run, repeats)
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer runs")
    args = parser.parse_args(argv)
    n, elements, repeats = (2000, 1_000_000, 2) if args.quick else (20_000, 10_000_000, 5)
    result = {
        "benchmark": "wire",
        "command": "python bench/bench_wire.py" + (" --quick" if args.quick else ""),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "control_message": control(n, repeats),
        "tensor_frame": tensors(elements, repeats),
        "stream_frame_envelope": stream_frame(elements * 4, max(2, repeats // 2)),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
