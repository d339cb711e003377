"""Do the mixing rules learn? N learners in one process, no network.

Each learner has its own model (all start from the same seeded initial model),
Adam optimizer and partition of the training set. Round-based: every round each
node does ``S`` local steps (``train_steps``), then the nodes exchange per the
rule: updates pass in memory to peers drawn from one seeded RNG, are offered to
the receiver's rule and merged at the end of the round. Learning rate follows a
cosine schedule over the rounds, like the centralized reference.

Writes JSON with per-run final mean/min accuracy on the test set, bytes each node
would send (sparse: index + value bytes), and the centralized reference measured
in the same run. Run from the repository root::

    .venv/bin/python bench/bench_mixing.py --json bench/results/mixing_mnist_mlp.json

This is a measurement tool, not a runtime: nodes use the same learn/ modules
the networked node uses, only the transport is a Python list.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepgossip.learn.data import load_dataset, to_tensors
from deepgossip.learn.mixing import MixingConfig, MixingRule, TrustMixing, make_rule
from deepgossip.learn.models import build_model
from deepgossip.learn.params import assign, flatten, num_params
from deepgossip.learn.partition import partition
from deepgossip.learn.sharing import (
    Sharer,
    SharingConfig,
    SparseUpdate,
    UpdateKind,
    apply_delta,
)
from deepgossip.learn.train import (
    DEFAULT_TRAIN,
    accuracy,
    make_optimizer,
    train_epochs,
    train_steps,
)
from deepgossip.learn.trust_weights import HoldoutEvaluator

CURVE_SUBSET = 2000
HOLDOUT_FRACTION = 0.1
"""Share of each node's partition the trust rule keeps as held-out data."""


@dataclass(frozen=True)
class RunSpec:
    """One configuration of the collaborative run."""

    rule: str = "none"
    theta_u: float = 1.0
    kind: UpdateKind = "values"
    fanout: int = 1
    eta_delta: float = 1.0
    """Only for kind="delta": receivers do w[idx] += eta_delta * values."""
    gamma: float = 0.1
    lr: float | None = None
    """Adam learning rate; None: the model's default (DEFAULT_TRAIN)."""
    steps_per_round: int | None = None


def presets(nodes: int, dssgd_rule: str, lr: float) -> dict[str, RunSpec]:
    """Named runs. Collaborative runs use ``lr`` (see ``--collab-lr``)."""
    return {
        "standalone": RunSpec(rule="none"),
        f"standalone-lr{lr:g}": RunSpec(rule="none", lr=lr),
        "gosgd": RunSpec(rule="gosgd", lr=lr),
        "average": RunSpec(rule="average", lr=lr),
        "trust": RunSpec(rule="trust", lr=lr),
        "dssgd-1": RunSpec(rule=dssgd_rule, theta_u=1.0, lr=lr),
        "dssgd-0.1": RunSpec(rule=dssgd_rule, theta_u=0.1, lr=lr),
        "dssgd-0.01": RunSpec(rule=dssgd_rule, theta_u=0.01, lr=lr),
        # The rejected definition (receivers add deltas), for docs/learning.md.
        "delta-1": RunSpec(kind="delta", theta_u=1.0, lr=lr),
        "delta-1-half": RunSpec(kind="delta", theta_u=1.0, eta_delta=0.5, lr=lr),
        "delta-0.1": RunSpec(kind="delta", theta_u=0.1, lr=lr),
        "delta-bcast-1": RunSpec(kind="delta", theta_u=1.0, fanout=nodes - 1, lr=lr),
    }


