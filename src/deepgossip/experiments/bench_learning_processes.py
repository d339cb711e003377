"""``deepgossip bench learning --runtime asyncio --processes``: real nodes learning.

A tracker and N ``deepgossip node`` processes on loopback (real UDP/TCP, sealed
and signed frames, SWIM, the update exchange), one application client per node
feeding its partition through the HTTP API. Every ``eval_seconds`` seconds each
node is asked for predictions on a fixed test subset, which gives the curves and
``seconds_to_accuracy``; the run stops when every node is past ``target`` on the
subset (or at ``max_seconds``), and the final figures use the whole 10k test set.

The references of the same run, trained in this process afterwards with the
same model and optimiser: *standalone* (each node's partition alone) and
*centralized* (all partitions pooled), both for the mean number of local steps
the nodes took, so every model had the same compute. Standalone models are
trained for the first ``standalone_sample`` nodes only (each costs a node's
whole compute again).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepgossip.experiments.local_net import LocalNetwork, client_accuracies
from deepgossip.learn.collaboration import CollaborationConfig
from deepgossip.learn.data import Dataset, load_dataset, to_tensors
from deepgossip.learn.mixing import MixingConfig
from deepgossip.learn.models import build_model
from deepgossip.learn.partition import cli_options, partition
from deepgossip.learn.sharing import SharingConfig
from deepgossip.learn.train import (
    TrainConfig,
    accuracy,
    make_optimizer,
    metrics_from_predictions,
    train_steps,
    unseen_class_accuracies,
)

LEVELS = (0.9, 0.95, 0.97, 0.98, 0.99)


@dataclass(frozen=True)
class ProcessLearningSettings:
    nodes: int = 8
    dataset: str = "mnist"
    model: str = "cnn"
    partition: str = "iid"
    alpha: float = 0.5
    lr: float = 1e-3
    optimizer: str = "adam"
    mixing: MixingConfig = field(default_factory=MixingConfig)
    sharing: SharingConfig = field(default_factory=SharingConfig)
    steps_per_round: int = 10
    batch_size: int = 64
    target: float = 0.98
    """Stop once every node is past this on the evaluation subset."""
    margin: float = 0.003
    """Required above ``target`` on the subset, so the whole test set agrees."""
    max_seconds: float = 600.0
    eval_seconds: float = 5.0
    eval_images: int = 2000
    seed: int = 0
    references: bool = True
    standalone_sample: int = 3
    """Standalone references are trained for this many nodes (the first ones):
    each costs as much compute as a node used, and on IID shares they agree to
    a fraction of a point."""


def _learning_section(s: ProcessLearningSettings, shape: tuple[int, ...]) -> dict[str, Any]:
    return {
        "model": s.model,
        "input_shape": list(shape),
        "num_classes": 10,
        "lr": s.lr,
        "optimizer": s.optimizer,
        "batch_size": s.batch_size,
        "steps_per_round": s.steps_per_round,
        "round_interval": 0.0,
        "holdout_fraction": 0.02,
        "checkpoint_every": 100,
        "seed": s.seed,
        **CollaborationConfig(s.mixing, s.sharing, expected_nodes=s.nodes).to_section(),
    }


def _first_time(curve: list[dict[str, Any]], key: str, level: float) -> float | None:
    return next((p["seconds"] for p in curve if p[key] >= level), None)


def run_learning_processes(
    settings: ProcessLearningSettings,
    out: Path,
    on_partial: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the network, then the references (``on_partial`` gets the results
    before the references, which can take as long as the run itself)."""
    from tqdm import tqdm

    torch.set_num_threads(1)
    started = time.perf_counter()
    data = load_dataset(settings.dataset)
    shape = (1, *data.image_shape)
    parts = partition(
        settings.partition,
        data.train_labels,
        settings.nodes,
        settings.seed,
        **cli_options(settings.partition, alpha=settings.alpha),
    )
    rng = np.random.default_rng(settings.seed)
    n_test = len(data.test_labels)
    subset = rng.choice(n_test, min(settings.eval_images, n_test), replace=False)
    x_eval, y_eval = data.test_images[subset], data.test_labels[subset]
    curve: list[dict[str, Any]] = []
    with LocalNetwork(
        nodes=settings.nodes,
        logs=out / "logs",
        session_id="bench-learning",
        session_sections={"learning": _learning_section(settings, shape)},
    ) as net:
        for client, indices in zip(net.clients, parts, strict=True):
            for start in range(0, len(indices), 10_000):
                chunk = indices[start : start + 10_000]
                client.train(data.train_images[chunk], data.train_labels[chunk])
        t0 = time.monotonic()
        with tqdm(total=int(settings.max_seconds), unit="s", desc="learning") as bar:
            while (elapsed := time.monotonic() - t0) < settings.max_seconds:
                time.sleep(max(0.0, settings.eval_seconds - (elapsed % settings.eval_seconds)))
                accs = client_accuracies(net.clients, x_eval, y_eval)
                point = {
                    "seconds": round(time.monotonic() - t0, 2),
                    "accuracy_mean": float(np.nanmean(accs)),
                    "accuracy_min": float(np.nanmin(accs)),
                    "per_node": accs,
                }
                curve.append(point)
                bar.update(int(point["seconds"]) - bar.n)
                bar.set_postfix_str(
                    f"mean {point['accuracy_mean']:.2%} min {point['accuracy_min']:.2%}"
                )
                if point["accuracy_min"] >= settings.target + settings.margin:
                    break
        learn_seconds = time.monotonic() - t0
        finals = []
        for client in net.clients:
            predicted, _ = client.predict(data.test_images, probabilities=False)
            finals.append(metrics_from_predictions(data.test_labels, predicted, data.num_classes))
        statuses = [client.status() for client in net.clients]
    accs = np.array([m.accuracy for m in finals])
    steps = [s["learning"]["steps"] for s in statuses]
    result: dict[str, Any] = {
        "benchmark": "learning",
        "runtime": "asyncio",
        "processes": True,
        "nodes": settings.nodes,
        "dataset": settings.dataset,
        "model": settings.model,
        "partition": settings.partition,
        "accuracy_mean": float(accs.mean()),
        "accuracy_std": float(accs.std()),
        "accuracy_min": float(accs.min()),
        "accuracy_max": float(accs.max()),
        "per_node_accuracy": accs.tolist(),
        "per_node_metrics": [m.to_dict() for m in finals],
        "macro_f1_mean": float(np.mean([m.macro_f1 for m in finals])),
        "unseen_class_accuracy": unseen_class_accuracies(finals, parts, data.train_labels),
        "learning_seconds": learn_seconds,
        "seconds_to_accuracy": {
            str(level): t
            for level in LEVELS
            if (t := _first_time(curve, "accuracy_mean", level)) is not None
        },
        "seconds_to_accuracy_every_node": {
            str(level): t
            for level in LEVELS
            if (t := _first_time(curve, "accuracy_min", level)) is not None
        },
        "steps_per_node": steps,
        "bytes_sent_per_node": float(np.mean([s["traffic"]["bytes_out"] for s in statuses])),
        "updates": [s["updates"] for s in statuses],
        "curve": curve,
        "curve_eval_images": settings.eval_images,
        "settings": {
            **asdict(settings),
            "mixing": asdict(settings.mixing),
            "sharing": asdict(settings.sharing),
        },
    }
    if settings.references:
        if on_partial is not None:
            on_partial({**result, "references": "pending"})
        result.update(_references(settings, data, parts, int(np.mean(steps))))
    result["seconds"] = time.perf_counter() - started
    return result


