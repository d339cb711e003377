"""A scenario's ``[sweep]``: one run per value, then a combined table and plot.

Each run's own outputs go to a subdirectory of the output directory
(``malicious=0.1/``, ``mixing.push_prob=0.05/``, ...); :func:`write_sweep` adds
``summary.json`` (one row of figures per value), ``report.md`` (the rows as a
table) and ``sweep.png`` (the figures against the swept value) at the top.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from deepgossip.experiments.baseline import write_json
from deepgossip.experiments.scenario_poisoning import num, pct

__all__ = ["sweep_rows", "write_sweep"]

Column = tuple[str, str, Callable[[Any], str], bool]
"""(figure, header, format, plotted: a fraction drawn on sweep.png)."""


def _count(value: Any) -> str:
    return "n/a" if value is None else str(value)


POISONING_COLUMNS: tuple[Column, ...] = (
    ("honest_accuracy_mean", "honest accuracy mean", pct, True),
    ("honest_accuracy_min", "honest min", pct, False),
    ("no_attack_accuracy_mean", "no attack", pct, True),
    ("no_defense_accuracy_mean", "no defence", pct, True),
    ("attack_success", "attack success", pct, True),
    ("no_defense_attack_success", "attack success, no defence", pct, True),
    ("precision", "precision", num, False),
    ("recall", "recall", num, True),
    ("rounds_to_blacklist_all", "rounds to blacklist all", lambda v: num(v, 1), False),
    ("honest_blacklisted", "honest blacklisted", _count, False),
    ("seconds", "seconds", lambda v: num(v, 0), False),
)
LEARNING_COLUMNS: tuple[Column, ...] = (
    ("accuracy_mean", "accuracy mean", pct, True),
    ("accuracy_min", "accuracy min", pct, True),
    ("centralized_accuracy", "centralized", pct, True),
    ("standalone_accuracy_mean", "standalone mean", pct, True),
    (
        "bytes_sent_per_node",
        "MB sent per node",
        lambda v: num(None if v is None else v / 1e6, 1),
        False,
    ),
)


def _columns(results: list[dict[str, Any]]) -> tuple[Column, ...]:
    poisoning = results[0].get("benchmark") == "poisoning"
    return POISONING_COLUMNS if poisoning else LEARNING_COLUMNS


def sweep_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run: the swept value, its directory and its figures."""
    rows = []
    for result in results:
        figures = {**result, **result.get("reference", {}), **result.get("detection", {})}
        row = {"value": result["sweep"]["value"], "dir": result["sweep"]["dir"]}
        row.update({key: figures.get(key) for key, *_ in _columns(results)})
        rows.append(row)
    return rows


def write_sweep(name: str, key: str, results: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """The combined summary.json, report.md and sweep.png; returns the summary."""
    rows = sweep_rows(results)
    columns = [c for c in _columns(results) if any(row[c[0]] is not None for row in rows)]
    summary = {
        "scenario": name,
        "runtime": results[0]["runtime"],
        "sweep": {"key": key, "values": [row["value"] for row in rows]},
        "runs": rows,
    }
    write_json(summary, out / "summary.json")
    _plot(name, key, rows, columns, out / "sweep.png")
    (out / "report.md").write_text(_report(name, key, results[0], rows, columns))
    return summary


def _report(
    name: str, key: str, first: dict[str, Any], rows: list[dict[str, Any]], columns: list[Column]
) -> str:
    if first.get("benchmark") == "poisoning":
        what = (
            f"attack `{first['attack']}` against defence `{first['defense']}`, "
            f"{first['nodes']} nodes"
        )
    else:
        what = f"{first['nodes']} nodes"
    lines = [
        f"# Scenario `{name}`: sweep of `{key}`",
        "",
        f"{what}, {first['dataset']} / {first['model']}, partition `{first['partition']}`; "
        f"one run per value of `{key}`, everything else as in the scenario file.",
        "",
        "| " + " | ".join([f"`{key}`", *(c[1] for c in columns)]) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for row in rows:
        cells = [str(row["value"]), *(fmt(row[figure]) for figure, _, fmt, _ in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Each run's own report, plot and metrics: "
        + ", ".join(f"`{row['dir']}/`" for row in rows)
        + "; this table as JSON: `summary.json`; plot: `sweep.png`.",
        "",
    ]
    return "\n".join(lines)


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _plot(
    name: str, key: str, rows: list[dict[str, Any]], columns: list[Column], path: Path
) -> None:
    from deepgossip.experiments.plots import plt

    values = [row["value"] for row in rows]
    numeric = _numeric(values)
    xs = values if numeric else list(range(len(values)))
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for figure, header, _, plotted in columns:
        if not plotted:
            continue
        points = [(x, row[figure]) for x, row in zip(xs, rows, strict=True)]
        points = [(x, y) for x, y in points if y is not None]
        if points:
            reference = figure.startswith("no_")  # a reference run: dashed
            ax.plot(
                *zip(*points, strict=True), marker="o", ls="--" if reference else "-", label=header
            )
    if numeric and min(values) > 0 and max(values) / min(values) >= 10:
        ax.set_xscale("log")
    if numeric:
        ax.set_xticks(values, [str(v) for v in values])
        ax.minorticks_off()
    else:
        ax.set_xticks(xs, [str(v) for v in values])
    ax.set_xlabel(key)
    ax.set_ylabel("fraction")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{name}: sweep of {key}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
