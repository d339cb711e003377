"""Local verdicts kept across restarts: the file, and a node re-issuing them."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest

from deepgossip.net.sim import SimNetwork
from deepgossip.node import Node
from deepgossip.session import Session
from deepgossip.trust.accusation import Evidence
from deepgossip.trust.blacklist import BlacklistConfig, LocalVerdict
from deepgossip.trust.verdict_store import VERDICTS_FILE, load_verdicts, save_verdicts
from deepgossip.wire.identity import Identity

RNG = random.Random(5)
PEER = RNG.randbytes(16)
OTHER = RNG.randbytes(16)
EVIDENCE = (Evidence(RNG.randbytes(32), 7, 0.75), Evidence(RNG.randbytes(32), 6, 0.6))


def test_saved_verdicts_load_back_equal(tmp_path: Path) -> None:
    path = tmp_path / VERDICTS_FILE
    verdicts = [LocalVerdict(PEER, "auror", 0.55, EVIDENCE), LocalVerdict(OTHER, "x", 1.0, ())]
    save_verdicts(path, verdicts)
    assert load_verdicts(path) == verdicts
    assert not path.with_name(path.name + ".tmp").exists()
    save_verdicts(path, verdicts[:1])  # replaced, not appended
    assert load_verdicts(path) == verdicts[:1]


def test_no_file_is_no_verdict(tmp_path: Path) -> None:
    assert load_verdicts(tmp_path / VERDICTS_FILE) == []


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe", b"[]", b'{"format": 2, "verdicts": []}', b'{"format": 1}'],
)
def test_an_unusable_file_is_moved_aside_and_logged(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / VERDICTS_FILE
    path.write_bytes(content)
    with caplog.at_level(logging.ERROR):
        assert load_verdicts(path) == []
    assert not path.exists()
    assert path.with_name(path.name + ".corrupt").read_bytes() == content
    assert "unusable verdicts file" in caplog.text


def test_entries_out_of_range_are_skipped_and_the_rest_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / VERDICTS_FILE
    good = {"peer": PEER.hex(), "reason": "auror", "suspicion": 0.5, "evidence": []}
    bad = [
        {**good, "peer": "zz"},
        {**good, "peer": PEER.hex()[:-2]},
        {**good, "suspicion": 1.5},
        {**good, "suspicion": "nan"},
        {**good, "reason": "r" * 65},
        {**good, "evidence": [["00" * 31, 1, 0.5]]},
        {**good, "evidence": [["00" * 32, -1, 0.5]]},
        {**good, "evidence": [["00" * 32, 1, "inf"]]},
        {"peer": PEER.hex()},
        "not an object",
    ]
    path.write_text(json.dumps({"format": 1, "verdicts": [*bad, good]}))
    with caplog.at_level(logging.WARNING):
        assert load_verdicts(path) == [LocalVerdict(PEER, "auror", 0.5, ())]
    assert caplog.text.count("skipping verdict") == len(bad)
    assert path.exists()  # the file itself was fine


def _node(net: SimNetwork, identity: Identity) -> Node:
    address = ("10.3.0.1", 7000)
    node = Node(
        net,
        address,
        identity,
        Session("verdicts"),
        rng=net.rng_for(address),
        wall_clock=net.now,
        blacklist=BlacklistConfig(),
    )
    net.attach(address, node.host.receive)
    node.start()
    return node


def test_a_restarted_node_reissues_its_saved_verdicts(tmp_path: Path) -> None:
    identity = Identity.from_private_bytes(RNG.randbytes(32))
    path = tmp_path / VERDICTS_FILE
    first = _node(SimNetwork(seed=1), identity)
    first.accuse(PEER, 0.6, EVIDENCE)
    assert first.blacklist is not None
    save_verdicts(path, first.blacklist.local_verdicts())

    second = _node(SimNetwork(seed=2), identity)
    assert second.blacklist is not None and not second.is_blacklisted(PEER)
    # Our own id cannot be accused: that entry is skipped, the rest restored.
    saved = [*load_verdicts(path), LocalVerdict(identity.node_id, "auror", 0.6, ())]
    assert second.restore_verdicts(saved) == 1
    assert second.is_blacklisted(PEER)
    assert second.blacklist.entry(PEER).by == "local"  # type: ignore[union-attr]
    assert second.blacklist.local_verdicts() == (LocalVerdict(PEER, "auror", 0.6, EVIDENCE),)
    assert second.blacklist.events["published"] == 1  # a freshly signed accusation
