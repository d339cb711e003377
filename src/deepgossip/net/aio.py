"""The real-socket runtime: asyncio UDP for small messages, TCP for large bodies.

:class:`AsyncioRuntime` implements :class:`~deepgossip.net.runtime.Runtime` on
an asyncio event loop, so the sans-I/O cores that run in the simulator run
unchanged on real sockets. One runtime serves any number of nodes on its loop:
each :meth:`~AsyncioRuntime.attach` binds a UDP socket and a TCP server on the
same (host, port), which is then that node's address::

    async with AsyncioRuntime() as runtime:
        hosts = []
        for _ in range(3):
            address = await runtime.attach(("127.0.0.1", 0))  # ephemeral port
            host = Host(runtime, address, codec)
            runtime.set_receiver(address, host.receive)
            host.start()
            hosts.append(host)
        ...
    # leaving the block stops every socket, connection, writer task and timer

Transport choice, as in the simulator: ``reliable=False`` frames go as one UDP
datagram each, ``reliable=True`` frames over TCP (see :mod:`.framing` for the
byte layout and :mod:`.aio_tcp` for connection handling). Time is the loop's
monotonic clock and timers are ``loop.call_at`` handles, so periodic work
scheduled against absolute deadlines never drifts under load.

``send`` never raises into a core (except under the opt-in ``"raise"`` oversize
policy, meant for tests): every frame that cannot go is dropped and counted in
:attr:`AsyncioRuntime.stats`, and the protocol layers retry as they would after
a loss. Frames are not copied on the way out: never mutate a buffer after
passing it to ``send``.

Addresses must be numeric IPs. Resolving a name inside ``send`` would block the
loop (``sendto`` resolves synchronously); :meth:`~AsyncioRuntime.attach` accepts
names and returns the numeric address it bound.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import logging
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from deepgossip.net.aio_tcp import Closable, InboundProtocol, PeerLink
from deepgossip.net.aio_udp import DatagramProtocol
from deepgossip.net.runtime import Address, Receiver
from deepgossip.wire.limits import DEFAULT_LIMITS

__all__ = ["AsyncioRuntime", "DatagramTooLarge", "TransportConfig", "TransportStats"]

log = logging.getLogger(__name__)

KIB = 1024
MIB = 1024 * KIB

OversizePolicy = Literal["tcp", "drop", "raise"]


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Limits and timeouts of the real-socket runtime, each with its reason."""

    max_datagram: int = DEFAULT_LIMITS.max_datagram
    """Largest UDP payload sent or accepted: the wire layer's limit (1400 B, so
    datagrams are never IP-fragmented; see :class:`~deepgossip.wire.limits.WireLimits`)."""

    datagram_oversize: OversizePolicy = "tcp"
    """What ``send(reliable=False)`` does with a frame above ``max_datagram``.
    ``"tcp"`` sends it over the stream transport (counted as
    ``events["udp_oversize_to_tcp"]``, warned about once): the simulator
    delivers datagrams of any size, and a core that outgrows the budget should
    get slower, not silently deaf, on real sockets. ``"drop"`` counts it in
    ``dropped["udp_oversize"]``; ``"raise"`` raises :class:`DatagramTooLarge`
    (for tests that check a core keeps within the budget)."""

    max_udp_buffer: int = 256 * KIB
    """Bytes asyncio may buffer for a UDP socket the kernel will not take more
    from; beyond this datagrams are dropped. Buffering stale pings only delays
    fresh ones, and UDP may lose them anyway."""

    max_stream_frame: int = DEFAULT_LIMITS.max_stream_frame
    """Largest TCP frame sent or accepted: the wire layer's limit (64 MiB, a dense
    ResNet-18 update with room for headers). A larger declared length closes the
    connection before anything is allocated."""

    max_link_queue: int = 2 * DEFAULT_LIMITS.max_stream_frame
    """Bytes queued per destination before new frames to it are dropped: two
    maximal frames, so a second body can wait while the first is on the wire.
    Queued frames are references to the caller's bytes, so the same update
    queued to five peers costs its size once, not five times."""

    write_slice: int = 1 * MIB
    """Bytes per ``transport.write`` call. On Python 3.11 one write of 40 MB is
    quadratic in the transport buffer (~0.2 GB/s); 1 MiB slices keep the buffer
    small and throughput near memory speed (see bench/bench_transport.py)."""

    write_high_water: int = 1 * MIB
    """Transport buffer size above which the writer waits for the kernel to take
    data. One slice: the kernel's socket buffer holds the rest in flight."""

    recv_buffer: int = 256 * KIB
    """Reusable per-connection receive buffer for small frames (frames over half
    of it get a buffer of their own): enough for many control frames per
    ``recv_into`` call, small enough for a thousand connections."""

    copy_large_frames: bool = False
    """Deliver TCP frames over ``recv_buffer / 2`` as ``bytes`` instead of the
    ``bytearray`` they were received into. The bytearray is handed over (the
    runtime keeps no reference), so it is as safe as bytes but mutable and
    unhashable; converting costs a second fresh allocation and copy of the
    frame (~40 ms per 40 MB on these VMs, about as long as the transfer)."""

    connect_timeout: float = 3.0
    """Seconds to establish a connection: a LAN connects in milliseconds, and
    3 s covers one lost SYN (Linux retransmits it after 1 s, then 2 s later)."""

    write_timeout: float = 10.0
    """Seconds a writer may wait for the peer to take more bytes before the
    connection is declared dead (1 MiB per 10 s, ~100 kB/s, is the slowest
    peer tolerated)."""

    idle_timeout: float = 60.0
    """Seconds an unused outbound connection stays open. Peers we talk to get
    frames every few protocol periods (1 s) and keep theirs; the rest are closed
    to bound file descriptors."""

    inbound_idle_timeout: float = 120.0
    """Seconds of silence after which an accepted connection is closed. Twice
    ``idle_timeout``, so a healthy sender always closes first and no frame is
    written into a connection the receiver is closing."""

    listen_backlog: int = 512
    """Pending-connection queue of each TCP server: a swarm joining at once
    connects in bursts (the kernel caps it at ``net.core.somaxconn``)."""


