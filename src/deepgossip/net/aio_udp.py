"""The datagram (UDP) half of the asyncio runtime.

One UDP socket per attached address both sends and receives, so a datagram's
source address is the address its sender listens on and a reply can go straight
back. Datagrams are best effort by contract: every problem (an oversize datagram
in, a full send buffer, an OS error such as the ``ConnectionRefusedError`` an
ICMP port-unreachable turns into) is counted and otherwise ignored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from deepgossip.net.runtime import Address

if TYPE_CHECKING:
    from deepgossip.net.aio import TransportConfig, TransportStats

log = logging.getLogger(__name__)

DatagramDeliver = Callable[[Address, bytes], None]


class DatagramProtocol(asyncio.DatagramProtocol):
    """Receives datagrams for one endpoint and counts what goes wrong."""

    def __init__(
        self, deliver: DatagramDeliver, config: TransportConfig, stats: TransportStats
    ) -> None:
        self._deliver = deliver
        self._config = config
        self._stats = stats
        self.transport: asyncio.DatagramTransport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass
        # asyncio.DatagramTransport, although it implements it.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) > self._config.max_datagram:
            self._stats.dropped["udp_oversize_in"] += 1
            return
        # IPv6 source addresses come as (host, port, flowinfo, scope_id).
        self._deliver((addr[0], addr[1]), data)

    def error_received(self, exc: Exception) -> None:
        # Raised by sendto() or reported later by the kernel (ICMP errors); the
        # datagram concerned is lost either way, which UDP allows.
        self._stats.errors[f"udp_{type(exc).__name__}"] += 1
        log.debug("udp error: %r", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def send(self, dst: Address, frame: bytes) -> None:
        """Send one datagram now, or drop it if the socket is backed up."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self._stats.dropped["udp_closed"] += 1
            return
        if transport.get_write_buffer_size() > self._config.max_udp_buffer:
            self._stats.dropped["udp_buffer_full"] += 1
            return
        transport.sendto(frame, dst)
        self._stats.frames_out["udp"] += 1
        self._stats.bytes_out["udp"] += len(frame)
