"""The ``deepgossip`` command line.

Subcommands import their implementation lazily: ``deepgossip --help`` must not pay
for ``import torch`` (seconds of CPU) when the user only wants the tracker.
"""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="deepgossip")
def main() -> None:
    """DeepGossip: peer-to-peer collaborative deep learning over gossip."""


@main.group()
def bench() -> None:
    """Benchmarks that write JSON results (see docs/benchmarks.md)."""


@bench.command("baseline")
@click.option(
    "--dataset",
    type=click.Choice(["mnist", "fashion-mnist", "mnist-5k", "digits"]),
    default="mnist",
    show_default=True,
)
@click.option(
    "--model", type=click.Choice(["logreg", "mlp", "cnn"]), default="cnn", show_default=True
)
@click.option("--nodes", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--partition",
    type=click.Choice(["iid", "dirichlet", "shards", "unbalanced"]),
    default="iid",
    show_default=True,
)
@click.option("--alpha", type=float, default=0.5, show_default=True, help="Dirichlet alpha.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Default per model.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def bench_baseline(**options: object) -> None:
    """Centralized training vs each node training alone on its partition."""
    from deepgossip.experiments.baseline import run_baseline_cli

    run_baseline_cli(**options)


@main.command()
@click.option("--out", type=click.Path(file_okay=False), default="out/demo", show_default=True)
@click.option("--quick", is_flag=True, help="A smaller, faster run (for smoke tests).")
def demo(out: str, quick: bool) -> None:
    """The best demonstration that exists: see README."""
    from deepgossip.experiments.demo import run_demo

    run_demo(out, quick=quick)


if __name__ == "__main__":
    main()
