"""The simulated runtime and the host: determinism, timers, loss, partitions."""

from __future__ import annotations

import math
from dataclasses import dataclass

from deepgossip.net.host import Host
from deepgossip.net.runtime import Address, Send
from deepgossip.net.sim import LinkModel, SimNetwork
from deepgossip.wire.message import message
from deepgossip.wire.plain import PlainCodec


@message("echo.ping")
@dataclass(frozen=True, slots=True)
class EchoPing:
    n: int


@message("echo.pong")
@dataclass(frozen=True, slots=True)
class EchoPong:
    n: int


class EchoCore:
    """Pings a peer every second; answers pings; records what it got."""

    def __init__(self, peer: Address | None) -> None:
        self.peer = peer
        self.next_at = 0.0 if peer else math.inf
        self.sent = 0
        self.pongs: list[tuple[float, int]] = []

    def handle(self, src: Address, msg: object, now: float) -> list[object]:
        if isinstance(msg, EchoPing):
            return [Send(src, EchoPong(msg.n))]
        if isinstance(msg, EchoPong):
            self.pongs.append((now, msg.n))
            return [("pong", msg.n)]
        return []

    def tick(self, now: float) -> list[object]:
        self.next_at = now + 1.0
        self.sent += 1
        assert self.peer is not None
        return [Send(self.peer, EchoPing(self.sent))]

    def next_deadline(self) -> float:
        return self.next_at


def _pair(seed: int, loss: float = 0.0) -> tuple[SimNetwork, Host, Host, EchoCore]:
    net = SimNetwork(seed=seed, link=LinkModel(loss=loss))
    a_addr, b_addr = ("10.0.0.1", 1), ("10.0.0.2", 1)
    a, b = Host(net, a_addr, PlainCodec()), Host(net, b_addr, PlainCodec())
    core = EchoCore(b_addr)
    a.add_core("echo", core)
    b.add_core("echo", EchoCore(None))
    for host in (a, b):
        net.attach(host.address, host.receive)
        host.start()
    return net, a, b, core


def test_ping_pong_round_trips_with_latency() -> None:
    net, a, _, core = _pair(seed=1)
    events: list[object] = []
    a.subscribe(events.append)
    net.run_until(10.5)
    assert core.sent == 11  # ticks at 0, 1, ..., 10
    assert [n for _, n in core.pongs] == list(range(1, 12))
    assert all(0.002 <= t % 1.0 < 0.05 for t, _ in core.pongs)
    assert events == [("pong", n) for n in range(1, 12)]


def test_same_seed_same_run_other_seed_differs() -> None:
    def trace(seed: int) -> list[tuple[float, int]]:
        net, _, _, core = _pair(seed=seed, loss=0.3)
        net.run_until(50)
        return core.pongs

    assert trace(7) == trace(7)
    assert trace(7) != trace(8)


def test_loss_drops_about_the_configured_fraction() -> None:
    net, _, _, core = _pair(seed=3, loss=0.2)
    net.run_until(999.5)
    # A pong needs two datagrams to survive: 0.8^2 = 0.64 expected.
    assert 0.58 < len(core.pongs) / core.sent < 0.70
    assert net.dropped["loss"] > 0


def test_partition_blocks_and_heal_restores() -> None:
    net, a, b, core = _pair(seed=2)
    net.partition([{a.address}, {b.address}])
    net.run_until(5.5)
    assert core.pongs == []
    net.heal()
    net.run_until(10.5)
    assert len(core.pongs) == 5


def test_crash_detaches_and_restart_resumes() -> None:
    net, _, b, core = _pair(seed=4)
    net.detach(b.address)
    b.stop()
    net.run_until(3.5)
    assert core.pongs == []
    restarted = Host(net, b.address, PlainCodec())
    restarted.add_core("echo", EchoCore(None))
    net.attach(restarted.address, restarted.receive)
    restarted.start()
    net.run_until(6.5)
    assert [n for _, n in core.pongs] == [5, 6, 7]


def test_malformed_frames_are_dropped_and_counted() -> None:
    net, a, b, core = _pair(seed=5)
    for junk in (b"", b"\xc1", b"\x92\xa4nope\x90", b"\x92\xa9echo.ping\x91\xc3"):
        net.send(a.address, b.address, junk, reliable=False)
    net.run_until(1.5)
    assert sum(b.stats.dropped.values()) == 4
    assert len(core.pongs) == 2  # the node kept serving
