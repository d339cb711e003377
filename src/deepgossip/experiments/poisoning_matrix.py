"""The attack x defence matrix: every pairing on the simulated network, per partition.

``deepgossip bench poisoning-matrix --attacks label_flip,targeted --defenses
auror,median --partitions iid,dirichlet --out DIR`` runs one poisoning
simulation (:func:`~deepgossip.experiments.poisoning_sim.run_poisoning_sim`,
main run only) per cell, all with one seed: the same data, partitions, node
identities, initial model and malicious nodes everywhere. The references every
cell needs are cells themselves, so nothing is simulated twice:

* the row ``none`` (no attack; always run) is each defence's no-attack
  reference, what the defence costs the honest network;
* the column ``none`` (no defence; always run) is each attack's no-defence
  reference, what the attack would do unopposed.

Writes the JSON (``--json``, else ``DIR/matrix.json``), ``DIR/matrix.md`` (one
table per partition: rows attacks, columns defences) and
``DIR/heatmap_<partition>.png`` (honest accuracy per cell).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from deepgossip.experiments.baseline import write_json
from deepgossip.experiments.poisoning_cli import settings_from_cli
from deepgossip.experiments.poisoning_sim import PoisoningSettings, run_poisoning_sim
from deepgossip.experiments.scenario_poisoning import ATTACK_ALIASES, num, pct
from deepgossip.trust.defense import DefenseConfig

__all__ = ["matrix_markdown", "matrix_settings", "run_poisoning_matrix", "run_poisoning_matrix_cli"]

Cell = tuple[str, str, str]
"""(partition, attack, defence)."""


def _names(names: Sequence[str]) -> list[str]:
    """``none`` first (the reference row or column), then the others once each, in order."""
    rest = [n for n in dict.fromkeys(n.strip() for n in names) if n and n != "none"]
    return ["none", *rest]


def matrix_settings(
    base: PoisoningSettings,
    attacks: Sequence[str],
    defenses: Sequence[str],
    partitions: Sequence[str],
) -> dict[Cell, PoisoningSettings]:
    """Every cell's settings, validated before anything runs (ValueError otherwise).

    The attack of a cell is ``base.attack`` renamed (so ``boost``, ``target_class``
    ... apply to every attack that reads them); its defence
    :meth:`DefenseConfig.from_name` with ``base.defense``'s robust-rule parameters
    (Krum's ``f`` ...) and other fields (``blacklist``, ``polling``,
    ``auror_agree`` ...).
    """
    cells: dict[Cell, PoisoningSettings] = {}
    switches = {
        f.name: getattr(base.defense, f.name)
        for f in fields(DefenseConfig)
        if f.name not in ("auror", "robust")
    }
    for partition in dict.fromkeys(partitions):
        for attack in _names(attacks):
            for defense in _names(defenses):
                cells[(partition, attack, defense)] = replace(
                    base,
                    partition=partition,
                    attack=replace(base.attack, name=ATTACK_ALIASES.get(attack, attack)),
                    defense=DefenseConfig.from_name(
                        defense, robust=base.defense.robust, **switches
                    ),
                    references=(),
                )
    return cells


def run_poisoning_matrix(
    base: PoisoningSettings,
    attacks: Sequence[str],
    defenses: Sequence[str],
    partitions: Sequence[str],
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run every cell; the result's ``cells`` carry each cell's figures and references."""
    started = time.perf_counter()
    settings = matrix_settings(base, attacks, defenses, partitions)
    runs = {cell: run_poisoning_sim(s, progress) for cell, s in settings.items()}
    cells = []
    for (partition, attack, defense), result in runs.items():
        no_attack = runs[(partition, "none", defense)]
        no_defense = runs[(partition, attack, "none")]
        cells.append(
            {
                "partition": partition,
                "attack": attack,
                "defense": defense,
                "honest_accuracy_mean": result["honest_accuracy_mean"],
                "honest_accuracy_min": result["honest_accuracy_min"],
                "no_attack_accuracy_mean": no_attack["honest_accuracy_mean"],
                "no_defense_accuracy_mean": no_defense["honest_accuracy_mean"],
                "accuracy_drop_vs_no_attack": no_attack["honest_accuracy_mean"]
                - result["honest_accuracy_mean"],
                "attack_success": result["attack_success"],
                "no_defense_attack_success": no_defense["attack_success"],
                "detection": result["detection"],
                "rounds_to_blacklist_all": result["rounds_to_blacklist_all"],
                "honest_blacklisted": result["honest_blacklisted"],
                "malicious_nodes": result["malicious_nodes"],
                "seconds": result["seconds"],
                "curve": [
                    {k: p[k] for k in ("round", "honest_accuracy_mean", "honest_accuracy_min")}
                    for p in result["curves"]["main"]
                ],
            }
        )
    parameters = asdict(base)
    for key in ("partition", "attack", "defense", "references"):
        parameters.pop(key)
    parameters["mixing"] = asdict(base.mixing_config)
    parameters["attack_options"] = {k: v for k, v in asdict(base.attack).items() if k != "name"}
    return {
        "benchmark": "poisoning_matrix",
        "runtime": "sim",
        "attacks": _names(attacks),
        "defenses": _names(defenses),
        "partitions": list(dict.fromkeys(partitions)),
        "settings": parameters,
        "cells": cells,
        "seconds": time.perf_counter() - started,
    }


