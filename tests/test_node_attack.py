"""``deepgossip node --attack``: which attacks a node process runs, how options
parse, and the two hooks they use (the learner's data hook, the collaboration's
publish transform). The process end to end is in test_integration_poisoning.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from deepgossip.attacks.behaviour import ATTACK_NAMES, make_attack
from deepgossip.cli import main
from deepgossip.learn.collaboration import Collaboration, CollaborationConfig
from deepgossip.learn.data import load_dataset
from deepgossip.learn.datastore import DataStore
from deepgossip.learn.learner import Learner, LearningConfig
from deepgossip.learn.params import flatten
from deepgossip.node_process import PROCESS_ATTACKS, attack_config
from deepgossip.session import Session

CONFIG = LearningConfig(
    model="logreg", input_shape=(1, 8, 8), steps_per_round=2, holdout_fraction=0.2
)


def test_options_parse_as_toml_values_or_strings() -> None:
    config = attack_config(
        "noise", ["noise_std=1.5", "noise_mode=replace", "seed=7", " boost = 2 "]
    )
    assert config.name == "noise" and config.noise_std == 1.5
    assert config.noise_mode == "replace" and config.seed == 7 and config.boost == 2
    flip = attack_config("label_flip", ["permutation=[1, 0, 2, 3, 4, 5, 6, 7, 8, 9]"])
    assert flip.permutation == (1, 0, 2, 3, 4, 5, 6, 7, 8, 9)


@pytest.mark.parametrize("name", sorted(set(ATTACK_NAMES) - set(PROCESS_ATTACKS)))
def test_attacks_a_process_cannot_run_are_refused_with_the_supported_list(name: str) -> None:
    with pytest.raises(ValueError, match="supported: label_flip, backdoor, sign_flip, noise"):
        attack_config(name)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("nonsense", [], "unknown attack"),
        ("noise", ["noise_std"], "not KEY=VALUE"),
        ("noise", ["=1"], "not KEY=VALUE"),
        ("noise", ["name=scale"], "not an option"),
        ("noise", ["noise_sd=1"], "unknown \\[attack\\] keys: noise_sd"),
        ("noise", ["noise_std=-1"], "noise_std"),
        ("noise", ["noise_mode=sideways"], "noise_mode"),
    ],
)
def test_bad_attacks_and_options_are_refused(name: str, options: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        attack_config(name, options)


def _session(tmp_path: Path, **sections: dict) -> str:
    path = tmp_path / "session.toml"
    Session("attack-cli", sections=sections).save(path)
    return str(path)


def test_the_cli_refuses_bad_attacks_before_starting(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["node", "--data-dir", str(tmp_path / "d")]
    learning = _session(tmp_path, learning={})
    result = runner.invoke(main, [*base, "--session", learning, "--attack", "alie"])
    assert result.exit_code == 2 and "supported: label_flip" in result.output
    result = runner.invoke(main, [*base, "--session", learning, "--attack-option", "boost=2"])
    assert result.exit_code == 2 and "--attack-option needs --attack" in result.output
    plain = _session(tmp_path)
    result = runner.invoke(main, [*base, "--session", plain, "--attack", "noise"])
    assert result.exit_code == 2 and "needs a session with [learning]" in result.output
    assert not (tmp_path / "d").exists()  # nothing was started


# -- the hooks --------------------------------------------------------------------------


def _learner(tmp_path: Path) -> Learner:
    torch.set_num_threads(1)
    data = load_dataset("digits")
    store = DataStore(tmp_path / "a.dglog", sample_shape=(8, 8), num_classes=10)
    store.append(data.train_images[:300], data.train_labels[:300])
    return Learner(CONFIG, store)


def test_label_flipping_poisons_the_training_samples_not_the_holdout(tmp_path: Path) -> None:
    learner = _learner(tmp_path)
    learner.data_hook = make_attack(attack_config("label_flip"), num_classes=10).poison_data
    learner.sync_data()
    labels = learner.store.read(0)[1]  # type: ignore[union-attr]  # the log stays honest
    hold, train = learner.holdout_tensors(1000)[1], learner._y_train
    assert len(hold) + len(train) == len(labels) == 300
    assert sorted((9 - train).tolist() + hold.tolist()) == sorted(labels.tolist())


def test_update_attacks_change_what_is_published_never_the_model(tmp_path: Path) -> None:
    learner = _learner(tmp_path)
    attack = make_attack(attack_config("sign_flip", ["boost=5"]), num_classes=10)
    collab = Collaboration(
        learner,
        CollaborationConfig.from_section({"rule": "average", "push_period": 1}),
        b"m" * 16,
        catch_up_timeout=0.0,
        publish_transform=lambda honest, reference: attack.poison_update(honest, reference),
    )
    collab.catching_up = False
    for _ in range(2):
        start = flatten(learner.model)
        update = collab.after_round(learner.train_round().steps, 0.0)
        trained = flatten(learner.model)  # nothing to merge: the trained model
        assert update is not None
        expected = start - 5 * (trained - start)
        assert np.allclose(update.values, expected.numpy(), atol=1e-6)
        assert not torch.equal(trained, torch.from_numpy(update.values))
