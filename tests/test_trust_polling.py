"""Neighbour polls across threads (deepgossip.trust.polling): the defence screens in
a worker thread, the blacklist core runs on a real asyncio loop, and neither
waits for the other. Synchronisation is by futures and events, never by sleeps."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

from deepgossip.learn.mixing import Averaging, MergeReport, MixingConfig
from deepgossip.learn.sharing import SparseUpdate
from deepgossip.net.runtime import Address, Effect, Send
from deepgossip.trust.blacklist import BlacklistConfig, BlacklistCore, PollReply, PollRequest
from deepgossip.trust.defense import Defense, DefenseConfig
from deepgossip.trust.polling import LoopPoller
from deepgossip.wire.identity import Identity

SIZE = 400
WAIT = 30.0
"""Seconds an event may take before the test fails instead of hanging (a bound,
never a synchronisation: the events are set as soon as the work is done)."""


def peer_id(i: int) -> bytes:
    return bytes([i]) * 16


def crowd(rng: np.random.Generator, rnd: int, n: int = 8) -> list[SparseUpdate]:
    """``n`` peers around 0; the first shifted on every coordinate (AUROR flags it)."""
    out = []
    for i in range(n):
        v = rng.normal(0, 0.01, SIZE) + (0.2 if i == 0 else 0.0)
        values = v.astype(np.float32)
        out.append(SparseUpdate(values=values, size=SIZE, origin=peer_id(i + 1), round=rnd))
    return out


@dataclass
class Harness:
    """A defence with a :class:`LoopPoller` over a real core, on the running loop.

    ``execute`` stands in for the node's host: it records the sends and hands
    every other effect (the ``PollDecided`` events) to the poller's listener,
    as ``Host.execute`` does with its subscribers.
    """

    loop: asyncio.AbstractEventLoop
    neighbours: list[Identity]
    core: BlacklistCore = field(init=False)
    poller: LoopPoller = field(init=False)
    defense: Defense = field(init=False)
    rule: Averaging = field(init=False)
    requests: list[tuple[Address, PollRequest]] = field(default_factory=list)
    sent: asyncio.Event = field(default_factory=asyncio.Event)
    poll_threads: set[int] = field(default_factory=set)
    decided_threads: set[int] = field(default_factory=set)
    decided: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        peers = [(n.node_id, ("10.0.0.9", 7000 + i)) for i, n in enumerate(self.neighbours)]
        self.core = BlacklistCore(
            signer=Identity.from_private_bytes(bytes(32)),
            publish=lambda body, kind, now: [],
            live_peers=lambda: peers,
            n_estimate=lambda: len(peers) + 1,
            rng=random.Random(0),
            # Every suspicion is borderline: the test is about the threads.
            config=BlacklistConfig(borderline_margin=1.0),
            now=0.0,
        )
        self.poller = LoopPoller(self.loop, self.core, self.execute, lambda: 0.0)
        self.defense = Defense(
            DefenseConfig(auror=True, polling=True), size=SIZE, seed=1, poller=self
        )
        self.poller.on_decided = self.on_decided
        self.rule = Averaging(MixingConfig(rule="average"), size=SIZE, defense=self.defense)

    # The Poller protocol, recording which thread asks (the defence's poller is
    # the harness so that it sees every call; it only forwards).
    def is_borderline(self, suspicion: float) -> bool:
        return self.poller.is_borderline(suspicion)

    def poll(self, peer: bytes) -> int | None:
        self.poll_threads.add(threading.get_ident())
        return self.poller.poll(peer)

    def on_decided(self, poll_id: int, discard: bool) -> None:
        self.decided_threads.add(threading.get_ident())
        self.defense.poll_decided(poll_id, discard)
        self.decided.set()

    def execute(self, effects: Iterable[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                assert isinstance(effect.message, PollRequest)
                self.requests.append((effect.to, effect.message))
                self.sent.set()
            else:
                self.poller.on_event(effect)

    def merge(self, updates: list[SparseUpdate], now: float) -> tuple[MergeReport, torch.Tensor]:
        """Offer ``updates`` and merge (in the worker thread, like the learner)."""
        local = torch.zeros(SIZE)
        for u in updates:
            self.rule.offer(u, now)
        return self.rule.merge(local, now), local


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, WAIT))


def test_a_poll_runs_on_the_loop_and_its_update_returns_to_the_worker() -> None:
    neighbours = [Identity.from_private_bytes(bytes([i]) * 32) for i in range(1, 4)]

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        h = Harness(loop, neighbours)
        rng = np.random.default_rng(0)
        with ThreadPoolExecutor(1, thread_name_prefix="learner") as worker:
            worker_thread = await loop.run_in_executor(worker, threading.get_ident)
            report, _ = await loop.run_in_executor(worker, h.merge, crowd(rng, 1), 0.0)
            # The worker held the flagged update and returned without waiting.
            assert report.held == 1 and report.merged == 7
            assert h.poll_threads == {worker_thread}
            await h.sent.wait()  # the loop ran the core's poll: requests went out
            assert len(h.requests) == 3 and h.core.open_polls == 1
            assert h.defense.held == 1 and h.defense.decided == 0
            # The neighbours say keep; the last reply ends the poll (on the loop).
            now = 0.1
            for address, request in h.requests:
                assert request.accused == peer_id(1)
                who = neighbours[address[1] - 7000]  # the address Harness gave it
                reply = PollReply(
                    who.public_key_bytes, request.poll_id, request.accused, False, 0.1
                )
                h.execute(h.core.handle(address, reply, now))
            assert h.decided.is_set() and h.decided_threads == {threading.get_ident()}
            assert h.defense.held == 0 and h.defense.decided == 1
            assert h.poller.open_polls == 0
            # Back in the worker: the next merge returns the update, nothing new offered.
            report, local = await loop.run_in_executor(worker, h.merge, [], 1.0)
            assert report.merged == 1 and float(local.mean()) > 0.05
            assert h.defense.decided == 0 and h.defense.held_weight == 0

    run(scenario())


def test_a_decision_that_beats_the_workers_registration_is_kept() -> None:
    """No neighbour to ask: the loop decides at once. The worker is made to wait
    (on an event the decision sets) between starting the poll and registering the
    held update, so the decision is guaranteed to arrive first."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        h = Harness(loop, neighbours=[])
        forward = h.poll

        def poll_then_wait(peer: bytes) -> int | None:
            poll_id = forward(peer)
            assert h.decided.wait(WAIT), "the loop never decided"
            return poll_id

        h.poll = poll_then_wait  # type: ignore[method-assign]
        rng = np.random.default_rng(0)
        with ThreadPoolExecutor(1) as worker:
            report, _ = await loop.run_in_executor(worker, h.merge, crowd(rng, 1), 0.0)
            assert report.held == 1 and report.merged == 7
            assert h.requests == [] and h.defense.held == 0 and h.defense.decided == 1
            report, local = await loop.run_in_executor(worker, h.merge, [], 1.0)
            assert report.merged == 1 and float(local.mean()) > 0.05  # no vote: kept

    run(scenario())