def _cell(matrix: dict[str, Any], partition: str, attack: str, defense: str) -> dict[str, Any]:
    return next(
        c
        for c in matrix["cells"]
        if (c["partition"], c["attack"], c["defense"]) == (partition, attack, defense)
    )


def _note(cell: dict[str, Any]) -> str:
    """What a cell shows besides honest accuracy, where it means something."""
    parts = []
    if cell["attack_success"] is not None:
        parts.append(f"AS {pct(cell['attack_success'])}")
    detects = "auror" in cell["defense"].split("+")
    if detects and cell["attack"] != "none":
        det = cell["detection"]
        parts.append(f"P/R {num(det['precision'])}/{num(det['recall'])}")
    if cell["honest_blacklisted"]:
        parts.append(f"HB {cell['honest_blacklisted']}")
    return ", ".join(parts)


def matrix_markdown(matrix: dict[str, Any]) -> str:
    """One table per partition: rows attacks, columns defences."""
    s = matrix["settings"]
    lines = [
        "# Poisoning: attacks x defences",
        "",
        f"{s['nodes']} nodes ({round(s['malicious'] * s['nodes'])} malicious, chosen from seed "
        f"{s['seed']}), "
        f"{s['dataset']} / {s['model']}, mixing `{s['mixing']['rule']}`, lr {s['lr']}, "
        f"{s['rounds']} rounds of {s['steps_per_round']} steps on the simulated network; "
        f"{matrix['seconds']:.0f} s in all.",
        "",
        "Cells: honest nodes' mean test accuracy; AS: attack success (targeted, "
        "backdoor, single-class label flip); P/R: detection precision / recall of the "
        "honest nodes' final blacklists (AUROR defences); HB: honest nodes blacklisted "
        "anywhere. Row `none`: no attack (what each defence costs); column `none`: no "
        "defence (what each attack does unopposed).",
    ]
    for partition in matrix["partitions"]:
        lines += [
            "",
            f"## Partition `{partition}`",
            "",
            "| attack \\ defence | " + " | ".join(f"`{d}`" for d in matrix["defenses"]) + " |",
            "|---|" + "---|" * len(matrix["defenses"]),
        ]
        for attack in matrix["attacks"]:
            cells = []
            for defense in matrix["defenses"]:
                cell = _cell(matrix, partition, attack, defense)
                note = _note(cell)
                cells.append(pct(cell["honest_accuracy_mean"]) + (f" ({note})" if note else ""))
            lines.append(f"| `{attack}` | " + " | ".join(cells) + " |")
    lines += ["", "Everything per cell (curves, references): the JSON.", ""]
    return "\n".join(lines)


def write_matrix(matrix: dict[str, Any], out: Path, json_path: Path | None = None) -> list[Path]:
    """The JSON, matrix.md and one heatmap per partition; returns the paths written."""
    from deepgossip.experiments.plots import plot_heatmap

    out.mkdir(parents=True, exist_ok=True)
    json_path = json_path or out / "matrix.json"
    write_json(matrix, json_path)
    (out / "matrix.md").write_text(matrix_markdown(matrix))
    written = [json_path, out / "matrix.md"]
    s = matrix["settings"]
    for partition in matrix["partitions"]:
        grid = [
            [_cell(matrix, partition, a, d) for d in matrix["defenses"]] for a in matrix["attacks"]
        ]
        written.append(
            plot_heatmap(
                [[c["honest_accuracy_mean"] for c in row] for row in grid],
                matrix["attacks"],
                matrix["defenses"],
                out / f"heatmap_{partition}.png",
                title=f"{s['dataset']} / {s['model']}, {s['nodes']} nodes, "
                f"{s['malicious']:.0%} malicious, {partition}",
                label="honest accuracy (mean)",
                notes=[[_note(c).replace(", ", "\n") for c in row] for row in grid],
            )
        )
    return written


def run_poisoning_matrix_cli(
    *,
    attacks: str,
    defenses: str,
    partitions: str,
    out: str,
    json_path: str | None,
    **flags: Any,
) -> dict[str, Any]:
    """Entry point of ``deepgossip bench poisoning-matrix``; ``flags`` as
    :func:`~.poisoning_cli.settings_from_cli` takes them, but for the attack and
    the defence."""
    from tqdm import tqdm

    # The cells rename the attack and the defence; "none" carries their options.
    base = settings_from_cli(attack="none", defense="none", **flags)
    split = [a.split(",") for a in (attacks, defenses, partitions)]
    cells = matrix_settings(base, *split)  # validates every cell before the first runs
    with tqdm(total=len(cells) * base.rounds * base.nodes, desc="rounds", unit="round") as bar:
        matrix = run_poisoning_matrix(base, *split, progress=bar.update)
    written = write_matrix(matrix, Path(out), Path(json_path) if json_path else None)
    print(f"{len(cells)} runs in {matrix['seconds']:.0f} s; wrote {', '.join(map(str, written))}")
    return matrix
