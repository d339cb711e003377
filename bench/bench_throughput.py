"""Training throughput of a live, gossiping node against a plain PyTorch loop.

One run measures both, one after the other on the same machine (the ratio is
what counts; the machine is shared and noisy):

1. plain: the same model, optimiser, batch size and data as the node, a bare
   ``train_steps`` loop on one torch thread, for ``--seconds``;
2. node: a tracker and three ``deepgossip node`` processes on loopback with a
   ``[learning]`` section. The measured node trains back to back (round
   interval 0) while answering SWIM probes, exchanging updates (GoSGD) and
   serving its API; its two peers train lightly (one short round every two
   seconds) so they send updates without taking the CPU. Steps per second come
   from the node's own ``/v1/status`` counter over ``--seconds``.

    python bench/bench_throughput.py --seconds 30 --json bench/results/throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from deepgossip.api.client import Client
from deepgossip.learn.data import load_dataset, to_tensors
from deepgossip.learn.models import build_model
from deepgossip.learn.train import TrainConfig, make_optimizer, train_steps
from deepgossip.session import Session

CLI = [sys.executable, "-m", "deepgossip.cli"]
MODEL, BATCH, LR, SAMPLES = "cnn", 64, 1e-3, 6000


def plain_steps_per_second(seconds: float) -> float:
    torch.set_num_threads(1)  # as in a node's worker thread
    data = load_dataset("mnist")
    x, y = to_tensors(data.train_images[:SAMPLES], data.train_labels[:SAMPLES])
    torch.manual_seed(0)
    model = build_model(MODEL)
    optimizer = make_optimizer(list(model.parameters()), TrainConfig(lr=LR, batch_size=BATCH))
    generator = torch.Generator().manual_seed(0)
    train_steps(model, optimizer, x, y, 20, BATCH, generator)  # warm up
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        train_steps(model, optimizer, x, y, 50, BATCH, generator)
        steps += 50
    return steps / (time.perf_counter() - started)


def node_steps_per_second(seconds: float) -> dict[str, Any]:
    data = load_dataset("mnist")
    common = {
        "model": MODEL,
        "input_shape": [1, 28, 28],
        "num_classes": 10,
        "lr": LR,
        "batch_size": BATCH,
        "holdout_fraction": 0.0,
        "checkpoint_every": 100_000,
        "rule": "gosgd",
        "push_prob": 0.1,
        "expected_nodes": 3,
    }
    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory(prefix="dg-throughput-") as tmp:
        root = Path(tmp)
        busy = Session(
            "throughput",
            sections={"learning": {**common, "steps_per_round": 50, "round_interval": 0.0}},
        )
        light = Session(
            "throughput",
            sections={"learning": {**common, "steps_per_round": 5, "round_interval": 2.0}},
        )
        busy.save(root / "busy.toml")
        light.save(root / "light.toml")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            tracker = subprocess.Popen(
                [*CLI, "tracker", "--session", str(root / "busy.toml"), "--port", "0"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
            )
            procs.append(tracker)
            assert tracker.stdout is not None
            url = tracker.stdout.readline().split(" on ")[-1].strip()
            clients = []
            for i, session in enumerate(["busy", "light", "light"]):
                proc = subprocess.Popen(
                    [
                        *CLI,
                        "node",
                        "--session",
                        str(root / f"{session}.toml"),
                        "--tracker",
                        url,
                        "--data-dir",
                        str(root / f"n{i}"),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    env=env,
                )
                procs.append(proc)
                assert proc.stdout is not None
                info = json.loads(proc.stdout.readline())
                client = Client(
                    f"http://{info['api'][0]}:{info['api'][1]}",
                    token_file=root / f"n{i}" / "api-token",
                )
                part = slice(i * SAMPLES, (i + 1) * SAMPLES)
                client.train(data.train_images[part], data.train_labels[part])
                clients.append(client)
            time.sleep(5)  # membership converges, the first rounds run
            before = clients[0].status()
            t0 = time.monotonic()
            time.sleep(seconds)
            after = clients[0].status()
            elapsed = time.monotonic() - t0
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=30)
    steps = after["learning"]["steps"] - before["learning"]["steps"]
    return {
        "steps_per_s": steps / elapsed,
        "live_members": after["members"]["live"],
        "updates": after["updates"],
        "frames_in": after["traffic"]["frames_in"] - before["traffic"]["frames_in"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--json", type=Path, default=Path("bench/results/throughput.json"))
    args = parser.parse_args()
    plain_before = plain_steps_per_second(args.seconds)
    node = node_steps_per_second(args.seconds)
    plain_after = plain_steps_per_second(args.seconds)
    plain = (plain_before + plain_after) / 2
    result = {
        "benchmark": "training throughput: live gossiping node vs plain loop",
        "model": MODEL,
        "batch_size": BATCH,
        "seconds": args.seconds,
        "plain_steps_per_s": plain,
        "plain_before": plain_before,
        "plain_after": plain_after,
        "node": node,
        "ratio": node["steps_per_s"] / plain,
        "command": f"python bench/bench_throughput.py --seconds {args.seconds:g}",
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {k: result[k] for k in ("plain_steps_per_s", "ratio")}
            | {"node_steps_per_s": node["steps_per_s"], "updates": node["updates"]},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
