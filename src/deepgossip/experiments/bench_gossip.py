"""Benchmark of rumour mongering + anti-entropy on the simulated network.

``deepgossip bench gossip --runtime sim --nodes N --loss P --seed X --json PATH``

What it measures, for ``items`` items published one at a time from random
origins (each item runs until every node holds it and the network is idle
again, so every message in its window was caused by it):

* rounds (and seconds) until 50 / 99 / 100 % of the nodes hold the item
  (delivered: origin signature and body hash verified), a round being
  ``round_period``;
* the *residue before anti-entropy*: the fraction of nodes the rumour phase
  alone misses, measured in a separate pass with anti-entropy off (same seed);
* messages per node per item: every message the item caused, i.e. pushes,
  ``Have`` feedback, pulls, bodies and anti-entropy ``Offer`` legs. Digest
  exchanges (``gossip.digest`` / ``gossip.digest_reply``) run on a timer whatever
  the traffic; they are reported separately, per node per second.

Setup, as stated in the JSON ``params``: the simulator's default link model
(1 ms + exp(1 ms) one-way latency, 100 MB/s streams) with datagram loss ``loss``
(streams are never lost), :class:`~deepgossip.wire.plain.PlainCodec` (no frame
crypto), a static full peer list (membership is benchmarked on its own),
and a stand-in identity with hash "signatures" (Ed25519 costs the same message
count; the wire layer benchmarks crypto).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from statistics import mean
from typing import Any

from deepgossip.gossip.config import DEFAULT_CONFIG, GossipConfig
from deepgossip.gossip.simulation import GossipSim

ITEM_TYPES = ("gossip.push", "gossip.have", "gossip.pull", "gossip.bodies", "gossip.offer")
BACKGROUND_TYPES = ("gossip.digest", "gossip.digest_reply")
QUANTILES = {"p50": 0.50, "p99": 0.99, "p100": 1.0}


@dataclass(frozen=True)
class GossipBenchSettings:
    nodes: int = 1000
    loss: float = 0.05
    seed: int = 0
    items: int = 10
    body_bytes: int = 4096
    fanout: int = DEFAULT_CONFIG.fanout
    redundancy_limit: int = DEFAULT_CONFIG.redundancy_limit
    eager_push: bool = DEFAULT_CONFIG.eager_push
    ae_period: float = DEFAULT_CONFIG.ae_period
    warmup: float = 1.0
    """Virtual seconds before the first item (every node has started its timers)."""
    item_limit: float = 120.0
    """Virtual seconds an item may take before the run gives up on it."""

    def config(self, anti_entropy: bool) -> GossipConfig:
        return replace(
            DEFAULT_CONFIG,
            fanout=self.fanout,
            redundancy_limit=self.redundancy_limit,
            eager_push=self.eager_push,
            ae_period=self.ae_period if anti_entropy else math.inf,
        )


Progress = Callable[[int], None]


def _quantile_times(times: list[float], n: int) -> dict[str, float | None]:
    ordered = sorted(times)
    out: dict[str, float | None] = {}
    for name, q in QUANTILES.items():
        need = max(1, math.ceil(q * n))
        out[name] = ordered[need - 1] if len(ordered) >= need else None
    return out


def _run_pass(
    settings: GossipBenchSettings,
    anti_entropy: bool,
    progress: Progress | None,
    *,
    body_bytes: int | None = None,
    burst: bool = False,
) -> dict[str, Any]:
    """Publish the items on a fresh network; per-item figures.

    One at a time (each item's window holds only its own messages), or all at
    once (``burst``: concurrent rumours share datagrams, as when every learner
    publishes in the same sharing period).
    """
    config = settings.config(anti_entropy)
    n = settings.nodes
    size = settings.body_bytes if body_bytes is None else body_bytes
    sim = GossipSim(n, seed=settings.seed, loss=settings.loss, config=config)
    rng = random.Random(settings.seed)
    sim.run_for(settings.warmup)
    per_item: list[dict[str, Any]] = []
    batches = [list(range(settings.items))] if burst else [[i] for i in range(settings.items)]
    for batch in batches:
        frames_before, bytes_before = Counter(sim.frames), Counter(sim.frame_bytes)
        t0 = sim.net.now()
        published = []
        for index in batch:
            origin = rng.randrange(n)
            item_id = sim.publish(origin, rng.randbytes(size), kind="model_update")
            published.append((index, origin, item_id))
        limit = t0 + settings.item_limit
        if anti_entropy:
            ids = [item_id for _, _, item_id in published]
            sim.run_until_true(lambda ids=ids: all(sim.covered(i) for i in ids), limit)
        sim.run_until_idle(limit)
        elapsed = sim.net.now() - t0
        frames, sizes = Counter(sim.frames), Counter(sim.frame_bytes)
        frames.subtract(frames_before)
        sizes.subtract(bytes_before)
        share = 1.0 / len(batch)  # a burst's messages are shared by its items
        for index, origin, item_id in published:
            times = [0.0] + [
                node.deliveries[item_id].delivered_at - t0
                for node in sim.nodes
                if item_id in node.deliveries
            ]
            seconds = _quantile_times(times, n)
            via = Counter(
                node.deliveries[item_id].via for node in sim.nodes if item_id in node.deliveries
            )
            per_item.append(
                {
                    "item": index,
                    "origin": origin,
                    "holders": len(times),
                    "residue": 1.0 - len(times) / n,
                    "seconds_to": seconds,
                    "rounds_to": {
                        k: (None if v is None else v / config.round_period)
                        for k, v in seconds.items()
                    },
                    "delivered_via": dict(via),
                    "window_seconds": elapsed * share,
                    "messages": {t: frames[t] * share for t in (*ITEM_TYPES, *BACKGROUND_TYPES)},
                    "bytes": {t: sizes[t] * share for t in (*ITEM_TYPES, *BACKGROUND_TYPES)},
                }
            )
            if progress is not None:
                progress(1)
    result = _summarise(per_item, n, config.round_period)
    result["body_bytes"] = size
    return result


def _mean_or_none(values: list[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else mean(values)  # type: ignore[arg-type]


def _summarise(per_item: list[dict[str, Any]], n: int, period: float) -> dict[str, Any]:
    def item_total(item: dict[str, Any], key: str, types: tuple[str, ...]) -> int:
        return sum(item[key][t] for t in types)

    window = sum(i["window_seconds"] for i in per_item)
    background = sum(item_total(i, "messages", BACKGROUND_TYPES) for i in per_item)
    background_bytes = sum(item_total(i, "bytes", BACKGROUND_TYPES) for i in per_item)
    return {
        "rounds_to": {q: _mean_or_none([i["rounds_to"][q] for i in per_item]) for q in QUANTILES},
        "rounds_to_max": {
            q: (
                None
                if any(i["rounds_to"][q] is None for i in per_item)
                else max(i["rounds_to"][q] for i in per_item)
            )
            for q in QUANTILES
        },
        "seconds_to": {q: _mean_or_none([i["seconds_to"][q] for i in per_item]) for q in QUANTILES},
        "residue": mean(i["residue"] for i in per_item),
        "messages_per_node_per_item": mean(item_total(i, "messages", ITEM_TYPES) for i in per_item)
        / n,
        "messages_by_type_per_node_per_item": {
            t: mean(i["messages"][t] for i in per_item) / n for t in ITEM_TYPES
        },
        "bytes_per_node_per_item": mean(item_total(i, "bytes", ITEM_TYPES) for i in per_item) / n,
        "anti_entropy_background": {
            "messages_per_node_per_second": background / n / window if window else 0.0,
            "bytes_per_node_per_second": background_bytes / n / window if window else 0.0,
        },
        "round_period": period,
        "per_item": per_item,
    }


PASSES = 4
"""Rumour only, with anti-entropy, burst, inline bodies: progress is items x PASSES."""

JOINER_NODES = 50
JOINER_BACKLOG = 20
"""Late-joiner scenario: 50 nodes hold a backlog of 20 items from each of them
(1000 items, preloaded into every store), then a new node joins and catches up."""


def _late_joiner_pass(settings: GossipBenchSettings) -> dict[str, Any]:
    """How fast a new node catches up on a backlog, and from how many donors."""
    n = min(settings.nodes, JOINER_NODES)
    sim = GossipSim(n, seed=settings.seed, loss=settings.loss, config=settings.config(True))
    rng = random.Random(settings.seed)
    sim.run_for(settings.warmup)
    ids = []
    now = sim.net.now()
    for _ in range(JOINER_BACKLOG):
        for origin in sim.nodes:
            body = rng.randbytes(settings.body_bytes)
            item_id, _ = origin.core.publish(body, "model_update", now)  # no push: preload
            meta = origin.core.store.get(item_id).meta  # type: ignore[union-attr]
            for node in sim.nodes:
                if node is not origin:
                    node.core.store.put(meta, body, now)
            ids.append(item_id)
    sim.run_until_idle(now + 30)  # the origins' rumours die out on "Have"s
    served_before = [node.core.stats.kind("model_update").bodies_served for node in sim.nodes]
    t0 = sim.net.now()
    joiner = sim.add_node()
    done = sim.run_until_true(
        lambda: all(joiner.core.has(i) for i in ids), t0 + settings.item_limit
    )
    served = [
        node.core.stats.kind("model_update").bodies_served - before
        for node, before in zip(sim.nodes, served_before, strict=False)
    ]
    return {
        "nodes": n,
        "backlog_items": len(ids),
        "caught_up": done,
        "seconds": sim.net.now() - t0,
        "donors": sum(1 for x in served if x > 0),
        "max_donor_share": max(served) / len(ids),
        "joiner_messages_sent": dict(joiner.core.stats.sent),
    }


INLINE_BODY_BYTES = 512


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "rounds_to",
        "seconds_to",
        "messages_per_node_per_item",
        "messages_by_type_per_node_per_item",
        "bytes_per_node_per_item",
        "body_bytes",
    )
    # With anti-entropy off this is the rumour's residue; with it on, ~0.
    return {**{k: result[k] for k in keys}, "residue_at_end": result["residue"]}


def run_gossip_bench(
    settings: GossipBenchSettings, progress: Progress | None = None
) -> dict[str, Any]:
    """All passes on fresh networks with the same seed; the JSON-ready result.

    1. rumour only (anti-entropy off): the residue the rumours leave;
    2. rumour + anti-entropy, items one at a time: the headline figures;
    3. the same items published at once (burst);
    4. small bodies that ride inside the rumour (no pull);
    5. a late joiner catching up on a backlog of 1000 items (<= 50 nodes).
    """
    started = time.perf_counter()
    walls: dict[str, float] = {}

    def timed(name: str, **kwargs: Any) -> dict[str, Any]:
        t = time.perf_counter()
        out = _run_pass(settings, progress=progress, **kwargs)
        walls[name] = time.perf_counter() - t
        return out

    rumour_only = timed("rumour_only", anti_entropy=False)
    full = timed("with_anti_entropy", anti_entropy=True)
    burst = timed("burst", anti_entropy=True, burst=True)
    inline = timed("inline_body", anti_entropy=True, body_bytes=INLINE_BODY_BYTES)
    t = time.perf_counter()
    joiner = _late_joiner_pass(settings)
    walls["late_joiner"] = time.perf_counter() - t
    n = settings.nodes
    bound = math.log2(n) + math.log(n) + 2
    config = settings.config(anti_entropy=True)
    return {
        "benchmark": "gossip",
        "runtime": "sim",
        "nodes": n,
        "loss": settings.loss,
        "seed": settings.seed,
        "items": settings.items,
        "body_bytes": settings.body_bytes,
        "pull_path": settings.body_bytes > config.inline_max_bytes,
        "rounds_to": full["rounds_to"],
        "rounds_to_max": full["rounds_to_max"],
        "seconds_to": full["seconds_to"],
        "residue_before_anti_entropy": rumour_only["residue"],
        "messages_per_node_per_item": full["messages_per_node_per_item"],
        "messages_by_type_per_node_per_item": full["messages_by_type_per_node_per_item"],
        "bytes_per_node_per_item": full["bytes_per_node_per_item"],
        "anti_entropy_background": full["anti_entropy_background"],
        "rumour_only": _headline(rumour_only),
        "burst": _headline(burst),
        "inline_body": _headline(inline),
        "late_joiner": joiner,
        "targets": {
            "p99_rounds_bound": bound,
            "p99_within_bound": (full["rounds_to_max"]["p99"] or math.inf) <= bound,
            "p100_reached": full["rounds_to"]["p100"] is not None,
            "messages_per_node_per_item_max": 10,
            "messages_within_target": full["messages_per_node_per_item"] <= 10,
        },
        "wall_seconds": time.perf_counter() - started,
        "wall_seconds_by_pass": walls,
        "params": {
            **asdict(settings),
            "inline_body_bytes": INLINE_BODY_BYTES,
            "codec": "PlainCodec (no frame crypto)",
            "peers": "static full peer list (membership benchmarked separately)",
            "identity": "UnsafeHashIdentity (hash stand-in for Ed25519 signatures)",
            "link": "sim default: 1 ms + exp(1 ms) one-way, 100 MB/s streams, "
            "datagram loss = loss, streams lossless",
            "gossip_config": {k: v for k, v in asdict(config).items() if k != "store"},
            "item_messages": list(ITEM_TYPES),
            "background_messages": list(BACKGROUND_TYPES),
        },
        "per_item": full["per_item"],
        "per_item_rumour_only": rumour_only["per_item"],
    }


def run_gossip_bench_cli(
    runtime: str,
    nodes: int,
    loss: float,
    seed: int,
    items: int,
    body_bytes: int,
    json_path: str | None,
    **overrides: Any,
) -> dict[str, Any]:
    """What ``deepgossip bench gossip`` runs: progress bar, summary, JSON file."""
    import click
    from tqdm import tqdm

    if runtime != "sim":
        raise click.UsageError("only --runtime sim is supported by this benchmark")
    settings = GossipBenchSettings(
        nodes=nodes,
        loss=loss,
        seed=seed,
        items=items,
        body_bytes=body_bytes,
        **{k: v for k, v in overrides.items() if v is not None},
    )
    with tqdm(total=PASSES * items, desc=f"gossip n={nodes}", unit="item", leave=False) as bar:
        result = run_gossip_bench(settings, progress=bar.update)
    rounds, secs = result["rounds_to"], result["seconds_to"]

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    click.echo(
        f"gossip n={nodes} loss={loss} body={body_bytes}B items={items}: "
        f"rounds to 50/99/100% {fmt(rounds['p50'])}/{fmt(rounds['p99'])}/{fmt(rounds['p100'])} "
        f"({fmt(secs['p50'])}/{fmt(secs['p99'])}/{fmt(secs['p100'])} s); "
        f"residue before AE {result['residue_before_anti_entropy']:.4f}; "
        f"{result['messages_per_node_per_item']:.2f} msgs/node/item; "
        f"wall {result['wall_seconds']:.1f} s"
    )
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
        click.echo(f"wrote {path}")
    return result
