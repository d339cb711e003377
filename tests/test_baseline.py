"""The baseline benchmark and the demo, end to end through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from deepgossip.cli import main


def test_bench_baseline_writes_the_documented_json(tmp_path: Path) -> None:
    out = tmp_path / "baseline.json"
    result = CliRunner().invoke(
        main,
        [
            "bench",
            "baseline",
            "--dataset",
            "digits",
            "--model",
            "logreg",
            "--nodes",
            "3",
            "--partition",
            "dirichlet",
            "--alpha",
            "0.5",
            "--epochs",
            "10",
            "--threads",
            "1",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["dataset"] == "digits" and data["model"] == "logreg"
    assert data["settings"]["partition"] == "dirichlet"
    assert data["settings"]["train"]["epochs"] == 10
    central, alone = data["centralized"], data["standalone"]
    assert 0.0 <= alone["accuracy_min"] <= alone["accuracy_mean"] <= alone["accuracy_max"] <= 1
    assert 0.5 < central["accuracy"] <= 1.0
    assert len(alone["per_node"]) == 3
    assert sum(n["train_samples"] for n in alone["per_node"]) == 1438  # all of the train split
    assert len(central["confusion"]) == 10
    assert data["seconds"] > 0
    assert "gap collaboration must close" in result.output


def test_demo_quick_runs_a_real_network_and_prints_the_table(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "deepgossip.cli", "demo", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "alone (own data)" in run.stdout and "DeepGossip" in run.stdout
    assert "centralized reference" in run.stdout
    png = tmp_path / "demo.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((tmp_path / "demo.json").read_text())
    assert result["nodes"] == 3
    # Collaboration must beat training alone on non-IID shares, node by node on average.
    together, alone = result["deepgossip_accuracy"], result["standalone_accuracy"]
    assert sum(together) / 3 > sum(alone) / 3 + 0.1
    assert all(u["sent"] > 0 and u["rejected"] == 0 for u in result["updates"])
    # No process left behind: nodes run with their data under a deepgossip-demo- dir.
    leftover = subprocess.run(["pgrep", "-f", "deepgossip-demo-"], capture_output=True, check=False)
    assert leftover.stdout == b""
