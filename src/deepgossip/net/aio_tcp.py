"""The stream (TCP) half of the asyncio runtime: inbound readers, outbound links.

Connections are one-way (see :mod:`deepgossip.net.framing`): a node keeps at most
one outbound connection per (own address, peer address), a :class:`PeerLink`,
that a writer task feeds from a bounded per-peer queue; inbound connections are
read by :class:`InboundProtocol` and never written to. One-way connections keep
both halves simple (no request matching, no write/read interleaving) and cost
one extra connection per pair of nodes that talk both ways, which is nothing
next to the bodies they carry.

Nothing here raises into the protocol cores: every failure is counted in
:class:`~deepgossip.net.aio.TransportStats` and the frames concerned are dropped.
The protocol layers above retry (pull a body again from another holder, send the
next push-pull) when they need to.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from deepgossip.net.framing import (
    FrameReader,
    FramingError,
    encode_header,
    encode_hello,
    is_wildcard,
)
from deepgossip.net.runtime import Address

if TYPE_CHECKING:
    from deepgossip.net.aio import TransportConfig, TransportStats

log = logging.getLogger(__name__)

_SMALL_FRAME = 64 * 1024
"""Frames up to this size are written as one ``header + frame`` concatenation:
one syscall and one TCP segment train, for a copy that costs microseconds.
Larger frames are written header first, then in memoryview slices (no copy)."""

StreamDeliver = Callable[[Address, bytes | bytearray], None]


class Closable:
    """What an endpoint tracks to shut its connections down: abort + wait."""

    transport: asyncio.BaseTransport | None
    lost: asyncio.Future[None]

    def abort(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            abort = getattr(transport, "abort", None)
            if abort is not None:
                abort()
            else:
                transport.close()


class InboundProtocol(asyncio.BufferedProtocol, Closable):
    """Reads the hello and then frames from one accepted connection.

    The socket reads straight into :class:`FrameReader`'s buffers. Small frames
    are handed to ``deliver`` as ``bytes`` copied out of the reusable scratch
    buffer (a view would be overwritten by the next read). Large frames (over
    half of ``config.recv_buffer``) are handed over as the ``bytearray`` they
    were read into, which nobody else references: zero-copy and safe to keep,
    and the wire layer decodes tensors from it without copying. On these
    machines a fresh 40 MB allocation costs as much as the transfer (page
    faults), so the copy to ``bytes`` is opt-in (``config.copy_large_frames``).
    """

    def __init__(
        self,
        deliver: StreamDeliver,
        config: TransportConfig,
        stats: TransportStats,
        registry: set[Closable],
    ) -> None:
        self._deliver = deliver
        self._config = config
        self._stats = stats
        self._registry = registry
        self._reader = FrameReader(
            config.max_stream_frame,
            self._on_hello,
            self._on_frame,
            scratch_size=config.recv_buffer,
            copy_large=config.copy_large_frames,
        )
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()
        self._observed_host = ""
        self._src: Address | None = None
        self._last_rx = 0.0
        self._idle: asyncio.TimerHandle | None = None

    # -- asyncio callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._registry.add(self)
        self._stats.events["tcp_accepted"] += 1
        peer = transport.get_extra_info("peername")
        self._observed_host = str(peer[0]) if peer else ""
        self._last_rx = asyncio.get_running_loop().time()
        self._arm_idle(self._last_rx + self._config.inbound_idle_timeout)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._reader.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self._last_rx = asyncio.get_running_loop().time()
        try:
            self._reader.feed(nbytes)
        except FramingError as exc:
            self._stats.dropped[exc.reason] += 1
            log.debug("closing inbound connection from %s: %s", self._observed_host, exc)
            self.abort()

    def eof_received(self) -> bool:
        return False  # close our side too; the sender is done

    def connection_lost(self, exc: Exception | None) -> None:
        if self._reader.mid_frame:
            self._stats.dropped["tcp_truncated"] += 1
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._registry.discard(self)
        if not self.lost.done():
            self.lost.set_result(None)

    # -- frames ----------------------------------------------------------------

    def _on_hello(self, host: str, port: int) -> None:
        # A sender bound to a wildcard cannot name its interface; the address
        # the connection comes from is the best name for it, as for UDP.
        self._src = (self._observed_host if is_wildcard(host) else host, port)

    def _on_frame(self, frame: bytes | bytearray) -> None:
        assert self._src is not None  # FrameReader emits frames only after the hello
        self._deliver(self._src, frame)

    # -- idle --------------------------------------------------------------------

    def _arm_idle(self, when: float) -> None:
        self._idle = asyncio.get_running_loop().call_at(when, self._on_idle)

    def _on_idle(self) -> None:
        self._idle = None
        deadline = self._last_rx + self._config.inbound_idle_timeout
        if asyncio.get_running_loop().time() < deadline:
            self._arm_idle(deadline)
            return
        self._stats.events["tcp_inbound_idle_closed"] += 1
        self.abort()


class OutboundProtocol(asyncio.Protocol, Closable):
    """The write side of one outbound connection, with awaitable flow control."""

    def __init__(
        self, registry: set[Closable], on_lost: Callable[[OutboundProtocol], None]
    ) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()
        self.closed = False
        self._registry = registry
        self._on_lost = on_lost
        self._paused = False
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._registry.add(self)

    @property
    def paused(self) -> bool:
        """True while the transport's buffer is above its high-water mark."""
        return self._paused

    @property
    def usable(self) -> bool:
        """False once the connection is closing or lost (a reset marks the
        transport closing at once but reaches :meth:`connection_lost` a loop
        turn later)."""
        transport = self.transport
        return not self.closed and transport is not None and not transport.is_closing()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake(None)

    def data_received(self, data: bytes) -> None:
        pass  # the acceptor never writes; ignore anything it sends

    def eof_received(self) -> bool:
        # The peer closed (restart, idle timeout): mark the connection dead now,
        # so the next frame reconnects instead of vanishing into a dead socket.
        self.closed = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake(exc or ConnectionResetError("connection lost"))
        self._registry.discard(self)
        if not self.lost.done():
            self.lost.set_result(None)
        self._on_lost(self)

    async def wait_writable(self) -> None:
        """Return when the transport's buffer is below its low-water mark."""
        if self.closed:
            raise ConnectionResetError("connection closed")
        if not self._paused:
            return
        waiter = self._writable
        if waiter is None or waiter.done():
            waiter = self._writable = asyncio.get_running_loop().create_future()
        await waiter

    def _wake(self, exc: BaseException | None) -> None:
        waiter, self._writable = self._writable, None
        if waiter is None or waiter.done():
            return
        if exc is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(exc)


