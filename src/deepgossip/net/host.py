"""A Host binds the sans-I/O protocol cores of one node to a runtime.

It is the only place where effects become I/O: it encodes outgoing messages with
the node's frame codec, decodes incoming frames (dropping and counting anything
malformed), routes each message to the core that owns its type prefix
(``"swim.ping"`` goes to the core registered as ``"swim"``), forwards events to
listeners, and keeps exactly one timer armed at the earliest deadline any core
asked for. The same Host runs over the simulator and over real sockets.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from deepgossip.net.runtime import Address, Effect, ProtocolCore, Runtime, Send, Timer

log = logging.getLogger(__name__)

EventListener = Callable[[Any], None]


class FrameCodecLike(Protocol):
    """What the host needs from the wire layer's frame codec."""

    def encode(self, msg: Any, *, reliable: bool = False) -> bytes:
        """Frame ``msg``; raise ``ValueError`` (FrameTooLarge) if it cannot be sent."""
        ...

    def decode_message(self, frame: bytes, reliable: bool = False) -> Any:
        """Return the message in ``frame``; raise ``ValueError`` (a WireError) if bad."""
        ...


@dataclass
class HostStats:
    """Traffic and drop counters of one node (what ``/v1/status`` reports)."""

    frames_out: int = 0
    bytes_out: int = 0
    frames_in: int = 0
    bytes_in: int = 0
    dropped: Counter[str] = field(default_factory=Counter)


class Host:
    """Runs protocol cores for the node at ``address`` on ``runtime``."""

    def __init__(self, runtime: Runtime, address: Address, codec: FrameCodecLike) -> None:
        self.runtime = runtime
        self.address = address
        self.codec = codec
        self.stats = HostStats()
        self._cores: dict[str, ProtocolCore] = {}
        self._listeners: list[EventListener] = []
        self._timer: Timer | None = None
        self._timer_at = math.inf
        self._running = False

    # -- composition -------------------------------------------------------

    def add_core(self, prefix: str, core: ProtocolCore) -> None:
        """Route messages whose type starts with ``prefix + "."`` to ``core``."""
        if prefix in self._cores:
            raise ValueError(f"a core is already registered for {prefix!r}")
        self._cores[prefix] = core
        if self._running:
            self._rearm()

    def subscribe(self, listener: EventListener) -> None:
        """Call ``listener(event)`` for every non-Send effect any core returns."""
        self._listeners.append(listener)

    def core(self, prefix: str) -> ProtocolCore:
        return self._cores[prefix]

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._rearm()

    def stop(self) -> None:
        """Stop acting: cancel the timer and ignore frames that still arrive."""
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = math.inf

    @property
    def running(self) -> bool:
        return self._running

    # -- inbound -----------------------------------------------------------

    def receive(self, src: Address, frame: bytes, reliable: bool = False) -> None:
        """Entry point for the runtime: one frame arrived from ``src``."""
        if not self._running:
            return
        self.stats.frames_in += 1
        self.stats.bytes_in += len(frame)
        try:
            msg = self.codec.decode_message(frame, reliable)
        except ValueError as exc:  # WireError and MalformedMessage are ValueErrors
            self._drop(type(exc).__name__, src, exc)
            return
        prefix, _, _ = msg.TYPE.partition(".")
        core = self._cores.get(prefix)
        if core is None:
            self._drop("no_core", src, prefix)
            return
        self.execute(core.handle(src, msg, self.runtime.now()))

    def deliver(self, prefix: str, src: Address, msg: Any) -> None:
        """Hand an already decoded message to a core (used by stream servers)."""
        self.execute(self._cores[prefix].handle(src, msg, self.runtime.now()))

    def _drop(self, reason: str, src: Address, detail: object) -> None:
        self.stats.dropped[reason] += 1
        log.debug("%s: dropped frame from %s: %s (%s)", self.address, src, reason, detail)

    # -- effects -----------------------------------------------------------

    def execute(self, effects: Iterable[Effect]) -> None:
        """Carry out effects returned by a core, then re-arm the timer."""
        if not self._running:
            return
        for effect in effects:
            if type(effect) is Send:
                try:
                    frame = self.codec.encode(effect.message, reliable=effect.reliable)
                except ValueError as exc:  # a core asked for an unsendable frame
                    self.stats.dropped["unsendable"] += 1
                    log.warning(
                        "%s: cannot send %s: %s", self.address, type(effect.message).__name__, exc
                    )
                    continue
                self.stats.frames_out += 1
                self.stats.bytes_out += len(frame)
                self.runtime.send(self.address, effect.to, frame, effect.reliable)
            else:
                for listener in self._listeners:
                    listener(effect)
        self._rearm()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        if not self._running:
            return
        now = self.runtime.now()
        effects: list[Effect] = []
        for core in self._cores.values():
            if core.next_deadline() <= now:
                effects.extend(core.tick(now))
        self.execute(effects)

    def _rearm(self) -> None:
        if not self._running:
            return
        deadline = min((c.next_deadline() for c in self._cores.values()), default=math.inf)
        if deadline >= self._timer_at or deadline == math.inf:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.runtime.call_at(deadline, self._on_timer)
