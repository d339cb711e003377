"""Real processes learning together: a tracker and three nodes, each fed by its own
application over the HTTP API with digits of *different classes*. Through the
update exchange every node learns to recognise classes only its peers had."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from deepgossip.api.client import Client
from deepgossip.learn.data import load_dataset
from deepgossip.session import Session

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "deepgossip.cli"]
CLASSES = [(0, 1, 2), (3, 4, 5), (6, 7, 8, 9)]


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"process exited with {proc.wait()}"
    return line


def test_nodes_predict_classes_only_their_peers_had(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    session_path = tmp_path / "session.toml"
    Session(
        "learn-itest",
        sections={
            "learning": {
                "model": "mlp",
                "input_shape": [1, 8, 8],
                "num_classes": 10,
                "lr": 3e-3,
                "batch_size": 32,
                "steps_per_round": 5,
                "round_interval": 0.1,
                "holdout_fraction": 0.0,
                "checkpoint_every": 1000,
                "rule": "gosgd",
                "push_prob": 0.2,
                "push_period": 5,
                "fanout": 2,
            },
        },
    ).save(session_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tracker = subprocess.Popen(
        [*CLI, "tracker", "--session", str(session_path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    processes.append(tracker)
    url = _line(tracker).split(" on ")[-1].strip()

    data = load_dataset("digits")
    clients = []
    for i, classes in enumerate(CLASSES):
        proc = subprocess.Popen(
            [
                *CLI,
                "node",
                "--session",
                str(session_path),
                "--tracker",
                url,
                "--data-dir",
                str(tmp_path / f"n{i}"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        processes.append(proc)
        info = json.loads(_line(proc))
        client = Client(
            f"http://{info['api'][0]}:{info['api'][1]}",
            token_file=tmp_path / f"n{i}" / "api-token",
            app_id=f"app{i}",
        )
        mask = np.isin(data.train_labels, classes)
        assert client.train(data.train_images[mask], data.train_labels[mask]) == mask.sum()
        clients.append(client)

    unseen_accuracy: list[float] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(3)
        unseen_accuracy = []
        for client, classes in zip(clients, CLASSES, strict=True):
            unseen = ~np.isin(data.test_labels, classes)
            predicted, _ = client.predict(data.test_images[unseen])
            unseen_accuracy.append(float(np.mean(predicted == data.test_labels[unseen])))
        if min(unseen_accuracy) >= 0.8:
            break
    print(
        f"unseen-class accuracy {unseen_accuracy} after {time.monotonic() - deadline + 120:.0f} s"
    )
    assert min(unseen_accuracy) >= 0.8, unseen_accuracy  # alone it would be 0%

    status = clients[0].status()
    assert status["updates"]["sent"] > 0 and status["updates"]["merged"] > 0
    assert status["updates"]["rejected"] == 0
    for proc in processes:
        proc.send_signal(signal.SIGTERM)
    for proc in processes:
        assert proc.wait(timeout=20) == 0
