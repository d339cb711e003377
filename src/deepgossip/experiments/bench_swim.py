"""``deepgossip bench swim``: failure detection speed, accuracy and cost of SWIM.

One run: ``nodes`` SWIM members on the simulated network (``loss`` datagram
loss on every link, PlainCodec so message sizes are real), a warm-up, then
``crash`` random members crash at once and the run continues ``duration``
virtual seconds. Everything derives from ``seed``: the network, every node's
choices and which nodes crash.

Definitions (also written into the JSON):

* **first detection** of a crash: the first time any live member suspects the
  crashed one or declares it dead (whichever comes first).
* **all**: the time until every live member has declared it dead.
* **false positive**: a member that never crashed but was declared dead by
  anyone at any time (warm-up included). False *suspicions* (refuted in time)
  are reported separately; they are the protocol working as designed.
* **messages / bytes per node per second**: every frame (datagrams and streams)
  sent in the measured window, divided by the live members and the window.

Bootstrap: ``converged`` (default) starts every node with everyone's signed
alive claim installed (``Swim.preload``), as after a long quiet period; ``join``
makes all nodes join through three seeds during the warm-up (realistic, but the
join storm of 1000 nodes takes minutes of virtual time to settle).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepgossip.membership.cluster import SimCluster, sim_address
from deepgossip.membership.config import SwimConfig
from deepgossip.membership.events import MemberDead, MemberSuspected, Refuted
from deepgossip.net.runtime import Address
from deepgossip.net.sim import LinkModel

DEFINITIONS = {
    "first": "crash -> first live member suspects or declares the crashed member dead",
    "first_dead": "crash -> first live member declares it dead",
    "all": "crash -> every live member has declared it dead",
    "false_positives": "members that never crashed but were declared dead by anyone",
    "false_suspicions": "suspicions of members that never crashed (refuted in time)",
    "messages_per_node_per_s": "frames sent in the measured window / live members / window",
}


@dataclass(frozen=True)
class SwimBenchParams:
    nodes: int = 100
    loss: float = 0.05
    crash: int = 10
    duration: float = 300.0
    warmup: float = 20.0
    seed: int = 0
    bootstrap: str = "converged"
    fallback_ping: str = "datagram"


class _Recorder:
    """Listens to every node's events; keeps only what the metrics need."""

    def __init__(self, cluster: SimCluster) -> None:
        self.address_of = {n.identity.node_id: a for a, n in cluster.nodes.items()}
        self.crashed: set[Address] = set()
        self.first: dict[Address, float] = {}
        self.first_dead: dict[Address, float] = {}
        self.dead_by: dict[Address, dict[Address, float]] = defaultdict(dict)
        self.false_positives: set[Address] = set()
        self.false_suspicions: set[tuple[Address, int]] = set()
        self.refutations = 0

    def __call__(self, now: float, node: Address, event: Any) -> None:
        kind = type(event)
        if kind is Refuted:
            self.refutations += 1
            return
        if kind is not MemberSuspected and kind is not MemberDead:
            return
        subject = self.address_of.get(event.member.node_id)
        if subject is None:
            return
        if subject not in self.crashed:
            if kind is MemberDead:
                self.false_positives.add(subject)
            else:
                self.false_suspicions.add((subject, event.member.incarnation))
            return
        self.first.setdefault(subject, now)
        if kind is MemberDead:
            self.first_dead.setdefault(subject, now)
            self.dead_by[subject].setdefault(node, now)


def _percentiles(values: list[float]) -> dict[str, float | None]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"p50": None, "p99": None, "max": None}
    arr = np.asarray(finite)
    return {
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p99": round(float(np.percentile(arr, 99)), 3),
        "max": round(float(arr.max()), 3),
    }


def _bootstrap(cluster: SimCluster, params: SwimBenchParams) -> None:
    addresses = list(cluster.nodes)
    if params.bootstrap == "converged":
        cluster.converge()
        return
    seeds = addresses[:3]
    for seed in seeds[1:]:
        cluster.join(seed, seeds[:1])
    spread = max(1.0, params.warmup / 2)
    rng = random.Random(params.seed)
    for address in addresses[3:]:
        cluster.run_until(cluster.net.now() + spread / len(addresses))
        cluster.join(address, [rng.choice(seeds)])