@dataclass
class Node:
    index: int
    node_id: bytes
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    x: torch.Tensor
    y: torch.Tensor
    generator: torch.Generator
    sharer: Sharer
    rule: MixingRule
    bytes_sent: int = 0
    pushes: int = 0
    merged: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def run_collaborative(
    spec: RunSpec,
    *,
    base: torch.nn.Module,
    parts: list[np.ndarray],
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    test: tuple[torch.Tensor, torch.Tensor],
    epochs: int,
    steps_per_round: int,
    batch_size: int,
    lr: float,
    seed: int,
    model_name: str,
) -> dict[str, Any]:
    start = time.perf_counter()
    n_nodes = len(parts)
    size = num_params(base)
    rng = np.random.default_rng(seed + 1)
    mixing = MixingConfig(rule=spec.rule if spec.kind == "values" else "none", fanout=spec.fanout)
    sharing = SharingConfig(theta_u=spec.theta_u, kind=spec.kind, gamma=spec.gamma)
    config = DEFAULT_TRAIN[model_name]
    nodes = []
    for i, part in enumerate(parts):
        model = copy.deepcopy(base)
        idx = torch.from_numpy(part)
        x, y = x_train[idx], y_train[idx]
        evaluator = None
        if spec.rule == "trust":
            hold = max(1, int(len(part) * HOLDOUT_FRACTION))
            evaluator = HoldoutEvaluator(model, x[:hold], y[:hold])
            x, y = x[hold:], y[hold:]
        node_id = f"node-{i}".encode()
        nodes.append(
            Node(
                index=i,
                node_id=node_id,
                model=model,
                optimizer=make_optimizer(list(model.parameters()), config),
                x=x,
                y=y,
                generator=torch.Generator().manual_seed(seed * 1000 + i),
                sharer=Sharer(flatten(model), sharing, seed=seed * 1000 + i),
                rule=make_rule(
                    mixing, size=size, self_id=node_id, num_nodes=n_nodes, evaluator=evaluator
                ),
            )
        )
    steps_total = epochs * math.ceil(max(len(p) for p in parts) / batch_size)
    rounds = max(1, steps_total // steps_per_round)
    curve: list[tuple[int, float]] = []
    curve_x, curve_y = test[0][:CURVE_SUBSET], test[1][:CURVE_SUBSET]
    for r in range(rounds):
        round_lr = lr * 0.5 * (1.0 + math.cos(math.pi * r / rounds))
        for node in nodes:
            for group in node.optimizer.param_groups:
                group["lr"] = round_lr
            train_steps(
                node.model,
                node.optimizer,
                node.x,
                node.y,
                steps_per_round,
                batch_size,
                node.generator,
            )
            node.rule.on_local_step(steps_per_round)
        outbox = _pushes(spec, nodes, r, rng)
        _deliver(spec, nodes, outbox, r)
        if r % 10 == 9 or r == rounds - 1:
            mean = float(np.mean([accuracy(n.model, curve_x, curve_y) for n in nodes]))
            curve.append((r + 1, mean))
    accs = [accuracy(n.model, *test) for n in nodes]
    flats = torch.stack([flatten(n.model) for n in nodes])
    centre = flats.mean(dim=0)
    consensus = float((flats - centre).norm(dim=1).mean() / centre.norm())
    return {
        "spec": asdict(spec),
        "rounds": rounds,
        "steps_per_node": rounds * steps_per_round,
        "mean_accuracy": float(np.mean(accs)),
        "min_accuracy": float(np.min(accs)),
        "max_accuracy": float(np.max(accs)),
        "per_node_accuracy": accs,
        "bytes_sent_per_node": float(np.mean([n.bytes_sent for n in nodes])),
        "pushes_per_node": float(np.mean([n.pushes for n in nodes])),
        "merged_per_node": float(np.mean([n.merged for n in nodes])),
        "dense_bytes_per_push": 4 * size,
        "consensus_distance": consensus,
        "curve_mean_accuracy_2k": curve,
        "extra": [n.extra for n in nodes] if any(n.extra for n in nodes) else None,
        "wall_s": time.perf_counter() - start,
    }


def _push_wanted(spec: RunSpec, node: Node, rng: np.random.Generator) -> bool:
    if spec.kind == "delta":  # the alternative: every node publishes every round
        return True
    return node.rule.should_push(rng)


def _pushes(
    spec: RunSpec, nodes: list[Node], r: int, rng: np.random.Generator
) -> list[tuple[int, SparseUpdate]]:
    outbox = []
    for node in nodes:
        if not _push_wanted(spec, node, rng):
            continue
        update = node.sharer.make_update(
            flatten(node.model), origin=node.node_id, round=r, samples=len(node.x)
        )
        update = node.rule.make_outgoing(update)
        others = [j for j in range(len(nodes)) if j != node.index]
        targets = rng.choice(others, size=min(spec.fanout, len(others)), replace=False)
        node.pushes += 1
        for j in targets:
            node.bytes_sent += update.nbytes
            outbox.append((int(j), update))
    return outbox


def _deliver(
    spec: RunSpec, nodes: list[Node], outbox: list[tuple[int, SparseUpdate]], r: int
) -> None:
    if spec.kind == "delta":
        for j, update in outbox:
            w = flatten(nodes[j].model)
            apply_delta(w, update, spec.eta_delta)
            assign(nodes[j].model, w)
            nodes[j].merged += 1
        return
    for j, update in outbox:
        nodes[j].rule.offer(update, now=r)
    for node in nodes:
        if node.rule.pending:
            w = flatten(node.model)
            report = node.rule.merge(w, now=r)
            assign(node.model, w)
            node.merged += report.merged
        if isinstance(node.rule, TrustMixing) and r % 50 == 0:
            self_w, peers = node.rule.trust.probabilities()
            node.extra.setdefault("round", []).append(r)
            node.extra.setdefault("self_trust", []).append(round(self_w, 4))
            node.extra.setdefault("max_peer_trust", []).append(
                round(max(peers.values(), default=0.0), 4)
            )


def run_centralized(
    base: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    test: tuple[torch.Tensor, torch.Tensor],
    epochs: int,
    seed: int,
    model_name: str,
    batch_size: int | None = None,
    lr: float | None = None,
) -> dict[str, Any]:
    """One model on the pooled data; optionally with another batch size and lr."""
    start = time.perf_counter()
    model = copy.deepcopy(base)
    config = replace(DEFAULT_TRAIN[model_name], epochs=epochs)
    config = replace(config, batch_size=batch_size or config.batch_size, lr=lr or config.lr)
    train_epochs(model, x, y, config, seed=seed)
    return {
        "accuracy": accuracy(model, *test),
        "batch_size": config.batch_size,
        "lr": config.lr,
        "wall_s": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10, help="local epochs per node")
    parser.add_argument("--steps-per-round", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dssgd-rule", default="average")
    parser.add_argument(
        "--collab-lr",
        type=float,
        default=0.01,
        help="Adam lr of collaborative runs (averaging N models is a larger batch)",
    )
    parser.add_argument(
        "--runs",
        default=(
            "standalone,standalone-lr0.01,gosgd,average,trust,dssgd-1,dssgd-0.1,dssgd-0.01,"
            "delta-1,delta-1-half,delta-0.1,delta-bcast-1"
        ),
    )
    parser.add_argument("--gamma", type=float, default=None, help="override gamma for all runs")
    parser.add_argument("--lr", type=float, default=None, help="override lr for all runs")
    parser.add_argument("--fanout", type=int, default=None, help="override fanout for all runs")
    parser.add_argument("--no-centralized", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = load_dataset(args.dataset)
    x_train, y_train = to_tensors(data.train_images, data.train_labels)
    test = to_tensors(data.test_images, data.test_labels)
    parts = partition("iid", data.train_labels, args.nodes, args.seed)
    torch.manual_seed(args.seed)
    base = build_model(args.model, tuple(x_train.shape[1:]), data.num_classes)  # type: ignore[arg-type]
    config = DEFAULT_TRAIN[args.model]
    table = presets(args.nodes, args.dssgd_rule, args.collab_lr)
    result: dict[str, Any] = {
        "settings": {**vars(args), "json": str(args.json), "default_lr": config.lr},
        "parameters": num_params(base),
        "machine": {"python": platform.python_version(), "torch": torch.__version__},
        "runs": {},
    }
    if not args.no_centralized:
        result["centralized"] = run_centralized(
            base, x_train, y_train, test, args.epochs, args.seed, args.model
        )
        print(f"centralized: {result['centralized']}", flush=True)
        # The ceiling of averaging: exact averages of all N models after every step
        # would be one model trained with N times the batch, at the collaborative lr.
        result["centralized_large_batch"] = run_centralized(
            base,
            x_train,
            y_train,
            test,
            args.epochs,
            args.seed,
            args.model,
            batch_size=config.batch_size * args.nodes,
            lr=args.collab_lr,
        )
        print(f"centralized, batch x{args.nodes}: {result['centralized_large_batch']}", flush=True)
    done: dict[RunSpec, str] = {}
    for name in args.runs.split(","):
        spec = table[name]
        overrides = {"gamma": args.gamma, "lr": args.lr, "fanout": args.fanout}
        overrides = {k: v for k, v in overrides.items() if v is not None}
        spec = RunSpec(**{**asdict(spec), **overrides})
        if spec in done:
            result["runs"][name] = {"same_run_as": done[spec], **result["runs"][done[spec]]}
        else:
            result["runs"][name] = run_collaborative(
                spec,
                base=base,
                parts=parts,
                x_train=x_train,
                y_train=y_train,
                test=test,
                epochs=args.epochs,
                steps_per_round=spec.steps_per_round or args.steps_per_round,
                batch_size=config.batch_size,
                lr=spec.lr or config.lr,
                seed=args.seed,
                model_name=args.model,
            )
            done[spec] = name
        run = result["runs"][name]
        print(
            f"{name:>14}: mean {run['mean_accuracy']:.4f} min {run['min_accuracy']:.4f} "
            f"bytes/node {run['bytes_sent_per_node'] / 1e6:.1f} MB "
            f"consensus {run['consensus_distance']:.4f} ({run['wall_s']:.0f} s)",
            flush=True,
        )
    result["total_wall_s"] = time.perf_counter() - t0
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
