"""Poisoning scenarios and sweeps: loading, validation, and tiny runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepgossip.experiments.poisoning_sim import PoisoningSettings
from deepgossip.experiments.scenario import ScenarioError, read_scenario

SCENARIOS = Path(__file__).parent.parent / "scenarios"

TINY = (
    "[scenario]\nname = 'tiny-poison'\nnodes = 4\nmalicious = 0.25\ndataset = 'digits'\n"
    "model = 'logreg'\nrounds = 3\neval_every = 1\nsteps_per_round = 5\nbatch_size = 32\n"
    "lr = 0.01\n"
)


def test_the_shipped_poisoning_scenarios_load_with_their_sweeps() -> None:
    bhagoji = read_scenario(SCENARIOS / "poisoning_bhagoji_fashion-mnist.toml")
    assert bhagoji.sweep_key == "mixing.push_prob" and len(bhagoji.sweep) >= 3
    for value, settings, _ in bhagoji.sweep:
        assert isinstance(settings, PoisoningSettings)
        assert (settings.nodes, settings.malicious_count, settings.dataset) == (
            10,
            1,
            "fashion-mnist",
        )
        assert settings.attack.name == "targeted" and settings.mixing_config.rule == "gosgd"
        assert settings.mixing_config.push_prob == value
    auror = read_scenario(SCENARIOS / "auror_label_flip_mnist.toml")
    assert auror.sweep_key == "malicious" and [v for v, *_ in auror.sweep] == [0.1, 0.2, 0.3]
    counts = [(s.malicious_count, s.attack.num_malicious) for _, s, _ in auror.sweep]
    assert counts == [(1, 1), (2, 2), (3, 3)]
    assert all(
        s.defense.name == "auror" and s.attack.name == "label_flip" for _, s, _ in auror.sweep
    )
    assert all(
        (s.model, s.lr, s.rounds, s.threads) == ("mlp", 0.01, 100, 1) for _, s, _ in auror.sweep
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (TINY + "[attack]\nkind = 'label_flip'\nbogus = 1", r"unknown \[attack\] keys: bogus"),
        (TINY + "[attack]\nname = 'label_flip'", "kind"),
        (TINY + "[attack]\nboost = 2.0", "needs kind"),
        (TINY + "[attack]\nkind = 'teleport'", "unknown attack 'teleport'"),
        (TINY + "[attack]\nkind = 'label_flip'\n[defense]\nname = 'magic'", "unknown defence"),
        (TINY + "[attack]\nkind = 'label_flip'\n[defense]\nname = 'auror'\nspeed = 3", "speed"),
        (TINY + "[attack]\nkind = 'label_flip'\n[blacklist]\nquorum = 3", "quorum"),
        (TINY + "[defense]\nname = 'auror'", r"need an \[attack\]"),
        (TINY + "trust_holdout = 0.1\n[attack]\nkind = 'noise'", "trust_holdout"),
        (TINY + "[attack]\nkind = 'noise'\n[mixing]\nrule = 'magic'", "unknown mixing rule"),
        (
            TINY.replace("name = 'tiny-poison'", "name = 'x'\nruntime = 'processes'")
            + "[attack]\nkind = 'noise'",
            "runtime 'sim'",
        ),
        (TINY + "[attack]\nkind = 'noise'\n[sweep]\nmalicious = 0.3", "non-empty list"),
        (TINY + "[attack]\nkind = 'noise'\n[sweep]\nmalicious = []", "non-empty list"),
        (TINY + "[attack]\nkind = 'noise'\n[sweep]\nseed = [1]\nlr = [0.1]", "exactly one"),
        (TINY + "[attack]\nkind = 'noise'\n[sweep]\n'warp.speed' = [1]", "no table 'warp'"),
        (TINY + "[attack]\nkind = 'noise'\n[sweep]\nname = ['a']", "cannot vary name"),
        (TINY + "[attack]\nkind = 'noise'\n[sweep]\nmalicious = [0.25, 0.01]", "= 0.01"),
        (TINY + "[attack]\nkind = 'noise'\n[sweep]\n'mixing.push_prob' = [2.0]", "push_prob"),
        (TINY + "[extras]\nx = 1", r"unknown tables \['extras'\]"),
    ],
)
def test_bad_poisoning_scenarios_get_clear_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=match):
        read_scenario(path)


def test_a_poisoning_scenario_maps_its_tables_to_the_settings(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(
        TINY
        + "references = ['no_attack']\n[attack]\nkind = 'bhagoji'\nboost = 4.0\ntarget_class = 3\n"
        + "[defense]\nname = 'auror+clipping'\npolling = true\n[blacklist]\nmin_quorum = 3\n"
        + "[sweep]\nattack.boost = [2.0, 8.0]\n"  # a dotted key, unquoted
    )
    scenario = read_scenario(path)
    settings = scenario.settings
    assert isinstance(settings, PoisoningSettings)
    assert (settings.nodes, settings.malicious_count, settings.references) == (4, 1, ("no_attack",))
    attack = settings.attack
    assert (attack.name, attack.boost, attack.target_class) == ("targeted", 4.0, 3)
    assert (attack.num_nodes, attack.num_malicious) == (4, 1)
    assert settings.defense.name == "auror+clipping" and settings.defense.polling
    assert settings.blacklist.min_quorum == 3
    # No [mixing] table: the poisoning default, average with every peer each round.
    assert settings.mixing is None and settings.mixing_config.fanout == 3
    assert scenario.sweep_key == "attack.boost"
    assert [s.attack.boost for _, s, _ in scenario.sweep] == [2.0, 8.0]
    # Without [defense]: no defence (enabling one is a deliberate choice).
    path.write_text(TINY + "[attack]\nkind = 'sign_flip'\n")
    assert read_scenario(path).settings.defense.name == "none"


def test_a_tiny_poisoning_sweep_runs_end_to_end(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from deepgossip.cli import main

    path = tmp_path / "tiny.toml"
    path.write_text(
        TINY
        + "[attack]\nkind = 'bhagoji'\nboost = 4.0\n[defense]\nname = 'auror'\n"
        + "[sweep]\nmalicious = [0.25, 0.5]\n"
    )
    out = tmp_path / "out"
    run = CliRunner().invoke(main, ["experiment", "run", str(path), "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert "tiny-poison: 2 runs over malicious" in run.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sweep"] == {"key": "malicious", "values": [0.25, 0.5]}
    rows = summary["runs"]
    assert [r["dir"] for r in rows] == ["malicious=0.25", "malicious=0.5"]
    for row in rows:
        assert 0.0 <= row["honest_accuracy_mean"] <= 1.0
        assert row["no_attack_accuracy_mean"] is not None
        assert row["no_defense_accuracy_mean"] is not None
        assert row["attack_success"] is not None  # targeted: success is measured
    report = (out / "report.md").read_text()
    assert "sweep of `malicious`" in report and "| 0.25 |" in report and "| 0.5 |" in report
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"

    # Each run: the poisoning figures, per-round honest accuracy, plot and report.
    one = out / "malicious=0.5"
    result = json.loads((one / "summary.json").read_text())
    assert result["scenario"] == "tiny-poison" and len(result["malicious_nodes"]) == 2
    for key in ("honest_accuracy_mean", "honest_accuracy_min", "attack_success", "seconds"):
        assert key in result
    assert {"precision", "recall"} <= set(result["detection"])
    assert {"no_attack_accuracy_mean", "no_defense_accuracy_mean"} <= set(result["reference"])
    assert [p["round"] for p in result["curves"]["main"]] == [1, 2, 3]
    lines = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines()]
    honest = set(range(4)) - set(result["malicious_nodes"])
    main_nodes = {x["node"] for x in lines if x["run"] == "main"}
    assert main_nodes == honest and {x["run"] for x in lines} == {"main", "no_attack", "no_defense"}
    assert len([x for x in lines if x["run"] == "no_attack"]) == 3 * 4  # every node honest
    text = (one / "report.md").read_text()
    for figure in (
        "honest accuracy mean / min",
        "no attack",
        "no defence",
        "attack success",
        "detection precision / recall",
        "every honest node blacklisted every attacker",
        "honest nodes blacklisted",
    ):
        assert figure in text
    assert (one / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_a_learning_scenario_can_be_swept_too(tmp_path: Path) -> None:
    from deepgossip.experiments.scenario import run_scenario

    path = tmp_path / "tiny.toml"
    path.write_text(
        "[scenario]\nname = 'tiny-learning'\nnodes = 2\ndataset = 'digits'\nmodel = 'logreg'\n"
        "rounds = 4\neval_every = 2\nthreads = 1\nreferences = false\n"
        "[sweep]\n'mixing.push_prob' = [0.1, 1.0]\n"
    )
    summary = run_scenario(path, tmp_path / "out")
    assert summary["sweep"] == {"key": "mixing.push_prob", "values": [0.1, 1.0]}
    assert all(0.0 <= row["accuracy_mean"] <= 1.0 for row in summary["runs"])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| 0.1 |" in report and "centralized" not in report  # no references ran
    assert (tmp_path / "out" / "mixing.push_prob=1.0" / "accuracy.png").exists()


def test_a_scenario_can_ask_for_the_attackers_absent_reference(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from deepgossip.cli import main

    path = tmp_path / "absent.toml"
    path.write_text(
        TINY.replace("[scenario]\n", "[scenario]\nreferences = ['honest_only']\n")
        + "[attack]\nkind = 'sign_flip'\n"
    )
    out = tmp_path / "out"
    run = CliRunner().invoke(main, ["experiment", "run", str(path), "--out", str(out)])
    assert run.exit_code == 0, run.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["reference"]) == {"honest_only_accuracy_mean", "honest_only_accuracy_min"}
    assert "attackers absent" in (out / "report.md").read_text()
    runs = {json.loads(line)["run"] for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert runs == {"main", "honest_only"}