class PeerLink:
    """One outbound connection from ``src`` to ``dst``, with its frame queue.

    ``enqueue`` is synchronous (it is called from ``Runtime.send`` inside a
    core's effects); a writer task, started on demand, connects if needed, sends
    the hello and writes queued frames in order, in slices of
    ``config.write_slice`` bytes awaiting flow control between them. The task
    ends when the queue is empty; the connection then stays open for
    ``config.idle_timeout`` seconds for the next frame, and a connection that
    fails is dropped and re-established by the next frame.
    """

    def __init__(
        self,
        src: Address,
        dst: Address,
        config: TransportConfig,
        stats: TransportStats,
        registry: set[Closable],
        on_retire: Callable[[PeerLink], None],
    ) -> None:
        self.src = src
        self.dst = dst
        self._config = config
        self._stats = stats
        self._registry = registry
        self._on_retire = on_retire
        self._loop = asyncio.get_running_loop()
        self._queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self._proto: OutboundProtocol | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._retired = False
        self._hello = encode_hello(src[0], src[1])

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    def enqueue(self, frame: bytes) -> None:
        """Queue ``frame`` for ``dst``; drop and count it if the queue is full.

        A frame is always accepted into an empty queue (so any frame up to the
        frame limit can be sent even when it exceeds the queue bound).
        """
        size = len(frame)
        if self._queue and self.queued_bytes + size > self._config.max_link_queue:
            self._stats.dropped["tcp_queue_full"] += 1
            return
        self._queue.append(frame)
        self.queued_bytes += size
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._task is None:
            self._task = self._loop.create_task(self._run(), name=f"tcp-link {self.dst}")

    def retire(self) -> None:
        """Stop for good: drop queued frames, cancel the writer, abort the socket."""
        if self._retired:
            return
        self._retired = True
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._drop_queue("tcp_link_closed")
        if self._task is not None:
            self._task.cancel()
        if self._proto is not None:
            self._proto.abort()
        self._on_retire(self)

    # -- writer ------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._drain_queue()
        except Exception:  # a bug, not a network failure: never loop on it
            log.exception("%s -> %s: writer failed", self.src, self.dst)
            self._drop_queue("internal_error")
        finally:
            self._task = None
            self._after_run()

    async def _drain_queue(self) -> None:
        while self._queue:
            proto = self._proto
            if proto is None or not proto.usable:
                try:
                    proto = await self._connect()
                except (OSError, TimeoutError) as exc:
                    self._stats.events["tcp_connect_failed"] += 1
                    log.debug("%s -> %s: connect failed: %r", self.src, self.dst, exc)
                    self._drop_queue("tcp_connect_failed")
                    return
            frame = self._queue[0]
            try:
                await self._write(proto, frame)
            except (OSError, TimeoutError) as exc:
                # The frame may be half sent: abort, drop it, and let the next
                # frame (if any) try a fresh connection.
                self._stats.events["tcp_write_failed"] += 1
                log.debug("%s -> %s: write failed: %r", self.src, self.dst, exc)
                proto.abort()
                self._pop()
                self._stats.dropped["tcp_write_failed"] += 1
                continue
            self._pop()
            self._stats.frames_out["tcp"] += 1
            self._stats.bytes_out["tcp"] += len(frame)

    async def _connect(self) -> OutboundProtocol:
        if self._proto is not None:
            self._proto.abort()
            self._proto = None
        src_host = self.src[0]
        # Bind to our listening host so the connection comes from the same IP
        # as our datagrams (and as the hello says).
        local = None if is_wildcard(src_host) else (src_host, 0)
        async with asyncio.timeout(self._config.connect_timeout):
            transport, proto = await self._loop.create_connection(
                lambda: OutboundProtocol(self._registry, self._on_proto_lost),
                self.dst[0],
                self.dst[1],
                local_addr=local,
            )
        assert isinstance(transport, asyncio.Transport)
        transport.set_write_buffer_limits(high=self._config.write_high_water)
        transport.write(self._hello)
        self._proto = proto
        self._stats.events["tcp_connected"] += 1
        return proto

    async def _write(self, proto: OutboundProtocol, frame: bytes) -> None:
        transport = proto.transport
        assert transport is not None
        size = len(frame)
        timeout = self._config.write_timeout
        if size <= _SMALL_FRAME:
            if not proto.usable:
                raise ConnectionResetError("connection closed")
            transport.write(encode_header(size) + frame)
            if proto.paused:
                async with asyncio.timeout(timeout):
                    await proto.wait_writable()
            return
        step = self._config.write_slice
        view = memoryview(frame)
        transport.write(encode_header(size))
        for offset in range(0, size, step):
            if not proto.usable:  # else the write would vanish without an error
                raise ConnectionResetError("connection closed")
            transport.write(view[offset : offset + step])
            if proto.paused:
                # A stalled peer (no progress for `timeout` s) is treated as dead.
                async with asyncio.timeout(timeout):
                    await proto.wait_writable()

    def _pop(self) -> None:
        frame = self._queue.popleft()
        self.queued_bytes -= len(frame)

    def _drop_queue(self, reason: str) -> None:
        if self._queue:
            self._stats.dropped[reason] += len(self._queue)
            self._queue.clear()
            self.queued_bytes = 0

    # -- idle and loss -------------------------------------------------------------

    def _after_run(self) -> None:
        if self._retired:
            return
        if self._proto is None or not self._proto.usable:
            self.retire()
            return
        self._idle = self._loop.call_later(self._config.idle_timeout, self._on_idle)

    def _on_idle(self) -> None:
        self._idle = None
        if self._queue or self._task is not None:
            return
        self._stats.events["tcp_idle_closed"] += 1
        self.retire()

    def _on_proto_lost(self, proto: OutboundProtocol) -> None:
        # The peer went away while we idled: forget the link now rather than at
        # the idle timeout. A running writer finds out on its own, and the loss
        # of a connection we already replaced means nothing.
        if proto is self._proto and self._task is None and not self._queue:
            self.retire()