def run_swim_bench(params: SwimBenchParams) -> dict[str, Any]:
    """Run one benchmark and return the result document."""
    started = time.perf_counter()
    config = SwimConfig(fallback_ping=params.fallback_ping)  # type: ignore[arg-type]
    cluster = SimCluster(
        seed=params.seed, config=config, link=LinkModel(loss=params.loss), record=False
    )
    cluster.add_nodes(sim_address(i) for i in range(params.nodes))
    recorder = _Recorder(cluster)
    cluster.listeners.append(recorder)
    setup_done = time.perf_counter()
    _bootstrap(cluster, params)
    cluster.run_until(params.warmup)
    view_converged = cluster.converged()

    victims = random.Random(f"crash/{params.seed}").sample(list(cluster.nodes), params.crash)
    crash_at = cluster.net.now()
    frames_before = sum(cluster.net.sent.values())
    bytes_before = sum(cluster.net.sent_bytes.values())
    for victim in victims:
        recorder.crashed.add(victim)
        cluster.crash(victim)
    cluster.run_until(crash_at + params.duration)
    finished = time.perf_counter()

    live = params.nodes - params.crash
    frames = sum(cluster.net.sent.values()) - frames_before
    sent_bytes = sum(cluster.net.sent_bytes.values()) - bytes_before
    per_crash = []
    firsts, first_deads, alls = [], [], []
    for victim in victims:
        first = recorder.first.get(victim, math.inf) - crash_at
        first_dead = recorder.first_dead.get(victim, math.inf) - crash_at
        dead_by = recorder.dead_by.get(victim, {})
        everyone = len(dead_by) >= live
        all_time = max(dead_by.values()) - crash_at if everyone else math.inf
        firsts.append(first)
        first_deads.append(first_dead)
        alls.append(all_time)
        per_crash.append(
            {
                "node": f"{victim[0]}:{victim[1]}",
                "first_s": round(first, 3) if math.isfinite(first) else None,
                "first_dead_s": round(first_dead, 3) if math.isfinite(first_dead) else None,
                "all_s": round(all_time, 3) if math.isfinite(all_time) else None,
                "marked_dead_by": len(dead_by),
            }
        )
    first_p, first_dead_p, all_p = (
        _percentiles(firsts),
        _percentiles(first_deads),
        _percentiles(alls),
    )
    stats: dict[str, int] = defaultdict(int)
    for node in cluster.nodes.values():
        for key, value in node.swim.stats.items():
            stats[key] += value
    return {
        "benchmark": "swim",
        "runtime": "sim",
        "nodes": params.nodes,
        "loss": params.loss,
        "crash": params.crash,
        "duration": params.duration,
        "warmup": params.warmup,
        "seed": params.seed,
        "bootstrap": params.bootstrap,
        "view_converged_before_crash": view_converged,
        "detection": {
            "first_p50_s": first_p["p50"],
            "first_p99_s": first_p["p99"],
            "first_max_s": first_p["max"],
            "first_dead_p50_s": first_dead_p["p50"],
            "all_p50_s": all_p["p50"],
            "all_p99_s": all_p["p99"],
            "all_max_s": all_p["max"],
            "undetected": sum(1 for a in alls if not math.isfinite(a)),
            "per_crash": per_crash,
        },
        "false_positives": len(recorder.false_positives),
        "false_suspicions": len(recorder.false_suspicions),
        "refutations": recorder.refutations,
        "messages_per_node_per_s": round(frames / live / params.duration, 4),
        "bytes_per_node_per_s": round(sent_bytes / live / params.duration, 1),
        "virtual_seconds": round(cluster.net.now(), 3),
        "wall_seconds": round(finished - started, 2),
        "setup_wall_seconds": round(setup_done - started, 2),
        "protocol_counters": dict(sorted(stats.items())),
        "params": {
            "bench": dataclasses.asdict(params),
            "swim": dataclasses.asdict(config),
            "link": dataclasses.asdict(cluster.link),
            "codec": "PlainCodec (real message encoding, no AEAD)",
        },
        "definitions": DEFINITIONS,
    }


def _summary(result: dict[str, Any]) -> str:
    d = result["detection"]
    return (
        f"SWIM sim: {result['nodes']} nodes, loss {result['loss']:.0%}, "
        f"{result['crash']} crashes, {result['duration']:.0f} s "
        f"(+{result['warmup']:.0f} s warm-up)\n"
        f"  first detection p50 {d['first_p50_s']} s, p99 {d['first_p99_s']} s\n"
        f"  all members know   p50 {d['all_p50_s']} s, p99 {d['all_p99_s']} s, "
        f"max {d['all_max_s']} s, undetected {d['undetected']}\n"
        f"  false positives {result['false_positives']}, "
        f"false suspicions {result['false_suspicions']} (refuted)\n"
        f"  {result['messages_per_node_per_s']} msgs and "
        f"{result['bytes_per_node_per_s']} B per node per s\n"
        f"  wall {result['wall_seconds']} s for {result['virtual_seconds']} virtual s"
    )


def run_swim_bench_cli(
    *,
    runtime: str,
    nodes: int,
    loss: float,
    crash: int,
    duration: float,
    warmup: float,
    seed: int,
    bootstrap: str,
    fallback_ping: str,
    processes: bool,
    json_path: str | None,
) -> None:
    """Entry point of ``deepgossip bench swim``."""
    if crash >= nodes:
        sys.exit("--crash must be smaller than --nodes")
    if runtime == "asyncio":
        if not processes:
            sys.exit("bench swim --runtime asyncio needs --processes (one process per node)")
        from deepgossip.experiments.bench_swim_processes import run_swim_processes, summary

        result = run_swim_processes(nodes, crash, duration, seed, loss=loss)
        print(summary(result))
        _write(result, json_path)
        return
    params = SwimBenchParams(
        nodes=nodes,
        loss=loss,
        crash=crash,
        duration=duration,
        warmup=warmup,
        seed=seed,
        bootstrap=bootstrap,
        fallback_ping=fallback_ping,
    )
    result = run_swim_bench(params)
    print(_summary(result))
    _write(result, json_path)


def _write(result: dict[str, Any], json_path: str | None) -> None:
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"  wrote {path}")
