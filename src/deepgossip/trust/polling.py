"""Neighbour polls for a defence that screens outside the event loop.

In a node process the defence (:class:`~deepgossip.trust.defense.Defense`) runs
in the learner's worker thread, inside the merge, while the blacklist that
holds polls (:class:`~deepgossip.trust.blacklist.BlacklistCore`) lives on the
asyncio event loop with the rest of the node's protocol cores. Calling the core
from the worker would race the loop; waiting there for the loop would stall
training behind network round trips (and the loop takes the collaboration's
lock to hand over received updates, so a wait in the other direction could
deadlock). :class:`LoopPoller` crosses the gap without either side ever
waiting for the other:

* :meth:`LoopPoller.poll` (worker thread) allocates the poll id itself, hops the
  real :meth:`BlacklistCore.poll` to the loop with ``call_soon_threadsafe`` and
  returns at once; the defence holds the update under that id;
* on the loop, the core's poll gets its own id; the poller maps it back to the
  one it handed out, and :meth:`LoopPoller.on_event` (subscribed to the node's
  host) turns the :class:`~deepgossip.trust.blacklist.PollDecided` event into
  ``on_decided(poll_id, discard)`` (:meth:`Defense.poll_decided`, which only
  takes the defence's own small lock);
* the held update comes back at the learner's next screen (the collaboration
  merges when :attr:`Defense.decided` is positive, even with nothing new).

Local ids rather than the core's: the core draws its ids on the loop, and the
worker cannot learn one without waiting. A decision can still beat the
defence's registration of the held update (the loop runs the hop and, with no
neighbour to ask, decides before the worker resumes); the defence handles
that order (:meth:`Defense.poll_decided` before registration is remembered).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable
from typing import Any

from deepgossip.net.runtime import Effect
from deepgossip.trust.blacklist import BlacklistCore, PollDecided

__all__ = ["LoopPoller"]

log = logging.getLogger(__name__)


class LoopPoller:
    """A thread-safe :class:`~deepgossip.trust.defense.Poller` over a blacklist
    core that lives on an asyncio event loop.

    Args:
        loop: the event loop the core (and its host) runs on.
        core: the node's blacklist (``Node.blacklist``); touched on ``loop`` only.
        execute: carries out the core's effects on the loop (``Node.host.execute``).
        now: the core's clock (``Node.host.runtime.now``).

    Subscribe :meth:`on_event` to the host that executes the core's effects and
    set :attr:`on_decided` before the first poll.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        core: BlacklistCore,
        execute: Callable[[Iterable[Effect]], None],
        now: Callable[[], float],
    ) -> None:
        self._loop = loop
        self._core = core
        self._execute = execute
        self._now = now
        # Local ids: next() on itertools.count is atomic under the GIL, so even
        # two screening threads would never share one.
        self._ids = itertools.count(1)
        self._started: dict[int, int] = {}  # core poll id -> local id (loop only)
        self.on_decided: Callable[[int, bool], None] | None = None
        """Receives ``(local poll id, discard)`` on the loop: ``Defense.poll_decided``."""

    def is_borderline(self, suspicion: float) -> bool:
        """The core's band (any thread: it reads only the immutable config)."""
        return self._core.is_borderline(suspicion)

    def poll(self, peer_id: bytes) -> int | None:
        """Schedule a poll about ``peer_id`` on the loop; its local id (any thread).

        Never blocks. None when the loop is closed (the node is shutting down):
        the defence then drops the update as it would without polling.
        """
        return self._schedule(bytes(peer_id), confirm=False)

    def confirm(self, peer_id: bytes) -> int | None:
        """Schedule a confirmation of a conviction (:meth:`BlacklistCore.confirm`)
        on the loop; its local id (any thread), None when the loop is closed."""
        return self._schedule(bytes(peer_id), confirm=True)

    def _schedule(self, peer_id: bytes, *, confirm: bool) -> int | None:
        poll_id = next(self._ids)
        try:
            self._loop.call_soon_threadsafe(self._start, poll_id, peer_id, confirm)
        except RuntimeError:  # the loop is closed
            return None
        return poll_id

    def _start(self, poll_id: int, peer_id: bytes, confirm: bool) -> None:
        """Run the core's poll (loop). A failure decides at once rather than
        leaving the update held for ever: discard for an update poll (what the
        defence does to a flagged update without a poll), keep (no conviction)
        for a confirmation."""
        try:
            start = self._core.confirm if confirm else self._core.poll
            core_id, effects = start(peer_id, self._now())
        except Exception:
            log.exception("poll about %s failed", peer_id.hex())
            self._decide(poll_id, discard=not confirm)
            return
        # Map before executing: a poll nobody can answer is decided in ``effects``.
        self._started[core_id] = poll_id
        self._execute(effects)

    def on_event(self, event: Any) -> None:
        """Host listener (loop): deliver the decisions of the polls started here."""
        if isinstance(event, PollDecided):
            poll_id = self._started.pop(event.poll_id, None)
            if poll_id is not None:
                self._decide(poll_id, event.discard)

    def _decide(self, poll_id: int, discard: bool) -> None:
        if self.on_decided is None:
            log.warning("poll %d decided with nobody to tell", poll_id)
            return
        self.on_decided(poll_id, discard)

    @property
    def open_polls(self) -> int:
        """Polls started on the loop and not yet decided (read it on the loop)."""
        return len(self._started)
