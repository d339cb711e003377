"""Run one node on real sockets: ``deepgossip node ...``.

Wires a :class:`~deepgossip.node.Node` to an asyncio runtime (UDP + TCP on the
gossip port), executes the tracker client's HTTP calls, serves the node API,
persists identity and incarnation in the data directory, and stops cleanly on
SIGINT / SIGTERM: it announces ``left``, keeps answering for a moment so the
news spreads, then closes every socket.

With a ``[defense]`` table in the session (:mod:`deepgossip.trust.settings`) the
node screens every merge through a :class:`~deepgossip.trust.defense.Defense`
and, unless the defence keeps its verdicts local, runs the gossiped blacklist
(``Node(blacklist=...)``): its detector's convictions become signed accusations,
and blacklisted peers are dropped from mixing and from membership alike.

``--attack NAME`` (experiments and tests only, never a default) makes the node
malicious with :mod:`deepgossip.attacks.behaviour`: data attacks poison the
training samples its application feeds (:attr:`Learner.data_hook`), update
attacks what it publishes (``Collaboration.publish_transform``). Like the
simulated attackers of :mod:`deepgossip.experiments.poisoning_sim`, such a node
runs no defence and accuses nobody.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from deepgossip.api.auth import APP_FILE, TOKEN_FILE, ApiAuth, write_token
from deepgossip.api.server import build_app
from deepgossip.membership.events import (
    MemberAlive,
    MemberDead,
    MemberExcluded,
    MemberJoined,
    MemberLeft,
    MemberReadmitted,
    MemberSuspected,
)
from deepgossip.net.aio import AsyncioRuntime
from deepgossip.net.runtime import Address, Receiver
from deepgossip.node import Node
from deepgossip.session import Session, SessionError
from deepgossip.tracker.client import HttpCall
from deepgossip.trust.blacklist import PeerBlacklisted, PeerUnblacklisted
from deepgossip.trust.settings import TrustSettings
from deepgossip.trust.verdict_store import VERDICTS_FILE, load_verdicts, save_verdicts
from deepgossip.wire.identity import Identity

if TYPE_CHECKING:
    from deepgossip.attacks.behaviour import AttackConfig
    from deepgossip.learn.collaboration import Collaboration
    from deepgossip.learn.service import LearnerService
    from deepgossip.trust.defense import Conviction, Defense
    from deepgossip.trust.polling import LoopPoller

log = logging.getLogger(__name__)

_MEMBER_EVENTS = (MemberJoined, MemberSuspected, MemberDead, MemberAlive, MemberLeft)
_EXCLUSION_EVENTS = (MemberExcluded, MemberReadmitted)
STATE_FILE = "node-state.json"
HTTP_TIMEOUT = 5.0
"""Seconds for one tracker call; the client backs off and retries after."""

PROCESS_ATTACKS: tuple[str, ...] = ("label_flip", "backdoor", "sign_flip", "noise", "scale")
"""Attacks a node process can run: they need only its own data and its own
update. The others need what a process does not have: other peers' updates
(``alie``, ``ipm``, ``free_ride``), the examples to misclassify and a training
loop of their own (``targeted``), or hooks in the trust and membership layers
(``slander``, ``swim_lies``); the simulator runs them all."""


@dataclass(frozen=True)
class NodeOptions:
    session: Session
    secret: str | None
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    api_host: str = "127.0.0.1"
    api_port: int = 0
    seeds: tuple[Address, ...] = ()
    trackers: tuple[str, ...] = ()
    print_events: bool = False
    """Print membership events as JSON lines with wall-clock times (benchmarks)."""
    inject_loss: float = 0.0
    """Drop this fraction of incoming datagrams: fault injection for benchmarks and
    tests, since loopback itself loses nothing. Stream frames are never dropped."""
    attack: AttackConfig | None = None
    """Behave maliciously (experiments only; see :func:`attack_config`)."""


def attack_config(name: str, options: Sequence[str] = ()) -> AttackConfig:
    """The :class:`AttackConfig` of ``--attack NAME --attack-option KEY=VALUE ...``.

    Values are read as TOML values (``noise_std=1.0``, ``permutation=[1, 0]``),
    or as strings (``noise_mode=replace``). Raises ``ValueError`` for an attack a
    process cannot run (the message lists those it can) or a bad option.
    """
    from deepgossip.attacks.behaviour import ATTACK_NAMES, AttackConfig, parse_options

    if name not in PROCESS_ATTACKS:
        known = "" if name in ATTACK_NAMES else " (unknown attack)"
        raise ValueError(
            f"attack {name!r} cannot run in a node process{known}; "
            f"supported: {', '.join(PROCESS_ATTACKS)}"
        )
    values: dict[str, Any] = {"name": name, **parse_options(options)}
    try:
        return AttackConfig.from_section(values)
    except TypeError as exc:  # a value of the wrong kind reached a comparison
        raise ValueError(f"bad attack option: {exc}") from exc


def next_incarnation(data_dir: Path) -> int:
    """Persisted incarnation + 1: a restarted node outranks anything it said before.

    SWIM would also learn its old incarnation from peers and refute, but starting
    above it avoids a round of suspicion right after a restart.
    """
    path = data_dir / STATE_FILE
    try:
        previous = int(json.loads(path.read_text()).get("incarnation", -1))
    except (OSError, ValueError, AttributeError):
        previous = -1
    incarnation = previous + 1
    write_state(data_dir, incarnation)
    return incarnation


def write_state(data_dir: Path, incarnation: int) -> None:
    path = data_dir / STATE_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"incarnation": incarnation}))
    os.replace(tmp, path)


def _lossy(receive: Receiver, loss: float) -> Receiver:
    if loss <= 0.0:
        return receive
    rng = random.Random()

    def maybe_receive(src: Address, frame: bytes | bytearray, reliable: bool) -> None:
        if reliable or rng.random() >= loss:
            receive(src, frame, reliable)

    return maybe_receive


async def _execute_http(node: Node, http: aiohttp.ClientSession, call: HttpCall) -> None:
    ok, body = False, None
    try:
        async with http.request(call.method, call.url, json=call.json) as response:
            body = await response.json(content_type=None)
            ok = response.status == 200
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        log.info("tracker call %s failed: %s", call.url, exc)
    node.tracker_result(call, ok, body)


async def _start_learning(
    node: Node, data_dir: Path, trust: TrustSettings, attack: AttackConfig | None = None
) -> LearnerService | None:
    """With a ``[learning]`` section: open the learner (replaying the sample log,
    restoring the checkpoint) and start its rounds. torch is imported only here,
    so nodes that do not learn stay light."""
    if "learning" not in node.session.sections:
        return None
    from deepgossip.learn.learner import LearningConfig
    from deepgossip.learn.service import LearnerService

    section = node.session.section("learning")
    service = await LearnerService.start(LearningConfig.from_section(section), data_dir)
    node.learner = service.learner
    collaboration = _collaborate(node, service, section, trust)
    if attack is not None:
        _attack(service, collaboration, attack)
    return service


def _attack(service: LearnerService, collaboration: Collaboration, config: AttackConfig) -> None:
    """Install ``config``'s hooks: poison the training samples the application
    feeds and the update the node publishes (both run in the learner's thread,
    the only user of the attack's random generators)."""
    from deepgossip.attacks.behaviour import make_attack

    learner = service.learner
    attack = make_attack(config, num_classes=learner.config.num_classes)
    if attack.poisons_data:
        learner.data_hook = attack.poison_data
    collaboration.publish_transform = lambda honest, reference: attack.poison_update(
        honest, reference
    )


def _defense(node: Node, service: LearnerService, trust: TrustSettings) -> Defense | None:
    """The session's defence for this node, wired to its blacklist (None: no defence).

    The defence runs in the learner's thread (merges happen there), so its
    verdicts hop to the event loop before they touch the node; reads from the
    event loop (the blacklist asking the detector's opinion) are single
    dictionary lookups. Polls (``polling = true``) hop the same way
    (:class:`~deepgossip.trust.polling.LoopPoller`): the learner holds the
    update and goes on; the decision comes back on the loop, and the held
    update returns at the next merge.
    """
    if trust.defense is None:
        return None
    import secrets

    from deepgossip.trust.defense import Defense

    loop = asyncio.get_running_loop()
    name = trust.defense.name

    def convicted(conviction: Conviction) -> None:  # event loop
        log.warning(
            "defence %s convicted peer %s (suspicion %.2f)",
            name,
            conviction.peer_id.hex(),
            conviction.suspicion,
        )
        if node.blacklist is not None:
            node.accuse(conviction.peer_id, conviction.suspicion, conviction.evidence)

    poller: LoopPoller | None = None
    # The poller also confirms the memory panel's convictions (Poller.confirm).
    memory = trust.defense.auror and trust.defense.auror_memory > 0
    if (trust.defense.polling or memory) and node.blacklist is not None:
        from deepgossip.trust.polling import LoopPoller

        poller = LoopPoller(loop, node.blacklist, node.host.execute, node.host.runtime.now)
        node.host.subscribe(poller.on_event)

    learner = service.learner
    with learner.locked() as model:
        groups = [p.numel() for p in model.parameters()]
    defense = Defense(
        trust.defense,
        size=sum(groups),
        groups=groups,
        # Private randomness: a coordinate subset attackers can predict is one
        # they can avoid (AUROR judges a sample of the coordinates).
        seed=secrets.randbits(63),
        initial=learner.initial_parameters(),
        is_blacklisted=node.is_blacklisted,
        on_verdict=lambda c: loop.call_soon_threadsafe(convicted, c),
        on_evidence=lambda: loop.call_soon_threadsafe(node.reconsider_accusations),
        poller=poller,
    )
    if poller is not None:
        poller.on_decided = defense.poll_decided  # before any screen can poll
    # ``defense.progress`` stays 0: a node has no planned number of rounds, so
    # BALANCE's acceptance radius does not shrink over training here.
    node.own_suspicion = defense.own_suspicion
    node.own_evidence = defense.evidence_of
    return defense


def _collaborate(
    node: Node, service: LearnerService, section: dict[str, Any], trust: TrustSettings
) -> Collaboration:
    """Share the learner's updates with peers and merge theirs (docs/learning.md)."""
    from deepgossip.learn.collaboration import Collaboration, CollaborationConfig
    from deepgossip.learn.exchange import PullRequested, UpdateExchange, UpdateReceived

    collaboration = Collaboration(
        service.learner,
        CollaborationConfig.from_section(section),
        node.node_id,
        peers_available=lambda: bool(node.live_peers()),
        defense=_defense(node, service, trust),
    )
    node.defense_summary = collaboration.defense_summary
    exchange = UpdateExchange(
        node.identity.public_key_bytes,
        collaboration.size,
        lambda: [m.address for m in node.live_peers()],
        random.Random(),
    )
    node.host.add_core("learn", exchange)
    stats = node.update_stats
    fanout = collaboration.config.mixing.fanout

    def on_event(event: Any) -> None:
        if isinstance(event, UpdateReceived):
            stats.received += 1
            if not collaboration.offer(event.update, node.host.runtime.now()):
                stats.rejected = collaboration.rejected + sum(exchange.rejected.values())
        elif isinstance(event, PullRequested):
            update = collaboration.reply_to_pull()
            if update is not None:
                sends = exchange.send_to([event.src], update)
                stats.sent += len(sends)
                node.host.execute(sends)

    def after_round(steps: int, now: float) -> Any:
        update = collaboration.after_round(steps, now)
        stats.merged = collaboration.merged
        return _RoundOutcome(update)

    def on_result(outcome: _RoundOutcome) -> None:
        if outcome.update is not None:
            sends = exchange.push(outcome.update, fanout)
            stats.sent += len(sends)
            node.host.execute(sends)
        if collaboration.wants_pull and collaboration.connected:
            collaboration.wants_pull = False
            node.host.execute(exchange.request_pull(PULL_PEERS))

    node.host.subscribe(on_event)
    service.after_round = after_round
    service.on_result = on_result
    return collaboration


@dataclass(frozen=True, slots=True)
class _RoundOutcome:
    """What a training round hands to the event loop (always non-None, so the loop
    also gets to send pull requests after rounds that push nothing)."""

    update: Any


PULL_PEERS = 3
"""Peers a catching-up node asks for their models: enough that one slow or lost
answer does not stall it, few enough not to load the network."""


def _warn_malicious(attack: AttackConfig, trust: TrustSettings) -> None:
    """Say loudly, on stderr and in the log, that this node is an attacker."""
    from dataclasses import asdict

    from deepgossip.attacks.behaviour import AttackConfig

    defaults = asdict(AttackConfig(name=attack.name))
    changed = [f"{k}={v!r}" for k, v in asdict(attack).items() if defaults.get(k) != v]
    banner = (
        f"*** WARNING: THIS NODE IS MALICIOUS: attack {attack.name!r} "
        f"({', '.join(changed) or 'default options'}); it poisons what it learns and "
        "publishes. deepgossip node --attack is for experiments and tests only ***"
    )
    log.warning(banner)
    if not log.isEnabledFor(logging.WARNING):  # --log-level ERROR must not hide it
        print(banner, file=sys.stderr, flush=True)
    if trust.defense is not None:
        log.warning("the session's defence %r is not run by this attacker", trust.defense.name)


async def run_node(options: NodeOptions, ready: asyncio.Event | None = None) -> None:
    options.data_dir.mkdir(parents=True, exist_ok=True)
    identity = Identity.load_or_create(options.data_dir)
    incarnation = next_incarnation(options.data_dir)
    session = options.session
    if options.trackers:
        session = Session(
            session.session_id, options.trackers, session.secret_sha256, session.sections
        )
    trust = TrustSettings.from_session(session)  # before any socket: fail fast
    attack = options.attack
    if attack is not None:
        if "learning" not in session.sections:
            raise SessionError(f"--attack {attack.name} needs a [learning] session: no updates")
        _warn_malicious(attack, trust)
        trust = TrustSettings()  # attackers run no defence and accuse nobody
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async with (
        AsyncioRuntime() as runtime,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT)) as http,
    ):
        address = await runtime.attach((options.host, options.port))
        node = Node(
            runtime,
            address,
            identity,
            session,
            options.secret,
            rng=random.Random(),
            incarnation=incarnation,
            api_address=(options.api_host, options.api_port) if options.api_port else None,
            blacklist=trust.blacklist,
        )
        tasks: set[asyncio.Task[None]] = set()
        verdicts_path = options.data_dir / VERDICTS_FILE
        restoring = False
        learning = await _start_learning(node, options.data_dir, trust, attack)

        def on_event(event: Any) -> None:
            if options.print_events and isinstance(event, _MEMBER_EVENTS + _EXCLUSION_EVENTS):
                excluded = isinstance(event, _EXCLUSION_EVENTS)
                member = event.node_id if excluded else event.member.node_id
                print(
                    json.dumps(
                        {"event": type(event).__name__, "t": time.time(), "member": member.hex()}
                    ),
                    flush=True,
                )
            if isinstance(event, PeerBlacklisted):
                log.warning("blacklisted peer %s (%s)", event.peer_id.hex(), event.by)
                if event.by == "local" and node.blacklist is not None and not restoring:
                    try:  # a conviction survives a restart (trust/verdict_store.py)
                        save_verdicts(verdicts_path, node.blacklist.local_verdicts())
                    except OSError as exc:
                        log.error("could not save verdicts to %s: %s", verdicts_path, exc)
            elif isinstance(event, PeerUnblacklisted):
                log.warning("peer %s no longer blacklisted (%s)", event.peer_id.hex(), event.why)
            if isinstance(event, HttpCall):
                task = loop.create_task(_execute_http(node, http, event))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        node.host.subscribe(on_event)
        if node.blacklist is not None:
            # No save while restoring: a crash half-way must not shorten the file.
            restoring = True
            restored = node.restore_verdicts(load_verdicts(verdicts_path))
            restoring = False
            if restored:
                log.warning("restored %d local verdicts from %s", restored, verdicts_path)
        runtime.set_receiver(address, _lossy(node.host.receive, options.inject_loss))
        auth = ApiAuth(write_token(options.data_dir), options.data_dir / APP_FILE)
        api_runner = web.AppRunner(build_app(node, auth=auth), access_log=None)
        await api_runner.setup()
        site = web.TCPSite(api_runner, options.api_host, options.api_port)
        await site.start()
        node.start(options.seeds)
        api_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(
            json.dumps(
                {
                    "event": "started",
                    "id": node.node_id.hex(),
                    "address": list(address),
                    "api": [options.api_host, api_port],
                    "incarnation": incarnation,
                    "api_token_file": str(options.data_dir / TOKEN_FILE),
                    "learning": learning is not None,
                    "attack": attack.name if attack is not None else None,
                }
            ),
            flush=True,
        )
        if ready is not None:
            ready.set()
        try:
            await stop.wait()
        finally:
            node.leave()
            await asyncio.sleep(node.settings.swim.probe_interval)
            node.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await api_runner.cleanup()
            if learning is not None:
                await learning.stop()  # after the API: no sample arrives mid-shutdown
    print(json.dumps({"event": "stopped", "id": identity.node_id.hex()}), flush=True)
