"""The update exchange: sending updates, refusing bad ones, learning over the
simulated network with whole nodes."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from deepgossip.experiments.learning_sim import LearningSimSettings, run_learning_sim
from deepgossip.learn.exchange import UpdateExchange, UpdateMessage, UpdateReceived
from deepgossip.learn.mixing import MixingConfig
from deepgossip.learn.sharing import SparseUpdate
from deepgossip.net.runtime import Send
from deepgossip.wire.identity import Identity
from deepgossip.wire.tensor import encode_tensors

PEERS = [("10.0.0.2", 1), ("10.0.0.3", 1), ("10.0.0.4", 1)]


def _exchange(size: int = 10) -> UpdateExchange:
    return UpdateExchange(
        Identity.generate().public_key_bytes, size, lambda: PEERS, random.Random(0)
    )


def test_push_sends_one_frame_to_fanout_distinct_peers_and_round_trips() -> None:
    sender, receiver = _exchange(), _exchange()
    update = SparseUpdate(
        values=np.arange(3, dtype=np.float32),
        size=10,
        indices=np.array([1, 4, 7], dtype=np.int32),
        round=5,
        samples=40,
        weight=0.25,
    )
    sends = sender.push(update, fanout=2)
    assert len(sends) == 2 and len({s.to for s in sends}) == 2
    assert all(isinstance(s, Send) and s.reliable for s in sends)
    [event] = receiver.handle(PEERS[0], sends[0].message, 0.0)
    assert isinstance(event, UpdateReceived)
    got = event.update
    assert got.origin == sender.node_id and got.round == 5 and got.weight == 0.25
    assert got.indices.tolist() == [1, 4, 7] and got.values.tolist() == [0.0, 1.0, 2.0]
    got.values[0] = 9.0  # the receiver owns its copy (frames decode read-only)


def _msg(frame: bytes, size: int = 10) -> UpdateMessage:
    return UpdateMessage(Identity.generate().public_key_bytes, 1, 1, 1.0, "values", size, frame)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (_msg(encode_tensors({"update": np.zeros(10, np.float32)}), size=11), "wrong_size"),
        (_msg(b"garbage"), "MalformedTensor"),
        (_msg(encode_tensors({"update": np.zeros(20, np.float32)})), "MalformedTensor"),
        (_msg(encode_tensors({"other": np.zeros(10, np.float32)})), "UpdateRejected"),
    ],
)
def test_bad_updates_are_refused_and_counted(message: UpdateMessage, reason: str) -> None:
    exchange = _exchange()
    assert exchange.handle(PEERS[0], message, 0.0) == []
    assert sum(exchange.rejected.values()) == 1
    assert any(reason in key for key in exchange.rejected), exchange.rejected


def test_non_finite_values_never_reach_the_mixing_rule() -> None:
    exchange = _exchange()
    frame = encode_tensors({"update": np.full(10, np.nan, np.float32)}, allow_nonfinite=True)
    assert exchange.handle(PEERS[0], _msg(frame), 0.0) == []
    assert exchange.received == 0


def test_collaboration_over_the_simulated_network_beats_training_alone() -> None:
    settings = LearningSimSettings(
        nodes=4,
        dataset="digits",
        model="mlp",
        partition="dirichlet",
        alpha=0.3,
        rounds=24,
        steps_per_round=8,
        batch_size=32,
        lr=3e-3,
        eval_every=8,
        threads=1,
        mixing=MixingConfig(rule="average", period=8),
    )
    result = run_learning_sim(settings)
    assert result["updates_rejected"] == 0
    assert result["updates_merged_per_node"] > 10
    assert result["accuracy_mean"] > result["standalone_accuracy_mean"] + 0.05
    assert 0.0 <= result["accuracy_min"] <= result["accuracy_mean"] <= 1.0
    again = run_learning_sim(settings)
    assert again["accuracy_mean"] == result["accuracy_mean"]  # same seed, same run


def test_standalone_sample_trains_the_first_nodes_only() -> None:
    full = LearningSimSettings(
        nodes=3, dataset="digits", model="logreg", rounds=2, steps_per_round=2, threads=1
    )
    result = run_learning_sim(replace(full, standalone_sample=2))
    assert result["standalone_nodes"] == 2 and len(result["standalone_per_node"]) == 2
    assert result["standalone_per_node"] == run_learning_sim(full)["standalone_per_node"][:2]
    with pytest.raises(ValueError, match="standalone_sample"):
        replace(full, standalone_sample=4)
