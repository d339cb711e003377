"""Loopback benchmark of the asyncio runtime: UDP round trips, TCP throughput.

    .venv/bin/python bench/bench_transport.py [--pings 5000] [--out bench/results/transport.json]

Two set-ups, because both occur: the peer in another process (the real
multi-process deployment; sender and receiver each get a core) and both nodes on
one event loop (the many-nodes-per-process runner; one core does both sides).
The echo peer answers a UDP frame with the same datagram, and acknowledges a TCP
frame whose first byte is ``A`` with a datagram carrying how many TCP frames it
has received; TCP delivers in order, so the ack of the last frame of a batch
times the whole batch. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from deepgossip.net.aio import AsyncioRuntime
from deepgossip.net.runtime import Address

MIB = 1024 * 1024
HOST = "127.0.0.1"


def _echo_receiver(runtime: AsyncioRuntime, me: list[Address]) -> Callable[..., None]:
    count = 0

    def receive(src: Address, frame: bytes, reliable: bool) -> None:
        nonlocal count
        if not reliable:
            runtime.send(me[0], src, frame, False)
            return
        count += 1
        if frame[:1] == b"A":
            runtime.send(me[0], src, b"K" + count.to_bytes(8, "big"), False)

    return receive


async def _serve_echo(conn: Connection) -> None:
    async with AsyncioRuntime() as runtime:
        me: list[Address] = []
        me.append(await runtime.attach((HOST, 0), _echo_receiver(runtime, me)))
        conn.send(me[0])
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)  # parent says stop


def _echo_process(conn: Connection) -> None:
    asyncio.run(_serve_echo(conn))


class Client:
    """The measuring node: waits for echoes and acks as futures."""

    def __init__(self, runtime: AsyncioRuntime) -> None:
        self.runtime = runtime
        self.address: Address = ("", 0)
        self.waiter: asyncio.Future[bytes] | None = None

    def receive(self, src: Address, frame: bytes, reliable: bool) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(frame)

    def expect(self) -> asyncio.Future[bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        return self.waiter


async def _ping(client: Client, peer: Address, count: int) -> dict[str, float]:
    payload = b"p" * 64
    for _ in range(200):  # warm up caches and the loop
        waiter = client.expect()
        client.runtime.send(client.address, peer, payload, False)
        await asyncio.wait_for(waiter, 1.0)
    rtts: list[float] = []
    for _ in range(count):
        waiter = client.expect()
        start = time.perf_counter_ns()
        client.runtime.send(client.address, peer, payload, False)
        await asyncio.wait_for(waiter, 1.0)
        rtts.append((time.perf_counter_ns() - start) / 1000)
    rtts.sort()
    return {
        "count": count,
        "p50_us": round(statistics.median(rtts), 1),
        "p99_us": round(rtts[int(0.99 * (count - 1))], 1),
        "mean_us": round(statistics.fmean(rtts), 1),
    }


async def _tcp_batch(client: Client, peer: Address, frames: list[bytes]) -> float:
    """Seconds from the first send until the peer acknowledged the last frame."""
    waiter = client.expect()
    start = time.perf_counter()
    for frame in frames:
        client.runtime.send(client.address, peer, frame, True)
    await asyncio.wait_for(waiter, 60.0)
    return time.perf_counter() - start


async def _tcp(client: Client, peer: Address, repeats: int) -> dict[str, Any]:
    big = b"A" + os.urandom(40 * 1000 * 1000 - 1)  # 40 MB
    small = b"N" + os.urandom(64 * 1024 - 1)
    last = b"A" + small[1:]
    batch = [small] * 999 + [last]
    await _tcp_batch(client, peer, [b"A"])  # open the connection first
    big_times = [await _tcp_batch(client, peer, [big]) for _ in range(repeats)]
    batch_times = [await _tcp_batch(client, peer, batch) for _ in range(repeats)]
    batch_bytes = sum(len(f) for f in batch)
    return {
        "frame_40MB": {
            "bytes": len(big),
            "repeats": repeats,
            "best_s": round(min(big_times), 4),
            "median_s": round(statistics.median(big_times), 4),
            "GBps_best": round(len(big) / min(big_times) / 1e9, 3),
            "GBps_median": round(len(big) / statistics.median(big_times) / 1e9, 3),
        },
        "frames_1000x64KiB": {
            "bytes": batch_bytes,
            "repeats": repeats,
            "best_s": round(min(batch_times), 4),
            "median_s": round(statistics.median(batch_times), 4),
            "GBps_best": round(batch_bytes / min(batch_times) / 1e9, 3),
            "GBps_median": round(batch_bytes / statistics.median(batch_times) / 1e9, 3),
            "frames_per_s_median": round(len(batch) / statistics.median(batch_times)),
        },
    }


async def _measure(peer: Address | None, pings: int, repeats: int) -> dict[str, Any]:
    async with AsyncioRuntime() as runtime:
        client = Client(runtime)
        client.address = await runtime.attach((HOST, 0), client.receive)
        if peer is None:  # both nodes on this loop
            me: list[Address] = []
            me.append(await runtime.attach((HOST, 0)))
            runtime.set_receiver(me[0], _echo_receiver(runtime, me))
            peer = me[0]
        result = {"udp_rtt": await _ping(client, peer, pings)}
        result["tcp"] = await _tcp(client, peer, repeats)
        result["stats"] = runtime.stats.as_dict()
        return result


def _separate_process(pings: int, repeats: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_echo_process, args=(child,), daemon=True)
    proc.start()
    try:
        peer = parent.recv()
        return asyncio.run(_measure(peer, pings, repeats))
    finally:
        parent.send("stop")
        proc.join(10)


def _loop_name() -> str:
    loop = asyncio.new_event_loop()
    try:
        return type(loop).__name__
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/transport.json"))
    args = parser.parse_args(argv)
    results = {
        "benchmark": "bench/bench_transport.py",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "loop": _loop_name(),
        "cpus": os.cpu_count(),
        "separate_process": _separate_process(args.pings, args.repeats),
        "same_loop": asyncio.run(_measure(None, args.pings, args.repeats)),
    }
    text = json.dumps(results, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
