"""The session's ``[defense]`` and ``[blacklist]`` tables, as a node process reads
them (deepgossip.trust.settings), and a collaboration screened by the defence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from deepgossip.learn.collaboration import Collaboration, CollaborationConfig
from deepgossip.learn.data import load_dataset
from deepgossip.learn.datastore import DataStore
from deepgossip.learn.learner import Learner, LearningConfig
from deepgossip.learn.params import flatten
from deepgossip.learn.sharing import SparseUpdate
from deepgossip.session import Session, SessionError
from deepgossip.trust.defense import Defense
from deepgossip.trust.settings import TrustSettings


def settings(**sections: Any) -> TrustSettings:
    return TrustSettings.from_session(Session("trust-settings", sections=sections))


def test_no_defense_is_the_undefended_node() -> None:
    assert settings() == TrustSettings(None, None)
    assert settings(learning={}) == TrustSettings(None, None)
    assert settings(defense={"name": "none"}) == TrustSettings(None, None)


def test_a_defense_with_its_options_and_the_blacklist() -> None:
    parsed = settings(
        learning={"rule": "average"},
        defense={
            "name": "auror+median",
            "auror_agree": 3,
            "auror": {"tau": 0.7, "window": 5},
            "robust": {"trim": 0.2},
        },
        blacklist={"min_quorum": 3, "limits": {"max_evidence": 4}},
    )
    assert parsed.defense is not None and parsed.defense.name == "auror+median"
    assert parsed.defense.auror_agree == 3 and parsed.defense.auror_config.tau == 0.7
    assert parsed.defense.robust.trim == 0.2
    assert parsed.blacklist is not None and parsed.blacklist.min_quorum == 3
    assert parsed.blacklist.limits.max_evidence == 4
    # The blacklist is on by default with a defence, off when verdicts stay local.
    assert settings(learning={}, defense={"name": "auror"}).blacklist is not None
    local = settings(learning={}, defense={"name": "clipping", "blacklist": False})
    assert local.defense is not None and local.blacklist is None


def test_polling_is_accepted_with_the_blacklist() -> None:
    """Node processes poll (through trust.polling.LoopPoller) like the simulator."""
    parsed = settings(
        learning={"rule": "gosgd"},
        defense={"name": "auror+clipping", "polling": True},
        blacklist={"borderline_margin": 0.15, "poll_size": 3, "poll_timeout": 2.0},
    )
    assert parsed.defense is not None and parsed.defense.polling
    assert parsed.blacklist is not None
    assert (parsed.blacklist.poll_size, parsed.blacklist.poll_timeout) == (3, 2.0)
    assert parsed.blacklist.borderline_margin == 0.15


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"learning": {}, "defense": {"name": "aurora"}}, "unknown defence 'aurora'"),
        ({"learning": {}, "defense": {"name": 3}}, "name must be a string"),
        (
            {"learning": {}, "defense": {"name": "auror", "tua": 1}},
            r"unknown \[defense\] keys: tua",
        ),
        (
            {"learning": {}, "defense": {"name": "auror", "auror": {"tua": 1}}},
            r"unknown \[defense.auror\] keys: tua",
        ),
        (
            {"learning": {}, "defense": {"name": "clipping", "robust": {"radius": 1}}},
            r"unknown \[defense.robust\] keys: radius",
        ),
        (
            {"learning": {}, "defense": {"name": "clipping", "robust": {"rule": "krum"}}},
            "the rule comes from",
        ),
        ({"learning": {}, "defense": {"name": "auror", "auror_agree": 0}}, "auror_agree"),
        ({"learning": {}, "defense": {"name": "auror", "auror": 1}}, "must be a table"),
        ({"defense": {"name": "auror"}}, r"needs \[learning\]"),
        (
            {"learning": {}, "defense": {"name": "auror", "polling": True, "blacklist": False}},
            "polling needs the gossiped blacklist",
        ),
        ({"learning": {}, "defense": {"name": "median"}}, "gosgd mixing rule"),
        ({"learning": {}, "blacklist": {}}, r"\[blacklist\] needs a \[defense\]"),
        ({"learning": {}, "defense": {}, "blacklist": {}}, "name is 'none'"),
        (
            {"learning": {}, "defense": {"name": "auror", "blacklist": False}, "blacklist": {}},
            "verdicts stay local",
        ),
        (
            {"learning": {}, "defense": {"name": "auror"}, "blacklist": {"quorum": 2}},
            r"unknown \[blacklist\] keys: quorum",
        ),
        (
            {"learning": {}, "defense": {"name": "auror"}, "blacklist": {"min_quorum": 0}},
            r"\[blacklist\]: min_quorum",
        ),
        (
            {"learning": {}, "defense": {"name": "auror"}, "blacklist": {"limits": {"x": 1}}},
            r"unknown \[blacklist.limits\] keys: x",
        ),
    ],
)
def test_bad_tables_are_refused_with_the_table_and_key(sections: dict, message: str) -> None:
    with pytest.raises(SessionError, match=message) as info:
        settings(**sections)
    assert "session 'trust-settings'" in str(info.value)


def test_the_session_file_round_trips_the_tables(tmp_path: Path) -> None:
    text = """
