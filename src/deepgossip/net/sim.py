"""Discrete-event simulated network: virtual time, latency, loss, partitions.

One :class:`SimNetwork` is a :class:`~deepgossip.net.runtime.Runtime` shared by
every simulated node. Time is virtual and advances only when the next event is
taken from the heap, so 1000 nodes run for minutes of protocol time in seconds of
wall time, and a run is a pure function of its seed: all randomness (latency,
loss, the cores' own choices via :meth:`SimNetwork.rng_for`) derives from it.

Faults it can inject:

* datagram loss, globally or per directed link;
* latency drawn per frame (base + exponential jitter), plus a bandwidth term for
  stream frames so large bodies take realistic time;
* partitions into groups (frames across groups vanish, streams included) and
  ``heal()``;
* crash and restart of a node (``detach`` drops everything addressed to it).

Stream ("reliable") frames are never lost at random but do vanish across a
partition or into a crashed node, as a TCP connection would fail.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from deepgossip.net.runtime import Address, Receiver


@dataclass(frozen=True)
class LinkModel:
    """Latency and loss of the simulated network.

    Defaults resemble a LAN/metro network: 1 ms base one-way latency with a 1 ms
    mean exponential jitter, no loss, and 100 MB/s for stream frames.
    """

    base_latency: float = 0.001
    jitter: float = 0.001
    loss: float = 0.0
    bandwidth: float = 100e6  # bytes per second, applied to reliable frames only


class SimTimer:
    """A scheduled callback; cancelling is O(1) (the heap entry is skipped)."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class TrafficCounters:
    frames: int = 0
    bytes: int = 0


class SimNetwork:
    """A deterministic simulated network and clock for many nodes."""

    def __init__(self, seed: int = 0, link: LinkModel | None = None) -> None:
        self.seed = seed
        self.link = link or LinkModel()
        self.rng = random.Random(seed)
        self._now = 0.0
        self._heap: list[tuple[float, int, SimTimer]] = []
        self._seq = itertools.count()
        self._receivers: dict[Address, Receiver] = {}
        self._group_of: dict[Address, int] | None = None
        self._link_loss: dict[tuple[Address, Address], float] = {}
        self.sent: Counter[Address] = Counter()
        self.sent_bytes: Counter[Address] = Counter()
        self.dropped: Counter[str] = Counter()

    # -- Runtime -------------------------------------------------------------

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> SimTimer:
        timer = SimTimer(max(when, self._now), callback)
        heapq.heappush(self._heap, (timer.when, next(self._seq), timer))
        return timer

    def call_later(self, delay: float, callback: Callable[[], None]) -> SimTimer:
        return self.call_at(self._now + delay, callback)

    def send(self, src: Address, dst: Address, frame: bytes, reliable: bool) -> None:
        self.sent[src] += 1
        self.sent_bytes[src] += len(frame)
        if not self._connected(src, dst):
            self.dropped["partition"] += 1
            return
        if not reliable:
            loss = self._link_loss.get((src, dst), self.link.loss)
            if loss > 0.0 and self.rng.random() < loss:
                self.dropped["loss"] += 1
                return
        delay = self.link.base_latency
        if self.link.jitter > 0.0:
            delay += self.rng.expovariate(1.0 / self.link.jitter)
        if reliable and self.link.bandwidth > 0:
            delay += len(frame) / self.link.bandwidth
        self.call_at(self._now + delay, lambda: self._arrive(src, dst, frame, reliable))

    def _arrive(self, src: Address, dst: Address, frame: bytes, reliable: bool) -> None:
        # Checked again on arrival: a partition or crash while in flight drops it.
        receiver = self._receivers.get(dst)
        if receiver is None:
            self.dropped["no_receiver"] += 1
            return
        if not self._connected(src, dst):
            self.dropped["partition"] += 1
            return
        receiver(src, frame, reliable)

    # -- nodes -----------------------------------------------------------------

    def attach(self, address: Address, receiver: Receiver) -> None:
        """Start delivering frames addressed to ``address`` to ``receiver``."""
        if address in self._receivers:
            raise ValueError(f"address {address} is already attached")
        self._receivers[address] = receiver

    def detach(self, address: Address) -> None:
        """Crash: frames to ``address`` vanish until something attaches again."""
        self._receivers.pop(address, None)

    def is_attached(self, address: Address) -> bool:
        return address in self._receivers

    def rng_for(self, name: object) -> random.Random:
        """An independent, reproducible random stream for a node or component."""
        digest = hashlib.sha256(f"{self.seed}/{name!r}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    # -- faults ----------------------------------------------------------------

    def partition(self, groups: Iterable[Iterable[Address]]) -> None:
        """Split the network: frames only flow within a group.

        Addresses in no group form one more group together (the "rest").
        """
        group_of: dict[Address, int] = {}
        for index, group in enumerate(groups):
            for address in group:
                group_of[address] = index
        self._group_of = group_of

    def heal(self) -> None:
        self._group_of = None

    def set_link_loss(self, src: Address, dst: Address, loss: float) -> None:
        """Override the loss rate of one directed link."""
        self._link_loss[(src, dst)] = loss

    def _connected(self, src: Address, dst: Address) -> bool:
        if self._group_of is None:
            return True
        return self._group_of.get(src, -1) == self._group_of.get(dst, -1)

    # -- running ---------------------------------------------------------------

    def step(self) -> bool:
        """Run the next event; return False when nothing is left."""
        while self._heap:
            when, _, timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            self._now = when
            timer.callback()
            return True
        return False

    def run_until(self, deadline: float) -> None:
        """Run every event due up to ``deadline``, then set the clock to it."""
        heap = self._heap
        while heap and heap[0][0] <= deadline:
            when, _, timer = heapq.heappop(heap)
            if timer.cancelled:
                continue
            self._now = when
            timer.callback()
        self._now = max(self._now, deadline)

    def run_for(self, duration: float) -> None:
        self.run_until(self._now + duration)

    def run_while(self, condition: Callable[[], bool], limit: float = math.inf) -> bool:
        """Run until ``condition()`` is false or virtual time passes ``limit``.

        Returns True if the condition became false (the awaited thing happened).
        """
        while condition():
            if not self._heap or self._heap[0][0] > limit:
                self._now = max(self._now, min(limit, self._now))
                return False
            self.step()
        return True
