"""SWIM failure detection with real node processes on loopback.

``deepgossip bench swim --runtime asyncio --processes --nodes N --crash K`` starts a
tracker and N ``deepgossip node`` processes (real UDP/TCP sockets, AES-GCM frames,
Ed25519-signed claims), waits until every node knows every other, kills K of them
with SIGKILL, and reads the survivors' membership events (printed as JSON lines
with wall-clock times) to measure:

* ``first``: time from the kill to the first survivor suspecting the victim;
* ``all``: time until every survivor has marked it dead;
* ``false_positives``: live nodes that anyone ever marked dead;
* messages and bytes per node per second, from the nodes' own counters.

All processes run on this machine, so the clocks agree and wall times compare.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepgossip.api.client import Client

CLI = [sys.executable, "-m", "deepgossip.cli"]


@dataclass
class _Proc:
    proc: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    started: threading.Event = field(default_factory=threading.Event)

    def pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "started":
                self.info = event
                self.started.set()
            else:
                self.events.append(event)


def _spawn(args: list[str]) -> _Proc:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    handle = _Proc(proc)
    threading.Thread(target=handle.pump, daemon=True).start()
    return handle


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def run_swim_processes(
    nodes: int,
    crash: int,
    duration: float,
    seed: int,
    loss: float = 0.0,
    converge_timeout: float = 60.0,
) -> dict[str, Any]:
    """Run the benchmark; ``loss`` drops that fraction of every node's incoming
    datagrams (loopback itself loses none)."""
    if crash >= nodes:
        raise ValueError("--crash must be smaller than --nodes")
    rng = random.Random(seed)
    wall_start = time.perf_counter()
    handles: list[_Proc] = []
    with tempfile.TemporaryDirectory(prefix="dg-swim-") as tmp:
        session = Path(tmp) / "session.toml"
        secret = Path(tmp) / "secret"
        subprocess.run(
            [*CLI, "new-session", str(session), "--id", "bench-swim", "--secret-file", str(secret)],
            check=True,
            capture_output=True,
        )
        tracker = subprocess.Popen(
            [
                *CLI,
                "tracker",
                "--session",
                str(session),
                "--port",
                "0",
                "--secret-file",
                str(secret),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert tracker.stdout is not None
            tracker_url = tracker.stdout.readline().split(" on ")[-1].strip()
            for i in range(nodes):
                handles.append(
                    _spawn(
                        [
                            *CLI,
                            "node",
                            "--session",
                            str(session),
                            "--tracker",
                            tracker_url,
                            "--data-dir",
                            str(Path(tmp) / f"n{i}"),
                            "--secret-file",
                            str(secret),
                            "--print-events",
                            "--inject-loss",
                            str(loss),
                        ]
                    )
                )
            for handle in handles:
                if not handle.started.wait(30):
                    raise RuntimeError("a node process did not start")
            ids = [h.info["id"] for h in handles]
            apis = [
                Client(
                    f"http://{h.info['api'][0]}:{h.info['api'][1]}",
                    token_file=Path(tmp) / f"n{i}" / "api-token",
                    timeout=5,
                )
                for i, h in enumerate(handles)
            ]

            def live_view(api: Client) -> set[str]:
                members = api.members()
                return {m["id"] for m in members if m["state"] == "alive"}

            t0 = time.monotonic()
            while True:
                if all(live_view(api) == set(ids) - {i} for api, i in zip(apis, ids, strict=True)):
                    break
                if time.monotonic() - t0 > converge_timeout:
                    raise RuntimeError("membership did not converge")
                time.sleep(0.25)
            converge_s = time.monotonic() - t0

            traffic_before = [api.status()["traffic"] for api in apis]
            t_traffic = time.monotonic()
            victims = sorted(rng.sample(range(nodes), crash))
            kill_time = time.time()
            for v in victims:
                handles[v].proc.send_signal(signal.SIGKILL)
            survivors = [i for i in range(nodes) if i not in victims]
            time.sleep(duration)
            traffic_after = {i: apis[i].status()["traffic"] for i in survivors}
            traffic_s = time.monotonic() - t_traffic
        finally:
            for handle in handles:
                if handle.proc.poll() is None:
                    handle.proc.send_signal(signal.SIGTERM)
            tracker.send_signal(signal.SIGTERM)
            for handle in handles:
                try:
                    handle.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    handle.proc.kill()
                    handle.proc.wait()
            tracker.wait(timeout=10)

    victim_ids = {ids[v] for v in victims}
    first, everyone, undetected = [], [], 0
    for v in victims:
        vid = ids[v]
        suspicions = [
            e["t"]
            for i in survivors
            for e in handles[i].events
            if e.get("member") == vid and e["event"] in ("MemberSuspected", "MemberDead")
        ]
        dead_at = []
        for i in survivors:
            times = [
                e["t"]
                for e in handles[i].events
                if e.get("member") == vid and e["event"] == "MemberDead"
            ]
            if times:
                dead_at.append(min(times))
        if suspicions:
            first.append(min(suspicions) - kill_time)
        if len(dead_at) == len(survivors):
            everyone.append(max(dead_at) - kill_time)
        else:
            undetected += 1
    false_positives = sorted(
        {
            e["member"]
            for h in handles
            for e in h.events
            if e["event"] == "MemberDead" and e.get("member") not in victim_ids
        }
    )
    frames = [traffic_after[i]["frames_out"] - traffic_before[i]["frames_out"] for i in survivors]
    sent = [traffic_after[i]["bytes_out"] - traffic_before[i]["bytes_out"] for i in survivors]
    return {
        "benchmark": "swim",
        "runtime": "asyncio",
        "processes": True,
        "nodes": nodes,
        "crashes": crash,
        "loss": loss,
        "convergence_s": converge_s,
        "detection": {
            "first_p50_s": _percentile(first, 50),
            "first_max_s": max(first) if first else None,
            "all_p50_s": _percentile(everyone, 50),
            "all_p99_s": _percentile(everyone, 99),
            "all_max_s": max(everyone) if everyone else None,
            "per_crash_all_s": everyone,
            "undetected": undetected,
        },
        "false_positives": len(false_positives),
        "false_positive_ids": false_positives,
        "messages_per_node_per_s": float(np.mean(frames)) / traffic_s,
        "bytes_per_node_per_s": float(np.mean(sent)) / traffic_s,
        "wall_seconds": time.perf_counter() - wall_start,
        "params": {
            "duration_after_crash_s": duration,
            "seed": seed,
            "swim": "defaults (docs/membership.md)",
            "crypto": "AES-256-GCM + Ed25519",
        },
    }


def summary(result: dict[str, Any]) -> str:
    d = result["detection"]

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    return (
        f"SWIM processes: {result['nodes']} nodes on loopback, {result['crashes']} SIGKILLed, "
        f"loss {result['loss']:.0%}, converged in {result['convergence_s']:.1f} s\n"
        f"  first detection p50 {fmt(d['first_p50_s'])} s\n"
        f"  all survivors know  p50 {fmt(d['all_p50_s'])} s, max {fmt(d['all_max_s'])} s, "
        f"undetected {d['undetected']}\n"
        f"  false positives {result['false_positives']}\n"
        f"  {result['messages_per_node_per_s']:.2f} msgs and "
        f"{result['bytes_per_node_per_s']:.0f} B per node per s; "
        f"wall {result['wall_seconds']:.0f} s"
    )
