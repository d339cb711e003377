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

An ``[attack]`` table makes it a poisoning scenario (runtime ``sim``):
:func:`~deepgossip.experiments.poisoning_sim.run_poisoning_sim` instead of the
learning simulation, ``[scenario]`` read as
:class:`~deepgossip.experiments.poisoning_sim.PoisoningSettings` (its defaults;
no ``[mixing]`` table means ``average`` with every peer each round)::

    [scenario]
    malicious = 0.3              # fraction of the nodes, chosen from the seed
    [attack]                     # AttackConfig: kind (its name) + its options
    kind = "label_flip"          # or "bhagoji" (= "targeted"), "backdoor", ...
    [defense]                    # DefenseConfig.from_section; absent: "none"
    name = "auror+clipping"
    [blacklist]                  # BlacklistConfig fields (optional)

A ``[sweep]`` table with one key runs the scenario once per value (``"malicious"``
is a ``[scenario]`` key, ``"mixing.push_prob"`` a key of another table)::

    [sweep]
    "mixing.push_prob" = [0.05, 0.1, 0.5]

A poisoning scenario writes the poisoning benchmark's figures instead
(:mod:`.scenario_poisoning`); a sweep writes each run's outputs into a
subdirectory of DIR and a combined ``summary.json``, ``report.md`` and
``sweep.png`` into DIR (:mod:`.scenario_sweep`).

The runner only reads settings and writes results. Running is a *backend*, one
entry of :data:`BACKENDS` keyed by ``runtime``: ``sim`` is
:func:`~deepgossip.experiments.learning_sim.run_learning_sim` (virtual time;
:func:`~deepgossip.experiments.poisoning_sim.run_poisoning_sim` for a poisoning scenario),
``processes`` is
:func:`~deepgossip.experiments.bench_learning_processes.run_learning_processes`
(a tracker and node processes on loopback, measured in seconds). A backend
takes the scenario's settings and an output directory and returns the result
dict both share (``accuracy_*``, ``per_node_metrics``, ``curve`` points with
``per_node`` accuracies and a ``round`` or ``seconds`` axis). A Ray backend (nodes
as actors across a cluster) is one more entry; scenario files do not change.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from deepgossip.experiments.baseline import write_json
from deepgossip.experiments.learning_sim import LearningSimSettings, run_learning_sim
from deepgossip.experiments.poisoning_sim import PoisoningSettings, run_poisoning_sim
from deepgossip.learn.mixing import MixingConfig
from deepgossip.learn.sharing import SharingConfig


class ScenarioError(ValueError):
    """A scenario file is invalid; the message says what to fix."""


Settings = LearningSimSettings | PoisoningSettings
"""A learning scenario's settings, or a poisoning scenario's (``[attack]`` table)."""

Backend = Callable[[Settings, dict[str, Any], Path], dict[str, Any]]

TABLES = ("scenario", "mixing", "sharing", "processes", "attack", "defense", "blacklist", "sweep")
"""The tables a scenario file may have."""


def _run_sim(settings: Settings, extra: dict[str, Any], out: Path) -> dict[str, Any]:
    del extra, out
    if isinstance(settings, PoisoningSettings):
        return run_poisoning_sim(settings)
    return run_learning_sim(settings)


def _run_processes(settings: Settings, extra: dict[str, Any], out: Path) -> dict[str, Any]:
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


@dataclass(frozen=True)
class Scenario:
    """A scenario file, validated: the run it describes, or one run per swept value."""

    name: str
    runtime: str
    settings: Settings
    """Without the sweep (the file's own values)."""
    extra: dict[str, Any]
    """The backend's own table (``[processes]``)."""
    sweep_key: str | None = None
    """``"malicious"`` (a ``[scenario]`` key) or ``"mixing.push_prob"`` (table.key)."""
    sweep: tuple[tuple[Any, Settings, dict[str, Any]], ...] = ()
    """(value, settings, extra) of each swept run, in the file's order."""


