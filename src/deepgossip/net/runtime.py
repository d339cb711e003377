"""The contract between sans-I/O protocol cores and the runtimes that drive them.

A *protocol core* (SWIM, rumour mongering, the tracker client, ...) is a plain
state machine. It never touches sockets, threads or clocks; it is driven with

* ``handle(src, msg, now)`` when a message for it arrives, and
* ``tick(now)`` when the time it asked for (``next_deadline()``) has come,

and answers each call with a list of *effects*: :class:`Send` to put a message on
the network, or any other object, an *event*, that the host hands to whoever
listens (``MemberDead``, ``ItemDelivered``, ...). Because time arrives as an
argument, the same core runs under virtual time in the simulator and under the
event loop's clock on real sockets, and every test is deterministic.

A *runtime* moves bytes between addresses and keeps time: :class:`Runtime` is
what the :class:`~deepgossip.net.host.Host` (which owns the cores of one node)
needs from it. ``deepgossip.net.sim`` implements it with a discrete-event
simulator; ``deepgossip.net.aio`` with asyncio UDP and TCP sockets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Address = tuple[str, int]
"""A transport address: (host, port). Node identity is separate (see wire.identity)."""


@dataclass(frozen=True, slots=True)
class Send:
    """Put ``message`` (a registered wire message) on the network to ``to``.

    ``reliable`` selects the stream transport (TCP in the real runtime): use it for
    anything that may exceed a datagram (update bodies, push-pull state sync).
    Everything else goes as a datagram, which may be lost.
    """

    to: Address
    message: Any
    reliable: bool = False


Effect = Any
"""A :class:`Send`, or an event object for the host's listeners."""


class ProtocolCore(Protocol):
    """A sans-I/O protocol state machine."""

    def handle(self, src: Address, msg: Any, now: float) -> Sequence[Effect]:
        """React to ``msg`` received from ``src`` at time ``now``."""
        ...

    def tick(self, now: float) -> Sequence[Effect]:
        """Do whatever is due at ``now`` (probes, timeouts, gossip rounds)."""
        ...

    def next_deadline(self) -> float:
        """Absolute time at which ``tick`` must next be called (``inf``: never)."""
        ...


class Timer(Protocol):
    def cancel(self) -> None: ...


Receiver = Callable[[Address, bytes | bytearray, bool], None]
"""Called by a runtime with (source address, frame bytes, reliable?)."""


class Runtime(Protocol):
    """Moves frames between addresses and keeps time for the hosts it serves."""

    def now(self) -> float:
        """Current time in seconds (virtual in the simulator, monotonic for real)."""
        ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` at time ``when`` (or as soon as possible after)."""
        ...

    def send(self, src: Address, dst: Address, frame: bytes, reliable: bool) -> None:
        """Deliver ``frame`` from ``src`` to ``dst``; datagrams may be lost."""
        ...