[session]
id = "defended"

[learning]
rule = "average"

[defense]
name = "auror+clipping"

[defense.robust]
clip_radius = 2.0

[blacklist]
max_malicious_fraction = 0.2
"""
    parsed = TrustSettings.from_session(Session.from_toml(text))
    assert parsed.defense is not None and parsed.defense.robust.clip_radius == 2.0
    assert parsed.blacklist is not None and parsed.blacklist.max_malicious_fraction == 0.2


# -- a collaboration screened by the defence ------------------------------------------


def test_a_collaboration_drops_a_blacklisted_peers_updates_and_reports_it(
    tmp_path: Path,
) -> None:
    torch.set_num_threads(1)
    data = load_dataset("digits")
    store = DataStore(tmp_path / "a.dglog", sample_shape=(8, 8), num_classes=10)
    store.append(data.train_images[:200], data.train_labels[:200])
    config = LearningConfig(model="logreg", input_shape=(1, 8, 8), steps_per_round=2)
    learner = Learner(config, store)
    size = int(flatten(learner.model).numel())
    bad, good = b"b" * 16, b"g" * 16
    defense = Defense(
        settings(learning={}, defense={"name": "clipping"}).defense,  # type: ignore[arg-type]
        size=size,
        is_blacklisted=lambda peer: peer == bad,
    )
    collab = Collaboration(
        learner,
        CollaborationConfig.from_section({"rule": "average", "push_period": 1}),
        b"a" * 16,
        catch_up_timeout=0.0,
        defense=defense,
    )
    assert np.array_equal(learner.initial_parameters().numpy(), flatten(learner.model).numpy())
    # First round: a new node adopts its peers' model (bad's is refused); second:
    # a regular merge, screened.
    for first in (1, 3):
        for round_, origin in enumerate((bad, good), start=first):
            values = np.full(size, 100.0 if origin == bad else 0.0, dtype=np.float32)
            update = SparseUpdate(values, size, origin=origin, round=round_)
            assert collab.offer(update, 0.0)
        collab.after_round(learner.train_round().steps, 0.0)
    assert not collab.catching_up
    summary = collab.defense_summary()
    assert summary.name == "clipping" and summary.rejected == 2
    assert summary.rejected_by_reason == {"blacklisted": 2}
    assert float(flatten(learner.model).abs().max()) < 50  # the 100s never got in


class _HeldPoller:
    """Polls that stay open until the test decides them (as a real poll does for
    up to ``poll_timeout``)."""

    def __init__(self) -> None:
        self.asked: list[bytes] = []

    def is_borderline(self, suspicion: float) -> bool:
        return True

    def poll(self, peer_id: bytes) -> int | None:
        self.asked.append(peer_id)
        return len(self.asked)


def test_a_collaboration_merges_a_polled_update_once_decided_with_nothing_new(
    tmp_path: Path,
) -> None:
    """A decided poll's update returns at the next round's merge even when no
    update arrived meanwhile: a round merges when the defence has one waiting."""
    torch.set_num_threads(1)
    data = load_dataset("digits")
    store = DataStore(tmp_path / "a.dglog", sample_shape=(8, 8), num_classes=10)
    store.append(data.train_images[:200], data.train_labels[:200])
    config = LearningConfig(model="logreg", input_shape=(1, 8, 8), steps_per_round=2)
    learner = Learner(config, store)
    size = int(flatten(learner.model).numel())
    poller = _HeldPoller()
    parsed = settings(learning={}, defense={"name": "auror", "polling": True})
    assert parsed.defense is not None
    defense = Defense(parsed.defense, size=size, seed=1, poller=poller)
    collab = Collaboration(
        learner,
        CollaborationConfig.from_section({"rule": "average", "push_period": 1}),
        b"a" * 16,
        catch_up_timeout=0.0,
        defense=defense,
    )
    collab.after_round(0, 0.0)  # no peers' models to adopt: joins at once
    assert not collab.catching_up
    rng = np.random.default_rng(0)
    shifted = b"\x01" * 16
    # Eight peers around the current model, one shifted on every coordinate.
    base = flatten(learner.model).numpy()
    for i in range(8):
        origin = shifted if i == 0 else bytes([i + 1]) * 16
        values = (base + rng.normal(0, 0.01, size) + (0.5 if i == 0 else 0.0)).astype(np.float32)
        assert collab.offer(SparseUpdate(values, size, origin=origin, round=1), 0.0)
    collab.after_round(0, 1.0)
    assert poller.asked == [shifted] and defense.held == 1 and collab.merged == 7
    merges = learner.merges
    collab.after_round(0, 2.0)  # undecided: nothing to merge
    assert learner.merges == merges and defense.held == 1
    defense.poll_decided(1, discard=False)  # the neighbours say keep
    collab.after_round(0, 3.0)  # nothing pending, but the decided update returns
    assert learner.merges == merges + 1 and collab.merged == 8
    assert defense.held == 0 and defense.decided == 0
