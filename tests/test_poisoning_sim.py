"""Poisoning on the simulated network: attackers found, blacklisted everywhere, learning goes on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from deepgossip.attacks.behaviour import AttackConfig
from deepgossip.cli import main
from deepgossip.experiments.learning_sim import LearningSimSettings
from deepgossip.experiments.poisoning_sim import (
    PoisoningSettings,
    _success_excess,
    malicious_nodes,
    run_poisoning_sim,
)
from deepgossip.trust.defense import DefenseConfig

# Digits and a small MLP: a whole 10-node network trains in seconds.
SMALL = {
    "dataset": "digits",
    "model": "mlp",
    "steps_per_round": 8,
    "batch_size": 32,
    "lr": 3e-3,
    "threads": 1,
}


@pytest.mark.slow
def test_label_flippers_are_blacklisted_network_wide_while_honest_nodes_learn() -> None:
    settings = PoisoningSettings(
        nodes=10,
        rounds=14,
        eval_every=7,
        malicious=0.3,
        attack=AttackConfig(name="label_flip"),
        defense=DefenseConfig(auror=True),
        references=("no_attack",),
        **SMALL,  # type: ignore[arg-type]
    )
    result = run_poisoning_sim(settings)
    assert len(result["malicious_nodes"]) == 3
    # Every honest node ignores every attacker (by its own verdict or a quorum) ...
    assert result["detection"] == {"precision": 1.0, "recall": 1.0}
    assert result["rounds_to_blacklist_all"] is not None
    # Knowing (holding a signed accusation) comes no later than blacklisting.
    assert 0 <= result["rounds_to_know_all"] <= result["rounds_to_blacklist_all"]
    assert result["rounds_to_know_each_max"] <= result["rounds_to_blacklist_each_max"]
    honest = set(range(10)) - set(result["malicious_nodes"])
    assert {int(i) for i in result["blacklists"]} == honest
    assert all(v == result["malicious_nodes"] for v in result["blacklists"].values())
    # The timeline says, per attacker, when and why each honest node listed it.
    timeline = result["blacklist_timeline"]
    assert {int(a) for a in timeline} == set(result["malicious_nodes"])
    for nodes in timeline.values():
        assert {int(i) for i in nodes} == honest
        assert all(
            rounds >= 0 and by in ("local", "quorum", "own_evidence")
            for rounds, by in nodes.values()
        )
        assert min(rounds for rounds, _ in nodes.values()) == 0.0  # the first detection
    verdicts = result["local_verdicts"]  # every conviction, by whom and when
    assert len(verdicts) >= 3 and {v["peer"] for v in verdicts} == set(result["malicious_nodes"])
    assert all(v["judge"] in honest and v["round"] > 0 for v in verdicts)
    # ... and no honest node is blacklisted anywhere, with or without an attack.
    assert result["honest_blacklisted"] == 0
    assert result["reference"]["no_attack_honest_blacklisted"] == 0
    assert result["defense_stats"]["verdicts"] >= 3
    # Honest nodes keep learning: far above chance, close to the network without attackers.
    assert result["honest_accuracy_min"] > 0.8
    assert result["accuracy_drop_vs_no_attack"] < 0.04
    assert result["attack_success"] is None  # untargeted: no success rate


def test_settings_are_validated_and_attackers_chosen_from_the_seed() -> None:
    settings = PoisoningSettings(nodes=10, malicious=0.3, seed=3)
    assert malicious_nodes(settings) == malicious_nodes(PoisoningSettings(nodes=10, seed=3))
    assert len(malicious_nodes(settings)) == 3
    assert malicious_nodes(settings) != malicious_nodes(PoisoningSettings(nodes=10, seed=4))
    assert settings.mixing_config.rule == "average" and settings.mixing_config.fanout == 9
    with pytest.raises(ValueError):
        PoisoningSettings(nodes=10, malicious=0.01)  # an attack by nobody
    with pytest.raises(ValueError):
        PoisoningSettings(references=("bogus",))
    with pytest.raises(ValueError):
        PoisoningSettings(optimizer="rmsprop")
    learning = LearningSimSettings(nodes=6, dataset="digits", model="mlp", rounds=5)
    built = PoisoningSettings.from_learning(
        learning, malicious=0.5, attack=AttackConfig(name="sign_flip"), defense="auror+median"
    )
    assert (built.nodes, built.rounds, built.dataset) == (6, 5, "digits")
    assert built.defense == DefenseConfig.from_name("auror+median")
    assert built.mixing_config == learning.mixing


def test_bench_poisoning_cli_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "poisoning.json"
    args = ["bench", "poisoning", "--nodes", "4", "--dataset", "digits", "--rounds", "2"]
    args += ["--steps-per-round", "2", "--attack", "none", "--defense", "none"]
    result = CliRunner().invoke(main, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    for key in (
        "honest_accuracy_mean",
        "honest_accuracy_min",
        "attack_success",
        "rounds_to_blacklist_all",
        "rounds_to_know_all",
        "honest_blacklisted",
        "seconds",
    ):
        assert key in data
    assert set(data["detection"]) == {"precision", "recall"}
    assert data["reference"]["no_attack_accuracy_mean"] == data["honest_accuracy_mean"]
    assert data["reference"]["no_defense_accuracy_mean"] == data["honest_accuracy_mean"]
    assert (data["nodes"], data["attack"], data["defense"], data["model"]) == (
        4,
        "none",
        "none",
        "mlp",
    )
    bad = CliRunner().invoke(main, [*args[:-4], "--defense", "median+krum"])
    assert bad.exit_code != 0 and "one robust rule" in bad.output


def test_a_diverging_attacker_loses_its_pushes_and_the_run_goes_on() -> None:
    settings = PoisoningSettings(
        nodes=4,
        rounds=2,
        eval_every=1,
        malicious=0.25,
        attack=AttackConfig(name="scale", scale=1e39),  # float32 overflow: inf
        defense=DefenseConfig(),
        references=(),
        **SMALL,  # type: ignore[arg-type]
    )
    result = run_poisoning_sim(settings)
    assert result["attacker_nonfinite_pushes"] == 2
    assert all(0.0 <= acc <= 1.0 for acc in result["honest_accuracy_per_node"])


def test_bench_poisoning_cli_passes_attack_options(tmp_path: Path) -> None:
    out = tmp_path / "poisoning.json"
    args = ["bench", "poisoning", "--nodes", "4", "--dataset", "digits", "--rounds", "1"]
    args += ["--steps-per-round", "1", "--attack", "noise", "--defense", "none"]
    args += ["--attack-option", "noise_std=0.5", "--attack-option", "noise_mode=replace"]
    result = CliRunner().invoke(main, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    attack = json.loads(out.read_text())["settings"]["attack"]
    assert (attack["noise_std"], attack["noise_mode"]) == (0.5, "replace")
    bad = CliRunner().invoke(main, [*args, "--attack-option", "noise_std"])
    assert bad.exit_code != 0 and "KEY=VALUE" in bad.output


def test_bench_poisoning_cli_runs_only_the_references_asked_for(tmp_path: Path) -> None:
    out = tmp_path / "poisoning.json"
    args = ["bench", "poisoning", "--nodes", "4", "--dataset", "digits", "--rounds", "1"]
    args += ["--steps-per-round", "1", "--attack", "sign_flip", "--defense", "median"]
    result = CliRunner().invoke(main, [*args, "--references", "no_attack", "--json", str(out)])
    assert result.exit_code == 0, result.output
    reference = json.loads(out.read_text())["reference"]
    assert "no_attack_accuracy_mean" in reference and "no_defense_accuracy_mean" not in reference
    result = CliRunner().invoke(main, [*args, "--references", "none", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["settings"]["references"] == []
    bad = CliRunner().invoke(main, [*args, "--references", "no_attack,bogus"])
    assert bad.exit_code != 0 and "bogus" in bad.output


def test_bench_poisoning_cli_passes_defense_options(tmp_path: Path) -> None:
    out = tmp_path / "poisoning.json"
    args = ["bench", "poisoning", "--nodes", "8", "--dataset", "digits", "--rounds", "1"]
    args += ["--steps-per-round", "1", "--attack", "sign_flip", "--defense", "multi_krum"]
    args += ["--defense-option", "f=2", "--defense-option", "drop_flagged=false"]
    args += ["--defense-option", "auror_solo=none"]
    result = CliRunner().invoke(main, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    defense = json.loads(out.read_text())["settings"]["defense"]
    assert defense["robust"]["rule"] == "multi_krum" and defense["robust"]["f"] == 2
    assert defense["drop_flagged"] is False and defense["auror_solo"] is None
    bad = CliRunner().invoke(main, [*args, "--defense-option", "bogus=1"])
    assert bad.exit_code != 0 and "bogus" in bad.output


def test_targeted_success_is_also_reported_above_the_clean_network() -> None:
    settings = PoisoningSettings(
        nodes=4,
        dataset="digits",
        rounds=2,
        steps_per_round=2,
        eval_every=2,
        malicious=0.25,
        attack=AttackConfig(name="targeted", boost=4.0),
        defense=DefenseConfig(),
        references=("no_attack",),
    )
    result = run_poisoning_sim(settings)
    per_node = result["attack_success_per_node"]
    assert len(per_node) == 3 and result["attack_success_max"] == max(per_node)
    excess = result["attack_success_excess_max"]
    assert 0.0 <= excess <= result["attack_success_max"]
    # Node by node against the clean run (all nodes honest there, by index).
    assert _success_excess([0.2, 0.4, 0.0], [0.2, 0.0, 0.6, 0.2], honest=[0, 1, 3]) == 0.4


def test_the_honest_only_reference_runs_without_the_attackers() -> None:
    settings = PoisoningSettings(
        nodes=6,
        rounds=4,
        eval_every=2,
        malicious=1 / 3,
        attack=AttackConfig(name="sign_flip", boost=10.0),
        defense=DefenseConfig(),
        references=("honest_only",),
        **SMALL,  # type: ignore[arg-type]
    )
    result = run_poisoning_sim(settings)
    absent = result["malicious_nodes"]
    assert len(absent) == 2
    reference = result["reference"]
    assert set(reference) == {"honest_only_accuracy_mean", "honest_only_accuracy_min"}
    # Undefended, two sign flippers wreck the model; without them it learns.
    assert reference["honest_only_accuracy_mean"] > 0.8 > result["honest_accuracy_mean"]
    for point in result["curves"]["honest_only"]:
        assert [i for i, acc in enumerate(point["per_node"]) if acc is None] == absent
