"""AUROR: speed of the exact 1-D 2-means, and what the default detector flags.

Two parts, both seeded and synthetic (no training):

``timing``
    :func:`two_means_1d` on a (peers, features) float64 matrix for features in
    {1e3, 1e4, 1e5, 4e5} and peers in {10, 30, 50}: median wall time over a few
    repeats. Also a full :meth:`AurorDetector.evaluate` at the default
    ``max_features`` (2-means + MAD + bookkeeping), and the speed-up over a naive
    per-feature Python loop running the same exact algorithm (sort the column,
    prefix sums, argmin) on small cases.
``honest_indicative_share``
    Share of features the default alpha rule calls indicative among honest
    Gaussian peers (noise features: they isolate a random peer each).
``quality``
    The default detector over a number of evaluations per scenario: honest IID,
    heavy-tailed, non-IID (peer groups, Dirichlet mixes), one honest peer twice
    as noisy, and planted attackers (sign flip, shifts of the whole vector or of
    30% of the coordinates). Features follow the model the module docstring
    prescribes: a drift common to all peers plus per-peer noise of sigma 1, plus
    the scenario's structure. Reported per scenario: the share of evaluations in
    which honest peers / attackers were flagged, the runs in which any honest
    peer was blacklisted, the runs in which every attacker was, and the mean
    evaluation at which attackers were blacklisted.
``sweep``
    The same for alpha_mult in {3, 4, 5} x tau in {0.5, 0.6} on the scenarios
    that decide them: two honest non-IID crowds, attackers shifting 10% of the
    coordinates, a 30% coalition shifting all of them by 4 sigma among 30 peers.

Run from the repository root (the machine is shared: the load average at the
start is recorded next to the timings)::

    .venv/bin/python bench/bench_auror.py --json bench/results/auror.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from deepgossip.trust.auror import (
    DEFAULT_AUROR,
    AurorConfig,
    AurorDetector,
    indicative_features,
    two_means_1d,
)

FEATURES = (1_000, 10_000, 100_000, 400_000)
PEERS = (10, 30, 50)


# ------------------------------------------------------------------------- timing


def naive_two_means(values: np.ndarray) -> np.ndarray:
    """The same exact algorithm, one Python iteration per feature: returns the low sizes."""
    p, f = values.shape
    sizes = np.empty(f, dtype=np.int64)
    k = np.arange(1, p)
    for j in range(f):
        col = np.sort(values[:, j])
        c = col - col.mean()
        prefix = np.cumsum(c)[:-1]
        sizes[j] = int(np.argmax(prefix * prefix * p / (k * (p - k)))) + 1
    return sizes


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first-touch page faults, lazy imports
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timing(quick: bool) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    grid = []
    for f in FEATURES[:2] if quick else FEATURES:
        for p in PEERS:
            x = rng.standard_normal((p, f))
            repeats = 3 if f >= 100_000 else 7
            seconds = median_time(lambda x=x: two_means_1d(x), repeats)
            grid.append({"peers": p, "features": f, "seconds": seconds})
            print(
                f"two_means_1d  peers={p:3d} features={f:7d}  {seconds * 1e3:8.2f} ms", flush=True
            )

    evaluate = []
    for p in PEERS:
        x = rng.standard_normal((p, DEFAULT_AUROR.max_features))

        def once(x: np.ndarray = x) -> None:
            det = AurorDetector()
            for i, row in enumerate(x):
                det.observe(i.to_bytes(4, "big"), row)
            det.evaluate()

        seconds = median_time(once, 7)
        evaluate.append({"peers": p, "features": DEFAULT_AUROR.max_features, "seconds": seconds})
        print(
            f"observe+evaluate peers={p:3d} features={DEFAULT_AUROR.max_features}  "
            f"{seconds * 1e3:8.2f} ms",
            flush=True,
        )

    naive = []
    for p, f in ((10, 1_000), (50, 1_000)):
        x = rng.standard_normal((p, f))
        assert np.array_equal(naive_two_means(x), two_means_1d(x).n_low), "naive disagrees"
        t_naive = median_time(lambda x=x: naive_two_means(x), 3)
        t_fast = median_time(lambda x=x: two_means_1d(x), 7)
        naive.append(
            {
                "peers": p,
                "features": f,
                "naive_seconds": t_naive,
                "vectorized_seconds": t_fast,
                "ratio": t_naive / t_fast,
            }
        )
        print(
            f"naive loop    peers={p:3d} features={f:7d}  {t_naive * 1e3:8.2f} ms  "
            f"vectorized {t_fast * 1e3:6.2f} ms  x{t_naive / t_fast:.0f}",
            flush=True,
        )
    return {"two_means_1d": grid, "detector_evaluate": evaluate, "vs_naive": naive}


# ------------------------------------------------------------------------- quality

Scenario = Callable[[np.random.Generator], np.ndarray]


def make_scenario(name: str, p: int, f: int, fixed: np.random.Generator) -> tuple[Scenario, int]:
    """``(one round -> (p, f) features, number of attackers)``; attackers are the first rows."""

    def base(rng: np.random.Generator) -> np.ndarray:
        return 3.0 * rng.standard_normal(f) + rng.standard_normal((p, f))

    kind, *args = name.split(":")
    if kind == "iid":
        return base, 0
    if kind == "t3":  # heavy-tailed noise (Student t, 3 dof)
        return lambda rng: 3.0 * rng.standard_normal(f) + rng.standard_t(3, (p, f)), 0
    if kind == "noisy-peer":  # one honest peer (the first) with twice the noise
        scale = np.ones((p, 1))
        scale[0] = 2.0
        return lambda rng: 3.0 * rng.standard_normal(f) + scale * rng.standard_normal((p, f)), 0
    if kind == "groups":  # fixed per-group means, sizes as given, spread b
        sizes = [int(s) for s in args[0].split("-")]
        b = float(args[1])
        group = np.repeat(np.arange(len(sizes)), sizes)
        means = b * fixed.standard_normal((len(sizes), f))
        return lambda rng: base(rng) + means[group], 0
    if kind == "dirichlet":  # per-peer mix of 10 class effects of spread b
        conc, b = float(args[0]), float(args[1])
        mix = fixed.dirichlet([conc] * 10, size=p)
        effect = b * fixed.standard_normal((10, f))
        return lambda rng: base(rng) + mix @ effect, 0
    m = max(1, round(float(args[0]) * p))
    if kind == "sign-flip":

        def flip(rng: np.random.Generator) -> np.ndarray:
            common = 3.0 * rng.standard_normal(f)
            x = common + rng.standard_normal((p, f))
            x[:m] = -common + rng.standard_normal((m, f))
            return x

        return flip, m
    if kind == "shift":  # attackers share a fixed push of delta on a share of coordinates
        delta, share = float(args[1]), float(args[2])
        push = np.where(fixed.random(f) < share, delta * fixed.choice([-1.0, 1.0], f), 0.0)

        def shifted(rng: np.random.Generator) -> np.ndarray:
            x = base(rng)
            x[:m] += push
            return x

        return shifted, m
    raise ValueError(name)


QUALITY = [
    # (scenario, peers)
    ("iid", 10),
    ("iid", 4),
    ("iid", 30),
    ("t3", 10),
    ("groups:3-3-4:3", 10),
    ("groups:2-2-3-3:3", 10),
    ("groups:3-7:3", 10),
    ("dirichlet:0.5:2", 10),
    ("dirichlet:0.5:3", 10),
    ("dirichlet:0.1:3", 10),
    ("dirichlet:0.5:2", 30),
    ("noisy-peer", 10),
    ("sign-flip:0.3", 10),
    ("sign-flip:0.3", 30),
    ("shift:0.3:3:1.0", 10),
    ("shift:0.3:4:1.0", 10),
    ("shift:0.3:6:1.0", 10),
    ("shift:0.3:8:0.3", 10),
    ("shift:0.3:8:0.1", 10),
    ("shift:0.1:6:1.0", 10),
    ("shift:0.25:6:1.0", 4),
    ("shift:0.3:3:1.0", 30),
    ("shift:0.3:4:1.0", 30),
    ("shift:0.3:6:1.0", 30),
    ("shift:0.3:8:1.0", 30),
    ("shift:0.3:4:1.0", 50),
    ("shift:0.3:6:1.0", 50),
]


def judge_scenarios(
    scenarios: list[tuple[str, int]], config: AurorConfig, runs: int, label: str = ""
) -> list[dict[str, Any]]:
    """Run the detector with ``config`` over each ``(scenario, peers)``; one row each."""
    features, rounds = 2_000, 20
    rows = []
    for name, p in scenarios:
        ids = [i.to_bytes(4, "big") for i in range(p)]
        honest_flag = attack_flag = honest_evals = attack_evals = 0
        honest_bl_runs = caught_runs = 0
        caught_at: list[int] = []
        m = 0
        for run in range(runs):
            scenario, m = make_scenario(name, p, features, np.random.default_rng(1000 + run))
            rng = np.random.default_rng(run)
            det = AurorDetector(config)
            first_all: int | None = None
            for r in range(rounds):
                x = scenario(rng)
                for origin, row in zip(ids, x, strict=True):
                    det.observe(origin, row)
                v = det.evaluate()
                judged_h = [o for o in ids[m:] if o in v.judged]
                judged_a = [o for o in ids[:m] if o in v.judged]
                honest_evals += len(judged_h)
                attack_evals += len(judged_a)
                honest_flag += sum(o in v.flagged for o in judged_h)
                attack_flag += sum(o in v.flagged for o in judged_a)
                if m and first_all is None and all(det.is_blacklisted(o) for o in ids[:m]):
                    first_all = r + 1
            honest_bl_runs += any(det.is_blacklisted(o) for o in ids[m:])
            if m and first_all is not None:
                caught_runs += 1
                caught_at.append(first_all)
        row: dict[str, Any] = {"scenario": name, "peers": p, "attackers": m}
        if label:
            row |= {"alpha_mult": config.alpha_mult, "tau": config.tau}
        row |= {
            "runs": runs,
            "evaluations": rounds,
            "honest_flag_rate": honest_flag / max(honest_evals, 1),
            "runs_with_honest_blacklisted": honest_bl_runs,
        }
        if m:
            row |= {
                "attacker_flag_rate": attack_flag / max(attack_evals, 1),
                "runs_all_attackers_blacklisted": caught_runs,
                "mean_evaluation_blacklisted": (statistics.mean(caught_at) if caught_at else None),
            }
        rows.append(row)
        print(label + json.dumps(row), flush=True)
    return rows


SWEEP = [
    ("groups:3-3-4:3", 10),
    ("dirichlet:0.5:3", 10),
    ("shift:0.3:8:0.1", 10),
    ("shift:0.3:4:1.0", 30),
]
"""The scenarios that decide alpha_mult and tau (module docstring of trust/auror.py)."""


def sweep(quick: bool) -> list[dict[str, Any]]:
    rows = []
    for alpha in (3.0, 4.0, 5.0):
        for tau in (0.5, 0.6):
            cfg = replace(DEFAULT_AUROR, alpha_mult=alpha, tau=tau)
            rows += judge_scenarios(SWEEP, cfg, 3 if quick else 10, label=f"a={alpha} tau={tau} ")
    return rows


def honest_indicative_share() -> list[dict[str, Any]]:
    """Share of indicative features among honest Gaussian peers, default alpha rule."""
    rng = np.random.default_rng(5)
    rows = []
    for p in (4, 5, 10, 20, 30, 50):
        x = rng.standard_normal((p, 20_000))
        mask = indicative_features(
            x, two_means_1d(x), DEFAULT_AUROR.alpha_mult, DEFAULT_AUROR.spread_floor
        )
        rows.append({"peers": p, "features": x.shape[1], "share": float(mask.mean())})
        print(f"honest indicative share peers={p:3d}  {mask.mean():.4f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=Path("bench/results/auror.json"))
    parser.add_argument("--quick", action="store_true", help="small grid, few runs")
    args = parser.parse_args(argv)

    load = os.getloadavg()
    result = {
        "benchmark": "AUROR: exact 1-D 2-means speed and default detector flags",
        "command": "python bench/bench_auror.py" + (" --quick" if args.quick else ""),
        "machine": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_at_start": load,
        },
        "config": asdict(DEFAULT_AUROR),
        "timing": timing(args.quick),
        "honest_indicative_share": honest_indicative_share(),
        "quality": judge_scenarios(QUALITY, DEFAULT_AUROR, 3 if args.quick else 10),
        "sweep": sweep(args.quick),
    }
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
