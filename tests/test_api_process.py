"""A real ``deepgossip node`` process that learns: SIGKILL, restart, nothing lost.

The node's session has a ``[learning]`` section; the application feeds it
through the Python client, the node trains and checkpoints, and after a
SIGKILL the restarted node (same data directory) has the same identity, every
accepted sample, and the model of its last checkpoint, then keeps training
from there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deepgossip.api.client import Client
from deepgossip.learn.data import load_dataset

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "deepgossip.cli"]
ROUND_INTERVAL = 4.0
"""Seconds between rounds: the window in which a restarted node still holds
exactly its checkpointed model (its first round comes one interval after start)."""

SESSION = f"""
[session]
id = "learning-restart"
trackers = []

[learning]
model = "logreg"
input_shape = [8, 8]
lr = 0.01
steps_per_round = 40
round_interval = {ROUND_INTERVAL}
checkpoint_every = 1
holdout_fraction = 0.2
"""


def _wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class NodeProcess:
    def __init__(self, session: Path, data_dir: Path, log: Path) -> None:
        self._log = log.open("a")
        self.proc = subprocess.Popen(
            [*CLI, "node", "--session", str(session), "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until started (or exit)
        assert line, f"node exited with {self.proc.wait()}: {log.read_text()}"
        self.info = json.loads(line)
        assert self.info["event"] == "started" and self.info["learning"] is True
        self.url = f"http://{self.info['api'][0]}:{self.info['api'][1]}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()


@pytest.fixture
def nodes() -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    for node in started:
        node.close()


def test_restart_after_sigkill_keeps_data_model_and_identity(
    tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    digits = load_dataset("digits")
    session, data_dir, log = tmp_path / "session.toml", tmp_path / "node", tmp_path / "node.log"
    session.write_text(SESSION)
    first = NodeProcess(session, data_dir, log)
    nodes.append(first)
    client = Client(first.url, token_file=data_dir / "api-token", app_id="restart-test")
    assert client.status()["learning"]["samples"] == 0
    assert client.train(digits.train_images[:400], digits.train_labels[:400]) == 400

    def checkpointed() -> dict[str, Any] | None:
        learning = client.status()["learning"]
        ok = learning["model_version"] >= 1
        return (
            learning if ok and learning["checkpoint_version"] == learning["model_version"] else None
        )

    learning = _wait_for(checkpointed, 30, "a round and its checkpoint")
    version = learning["model_version"]
    _, before = client.predict(digits.test_images[:20])
    assert client.status()["learning"]["model_version"] == version  # no round in between
    assert client.train(digits.train_images[400:410], digits.train_labels[400:410]) == 10

    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)

    second = NodeProcess(session, data_dir, log)
    nodes.append(second)
    assert second.info["id"] == first.info["id"]
    # the restarted node wrote a new token; a client reads it from the same file
    client = Client(second.url, token_file=data_dir / "api-token", app_id="restart-test")
    status = client.status()
    assert status["id"] == first.info["id"]
    learning = status["learning"]
    assert learning["samples"] == 410
    assert learning["model_version"] == version and learning["checkpoint_version"] == version
    _, after = client.predict(digits.test_images[:20])
    assert client.status()["learning"]["model_version"] == version
    assert before is not None and after is not None
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-7)

    # training continues from the checkpoint, and on the data from before the crash
    later = _wait_for(
        lambda: (lambda s: s if s["model_version"] > version else None)(
            client.status()["learning"]
        ),
        30,
        "a round after the restart",
    )
    assert later["rounds"] >= learning["rounds"] + 1
    assert later["train_samples"] + later["holdout_samples"] == 410

    # a clean stop saves a final checkpoint and exits 0
    second.proc.send_signal(signal.SIGTERM)
    assert second.proc.wait(30) == 0
    assert (data_dir / "checkpoint.safetensors").exists()
    assert "Traceback" not in log.read_text()


def test_a_restarted_node_still_ignores_the_peers_it_convicted(
    tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    """The verdicts file written at a conviction is read back at start (a real
    process; the conviction itself is simulated by writing the file)."""
    from deepgossip.trust.blacklist import LocalVerdict
    from deepgossip.trust.verdict_store import VERDICTS_FILE, save_verdicts

    session, data_dir, log = tmp_path / "session.toml", tmp_path / "node", tmp_path / "node.log"
    session.write_text(SESSION + '\n[defense]\nname = "auror"\n')
    data_dir.mkdir()
    convicted = bytes(range(16))
    save_verdicts(data_dir / VERDICTS_FILE, [LocalVerdict(convicted, "auror", 0.7, ())])
    node = NodeProcess(session, data_dir, log)
    nodes.append(node)
    client = Client(node.url, token_file=data_dir / "api-token", app_id="verdicts-test")
    trust = client.status()["trust"]
    assert trust["blacklisted"] == [convicted.hex()]
    assert trust["blacklist"]["blacklisted"][convicted.hex()]["by"] == "local"
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(30) == 0
    assert "restored 1 local verdicts" in log.read_text()
