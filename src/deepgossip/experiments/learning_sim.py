"""Collaborative learning over the simulated network.

N whole nodes (identity, AES-GCM frames, signed messages, SWIM, the update
exchange) on a :class:`~deepgossip.net.sim.SimNetwork`, each training a real
PyTorch model on its own partition of a real dataset. Every ``round_period`` of
virtual time a node merges what it received (its mixing rule), runs
``steps_per_round`` local SGD steps, and pushes a selective update when its rule
says so. Training runs inline: virtual time stands still while a node computes,
so the result is a pure function of the seed, whatever the machine's load.

The same run also trains the centralized and standalone references, so
``accuracy_mean`` can be compared with them within one measurement.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import click
import numpy as np
import torch

from deepgossip.learn.data import load_dataset, to_tensors
from deepgossip.learn.exchange import UpdateExchange, UpdateReceived
from deepgossip.learn.mixing import MixingConfig, MixingRule, make_rule
from deepgossip.learn.models import build_model
from deepgossip.learn.outer_momentum import OuterMomentum
from deepgossip.learn.params import assign, flatten
from deepgossip.learn.partition import cli_options, partition
from deepgossip.learn.sharing import Sharer, SharingConfig, UpdateRejected
from deepgossip.learn.train import (
    TrainConfig,
    accuracy,
    evaluate,
    make_optimizer,
    train_steps,
    unseen_class_accuracies,
)
from deepgossip.learn.trust_weights import HoldoutEvaluator
from deepgossip.net.sim import LinkModel, SimNetwork
from deepgossip.node import Node
from deepgossip.session import Session
from deepgossip.wire.identity import Identity

CURVE_SUBSET = 2000
"""Test images for the per-round curves; final figures use the whole test set."""


@dataclass(frozen=True)
class LearningSimSettings:
    nodes: int = 10
    dataset: str = "mnist"
    model: str = "cnn"
    partition: str = "iid"
    alpha: float = 0.5
    rounds: int = 80
    steps_per_round: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    """``adam`` or ``sgd`` (momentum 0.9). Label-skewed splits want SGD: Adam
    normalises the tiny gradients that push absent classes' logits down, so every
    node erases the classes it lacks at full speed (docs/learning.md)."""
    momentum: float = 0.9
    lr_schedule: str = "constant"
    """``constant`` or ``cosine`` (every node anneals its learning rate to 0 over
    the rounds; the references anneal over their steps the same way)."""
    round_period: float = 1.0
    eval_every: int = 10
    loss: float = 0.0
    seed: int = 0
    threads: int = 2
    mixing: MixingConfig = field(default_factory=MixingConfig)
    sharing: SharingConfig = field(default_factory=SharingConfig)
    references: bool = True
    """Also train the centralized and standalone references (same total steps)."""
    standalone_sample: int | None = None
    """Train the standalone reference for the first this many nodes only (None:
    all). Under IID splits the nodes' standalone accuracies differ by a few
    tenths, so 3 of them estimate the mean for 30% of the cost; long CNN runs
    spend as much on this reference as on the nodes."""
    trust_holdout: float = 0.1
    """``trust`` rule only: share of its partition a node keeps out of training to
    score its peers with (the references train on everything)."""

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.standalone_sample is not None and not 1 <= self.standalone_sample <= self.nodes:
            raise ValueError(f"standalone_sample must be in [1, {self.nodes}] or None")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(
                f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}"
            )


def _lr_at(settings: LearningSimSettings, progress: float) -> float:
    """The learning rate at ``progress`` (0..1) through the run."""
    if settings.lr_schedule == "cosine":
        return settings.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if settings.lr_schedule == "constant":
        return settings.lr
    raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {settings.lr_schedule!r}")


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass
class _Peer:
    node: Node
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    x: torch.Tensor
    y: torch.Tensor
    generator: torch.Generator
    sharer: Sharer
    rule: MixingRule
    exchange: UpdateExchange
    np_rng: np.random.Generator
    outer: OuterMomentum | None = None
    rejected: int = 0
    merged: int = 0
    round: int = 0


def _train_config(settings: LearningSimSettings) -> TrainConfig:
    return TrainConfig(
        batch_size=settings.batch_size,
        lr=settings.lr,
        optimizer=settings.optimizer,
        momentum=settings.momentum,
        schedule="constant",
    )


def _reference_accuracies(
    settings: LearningSimSettings,
    parts: list[np.ndarray],
    x: torch.Tensor,
    y: torch.Tensor,
    test: tuple[torch.Tensor, torch.Tensor],
    shape: tuple[int, int, int],
    classes: int,
) -> dict[str, Any]:
    """Centralized (all data, all nodes' steps) and standalone (no sharing)."""
    total_steps = settings.rounds * settings.steps_per_round
    config = _train_config(settings)

    def run(xs: torch.Tensor, ys: torch.Tensor, steps: int) -> float:
        torch.manual_seed(settings.seed)
        model = build_model(settings.model, shape, classes)
        optimizer = make_optimizer(list(model.parameters()), config)
        generator = torch.Generator().manual_seed(settings.seed)
        # In as many chunks as the nodes have rounds, so a schedule anneals alike.
        for r in range(settings.rounds):
            _set_lr(optimizer, _lr_at(settings, r / settings.rounds))
            chunk = steps // settings.rounds + (r < steps % settings.rounds)
            train_steps(model, optimizer, xs, ys, chunk, settings.batch_size, generator)
        return accuracy(model, *test)

    central = run(x, y, total_steps * settings.nodes)
    sampled = parts[: settings.standalone_sample]  # all when None
    alone = [run(x[torch.from_numpy(p)], y[torch.from_numpy(p)], total_steps) for p in sampled]
    return {
        "centralized_accuracy": central,
        "standalone_accuracy_mean": float(np.mean(alone)),
        "standalone_accuracy_min": float(np.min(alone)),
        "standalone_per_node": alone,
        "standalone_nodes": len(sampled),
    }


def run_learning_sim(
    settings: LearningSimSettings,
    progress: Callable[[int], None] | None = None,
    on_partial: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the nodes, then the references; ``on_partial`` gets the nodes' results
    before the references are trained (they cost twice the nodes' compute), so a
    caller can save them early."""
    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    data = load_dataset(settings.dataset)
    x_train, y_train = to_tensors(data.train_images, data.train_labels)
    test = to_tensors(data.test_images, data.test_labels)
    curve_test = (test[0][:CURVE_SUBSET], test[1][:CURVE_SUBSET])
    shape = tuple(x_train.shape[1:])
    parts = partition(
        settings.partition,
        data.train_labels,
        settings.nodes,
        settings.seed,
        **cli_options(settings.partition, alpha=settings.alpha),
    )

    net = SimNetwork(seed=settings.seed, link=LinkModel(loss=settings.loss))
    session = Session("learning-sim")
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    initial = build_model(settings.model, shape, data.num_classes)  # type: ignore[arg-type]
    size = flatten(initial).numel()
    peers: list[_Peer] = []
    for i, indices in enumerate(parts):
        address = (f"10.0.{i // 250}.{i % 250 + 1}", 7000)
        identity = Identity.from_private_bytes(rng.randbytes(32))
        node = Node(net, address, identity, session, rng=net.rng_for(address), wall_clock=net.now)
        model = build_model(settings.model, shape, data.num_classes)  # type: ignore[arg-type]
        model.load_state_dict(initial.state_dict())  # one shared starting point
        exchange = UpdateExchange(
            identity.public_key_bytes,
            size,
            lambda node=node: [m.address for m in node.swim.live_members()],
            random.Random(rng.getrandbits(64)),
        )
        node.host.add_core("learn", exchange)
        index = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        evaluator = None
        if settings.mixing.rule == "trust":
            # Learned trust scores peers on data the node does not train on.
            shuffled = index[torch.randperm(len(index), generator=torch.Generator().manual_seed(i))]
            hold = max(1, int(len(index) * settings.trust_holdout))
            evaluator = HoldoutEvaluator(model, x_train[shuffled[:hold]], y_train[shuffled[:hold]])
            index = shuffled[hold:]
        peer = _Peer(
            node=node,
            model=model,
            optimizer=make_optimizer(list(model.parameters()), _train_config(settings)),
            x=x_train[index],
            y=y_train[index],
            generator=torch.Generator().manual_seed(settings.seed + i),
            sharer=Sharer(flatten(model), settings.sharing, seed=settings.seed + i),
            rule=make_rule(
                settings.mixing,
                size=size,
                self_id=identity.node_id,
                num_nodes=settings.nodes,
                evaluator=evaluator,
            ),
            exchange=exchange,
            np_rng=np.random.default_rng(settings.seed + i),
            outer=(
                OuterMomentum(settings.mixing.outer_momentum, flatten(model))
                if settings.mixing.outer_momentum > 0
                else None
            ),
        )
        node.host.subscribe(lambda event, peer=peer: _on_event(peer, event, net.now()))
        net.attach(address, node.host.receive)
        peers.append(peer)
    for i, peer in enumerate(peers):
        peer.node.start([peers[0].node.address] if i else [])
    net.run_until(10.0)  # membership converges before learning starts
    start = net.now()

    curves: list[dict[str, Any]] = []
    done = [0]

    def round_of(peer: _Peer) -> None:
        # The order of a node process (learn.collaboration): train, maybe push
        # the trained model, then merge what arrived; a node serves the merged one.
        now = net.now()
        _set_lr(peer.optimizer, _lr_at(settings, peer.round / settings.rounds))
        train_steps(
            peer.model,
            peer.optimizer,
            peer.x,
            peer.y,
            settings.steps_per_round,
            settings.batch_size,
            peer.generator,
        )
        peer.rule.on_local_step(settings.steps_per_round)
        peer.round += 1
        if peer.rule.should_push(peer.np_rng):
            update = peer.sharer.make_update(
                flatten(peer.model),
                origin=peer.node.node_id,
                round=peer.round,
                samples=len(peer.y),
            )
            update = peer.rule.make_outgoing(update)
            peer.node.host.execute(peer.exchange.push(update, peer.rule.config.fanout))
        if peer.rule.pending or peer.outer is not None:
            w = flatten(peer.model)
            if peer.rule.pending:
                peer.merged += peer.rule.merge(w, now).merged
            if peer.outer is not None:
                peer.outer.step(w)  # every round, merged or not
            assign(peer.model, w)
        done[0] += 1
        if progress is not None:
            progress(1)
        if peer.round < settings.rounds:
            net.call_at(
                start + peer.round * settings.round_period + offsets[id(peer)],
                lambda: round_of(peer),
            )

    offsets = {id(p): net.rng.uniform(0, settings.round_period) for p in peers}
    for peer in peers:
        net.call_at(start + offsets[id(peer)], lambda peer=peer: round_of(peer))
    for checkpoint in range(settings.eval_every, settings.rounds + 1, settings.eval_every):
        net.run_until(start + checkpoint * settings.round_period + settings.round_period)
        accs = [accuracy(p.model, *curve_test) for p in peers]
        curves.append(
            {
                "round": checkpoint,
                "virtual_s": net.now() - start,
                "accuracy_mean": float(np.mean(accs)),
                "accuracy_min": float(np.min(accs)),
                "per_node": accs,
            }
        )
    net.run_until(start + (settings.rounds + 1) * settings.round_period)

    finals = [evaluate(p.model, test[0], test[1], data.num_classes) for p in peers]
    accs = np.array([m.accuracy for m in finals])
    unseen = unseen_class_accuracies(finals, parts, data.train_labels)
    result: dict[str, Any] = {
        "benchmark": "learning",
        "runtime": "sim",
        "nodes": settings.nodes,
        "dataset": settings.dataset,
        "model": settings.model,
        "partition": settings.partition,
        "accuracy_mean": float(accs.mean()),
        "accuracy_std": float(accs.std()),
        "accuracy_min": float(accs.min()),
        "accuracy_max": float(accs.max()),
        "macro_f1_mean": float(np.mean([m.macro_f1 for m in finals])),
        "unseen_class_accuracy": unseen,
        "per_node_metrics": [m.to_dict() for m in finals],
        "bytes_sent_per_node": float(np.mean([p.node.host.stats.bytes_out for p in peers])),
        "update_bytes_sent_per_node": float(np.mean([p.exchange.bytes_sent for p in peers])),
        "updates_sent_per_node": float(np.mean([p.exchange.sent for p in peers])),
        "updates_merged_per_node": float(np.mean([p.merged for p in peers])),
        "updates_rejected": int(sum(p.rejected + sum(p.exchange.rejected.values()) for p in peers)),
        "curve": curves,
        "virtual_seconds": net.now() - start,
        "settings": {
            **asdict(settings),
            "mixing": asdict(settings.mixing),
            "sharing": asdict(settings.sharing),
        },
    }
    result["seconds_to_accuracy"] = _seconds_to(curves, settings.round_period)
    if on_partial is not None:
        on_partial({**result, "seconds": time.perf_counter() - started, "references": "pending"})
    if settings.references:
        result.update(
            _reference_accuracies(settings, parts, x_train, y_train, test, shape, data.num_classes)
        )
    result["seconds"] = time.perf_counter() - started
    return result


def _on_event(peer: _Peer, event: Any, now: float) -> None:
    if isinstance(event, UpdateReceived):
        try:
            peer.rule.offer(event.update, now)
        except UpdateRejected:
            peer.rejected += 1


def _seconds_to(curves: list[dict[str, Any]], period: float) -> dict[str, float]:
    """Virtual seconds until the mean curve accuracy first reached each level."""
    out: dict[str, float] = {}
    for level in (0.9, 0.95, 0.97, 0.98, 0.99):
        hit = next((c["virtual_s"] for c in curves if c["accuracy_mean"] >= level), math.nan)
        if not math.isnan(hit):
            out[str(level)] = round(hit, 3)
    return out


def run_learning_cli(
    *,
    json_path: str | None,
    runtime: str,
    processes: bool,
    rule: str,
    push_prob: float,
    fanout: int,
    outer_momentum: float,
    theta_u: float,
    target: float,
    max_seconds: float,
    **options: Any,
) -> dict[str, Any]:
    """Entry point of ``deepgossip bench learning``."""
    from tqdm import tqdm

    from deepgossip.experiments.baseline import write_json

    if runtime == "asyncio" or processes:
        if not (runtime == "asyncio" and processes):
            raise click.UsageError("real nodes run as processes: use --runtime asyncio --processes")
        result = _run_processes(
            mixing=MixingConfig(
                rule=rule, push_prob=push_prob, fanout=fanout, outer_momentum=outer_momentum
            ),
            sharing=SharingConfig(theta_u=theta_u),
            target=target,
            max_seconds=max_seconds,
            json_path=json_path,
            **options,
        )
    else:
        settings = LearningSimSettings(
            mixing=MixingConfig(
                rule=rule, push_prob=push_prob, fanout=fanout, outer_momentum=outer_momentum
            ),
            sharing=SharingConfig(theta_u=theta_u),
            **options,
        )
        with tqdm(total=settings.rounds * settings.nodes, desc="rounds", unit="round") as bar:
            result = run_learning_sim(
                settings,
                progress=bar.update,
                on_partial=(lambda partial: write_json(partial, json_path)) if json_path else None,
            )
    print(
        f"{result['nodes']} nodes ({result['runtime']}), "
        f"{result['dataset']}/{result['model']}/{result['partition']}, "
        f"rule {rule}, theta_u {theta_u}: accuracy mean {result['accuracy_mean']:.4f} "
        f"(min {result['accuracy_min']:.4f}); centralized {result['centralized_accuracy']:.4f}, "
        f"standalone {result['standalone_accuracy_mean']:.4f}; "
        f"{result['bytes_sent_per_node'] / 1e6:.1f} MB sent per node; {result['seconds']:.0f} s"
    )
    if json_path:
        write_json(result, json_path)
    return result


def _run_processes(*, json_path: str | None, **options: Any) -> dict[str, Any]:
    from pathlib import Path

    from deepgossip.experiments.bench_learning_processes import (
        ProcessLearningSettings,
        run_learning_processes,
    )

    # Options of the simulated runtime that real nodes do not have: refuse what
    # would change the result, drop what only sizes the simulation.
    if options.pop("lr_schedule", "constant") != "constant":
        raise click.UsageError(
            "--lr-schedule: real nodes train for as long as they are fed, so they have "
            "no end to anneal towards; the schedule is for the sim runtime"
        )
    for name in ("rounds", "threads"):
        options.pop(name, None)
    if options.get("standalone_sample") is None:
        options.pop("standalone_sample", None)  # keep the process bench's default
    from deepgossip.experiments.baseline import write_json

    settings = ProcessLearningSettings(**options)
    out = Path(tempfile.mkdtemp(prefix="deepgossip-bench-learning-"))
    print(f"node and tracker logs: {out / 'logs'}")
    return run_learning_processes(
        settings,
        out,
        on_partial=(lambda partial: write_json(partial, json_path)) if json_path else None,
    )
