"""Scenario files: loading, validation, and a small run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepgossip.experiments.scenario import ScenarioError, load_scenario, run_scenario

SCENARIOS = sorted((Path(__file__).parent.parent / "scenarios").glob("*.toml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_shipped_scenarios_load(path: Path) -> None:
    name, runtime, settings, _ = load_scenario(path)
    assert name and runtime in ("sim", "processes") and settings.nodes >= 2


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[scenario]\nnodes = 3\nbogus = 1", "unknown"),
        ("[scenario]\nruntime = 'ray'", "not one of"),
        ("[scenario]\nruntime = 'processes'\n[processes]\nwarp = 9", "warp"),
        ("[scenario]\nnodes = 3\n[mixing]\nrule = 'magic'", "unknown mixing rule"),
        ("[scenario]\nnodes = 3\n[sharing]\ntheta_u = 2.0", "theta_u"),
        ("not toml [", "cannot read"),
    ],
)
def test_bad_scenarios_get_clear_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=match):
        load_scenario(path)


def test_a_small_disjoint_label_scenario_writes_every_output(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(
        "[scenario]\nname = 'tiny'\nnodes = 3\ndataset = 'digits'\nmodel = 'mlp'\n"
        "partition = 'disjoint'\nrounds = 300\nsteps_per_round = 5\nbatch_size = 32\n"
        "lr = 0.003\neval_every = 150\nthreads = 1\n[mixing]\nrule = 'gosgd'\npush_prob = 0.3\n"
    )
    result = run_scenario(path, tmp_path / "out")
    out = tmp_path / "out"
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3 * 2 and {x["node"] for x in lines} == {0, 1, 2}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenario"] == "tiny" and len(summary["per_node_metrics"]) == 3
    assert len(summary["per_node_metrics"][0]["confusion"]) == 10
    # Each node saw only some digits: alone it scores 0 on the others. Through its
    # peers it learns them (snapshots right after a local round are biased towards
    # the local digits, hence a bound on the mean, not on every node).
    unseen = result["unseen_class_accuracy"]
    assert all(acc is not None for acc in unseen)
    assert sum(unseen) / len(unseen) > 0.4 and max(unseen) > 0.6
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert "accuracy mean" in (out / "report.md").read_text()


def test_the_same_scenario_runs_as_real_processes(tmp_path: Path) -> None:
    """runtime = "processes": a tracker and node processes on loopback, fed through
    the HTTP API; the same outputs, with a wall-clock axis."""
    path = tmp_path / "tiny.toml"
    path.write_text(
        "[scenario]\nname = 'tiny-processes'\nruntime = 'processes'\nnodes = 3\n"
        "dataset = 'digits'\nmodel = 'mlp'\npartition = 'iid'\nlr = 0.003\nreferences = false\n"
        "[processes]\nmax_seconds = 6\neval_seconds = 3\ntarget = 1.0\n"
    )
    result = run_scenario(path, tmp_path / "out")
    out = tmp_path / "out"
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {x["node"] for x in lines} == {0, 1, 2} and all("seconds" in x for x in lines)
    assert result["runtime"] == "asyncio" and len(result["per_node_metrics"]) == 3
    # Three nodes with 600 digits each, after a few seconds of learning together.
    assert result["accuracy_min"] > 0.8
    assert "real node processes" in (out / "report.md").read_text()
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_the_learned_trust_rule_runs_in_the_simulator() -> None:
    """trust needs held-out data: each simulated node keeps 10% of its share."""
    from deepgossip.experiments.learning_sim import LearningSimSettings, run_learning_sim
    from deepgossip.learn.mixing import MixingConfig

    result = run_learning_sim(
        LearningSimSettings(
            nodes=3,
            dataset="digits",
            model="mlp",
            rounds=30,
            eval_every=10,
            threads=1,
            references=False,
            mixing=MixingConfig(rule="trust", period=10),
        )
    )
    assert result["updates_merged_per_node"] > 10 and result["accuracy_min"] > 0.85


def test_the_nodes_results_are_handed_over_before_the_references() -> None:
    """References cost twice the nodes' compute: a caller can save the run first."""
    from deepgossip.experiments.learning_sim import LearningSimSettings, run_learning_sim

    partial: list[dict] = []
    result = run_learning_sim(
        LearningSimSettings(
            nodes=2, dataset="digits", model="logreg", rounds=10, eval_every=5, threads=1
        ),
        on_partial=partial.append,
    )
    assert len(partial) == 1 and partial[0]["references"] == "pending"
    assert "centralized_accuracy" not in partial[0] and "centralized_accuracy" in result
    assert partial[0]["accuracy_mean"] == result["accuracy_mean"]
