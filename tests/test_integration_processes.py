"""Real processes on loopback: a tracker and nodes started through the CLI.

The nodes know only the tracker; they find each other through it, converge on
one membership view over real UDP/TCP with AES-GCM frames, detect a SIGKILLed
peer, and leave cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deepgossip.api.client import ApiError, Client

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "deepgossip.cli"]


def _first_line(proc: subprocess.Popen[str], timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            return line
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"process printed nothing (exit {proc.poll()})")


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_tracker_bootstrap_tracker_outage_failure_detection_and_clean_leave(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    session = tmp_path / "session.toml"
    secret = tmp_path / "secret"
    subprocess.run(
        [*CLI, "new-session", str(session), "--id", "itest", "--secret-file", str(secret)],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tracker = subprocess.Popen(
        [*CLI, "tracker", "--session", str(session), "--port", "0", "--secret-file", str(secret)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    processes.append(tracker)
    tracker_url = _first_line(tracker).split(" on ")[-1].strip()
    assert tracker_url.startswith("http://127.0.0.1:")

    nodes = []
    for i in range(4):
        proc = subprocess.Popen(
            [
                *CLI,
                "node",
                "--session",
                str(session),
                "--tracker",
                tracker_url,
                "--data-dir",
                str(tmp_path / f"node{i}"),
                "--secret-file",
                str(secret),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        processes.append(proc)
        info = json.loads(_first_line(proc))
        info["client"] = Client(
            f"http://{info['api'][0]}:{info['api'][1]}",
            token_file=tmp_path / f"node{i}" / "api-token",
        )
        nodes.append((proc, info))
    ids = {info["id"] for _, info in nodes}

    def states(info: dict[str, Any]) -> dict[str, str]:
        return {m["id"]: m["state"] for m in info["client"].members()}

    def converged() -> bool:
        return all(
            {k for k, v in states(info).items() if v == "alive"} == ids - {info["id"]}
            for _, info in nodes
        )

    _wait_for(converged, 30, "all nodes to know each other through the tracker")

    # The tracker only introduces peers: its outage must not disturb the network.
    tracker.send_signal(signal.SIGTERM)
    assert tracker.wait(timeout=10) == 0

    victim_proc, victim = nodes[0]
    victim_proc.send_signal(signal.SIGKILL)
    victim_proc.wait(timeout=5)
    survivors = nodes[1:]
    detected = _wait_for(
        lambda: all(states(info).get(victim["id"]) == "dead" for _, info in survivors),
        30,
        "every survivor to mark the killed node dead",
    )
    assert detected < 20
    for _, info in survivors:  # no false positives among the living
        live = {k for k, v in states(info).items() if v == "alive"}
        assert live == ids - {info["id"], victim["id"]}
        status = info["client"].status()
        assert status["members"]["live"] == 2
        with pytest.raises(ApiError) as refused:  # the API needs the node's token
            Client(info["client"].base_url, token="wrong").members()
        assert refused.value.status == 401

    leaver_proc, leaver = survivors[0]
    leaver_proc.send_signal(signal.SIGTERM)
    assert leaver_proc.wait(timeout=10) == 0
    assert '"event": "stopped"' in (leaver_proc.stdout.read() if leaver_proc.stdout else "")
    _wait_for(
        lambda: all(states(info).get(leaver["id"]) == "left" for _, info in survivors[1:]),
        15,
        "the others to see a graceful leave as 'left', not 'dead'",
    )
    for proc, _ in survivors[1:]:
        proc.send_signal(signal.SIGTERM)
    for proc, _ in survivors[1:]:
        assert proc.wait(timeout=10) == 0
