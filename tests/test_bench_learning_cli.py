"""``deepgossip bench learning`` from the command line: the JSON it writes and the
option combinations it refuses."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from deepgossip.cli import main

TINY = ["bench", "learning", "--nodes", "3", "--dataset", "digits", "--model", "logreg"]


def test_a_small_sim_run_writes_the_issue_keys(tmp_path: Path) -> None:
    out = tmp_path / "learning.json"
    args = [*TINY, "--rounds", "4", "--steps-per-round", "2", "--rule", "average"]
    args += ["--fanout", "2", "--lr", "0.05", "--lr-schedule", "cosine", "--threads", "1"]
    args += ["--outer-momentum", "0.5"]
    result = CliRunner().invoke(main, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    for key in (
        "nodes",
        "dataset",
        "model",
        "partition",
        "runtime",
        "accuracy_mean",
        "accuracy_min",
        "centralized_accuracy",
        "standalone_accuracy_mean",
        "seconds",
        "seconds_to_accuracy",
        "bytes_sent_per_node",
    ):
        assert key in data
    assert (data["nodes"], data["runtime"], data["settings"]["lr_schedule"]) == (3, "sim", "cosine")
    assert data["settings"]["mixing"]["outer_momentum"] == 0.5
    assert 0.0 <= data["accuracy_min"] <= data["accuracy_mean"] <= 1.0


def test_real_nodes_refuse_sim_only_options_before_starting_anything() -> None:
    runner = CliRunner()
    result = runner.invoke(
        main, [*TINY, "--runtime", "asyncio", "--processes", "--lr-schedule", "cosine"]
    )
    assert result.exit_code != 0 and "--lr-schedule" in result.output
    result = runner.invoke(main, [*TINY, "--runtime", "asyncio"])
    assert result.exit_code != 0 and "--processes" in result.output
