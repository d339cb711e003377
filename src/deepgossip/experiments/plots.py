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


def plot_network_demo(result: dict[str, Any], path: str | Path) -> Path:
    """Accuracy of each node over time, with its standalone and the pooled references."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax_time, ax_bars) = plt.subplots(
        1, 2, figsize=(11, 4.5), dpi=120, gridspec_kw={"width_ratios": [3, 2]}
    )
    seconds = [point["seconds"] for point in result["curve"]]
    nodes = result["nodes"]
    for i in range(nodes):
        ax_time.plot(
            seconds, [p["per_node"][i] for p in result["curve"]], lw=1.5, label=f"node {i}"
        )
    ax_time.axhline(
        result["centralized_accuracy"], color="black", ls="--", lw=1, label="all data pooled"
    )
    ax_time.axhline(
        sum(result["standalone_accuracy"]) / nodes,
        color="gray",
        ls=":",
        lw=1.5,
        label="alone, mean",
    )
    ax_time.set_xlabel("seconds of learning together")
    ax_time.set_ylabel("test accuracy")
    ax_time.set_title("DeepGossip nodes while they learn")
    ax_time.grid(alpha=0.3)
    ax_time.legend(fontsize=8, loc="lower right")
    xs = range(nodes)
    ax_bars.bar(
        [x - 0.2 for x in xs],
        result["standalone_accuracy"],
        width=0.4,
        color="tab:orange",
        label="alone (own data)",
    )
    ax_bars.bar(
        [x + 0.2 for x in xs],
        result["deepgossip_accuracy"],
        width=0.4,
        color="tab:blue",
        label="DeepGossip",
    )
    ax_bars.axhline(result["centralized_accuracy"], color="black", ls="--", lw=1)
    ax_bars.set_xticks(list(xs))
    ax_bars.set_xlabel("node")
    ax_bars.set_ylim(0, 1)
    ax_bars.set_title("final test accuracy")
    ax_bars.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_heatmap(
    values: list[list[float | None]],
    rows: list[str],
    columns: list[str],
    path: str | Path,
    *,
    title: str,
    label: str,
    notes: list[list[str]] | None = None,
) -> Path:
    """A table of fractions as coloured cells (missing: grey), each annotated with
    its value in percent and an optional note beneath it."""
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(columns), 1.2 + 0.75 * len(rows)), dpi=120)
    finite = data[np.isfinite(data)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    image = ax.imshow(
        np.ma.masked_invalid(data), cmap=cmap, vmin=low, vmax=max(high, low + 1e-9), aspect="auto"
    )
    for i in range(len(rows)):
        for j in range(len(columns)):
            text = "n/a" if np.isnan(data[i, j]) else f"{100 * data[i, j]:.1f}%"
            if notes is not None and notes[i][j]:
                text += f"\n{notes[i][j]}"
            bright = np.isfinite(data[i, j]) and data[i, j] > (low + high) / 2
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="black" if bright else "white",
            )
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label=label)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
