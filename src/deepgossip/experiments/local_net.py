"""A tracker and learning nodes as real processes on loopback, with their clients.

The demo, the process benchmarks and the process scenarios all need the same
thing: start ``deepgossip tracker`` and N ``deepgossip node`` processes through
the CLI, with one session file, and hold one application client per node. This
module is that, as a context manager that always stops what it started (SIGTERM,
then SIGKILL of the whole process group after a grace period), so no run leaves
a process behind, even when it fails half-way::

    with LocalNetwork(session_sections={"learning": {...}}, nodes=8, logs=out) as net:
        for client, part in zip(net.clients, parts):
            client.train(x[part], y[part])
        ...
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from deepgossip.api.client import ApiError, Client
from deepgossip.session import Session

CLI = [sys.executable, "-m", "deepgossip.cli"]
STOP_GRACE_S = 20.0
"""How long a process may take to checkpoint and exit after SIGTERM."""


def spawn(args: list[str], log: Path) -> subprocess.Popen[str]:
    """Start a CLI process in its own process group; stdout piped, stderr to ``log``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        env=env,
        start_new_session=True,
    )


def first_line(proc: subprocess.Popen[str], what: str) -> str:
    """The first stdout line (where the tracker and nodes announce themselves)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{what} exited before starting (code {proc.wait()})")
    return line


def stop_all(procs: list[subprocess.Popen[str]], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM every process, wait, then SIGKILL the groups of any that linger."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


class LocalNetwork:
    """A tracker plus ``nodes`` node processes sharing one session, on loopback."""

    def __init__(
        self,
        *,
        nodes: int,
        logs: Path,
        session_id: str = "local",
        session_sections: dict[str, dict[str, Any]] | None = None,
        node_args: list[str] | None = None,
    ) -> None:
        self.nodes = nodes
        self.logs = logs
        self.session = Session(session_id, sections=session_sections or {})
        self.node_args = node_args or []
        self.procs: list[subprocess.Popen[str]] = []
        self.clients: list[Client] = []
        self.tracker_url = ""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def root(self) -> Path:
        assert self._tmp is not None, "the network is not started"
        return Path(self._tmp.name)

    def data_dir(self, index: int) -> Path:
        return self.root / f"node{index}"

    def __enter__(self) -> LocalNetwork:
        self.logs.mkdir(parents=True, exist_ok=True)
        self._tmp = tempfile.TemporaryDirectory(prefix="deepgossip-net-")
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self) -> None:
        session_path = self.root / "session.toml"
        self.session.save(session_path)
        tracker = spawn(
            [*CLI, "tracker", "--session", str(session_path), "--port", "0"],
            self.logs / "tracker.log",
        )
        self.procs.append(tracker)
        self.tracker_url = first_line(tracker, "the tracker").split(" on ")[-1].strip()
        for i in range(self.nodes):
            self.procs.append(
                spawn(
                    [
                        *CLI,
                        "node",
                        "--session",
                        str(session_path),
                        "--tracker",
                        self.tracker_url,
                        "--data-dir",
                        str(self.data_dir(i)),
                        *self.node_args,
                    ],
                    self.logs / f"node{i}.log",
                )
            )
        for i, proc in enumerate(self.procs[1:]):
            info = json.loads(first_line(proc, f"node {i}"))
            self.clients.append(
                Client(
                    f"http://{info['api'][0]}:{info['api'][1]}",
                    token_file=self.data_dir(i) / "api-token",
                    app_id=f"app-{i}",
                )
            )

    def close(self) -> None:
        stop_all(self.procs)
        self.procs.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def client_accuracies(clients: list[Client], x: np.ndarray, y: np.ndarray) -> list[float]:
    """Each node's accuracy on (x, y), asked through its API (NaN if it fails)."""
    out = []
    for client in clients:
        try:
            predicted, _ = client.predict(x, probabilities=False)
            out.append(float(np.mean(predicted == y)))
        except ApiError:
            out.append(float("nan"))
    return out
