"""Plots of experiment results (PNG, via matplotlib's headless Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot

import matplotlib.pyplot as plt


def plot_baseline(result: dict[str, Any], path: str | Path) -> Path:
    """Per-epoch test accuracy: centralized vs every standalone node."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    central = result["centralized"]["curve"]
    epochs = range(1, len(central) + 1)
    for i, curve in enumerate(result["standalone"]["curves"]):
        ax.plot(
            epochs,
            curve,
            color="tab:orange",
            alpha=0.35,
            lw=1,
            label="standalone nodes" if i == 0 else None,
        )
    curves = result["standalone"]["curves"]
    mean = [sum(c[e] for c in curves) / len(curves) for e in range(len(central))]
    ax.plot(epochs, mean, color="tab:orange", lw=2.5, label="standalone mean")
    ax.plot(epochs, central, color="tab:blue", lw=2.5, label="centralized (pooled data)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"test accuracy ({result['curve_test_samples']} images)")
    ax.set_title(
        f"{result['dataset']} / {result['model']} / {result['nodes']} nodes ({result['partition']})"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
