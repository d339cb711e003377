"""``make demo``: a tracker and learning nodes on loopback learn MNIST together.

Everything runs as it would across organisations, only on one machine: the
tracker and every node are separate ``deepgossip`` processes talking over real
UDP and TCP sockets with sealed, signed frames; one small "application" per node
(threads of this process) feeds its node a private, non-IID share of MNIST
through the node's HTTP API and asks it for predictions. At the end a table
compares every node with what it would have reached alone (its own data only)
and with a model trained on all data pooled, and a PNG plot shows the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from deepgossip.api.client import Client
from deepgossip.experiments.baseline import write_json
from deepgossip.experiments.local_net import LocalNetwork, client_accuracies
from deepgossip.learn.data import Dataset, load_dataset, to_tensors
from deepgossip.learn.models import build_model
from deepgossip.learn.partition import partition
from deepgossip.learn.train import TrainConfig, accuracy, train_epochs


@dataclass(frozen=True)
class DemoSettings:
    dataset: str = "mnist"
    nodes: int = 6
    alpha: float = 0.5
    """Dirichlet label skew of the nodes' shares: each node sees mostly a few digits."""
    seconds: float = 120.0
    """How long the nodes learn together."""
    model: str = "mlp"
    lr: float = 1e-3
    eval_images: int = 2000
    seed: int = 0


def _learning_section(settings: DemoSettings, shape: tuple[int, ...]) -> dict[str, Any]:
    return {
        "model": settings.model,
        "input_shape": list(shape),
        "num_classes": 10,
        "lr": settings.lr,
        "batch_size": 64,
        "steps_per_round": 10,
        "round_interval": 0.2,
        "holdout_fraction": 0.05,
        "checkpoint_every": 50,
        "rule": "gosgd",
        "push_prob": 0.25,
        "fanout": 1,
        "expected_nodes": settings.nodes,
        "seed": settings.seed,
    }


def _references(
    settings: DemoSettings, data: Dataset, parts: list[np.ndarray]
) -> tuple[float, list[float]]:
    """Centralized and standalone accuracies with the same model and optimiser."""
    x, y = to_tensors(data.train_images, data.train_labels)
    test = to_tensors(data.test_images, data.test_labels)
    config = TrainConfig(epochs=5, batch_size=64, lr=settings.lr)

    def train(xs: torch.Tensor, ys: torch.Tensor) -> float:
        torch.manual_seed(settings.seed)
        model = build_model(settings.model, tuple(xs.shape[1:]), 10)  # type: ignore[arg-type]
        train_epochs(model, xs, ys, config, seed=settings.seed)
        return accuracy(model, *test)

    central = train(x, y)
    alone = [train(x[torch.from_numpy(p)], y[torch.from_numpy(p)]) for p in parts]
    return central, alone


def run_network_demo(settings: DemoSettings, out: Path) -> dict[str, Any]:
    torch.set_num_threads(1)
    data = load_dataset(settings.dataset)
    shape = (1, *data.image_shape)
    parts = partition(
        "dirichlet", data.train_labels, settings.nodes, settings.seed, alpha=settings.alpha
    )
    eval_idx = np.random.default_rng(settings.seed).choice(
        len(data.test_labels), min(settings.eval_images, len(data.test_labels)), replace=False
    )
    with LocalNetwork(
        nodes=settings.nodes,
        logs=out,
        session_id="demo",
        session_sections={"learning": _learning_section(settings, shape)},
    ) as net:
        print(f"tracker at {net.tracker_url}; {settings.nodes} nodes started", flush=True)
        clients = net.clients
        for client, indices in zip(clients, parts, strict=True):
            for start in range(0, len(indices), 10_000):
                chunk = indices[start : start + 10_000]
                client.train(data.train_images[chunk], data.train_labels[chunk])
        print("each application sent its node its own share of the data:")
        for i, indices in enumerate(parts):
            top = np.bincount(data.train_labels[indices], minlength=10).argsort()[::-1][:3]
            print(f"  node {i}: {len(indices):6d} images, mostly digits {', '.join(map(str, top))}")
        curve = _learn(settings, clients, data, eval_idx)
        final = []
        for client in clients:
            predicted, _ = client.predict(data.test_images, probabilities=False)
            final.append(float(np.mean(predicted == data.test_labels)))
        statuses = [client.status() for client in clients]
    print("computing references (alone on own data, and all data pooled) ...", flush=True)
    central, alone = _references(settings, data, parts)
    result = {
        "demo": "network",
        "settings": settings.__dict__,
        "nodes": settings.nodes,
        "deepgossip_accuracy": final,
        "standalone_accuracy": alone,
        "centralized_accuracy": central,
        "curve": curve,
        "updates": [s["updates"] for s in statuses],
        "bytes_out": [s["traffic"]["bytes_out"] for s in statuses],
    }
    write_json(result, out / "demo.json")
    from deepgossip.experiments.plots import plot_network_demo

    plot_network_demo(result, out / "demo.png")
    return result


def _learn(
    settings: DemoSettings, clients: list[Client], data: Dataset, eval_idx: np.ndarray
) -> list[dict[str, Any]]:
    """Let the nodes learn for ``settings.seconds``, showing their accuracy."""
    curve: list[dict[str, Any]] = []
    x_eval, y_eval = data.test_images[eval_idx], data.test_labels[eval_idx]
    started = time.monotonic()
    with tqdm(
        total=int(settings.seconds),
        desc="learning together",
        unit="s",
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} s {postfix}",
    ) as bar:
        while (elapsed := time.monotonic() - started) < settings.seconds:
            time.sleep(min(5.0, settings.seconds - elapsed))
            accs = client_accuracies(clients, x_eval, y_eval)
            elapsed = time.monotonic() - started
            curve.append({"seconds": elapsed, "per_node": accs})
            bar.update(int(elapsed) - bar.n)
            bar.set_postfix_str(f"accuracy mean {np.nanmean(accs):.1%}, min {np.nanmin(accs):.1%}")
    return curve


def print_table(result: dict[str, Any]) -> None:
    rows = zip(result["standalone_accuracy"], result["deepgossip_accuracy"], strict=True)
    print(f"\n{'node':>6} {'alone (own data)':>18} {'DeepGossip':>12} {'gain':>8}")
    for i, (alone, together) in enumerate(rows):
        print(f"{i:>6} {alone:>18.2%} {together:>12.2%} {(together - alone) * 100:>+7.1f}pp")
    print(
        f"{'mean':>6} {np.mean(result['standalone_accuracy']):>18.2%} "
        f"{np.mean(result['deepgossip_accuracy']):>12.2%}"
    )
    print(
        f"all data pooled in one place (centralized reference): "
        f"{result['centralized_accuracy']:.2%}"
    )


def run_demo(out: str, quick: bool = False) -> None:
    settings = (
        DemoSettings(dataset="digits", nodes=3, seconds=20, eval_images=359)
        if quick
        else DemoSettings()
    )
    print(
        f"DeepGossip demo: {settings.nodes} nodes learn {settings.dataset} together "
        f"without pooling their data (non-IID shares, Dirichlet alpha={settings.alpha})",
        flush=True,
    )
    result = run_network_demo(settings, Path(out))
    print_table(result)
    print(f"plot: {Path(out) / 'demo.png'}\nresult: {Path(out) / 'demo.json'}")
