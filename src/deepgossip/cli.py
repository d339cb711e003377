"""The ``deepgossip`` command line.

Subcommands import their implementation lazily: ``deepgossip --help`` must not pay
for ``import torch`` (seconds of CPU) when the user only wants the tracker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


@click.group()
@click.version_option(package_name="deepgossip")
def main() -> None:
    """DeepGossip: peer-to-peer collaborative deep learning over gossip."""


def _learning_setup(partitions: list[str]) -> Callable[[F], F]:
    """--dataset, --model, --nodes, --partition, --alpha: shared by learning benchmarks."""

    def decorate(command: F) -> F:
        for option in reversed(
            [
                click.option(
                    "--dataset",
                    type=click.Choice(["mnist", "fashion-mnist", "mnist-5k", "digits"]),
                    default="mnist",
                    show_default=True,
                ),
                click.option(
                    "--model",
                    type=click.Choice(["logreg", "mlp", "cnn"]),
                    default="cnn",
                    show_default=True,
                ),
                click.option("--nodes", type=click.IntRange(min=1), default=10, show_default=True),
                click.option(
                    "--partition", type=click.Choice(partitions), default="iid", show_default=True
                ),
                click.option(
                    "--alpha", type=float, default=0.5, show_default=True, help="Dirichlet alpha."
                ),
            ]
        ):
            command = option(command)
        return command

    return decorate


def _session_options(command: F) -> F:
    """--session and --secret-file: what the tracker and every node need."""
    command = click.option(
        "--secret-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="Join secret (else $DEEPGOSSIP_JOIN_SECRET).",
    )(command)
    return click.option(
        "--session",
        "session_path",
        type=click.Path(exists=True, dir_okay=False),
        required=True,
        help="Session file (TOML).",
    )(command)


@main.group()
def bench() -> None:
    """Benchmarks that write JSON results (see docs/benchmarks.md)."""


@bench.command("baseline")
@_learning_setup(["iid", "dirichlet", "shards", "unbalanced"])
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Default per model.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def bench_baseline(**options: object) -> None:
    """Centralized training vs each node training alone on its partition."""
    from deepgossip.experiments.baseline import run_baseline_cli

    run_baseline_cli(**options)


@bench.command("gossip")
@click.option("--runtime", type=click.Choice(["sim"]), default="sim", show_default=True)
@click.option("--nodes", type=click.IntRange(min=2), default=1000, show_default=True)
@click.option("--loss", type=click.FloatRange(0.0, 1.0), default=0.05, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--items", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--body-bytes", type=click.IntRange(min=1), default=4096, show_default=True)
@click.option("--fanout", type=click.IntRange(min=1), default=None, help="Default: config.")
@click.option("--redundancy-limit", type=click.IntRange(min=1), default=None, help="k.")
@click.option("--eager-push/--no-eager-push", default=None, help="Default: config.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def bench_gossip(**options: object) -> None:
    """Rumour mongering + anti-entropy: rounds to coverage, residue, messages."""
    from deepgossip.experiments.bench_gossip import run_gossip_bench_cli

    run_gossip_bench_cli(**options)  # type: ignore[arg-type]


@bench.command("swim")
@click.option("--runtime", type=click.Choice(["sim", "asyncio"]), default="sim", show_default=True)
@click.option("--nodes", type=click.IntRange(min=2), default=100, show_default=True)
@click.option("--loss", type=click.FloatRange(0.0, 1.0), default=0.05, show_default=True)
@click.option("--crash", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--duration", type=click.FloatRange(min=1.0), default=300.0, show_default=True)
@click.option("--warmup", type=click.FloatRange(min=0.0), default=20.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--bootstrap", type=click.Choice(["converged", "join"]), default="converged", show_default=True
)
@click.option(
    "--fallback-ping",
    type=click.Choice(["datagram", "stream", "off"]),
    default="datagram",
    show_default=True,
)
@click.option(
    "--processes",
    is_flag=True,
    help="asyncio runtime: one real OS process per node (the only asyncio mode).",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def bench_swim(**options: object) -> None:
    """SWIM failure detection: time to detect crashes, false positives, cost."""
    from deepgossip.experiments.bench_swim import run_swim_bench_cli

    run_swim_bench_cli(**options)  # type: ignore[arg-type]


@bench.command("learning")
@_learning_setup(["iid", "dirichlet", "shards", "unbalanced", "disjoint"])
@click.option(
    "--runtime",
    type=click.Choice(["sim", "asyncio"]),
    default="sim",
    show_default=True,
    help="sim: N nodes in one process, virtual time; asyncio: real nodes (with --processes).",
)
@click.option(
    "--processes", is_flag=True, help="Real node processes on loopback (asyncio runtime)."
)
@click.option(
    "--rule",
    type=click.Choice(["gosgd", "average", "trust", "none"]),
    default="gosgd",
    show_default=True,
)
@click.option("--push-prob", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.1)
@click.option("--fanout", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--outer-momentum",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.0,
    show_default=True,
    help="Momentum across rounds on each node's merged model (0: off).",
)
@click.option("--theta-u", type=click.FloatRange(0.0, 1.0, min_open=True), default=1.0)
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True)
@click.option(
    "--lr-schedule",
    type=click.Choice(["constant", "cosine"]),
    default="constant",
    show_default=True,
    help="sim: cosine anneals every node and reference to 0 over the run.",
)
@click.option(
    "--standalone-sample",
    type=click.IntRange(min=1),
    default=None,
    help="Train the standalone reference for this many nodes only (default: sim all, processes 3).",
)
@click.option(
    "--target",
    type=click.FloatRange(0.0, 1.0),
    default=0.98,
    show_default=True,
    help="--processes: stop when every node is past this accuracy.",
)
@click.option(
    "--max-seconds",
    type=click.FloatRange(min=1.0),
    default=600.0,
    show_default=True,
    help="--processes: give up after this long.",
)
@click.option(
    "--lr", type=click.FloatRange(min=0.0, min_open=True), default=1e-3, show_default=True
)
@click.option("--rounds", type=click.IntRange(min=1), default=80, show_default=True)
@click.option("--steps-per-round", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def bench_learning(**options: Any) -> None:
    """Nodes learning together: simulated network, or real processes on loopback."""
    from deepgossip.experiments.learning_sim import run_learning_cli

    run_learning_cli(**options)


_attack_option = click.option(
    "--attack-option",
    "attack_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any other AttackConfig field, e.g. adversarial_steps=3 (repeatable).",
)
_defense_option = click.option(
    "--defense-option",
    "defense_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A RobustConfig field (e.g. f=3 for Krum) or DefenseConfig field (repeatable).",
)


# The MLP by default: three whole simulations per run (attack, no-attack and
# no-defence references) are affordable on 2 cores with it, not with the CNN.
@bench.command("poisoning", context_settings={"default_map": {"model": "mlp"}})
@_learning_setup(["iid", "dirichlet", "shards", "unbalanced", "disjoint"])
@click.option(
    "--malicious",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.3,
    show_default=True,
    help="Fraction of malicious nodes (chosen from the seed).",
)
@click.option(
    "--attack",
    type=click.Choice(
        [
            "none",
            "label_flip",
            "targeted",
            "backdoor",
            "sign_flip",
            "noise",
            "scale",
            "alie",
            "ipm",
            "free_ride",
            "slander",
        ]
    ),
    default="label_flip",
    show_default=True,
)
@click.option(
    "--defense",
    default="auror",
    show_default=True,
    help="none, auror, median, trimmed_mean, krum, multi_krum, clipping, balance, "
    "or auror+<rule> (e.g. auror+clipping).",
)
@click.option("--boost", type=click.FloatRange(min=0.0, min_open=True), default=1.0)
@click.option("--target-class", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--source-class", type=click.IntRange(min=0), default=None, help="label_flip: only this class."
)
@_attack_option
@_defense_option
@click.option("--polling", is_flag=True, help="Poll neighbours before dropping borderline updates.")
@click.option("--no-blacklist", is_flag=True, help="Keep verdicts local (no accusation gossip).")
@click.option(
    "--references",
    default="no_attack,no_defense",
    show_default=True,
    help="Comma-separated references to run beside the attack, of no_attack, no_defense and "
    "honest_only (the attackers absent: what a perfect defence gives); 'none': only the "
    "attack, for quick screens.",
)
@click.option(
    "--rule",
    type=click.Choice(["average", "gosgd", "none"]),
    default="average",
    show_default=True,
    help="Mixing rule (average: every peer each round).",
)
@click.option("--fanout", type=click.IntRange(min=1), default=None, help="Default: all peers.")
@click.option("--push-prob", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.1)
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True)
@click.option(
    "--lr", type=click.FloatRange(min=0.0, min_open=True), default=1e-3, show_default=True
)
@click.option("--rounds", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--steps-per-round", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def bench_poisoning(**options: Any) -> None:
    """Malicious nodes against a defence, with the no-attack and no-defence references."""
    from deepgossip.experiments.poisoning_cli import run_poisoning_cli

    try:
        run_poisoning_cli(**options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


@bench.command("poisoning-matrix")
@click.option(
    "--attacks",
    default="label_flip,sign_flip,targeted,backdoor",
    show_default=True,
    help="Comma-separated attacks (rows; 'none' is always run: the no-attack reference).",
)
@click.option(
    "--defenses",
    default="none,auror,median,trimmed_mean,clipping",
    show_default=True,
    help="Comma-separated defences, e.g. auror+clipping ('none' is always run).",
)
@click.option("--partitions", default="iid,dirichlet", show_default=True, help="Comma-separated.")
@click.option(
    "--dataset",
    type=click.Choice(["mnist", "fashion-mnist", "mnist-5k", "digits"]),
    default="mnist",
    show_default=True,
)
@click.option(
    "--model", type=click.Choice(["logreg", "mlp", "cnn"]), default="mlp", show_default=True
)
@click.option("--nodes", type=click.IntRange(min=2), default=10, show_default=True)
@click.option("--alpha", type=float, default=0.5, show_default=True, help="Dirichlet alpha.")
@click.option(
    "--malicious", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.3, show_default=True
)
@click.option("--boost", type=click.FloatRange(min=0.0, min_open=True), default=1.0)
@click.option("--target-class", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--source-class", type=click.IntRange(min=0), default=None, help="label_flip: only this class."
)
@_attack_option
@_defense_option
@click.option(
    "--rule", type=click.Choice(["average", "gosgd"]), default="average", show_default=True
)
@click.option("--fanout", type=click.IntRange(min=1), default=None, help="Default: all peers.")
@click.option("--push-prob", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.1)
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True)
@click.option(
    "--lr", type=click.FloatRange(min=0.0, min_open=True), default=1e-2, show_default=True
)
@click.option("--rounds", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--steps-per-round", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--eval-every", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
@click.option("--out", type=click.Path(file_okay=False), required=True)
def bench_poisoning_matrix(**options: Any) -> None:
    """Every attack against every defence, per partition: JSON, markdown table, heatmaps."""
    from deepgossip.experiments.poisoning_matrix import run_poisoning_matrix_cli

    try:
        run_poisoning_matrix_cli(**options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


@main.group()
def experiment() -> None:
    """Experiments described by scenario files (see scenarios/)."""


@experiment.command("run")
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True)
def experiment_run(scenario: str, out: str) -> None:
    """Run SCENARIO.toml; write metrics.jsonl, summary.json, accuracy.png, report.md."""
    from deepgossip.experiments.scenario import ScenarioError, run_scenario, summary_line

    try:
        result = run_scenario(scenario, out)
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{summary_line(result)}; wrote {out}/report.md")


@main.command()
@_session_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=7070, show_default=True)
def tracker(session_path: str, host: str, port: int, secret_file: str | None) -> None:
    """Run the bootstrap tracker: it only introduces peers."""
    from deepgossip.tracker.server import serve

    serve(*_load_session(session_path, secret_file), host, port)


def _load_session(session_path: str, secret_file: str | None) -> tuple[Any, str | None]:
    """The session file and its checked join secret, or a clear CLI error."""
    from deepgossip.session import Session, SessionError, read_secret

    try:
        session = Session.load(session_path)
        return session, session.check_secret(read_secret(secret_file))
    except SessionError as exc:
        raise click.ClickException(str(exc)) from exc


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT")
    return host, int(port)


@main.command()
@_session_options
@click.option(
    "--tracker", "trackers", multiple=True, help="Tracker URL (repeatable; default: the session's)."
)
@click.option("--seed", "seeds", multiple=True, help="HOST:PORT of a known peer (repeatable).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Gossip (UDP+TCP) host.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True)
@click.option("--api-host", default="127.0.0.1", show_default=True)
@click.option("--api-port", type=click.IntRange(0, 65535), default=0, show_default=True)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    required=True,
    help="Identity key, state and data of this node.",
)
@click.option("--log-level", default="WARNING", show_default=True)
@click.option("--print-events", is_flag=True, help="Print membership events as JSON lines.")
@click.option(
    "--inject-loss",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    help="Drop this fraction of incoming datagrams (fault injection for tests).",
)
@click.option(
    "--attack",
    default=None,
    metavar="NAME",
    help="EXPERIMENTS ONLY: make this node malicious (label_flip, backdoor, sign_flip, "
    "noise, scale; see deepgossip.attacks.behaviour).",
)
@click.option(
    "--attack-option",
    "attack_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="An AttackConfig field for --attack, e.g. noise_std=1.0 (repeatable).",
)
def node(
    session_path: str,
    trackers: tuple[str, ...],
    seeds: tuple[str, ...],
    host: str,
    port: int,
    api_host: str,
    api_port: int,
    data_dir: str,
    secret_file: str | None,
    log_level: str,
    print_events: bool,
    inject_loss: float,
    attack: str | None,
    attack_options: tuple[str, ...],
) -> None:
    """Run a node: membership and gossip on PORT, its API on API_PORT."""
    import asyncio
    import logging
    from pathlib import Path

    from deepgossip.node_process import NodeOptions, attack_config, run_node
    from deepgossip.session import SessionError
    from deepgossip.trust.settings import TrustSettings

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    session, secret = _load_session(session_path, secret_file)
    try:
        TrustSettings.from_session(session)  # [defense], [blacklist]: fail before any socket
    except SessionError as exc:
        raise click.ClickException(str(exc)) from exc
    malice = None
    if attack_options and attack is None:
        raise click.UsageError("--attack-option needs --attack")
    if attack is not None:
        if "learning" not in session.sections:
            raise click.UsageError(f"--attack {attack} needs a session with [learning]")
        try:
            malice = attack_config(attack, attack_options)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--attack") from exc
    options = NodeOptions(
        session=session,
        secret=secret,
        data_dir=Path(data_dir),
        host=host,
        port=port,
        api_host=api_host,
        api_port=api_port,
        seeds=tuple(_address(s) for s in seeds),
        trackers=trackers,
        print_events=print_events,
        inject_loss=inject_loss,
        attack=malice,
    )
    asyncio.run(run_node(options))


@main.command("new-session")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--id", "session_id", required=True, help="Session id.")
@click.option("--tracker", "trackers", multiple=True, help="Tracker URL (repeatable).")
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a fresh join secret here (mode 0600); the session stores its hash.",
)
def new_session(
    path: str, session_id: str, trackers: tuple[str, ...], secret_file: str | None
) -> None:
    """Write a new session file (and optionally a fresh join secret)."""
    import os

    from deepgossip.session import Session, SessionError
    from deepgossip.wire.session import new_join_secret, secret_fingerprint

    fingerprint = ""
    if secret_file:
        secret = new_join_secret()
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")
        fingerprint = secret_fingerprint(secret)
    try:
        Session(session_id, tuple(trackers), fingerprint).save(path)
    except SessionError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {path}" + (f" and secret {secret_file}" if secret_file else ""))


@main.command()
@click.option("--out", type=click.Path(file_okay=False), default="out/demo", show_default=True)
@click.option("--quick", is_flag=True, help="A smaller, faster run (for smoke tests).")
def demo(out: str, quick: bool) -> None:
    """The best demonstration that exists: see README."""
    from deepgossip.experiments.demo import run_demo

    run_demo(out, quick=quick)


if __name__ == "__main__":
    main()
