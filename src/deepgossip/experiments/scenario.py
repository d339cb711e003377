"""Scenarios: an experiment described in a TOML file, run and written up.

``deepgossip experiment run SCENARIO.toml --out DIR`` reads::

    [scenario]
    name = "collaboration-disjoint"
    runtime = "sim"              # sim (virtual time, one process) | processes
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

    [processes]                  # only read by runtime = "processes"
    max_seconds = 600            # ProcessLearningSettings: target, eval_every, ...

and writes to DIR: ``metrics.jsonl`` (one line per node per evaluation),
``summary.json`` (accuracy mean / std / min / max, macro F1, bytes per node, the
centralized and standalone references of the same run), ``accuracy.png`` and
``report.md``.

The runner only reads settings and writes results. Running is a *backend*, one
entry of :data:`BACKENDS` keyed by ``runtime``: ``sim`` is
:func:`~deepgossip.experiments.learning_sim.run_learning_sim` (virtual time),
``processes`` is
:func:`~deepgossip.experiments.bench_learning_processes.run_learning_processes`
(a tracker and node processes on loopback, measured in seconds). A backend
takes the scenario's settings and an output directory and returns the result
dict both share (``accuracy_*``, ``per_node_metrics``, ``curve`` points with
``per_node`` accuracies and a ``round`` or ``seconds`` axis). A Ray backend (nodes
as actors across a cluster) is one more entry; scenario files do not change.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from deepgossip.experiments.baseline import write_json
from deepgossip.experiments.learning_sim import LearningSimSettings, run_learning_sim
from deepgossip.learn.mixing import MixingConfig
from deepgossip.learn.sharing import SharingConfig


class ScenarioError(ValueError):
    """A scenario file is invalid; the message says what to fix."""


Backend = Callable[[LearningSimSettings, dict[str, Any], Path], dict[str, Any]]


def _run_sim(settings: LearningSimSettings, extra: dict[str, Any], out: Path) -> dict[str, Any]:
    del extra, out
    return run_learning_sim(settings)


def _run_processes(
    settings: LearningSimSettings, extra: dict[str, Any], out: Path
) -> dict[str, Any]:
    from deepgossip.experiments.bench_learning_processes import (
        ProcessLearningSettings,
        run_learning_processes,
    )

    shared = {f.name for f in fields(ProcessLearningSettings)} & {
        f.name for f in fields(LearningSimSettings)
    }
    try:
        process_settings = ProcessLearningSettings(
            **{name: getattr(settings, name) for name in shared}, **extra
        )
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"[processes]: {exc}") from exc
    return run_learning_processes(process_settings, out)


BACKENDS: dict[str, Backend] = {"sim": _run_sim, "processes": _run_processes}
"""How a scenario runs, by its ``runtime`` key."""


def load_scenario(path: str | Path) -> tuple[str, str, LearningSimSettings, dict[str, Any]]:
    """(name, runtime, settings, backend-specific settings) of a scenario file."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc}") from exc
    head = dict(data.get("scenario", {}))
    name = str(head.pop("name", Path(path).stem))
    runtime = head.pop("runtime", "sim")
    if runtime not in BACKENDS:
        raise ScenarioError(f"runtime {runtime!r} is not one of {sorted(BACKENDS)}")
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
    extra = dict(data.get(runtime, {}))
    if unknown := sorted(set(extra) - _backend_keys(runtime)):
        raise ScenarioError(
            f"unknown [{runtime}] keys {unknown}; allowed: {sorted(_backend_keys(runtime))}"
        )
    return name, runtime, settings, extra


def _backend_keys(runtime: str) -> set[str]:
    """Keys a backend reads from its own section (``[processes]``)."""
    if runtime != "processes":
        return set()
    from deepgossip.experiments.bench_learning_processes import ProcessLearningSettings

    own = {f.name for f in fields(ProcessLearningSettings)}
    return own - {f.name for f in fields(LearningSimSettings)}


def run_scenario(path: str | Path, out: str | Path) -> dict[str, Any]:
    name, runtime, settings, extra = load_scenario(path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = BACKENDS[runtime](settings, extra, out)
    result["scenario"] = name
    axis = _axis(result)
    with (out / "metrics.jsonl").open("w") as metrics:
        for point in result["curve"]:
            for node, acc in enumerate(point["per_node"]):
                row = {axis: point[axis], "node": node, "accuracy": acc}
                if "virtual_s" in point:
                    row["virtual_s"] = point["virtual_s"]
                metrics.write(json.dumps(row) + "\n")
    write_json(result, out / "summary.json")
    _plot(result, out / "accuracy.png")
    (out / "report.md").write_text(_report(name, result))
    return result


def _axis(result: dict[str, Any]) -> str:
    """Curves are per round (simulated) or per wall-clock second (processes)."""
    return "round" if result["curve"] and "round" in result["curve"][0] else "seconds"


def _plot(result: dict[str, Any], path: Path) -> None:
    from deepgossip.experiments.plots import plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    axis = _axis(result)
    rounds = [p[axis] for p in result["curve"]]
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
    ax.set_xlabel(axis if axis == "round" else "seconds (wall clock)")
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
        f"{s['sharing']['theta_u']}, seed {s['seed']}; {_how(result)}.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| accuracy mean (std) | {result['accuracy_mean']:.2%} ({result['accuracy_std']:.2%}) |",
        f"| accuracy min / max | {result['accuracy_min']:.2%} / {result['accuracy_max']:.2%} |",
        f"| macro F1, mean | {result['macro_f1_mean']:.4f} |",
        f"| bytes sent per node | {result['bytes_sent_per_node'] / 1e6:.1f} MB |",
    ]
    unseen = [u for u in result.get("unseen_class_accuracy", []) if u is not None]
    if unseen:
        lines.append(
            f"| accuracy on classes a node never saw, mean / min | "
            f"{sum(unseen) / len(unseen):.2%} / {min(unseen):.2%} |"
        )
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


def _how(result: dict[str, Any]) -> str:
    s = result["settings"]
    if result["runtime"] == "sim":
        return f"{s['rounds']} rounds of {s['steps_per_round']} steps on the simulated network"
    return f"{result['learning_seconds']:.0f} s of real node processes on loopback"
