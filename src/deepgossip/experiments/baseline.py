"""Reference accuracies every peer-to-peer result is compared with.

* **centralized**: one model trained on the pooled training set (the upper
  bound collaboration tries to reach without pooling);
* **standalone**: each of N nodes trains alone on its own partition (the lower
  bound: what a participant gets without DeepGossip).

Both use the same model, optimiser settings and number of epochs (passes over
whatever data the trainer holds), so standalone nodes do 1/N of the centralized
work each and the whole run costs about twice a centralized run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepgossip.learn.data import load_dataset, to_tensors
from deepgossip.learn.models import build_model, count_parameters
from deepgossip.learn.partition import cli_options, partition
from deepgossip.learn.train import DEFAULT_TRAIN, TrainConfig, evaluate, train_epochs

CURVE_SUBSET = 2000
"""Test samples used for per-epoch curves (the final figure uses all 10k)."""


@dataclass(frozen=True)
class BaselineSettings:
    dataset: str = "mnist"
    model: str = "cnn"
    nodes: int = 10
    partition: str = "iid"
    alpha: float = 0.5
    epochs: int | None = None
    seed: int = 0
    threads: int = 2

    def train_config(self) -> TrainConfig:
        config = DEFAULT_TRAIN[self.model]
        return config if self.epochs is None else replace(config, epochs=self.epochs)


Progress = Callable[[str], None]


def _partition_options(settings: BaselineSettings) -> dict[str, Any]:
    return cli_options(settings.partition, alpha=settings.alpha)


def _train_and_score(
    settings: BaselineSettings,
    x: torch.Tensor,
    y: torch.Tensor,
    test: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    seed: int,
    on_epoch: Callable[[], None] | None = None,
) -> tuple[dict[str, Any], list[float]]:
    torch.manual_seed(seed)
    model = build_model(settings.model, tuple(x.shape[1:]), num_classes)  # type: ignore[arg-type]
    curve_x, curve_y = test[0][:CURVE_SUBSET], test[1][:CURVE_SUBSET]
    curve: list[float] = []

    def after_epoch(_epoch: int, _loss: float) -> None:
        curve.append(evaluate(model, curve_x, curve_y, num_classes).accuracy)
        if on_epoch is not None:
            on_epoch()

    train_epochs(model, x, y, settings.train_config(), seed=seed, on_epoch=after_epoch)
    metrics = evaluate(model, test[0], test[1], num_classes)
    result = metrics.to_dict()
    result["parameters"] = count_parameters(model)
    return result, curve


def run_baseline(
    settings: BaselineSettings, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Run centralized and standalone training; return the JSON-ready result.

    ``progress(1)`` is called after every epoch of every trainer (there are
    ``epochs * (nodes + 1)`` in all), for a progress bar.
    """
    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    data = load_dataset(settings.dataset)
    x_train, y_train = to_tensors(data.train_images, data.train_labels)
    test = to_tensors(data.test_images, data.test_labels)
    tick = (lambda: progress(1)) if progress else None

    t0 = time.perf_counter()
    central, central_curve = _train_and_score(
        settings, x_train, y_train, test, data.num_classes, settings.seed, tick
    )
    central["seconds"] = time.perf_counter() - t0

    parts = partition(
        settings.partition,
        data.train_labels,
        settings.nodes,
        seed=settings.seed,
        **_partition_options(settings),
    )
    per_node, curves = [], []
    t0 = time.perf_counter()
    for node, indices in enumerate(parts):
        index = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        result, curve = _train_and_score(
            settings,
            x_train[index],
            y_train[index],
            test,
            data.num_classes,
            settings.seed + 1 + node,
            tick,
        )
        result["node"] = node
        result["train_samples"] = len(indices)
        per_node.append(result)
        curves.append(curve)
    standalone_seconds = time.perf_counter() - t0

    accs = np.array([r["accuracy"] for r in per_node])
    return {
        "benchmark": "baseline",
        "dataset": settings.dataset,
        "model": settings.model,
        "nodes": settings.nodes,
        "partition": settings.partition,
        "settings": {
            **settings.__dict__,
            "train": settings.train_config().__dict__,
            "partition_options": _partition_options(settings),
        },
        "centralized": {**central, "curve": central_curve},
        "standalone": {
            "accuracy_mean": float(accs.mean()),
            "accuracy_std": float(accs.std()),
            "accuracy_min": float(accs.min()),
            "accuracy_max": float(accs.max()),
            "seconds": standalone_seconds,
            "curves": curves,
            "per_node": per_node,
        },
        "curve_test_samples": CURVE_SUBSET,
        "seconds": time.perf_counter() - started,
        "torch_threads": settings.threads,
    }


def summary_table(result: dict[str, Any]) -> str:
    """A short human-readable comparison for the terminal."""
    st = result["standalone"]
    rows = [
        ("centralized (all data pooled)", result["centralized"]["accuracy"], ""),
        ("standalone mean", st["accuracy_mean"], f"(min {st['accuracy_min']:.2%})"),
    ]
    for node in st["per_node"]:
        rows.append(
            (f"  node {node['node']} ({node['train_samples']} samples)", node["accuracy"], "")
        )
    width = max(len(r[0]) for r in rows)
    lines = [
        f"{result['dataset']} / {result['model']} / {result['nodes']} nodes / "
        f"{result['partition']}: test accuracy on {result['centralized']['samples']} images",
    ]
    lines += [f"  {name.ljust(width)}  {acc:7.2%} {note}".rstrip() for name, acc, note in rows]
    gap = result["centralized"]["accuracy"] - st["accuracy_mean"]
    lines.append(f"  gap collaboration must close: {gap * 100:.2f} pp")
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)


def run_baseline_cli(json_path: str | None, **options: Any) -> dict[str, Any]:
    from tqdm import tqdm

    settings = BaselineSettings(**options)
    total = settings.train_config().epochs * (settings.nodes + 1)
    with tqdm(total=total, desc="epochs", unit="epoch") as bar:
        result = run_baseline(settings, progress=bar.update)
    print(summary_table(result))
    if json_path:
        write_json(result, json_path)
        print(f"wrote {json_path}")
    return result
