"""The attack x defence matrix: one run per cell, references reused, table and heatmaps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from deepgossip.cli import main
from deepgossip.experiments import poisoning_matrix
from deepgossip.experiments.poisoning_sim import PoisoningSettings

TINY = [
    "--dataset", "digits", "--model", "logreg", "--nodes", "4", "--malicious", "0.25",
    "--rounds", "2", "--eval-every", "1", "--steps-per-round", "5", "--batch-size", "32",
]  # fmt: skip


def test_a_tiny_matrix_runs_each_cell_once_and_writes_table_json_and_heatmaps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str, str, tuple[str, ...]]] = []
    real = poisoning_matrix.run_poisoning_sim

    def counting(settings: PoisoningSettings, progress: object = None) -> dict:
        calls.append(
            (settings.partition, settings.attack.name, settings.defense.name, settings.references)
        )
        return real(settings, progress)  # type: ignore[arg-type]

    monkeypatch.setattr(poisoning_matrix, "run_poisoning_sim", counting)
    out = tmp_path / "matrix"
    args = ["bench", "poisoning-matrix", "--attacks", "label_flip,sign_flip", "--defenses"]
    args += ["auror,median", "--partitions", "iid,dirichlet", "--out", str(out), *TINY]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output

    # One simulation per cell, none repeated: the no-attack row and the no-defence
    # column are added once each and are the other cells' references.
    assert len(calls) == len(set(calls)) == 2 * 3 * 3
    assert all(references == () for *_, references in calls)
    matrix = json.loads((out / "matrix.json").read_text())
    assert matrix["attacks"] == ["none", "label_flip", "sign_flip"]
    assert matrix["defenses"] == ["none", "auror", "median"]
    assert matrix["partitions"] == ["iid", "dirichlet"]
    assert len(matrix["cells"]) == 18
    cells = {(c["partition"], c["attack"], c["defense"]): c for c in matrix["cells"]}
    for (partition, attack, defense), cell in cells.items():
        assert 0.0 <= cell["honest_accuracy_mean"] <= 1.0
        assert (
            cell["no_attack_accuracy_mean"]
            == (cells[(partition, "none", defense)]["honest_accuracy_mean"])
        )
        assert (
            cell["no_defense_accuracy_mean"]
            == (cells[(partition, attack, "none")]["honest_accuracy_mean"])
        )
        assert {"precision", "recall"} == set(cell["detection"])
        assert [p["round"] for p in cell["curve"]] == [1, 2]
        assert len(cell["malicious_nodes"]) == (0 if attack == "none" else 1)
    # The partitions differ: the same cell does not score the same.
    assert cells[("iid", "none", "none")] != cells[("dirichlet", "none", "none")]

    table = (out / "matrix.md").read_text()
    for partition in ("iid", "dirichlet"):
        assert f"## Partition `{partition}`" in table
        assert (out / f"heatmap_{partition}.png").read_bytes()[:4] == b"\x89PNG"
    assert table.count("| attack \\ defence | `none` | `auror` | `median` |") == 2
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [r.split(" |")[0] for r in rows] == ["| `none`", "| `label_flip`", "| `sign_flip`"] * 2
    assert all(r.count("%") >= 3 for r in rows)
    assert "P/R" in table  # AUROR cells under attack report detection


def test_a_bad_cell_fails_before_anything_runs(tmp_path: Path) -> None:
    args = ["bench", "poisoning-matrix", "--attacks", "label_flip,teleport", "--defenses", "auror"]
    run = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "m"), *TINY])
    assert run.exit_code != 0 and "unknown attack 'teleport'" in run.output
    run = CliRunner().invoke(
        main, [*args[:3], "label_flip", "--defenses", "magic", "--out", str(tmp_path), *TINY]
    )
    assert run.exit_code != 0 and "unknown defence 'magic'" in run.output
    assert not (tmp_path / "m").exists()


def test_defense_and_attack_options_reach_every_cell() -> None:
    from deepgossip.attacks.behaviour import AttackConfig
    from deepgossip.experiments.poisoning_cli import cli_defense

    base = PoisoningSettings(
        nodes=4,
        attack=AttackConfig(noise_std=0.5),
        defense=cli_defense("none", ["f=2", "auror_agree=1"]),
    )
    cells = poisoning_matrix.matrix_settings(base, ["noise"], ["krum", "auror+median"], ["iid"])
    krum, composed = cells[("iid", "noise", "krum")], cells[("iid", "noise", "auror+median")]
    assert (krum.defense.robust.rule, krum.defense.robust.f) == ("krum", 2)
    assert (composed.defense.robust.rule, composed.defense.robust.f) == ("median", 2)
    assert composed.defense.auror and composed.defense.auror_agree == 1
    assert krum.attack.noise_std == 0.5 and krum.attack.name == "noise"