class DatagramTooLarge(ValueError):
    """A ``reliable=False`` frame exceeds the datagram limit (``"raise"`` policy)."""


@dataclass
class TransportStats:
    """Counters of one runtime (all its endpoints together).

    ``frames_*``/``bytes_*`` are keyed by transport (``"udp"``, ``"tcp"``) and
    count frame payloads (not headers). ``dropped`` counts frames lost, by
    reason; ``errors`` OS errors reported on UDP sockets; ``events`` connection
    life (``tcp_connected``, ``tcp_accepted``, ``tcp_connect_failed``, ...).
    """

    frames_out: Counter[str] = field(default_factory=Counter)
    bytes_out: Counter[str] = field(default_factory=Counter)
    frames_in: Counter[str] = field(default_factory=Counter)
    bytes_in: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, dict[str, int]]:
        """A JSON-ready snapshot."""
        return {
            name: dict(getattr(self, name))
            for name in (
                "frames_out",
                "bytes_out",
                "frames_in",
                "bytes_in",
                "dropped",
                "errors",
                "events",
            )
        }


@functools.lru_cache(maxsize=4096)
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _valid_destination(dst: Any) -> bool:
    """A (numeric host, port) tuple; anything else would make asyncio close the
    UDP socket (TypeError/OverflowError in sendto) or block on DNS."""
    if type(dst) is not tuple or len(dst) != 2:
        return False
    host, port = dst
    return type(host) is str and type(port) is int and 0 < port < 65536 and _is_ip(host)