def _references(
    settings: ProcessLearningSettings, data: Dataset, parts: list[np.ndarray], steps: int
) -> dict[str, Any]:
    torch.set_num_threads(2)
    x, y = to_tensors(data.train_images, data.train_labels)
    test = to_tensors(data.test_images, data.test_labels)
    config = TrainConfig(
        lr=settings.lr,
        batch_size=settings.batch_size,
        optimizer=settings.optimizer,
        schedule="constant",
    )
    shape = tuple(x.shape[1:])

    def run(xs: torch.Tensor, ys: torch.Tensor) -> float:
        torch.manual_seed(settings.seed)
        model = build_model(settings.model, shape, data.num_classes)  # type: ignore[arg-type]
        optimizer = make_optimizer(list(model.parameters()), config)
        generator = torch.Generator().manual_seed(settings.seed)
        train_steps(model, optimizer, xs, ys, steps, settings.batch_size, generator)
        return accuracy(model, *test)

    sample = parts[: settings.standalone_sample]
    alone = [run(x[torch.from_numpy(p)], y[torch.from_numpy(p)]) for p in sample]
    return {
        "reference_steps": steps,
        "centralized_accuracy": run(x, y),
        "standalone_accuracy_mean": float(np.mean(alone)),
        "standalone_accuracy_min": float(np.min(alone)),
        "standalone_per_node": alone,
    }
