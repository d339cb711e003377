"""``make demo``: the best demonstration that exists so far.

Until the networked demo lands, it shows the problem DeepGossip solves: six
nodes each training alone on a sixth of MNIST fall short of a model trained on
the pooled data. It prints a table and writes a PNG plot and the JSON result.
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from deepgossip.experiments.baseline import (
    BaselineSettings,
    run_baseline,
    summary_table,
    write_json,
)
from deepgossip.experiments.plots import plot_baseline


def run_demo(out: str, quick: bool = False) -> None:
    settings = BaselineSettings(
        dataset="mnist-5k" if quick else "mnist",
        model="mlp",
        nodes=6,
        partition="dirichlet",
        alpha=0.5,
        epochs=2 if quick else 5,
        seed=0,
    )
    total = settings.train_config().epochs * (settings.nodes + 1)
    print(
        f"DeepGossip demo: {settings.nodes} nodes, {settings.dataset}, {settings.model}, "
        f"non-IID (Dirichlet alpha={settings.alpha}); centralized vs standalone"
    )
    with tqdm(total=total, desc="training", unit="epoch") as bar:
        result = run_baseline(settings, progress=bar.update)
    out_dir = Path(out)
    write_json(result, out_dir / "baseline.json")
    plot = plot_baseline(result, out_dir / "baseline.png")
    print(summary_table(result))
    print(f"plot: {plot}\nresult: {out_dir / 'baseline.json'}")