class _Endpoint:
    """The sockets of one attached address: UDP socket, TCP server, links."""

    def __init__(self, runtime: AsyncioRuntime, receiver: Receiver | None) -> None:
        self.runtime = runtime
        self.address: Address = ("", 0)
        self.receiver = receiver
        self.udp: DatagramProtocol | None = None
        self.server: asyncio.Server | None = None
        self.connections: set[Closable] = set()  # inbound and outbound protocols
        self.links: dict[Address, PeerLink] = {}

    def deliver_datagram(self, src: Address, frame: bytes) -> None:
        self._deliver(src, frame, False, "udp")

    def deliver_stream(self, src: Address, frame: bytes | bytearray) -> None:
        self._deliver(src, frame, True, "tcp")

    def _deliver(self, src: Address, frame: bytes | bytearray, reliable: bool, kind: str) -> None:
        stats = self.runtime.stats
        receiver = self.receiver
        if receiver is None:
            stats.dropped["no_receiver"] += 1
            return
        stats.frames_in[kind] += 1
        stats.bytes_in[kind] += len(frame)
        try:
            receiver(src, frame, reliable)  # type: ignore[arg-type]  # bytes-like
        except Exception:  # a core's bug must not take the socket down
            stats.dropped["receiver_error"] += 1
            log.exception("%s: receiver failed on a frame from %s", self.address, src)

    def send_stream(self, dst: Address, frame: bytes) -> None:
        runtime = self.runtime
        if len(frame) > runtime.config.max_stream_frame:
            runtime.stats.dropped["tcp_frame_too_large"] += 1
            return
        link = self.links.get(dst)
        if link is None:
            link = PeerLink(
                self.address,
                dst,
                runtime.config,
                runtime.stats,
                self.connections,
                self._forget_link,
            )
            self.links[dst] = link
        link.enqueue(frame)

    def _forget_link(self, link: PeerLink) -> None:
        if self.links.get(link.dst) is link:
            del self.links[link.dst]

    async def close(self) -> None:
        """Close the server, the UDP socket and every connection; wait for all."""
        waits: list[asyncio.Future[Any]] = []
        if self.server is not None:
            self.server.close()
        tasks = [link.task for link in self.links.values() if link.task is not None]
        for link in list(self.links.values()):
            link.retire()
        if self.udp is not None and self.udp.transport is not None:
            self.udp.transport.close()
            waits.append(self.udp.lost)
        await asyncio.gather(*waits, *tasks, return_exceptions=True)
        # Repeat: a connection accepted just before the server closed (or one a
        # cancelled connect was completing) registers itself a loop turn later.
        for _ in range(100):
            if not self.connections:
                break
            conns = list(self.connections)
            for conn in conns:
                conn.abort()
            await asyncio.gather(*(conn.lost for conn in conns), return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()


class AsyncioRuntime:
    """A :class:`~deepgossip.net.runtime.Runtime` on real sockets; many nodes per loop.

    Create it inside a running event loop (or pass ``loop``). ``attach`` binds a
    node's sockets, ``detach`` closes them (a crash, as far as peers can tell),
    ``close`` (or leaving ``async with``) closes everything and cancels the
    timers still pending.
    """

    _BIND_ATTEMPTS = 20
    """Tries to find an ephemeral port free for both UDP and TCP (the two port
    spaces are separate, so the UDP port picked by the kernel may be taken for
    TCP; a collision is rare, twenty in a row means something else is wrong)."""

    def __init__(
        self,
        config: TransportConfig | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.config = config or TransportConfig()
        self.stats = TransportStats()
        self._loop = loop
        self._endpoints: dict[Address, _Endpoint] = {}
        self._timers: weakref.WeakSet[asyncio.TimerHandle] = weakref.WeakSet()
        self._closed = False
        self._warned_oversize = False

    # -- Runtime contract ------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def now(self) -> float:
        """The loop's monotonic clock, in seconds."""
        return self.loop.time()

    def call_at(self, when: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        """Run ``callback`` at loop time ``when`` (past times run on the next turn).

        After :meth:`close` the handle comes back cancelled: a host left running
        on a closed runtime must not keep ticking forever.
        """
        handle = self.loop.call_at(when, callback)
        if self._closed:
            handle.cancel()
        else:
            self._timers.add(handle)
        return handle

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return self.call_at(self.loop.time() + delay, callback)

    def send(self, src: Address, dst: Address, frame: bytes, reliable: bool) -> None:
        """Queue ``frame`` from the node at ``src`` to ``dst``; never blocks.

        Datagrams leave at once (or are dropped); stream frames join the
        per-destination queue that a writer task drains in order.
        """
        endpoint = self._endpoints.get(src)
        if endpoint is None:
            self.stats.dropped["runtime_closed" if self._closed else "unknown_src"] += 1
            return
        if not _valid_destination(dst):
            self.stats.dropped["bad_address"] += 1
            log.debug("%s: refusing to send to %r", src, dst)
            return
        if not reliable:
            if len(frame) <= self.config.max_datagram:
                assert endpoint.udp is not None
                endpoint.udp.send(dst, frame)
                return
            if not self._oversize_to_tcp(src, dst, len(frame)):
                return
        endpoint.send_stream(dst, frame)

    def _oversize_to_tcp(self, src: Address, dst: Address, size: int) -> bool:
        policy = self.config.datagram_oversize
        limit = self.config.max_datagram
        if policy == "raise":
            raise DatagramTooLarge(f"{size} B datagram from {src} to {dst} > {limit} B")
        if policy == "drop":
            self.stats.dropped["udp_oversize"] += 1
            return False
        self.stats.events["udp_oversize_to_tcp"] += 1
        if not self._warned_oversize:
            self._warned_oversize = True
            log.warning(
                "%s: %d B unreliable frame to %s exceeds the %d B datagram limit; "
                "sending it over TCP (counted as events['udp_oversize_to_tcp'])",
                src,
                size,
                dst,
                limit,
            )
        return True

    # -- nodes -------------------------------------------------------------------

    async def start(self) -> None:
        """Bind to the running loop. Optional: ``attach`` does it as well."""
        if self._closed:
            raise RuntimeError("runtime is closed")
        _ = self.loop

    async def attach(self, address: Address, receiver: Receiver | None = None) -> Address:
        """Bind UDP and TCP at ``address``; return the numeric address bound.

        Port 0 picks an ephemeral port free for both transports. ``receiver``
        (usually ``host.receive``) may be given later with :meth:`set_receiver`,
        since a Host needs the bound address before it exists; frames arriving
        meanwhile are dropped as ``no_receiver``.
        """
        await self.start()
        host, port = address
        last_error: OSError | None = None
        for _ in range(self._BIND_ATTEMPTS if port == 0 else 1):
            endpoint = _Endpoint(self, receiver)
            try:
                await self._bind(endpoint, host, port)
            except OSError as exc:
                await endpoint.close()
                if port != 0 or exc.errno != errno.EADDRINUSE:
                    raise
                last_error = exc
                continue
            if endpoint.address in self._endpoints:
                await endpoint.close()
                raise ValueError(f"address {endpoint.address} is already attached")
            self._endpoints[endpoint.address] = endpoint
            self.stats.events["attached"] += 1
            return endpoint.address
        raise OSError(errno.EADDRINUSE, f"no port free for UDP and TCP on {host}") from (last_error)

    async def _bind(self, endpoint: _Endpoint, host: str, port: int) -> None:
        loop = self.loop
        config, stats = self.config, self.stats
        transport, udp = await loop.create_datagram_endpoint(
            lambda: DatagramProtocol(endpoint.deliver_datagram, config, stats),
            local_addr=(host, port),
        )
        endpoint.udp = udp
        sockname = transport.get_extra_info("sockname")
        bound: Address = (str(sockname[0]), int(sockname[1]))
        endpoint.address = bound
        endpoint.server = await loop.create_server(
            lambda: InboundProtocol(endpoint.deliver_stream, config, stats, endpoint.connections),
            bound[0],
            bound[1],
            reuse_address=True,  # rebind at once after a restart (TIME_WAIT)
            backlog=config.listen_backlog,
        )

    def set_receiver(self, address: Address, receiver: Receiver | None) -> None:
        """Hand frames for ``address`` to ``receiver`` from now on."""
        self._endpoints[address].receiver = receiver

    async def detach(self, address: Address) -> None:
        """Close the sockets and connections of ``address``; queued frames are dropped.

        To its peers this looks like a crash: its TCP connections reset,
        datagrams to it draw ICMP errors. Its counters stay in :attr:`stats`.
        """
        endpoint = self._endpoints.pop(address, None)
        if endpoint is not None:
            await endpoint.close()
            self.stats.events["detached"] += 1

    def is_attached(self, address: Address) -> bool:
        return address in self._endpoints

    @property
    def addresses(self) -> list[Address]:
        """The addresses currently attached, in attach order."""
        return list(self._endpoints)

    def link_count(self, address: Address) -> int:
        """Outbound TCP connections (open or opening) of the node at ``address``."""
        return len(self._endpoints[address].links)

    async def close(self) -> None:
        """Detach every node and cancel pending timers. Idempotent."""
        self._closed = True
        for address in list(self._endpoints):
            await self.detach(address)
        for handle in list(self._timers):
            handle.cancel()
        self._timers.clear()

    async def __aenter__(self) -> AsyncioRuntime:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