def read_scenario(path: str | Path) -> Scenario:
    """Parse and validate a scenario file, every swept run included."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc}") from exc
    if unknown := sorted(set(data) - set(TABLES)):
        raise ScenarioError(f"unknown tables {unknown}; allowed: {list(TABLES)}")
    head = data.get("scenario", {})
    name = str(head.get("name", Path(path).stem))
    runtime = head.get("runtime", "sim")
    if runtime not in BACKENDS:
        raise ScenarioError(f"runtime {runtime!r} is not one of {sorted(BACKENDS)}")
    sweep_table = data.pop("sweep", None)
    settings, extra = _build(name, runtime, data)
    if sweep_table is None:
        return Scenario(name, runtime, settings, extra)
    key, values = _parse_sweep(sweep_table)
    runs = []
    for value in values:
        try:
            runs.append((value, *_build(name, runtime, _override(data, key, value))))
        except ScenarioError as exc:
            raise ScenarioError(f"[sweep] {key} = {value!r}: {exc}") from exc
    return Scenario(name, runtime, settings, extra, key, tuple(runs))


def load_scenario(path: str | Path) -> tuple[str, str, Settings, dict[str, Any]]:
    """(name, runtime, settings, backend-specific settings) of a scenario file."""
    scenario = read_scenario(path)
    return scenario.name, scenario.runtime, scenario.settings, scenario.extra


def _build(name: str, runtime: str, data: dict[str, Any]) -> tuple[Settings, dict[str, Any]]:
    """The settings of one run and its backend's own table."""
    head = dict(data.get("scenario", {}))
    head.pop("name", None)
    head.pop("runtime", None)
    if any(table in data for table in ("attack", "defense", "blacklist")):
        if runtime != "sim":
            raise ScenarioError(f"poisoning scenarios run on runtime 'sim', not {runtime!r}")
        from deepgossip.experiments.scenario_poisoning import poisoning_settings

        try:
            return poisoning_settings(head, data), {}
        except (TypeError, ValueError) as exc:
            raise ScenarioError(f"scenario {name!r}: {exc}") from exc
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
    return settings, extra


def _parse_sweep(table: dict[str, Any]) -> tuple[str, list[Any]]:
    """The one swept key (dotted keys flattened) and its values."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = value

    walk("", table)
    if len(flat) != 1:
        raise ScenarioError(
            f"[sweep] takes exactly one key (one swept setting), got {sorted(flat)}"
        )
    ((key, values),) = flat.items()
    if not isinstance(values, list) or not values:
        raise ScenarioError(f"[sweep] {key} must be a non-empty list of values")
    path = _sweep_path(key)
    if path[0] not in TABLES or path[0] == "sweep":
        raise ScenarioError(f"[sweep] {key}: no table {path[0]!r}; tables: {list(TABLES[:-1])}")
    if path in (["scenario", "name"], ["scenario", "runtime"]):
        raise ScenarioError(f"[sweep] cannot vary {path[1]}")
    return key, values


def _sweep_path(key: str) -> list[str]:
    path = key.split(".")
    return path if len(path) > 1 else ["scenario", key]


def _override(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of the scenario's tables with ``key`` set to ``value``."""
    data = copy.deepcopy(data)
    *tables, leaf = _sweep_path(key)
    table = data
    for name in tables:
        table = table.setdefault(name, {})
        if not isinstance(table, dict):
            raise ScenarioError(f"[sweep] {key}: {name} is not a table")
    table[leaf] = value
    return data


def _backend_keys(runtime: str) -> set[str]:
    """Keys a backend reads from its own section (``[processes]``)."""
    if runtime != "processes":
        return set()
    from deepgossip.experiments.bench_learning_processes import ProcessLearningSettings

    own = {f.name for f in fields(ProcessLearningSettings)}
    return own - {f.name for f in fields(LearningSimSettings)}


def run_scenario(path: str | Path, out: str | Path) -> dict[str, Any]:
    """Run a scenario file (every swept value) and write its outputs to ``out``."""
    scenario = read_scenario(path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if scenario.sweep_key is None:
        return _run_one(scenario.name, scenario.runtime, scenario.settings, scenario.extra, out)
    from deepgossip.experiments.scenario_sweep import write_sweep

    results = []
    for value, settings, extra in scenario.sweep:
        sub = out / _slug(f"{scenario.sweep_key}={value}")
        result = _run_one(scenario.name, scenario.runtime, settings, extra, sub)
        result["sweep"] = {"key": scenario.sweep_key, "value": value, "dir": sub.name}
        results.append(result)
    return write_sweep(scenario.name, scenario.sweep_key, results, out)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text)


def summary_line(result: dict[str, Any]) -> str:
    """One line about a finished scenario, for the command line."""
    if "sweep" in result and "runs" in result:
        return f"{result['scenario']}: {len(result['runs'])} runs over {result['sweep']['key']}"
    if result.get("benchmark") == "poisoning":
        return (
            f"{result['scenario']}: honest accuracy mean {result['honest_accuracy_mean']:.2%} "
            f"(min {result['honest_accuracy_min']:.2%})"
        )
    return (
        f"{result['scenario']}: accuracy mean {result['accuracy_mean']:.2%} "
        f"(min {result['accuracy_min']:.2%})"
    )


def _run_one(
    name: str, runtime: str, settings: Settings, extra: dict[str, Any], out: Path
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    result = BACKENDS[runtime](settings, extra, out)
    result["scenario"] = name
    if result.get("benchmark") == "poisoning":
        from deepgossip.experiments.scenario_poisoning import write_poisoning_outputs

        write_poisoning_outputs(name, result, out)
        return result
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
