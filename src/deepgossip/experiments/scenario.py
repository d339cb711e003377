"""Scenarios: an experiment described in a TOML file, run and written up.

``deepgossip experiment run SCENARIO.toml --out DIR`` reads::

    [scenario]
    name = "collaboration-disjoint"
    runtime = "sim"              # the simulated network (real processes: later)
    nodes = 5
    dataset = "mnist"
    model = "mlp"
    partition = "disjoint"       # iid | dirichlet | shards | unbalanced | disjoint
    alpha = 0.5
    rounds = 60
    steps_per_round = 10
    lr = 0.003
    seed = 0

    [mixing]                     # deepgossip.learn.mixing.MixingConfig
    rule = "gosgd"
    [sharing]                    # deepgossip.learn.sharing.SharingConfig
    theta_u = 1.0

and writes to DIR: ``metrics.jsonl`` (one line per node per evaluation),
``summary.json`` (accuracy mean / std / min / max, macro F1, bytes per node, the
centralized and standalone references of the same run), ``accuracy.png`` and
``report.md``. The runner only builds settings and writes results; the run
itself is :func:`~deepgossip.experiments.learning_sim.run_learning_sim`, so a
second backend (processes, Ray) can be added without changing scenario files.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from deepgossip.experiments.baseline import write_json
from deepgossip.experiments.learning_sim import LearningSimSettings, run_learning_sim
from deepgossip.learn.mixing import MixingConfig
from deepgossip.learn.sharing import SharingConfig


class ScenarioError(ValueError):
    """A scenario file is invalid; the message says what to fix."""


def load_scenario(path: str | Path) -> tuple[str, LearningSimSettings]:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc}") from exc
    head = dict(data.get("scenario", {}))
    name = str(head.pop("name", Path(path).stem))
    runtime = head.pop("runtime", "sim")
    if runtime != "sim":
        raise ScenarioError(f"runtime {runtime!r} is not available yet; use 'sim'")
    allowed = {f.name for f in fields(LearningSimSettings)} - {"mixing", "sharing"}
    if unknown := sorted(set(head) - allowed):
        raise ScenarioError(f"unknown [scenario] keys {unknown}; allowed: {sorted(allowed)}")
    try:
        settings = LearningSimSettings(
            mixing=MixingConfig(**data.get("mixing", {})),
            sharing=SharingConfig(**data.get("sharing", {})),
            **head,
        )
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"scenario {name!r}: {exc}") from exc
    return name, settings


def run_scenario(path: str | Path, out: str | Path) -> dict[str, Any]:
    name, settings = load_scenario(path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = run_learning_sim(settings)
    result["scenario"] = name
    with (out / "metrics.jsonl").open("w") as metrics:
        for point in result["curve"]:
            for node, acc in enumerate(point["per_node"]):
                metrics.write(
                    json.dumps(
                        {
                            "round": point["round"],
                            "virtual_s": point["virtual_s"],
                            "node": node,
                            "accuracy": acc,
                        }
                    )
                    + "\n"
                )
    write_json(result, out / "summary.json")
    _plot(result, out / "accuracy.png")
    (out / "report.md").write_text(_report(name, result))
    return result


def _plot(result: dict[str, Any], path: Path) -> None:
    from deepgossip.experiments.plots import plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    rounds = [p["round"] for p in result["curve"]]
    for node in range(result["nodes"]):
        ax.plot(rounds, [p["per_node"][node] for p in result["curve"]], lw=1, alpha=0.5)
    ax.plot(
        rounds,
        [p["accuracy_mean"] for p in result["curve"]],
        lw=2.5,
        color="tab:blue",
        label="DeepGossip nodes, mean",
    )
    if "centralized_accuracy" in result:
        ax.axhline(result["centralized_accuracy"], color="black", ls="--", label="centralized")
        ax.axhline(
            result["standalone_accuracy_mean"], color="tab:orange", ls=":", label="standalone, mean"
        )
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_title(
        f"{result['scenario']}: {result['nodes']} nodes, {result['dataset']}, {result['partition']}"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _report(name: str, result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"# Scenario `{name}`",
        "",
        f"{result['nodes']} nodes, {result['dataset']} / {result['model']}, partition "
        f"`{result['partition']}`, rule `{s['mixing']['rule']}`, theta_u "
        f"{s['sharing']['theta_u']}, {s['rounds']} rounds of {s['steps_per_round']} steps, "
        f"seed {s['seed']}; simulated network.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| accuracy mean (std) | {result['accuracy_mean']:.2%} ({result['accuracy_std']:.2%}) |",
        f"| accuracy min / max | {result['accuracy_min']:.2%} / {result['accuracy_max']:.2%} |",
        f"| macro F1, mean | {result['macro_f1_mean']:.4f} |",
        f"| bytes sent per node | {result['bytes_sent_per_node'] / 1e6:.1f} MB |",
    ]
    if "centralized_accuracy" in result:
        lines += [
            f"| centralized (same total steps) | {result['centralized_accuracy']:.2%} |",
            f"| standalone mean | {result['standalone_accuracy_mean']:.2%} |",
        ]
    lines += [
        "",
        "Per-round metrics: `metrics.jsonl`; everything: `summary.json`; plot: `accuracy.png`.",
        "",
    ]
    return "\n".join(lines)