def test_a_closed_loop_polls_nothing_and_the_update_is_dropped() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    h = Harness(loop, neighbours=[])
    report, _ = h.merge(crowd(np.random.default_rng(0), 1), 0.0)
    assert report.held == 0 and report.rejected == 1 and report.merged == 7
    assert h.defense.stats["rejected_auror_flagged"] == 1


class _BrokenCore:
    """A core whose polls raise: the poller must decide them anyway."""

    def is_borderline(self, suspicion: float) -> bool:
        return True

    def poll(self, peer_id: bytes, now: float) -> tuple[int, list[Effect]]:
        raise RuntimeError("broken")

    def confirm(self, peer_id: bytes, now: float) -> tuple[int, list[Effect]]:
        raise RuntimeError("broken")


@pytest.mark.parametrize(("start", "discard"), [("poll", True), ("confirm", False)])
def test_a_poll_that_fails_on_the_loop_is_decided_at_once(
    start: str, discard: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """An update poll that fails drops its update (what happens without polls);
    a failed confirmation convicts nobody."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        decided: asyncio.Future[tuple[int, bool]] = loop.create_future()
        poller = LoopPoller(loop, _BrokenCore(), lambda effects: None, lambda: 0.0)  # type: ignore[arg-type]
        poller.on_decided = lambda poll_id, discard: decided.set_result((poll_id, discard))
        with ThreadPoolExecutor(1) as worker:
            poll_id = await loop.run_in_executor(worker, getattr(poller, start), peer_id(1))
        assert await decided == (poll_id, discard)

    run(scenario())
    assert "poll about" in caplog.text


def test_a_confirmation_asks_2q_minus_1_neighbours_from_the_loop() -> None:
    neighbours = [Identity.from_private_bytes(bytes([i]) * 32) for i in range(1, 6)]

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        h = Harness(loop, neighbours)
        with ThreadPoolExecutor(1) as worker:
            await loop.run_in_executor(worker, h.poller.confirm, peer_id(1))
        await asyncio.wait_for(h.sent.wait(), WAIT)
        assert len(h.requests) == 2 * h.core.quorum() - 1
        assert {r.accused for _, r in h.requests} == {peer_id(1)}

    run(scenario())
