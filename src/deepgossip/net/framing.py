"""Byte layout of the stream (TCP) transport, as pure functions and a parser.

A stream connection is one-way: the side that connects writes, the side that
accepts reads (replies travel on the replier's own outbound connection). Its
bytes are

* one *hello*: ``b"DGT\\x01"`` (magic + version), the sender's listening port
  (u16, big-endian), the length of its listening host (u8) and that host in
  ASCII. The acceptor only sees the connector's ephemeral port, which nobody
  listens on; the hello tells it where the sender *listens*, so the source
  address handed to the protocol cores is one they can reply to, the same
  address the sender's UDP datagrams come from.
* then frames: a 4-byte big-endian length, then that many bytes.

:class:`FrameReader` is the receiving half as a sans-I/O state machine shaped for
``asyncio.BufferedProtocol``: :meth:`~FrameReader.get_buffer` hands out the
memory the socket reads into, :meth:`~FrameReader.feed` parses what arrived.
Small frames are read into one reusable scratch buffer and sliced out of it;
a frame larger than half the scratch buffer gets a ``bytearray`` of its own,
allocated from the checked length, and the socket reads straight into it. That
bytearray is then handed over as the frame itself (the reader forgets it), so a
40 MB body is never copied on the way in; ``copy_large=True`` converts it to
``bytes`` instead, at the price of one more allocation and copy. Every declared
length is checked against the limit *before* anything is allocated.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

HELLO_MAGIC = b"DGT\x01"
"""Magic and version (last byte) of the stream preamble."""

HEADER_SIZE = 4
"""Frame length prefix: u32 big-endian, so at most 4 GiB (far above any limit)."""

_HELLO_FIXED = len(HELLO_MAGIC) + 2 + 1  # magic, port, host length


class FramingError(ValueError):
    """The peer broke the stream format; the connection must be closed.

    ``reason`` is a short counter key (``"tcp_oversize"``, ``"tcp_bad_hello"``).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def encode_header(length: int) -> bytes:
    """The 4-byte length prefix of a frame of ``length`` bytes."""
    return length.to_bytes(HEADER_SIZE, "big")


def encode_hello(host: str, port: int) -> bytes:
    """The preamble announcing that the sender listens at ``(host, port)``."""
    raw = host.encode("ascii")
    if len(raw) > 255:
        raise ValueError(f"host name too long for the hello: {host!r}")
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {port}")
    return HELLO_MAGIC + port.to_bytes(2, "big") + bytes([len(raw)]) + raw


def is_wildcard(host: str) -> bool:
    """True for the "any interface" hosts (``""``, ``0.0.0.0``, ``::``)."""
    if host == "":
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


class FrameReader:
    """Parses hello + length-prefixed frames from a byte stream.

    ``on_hello(host, port)`` is called once, ``on_frame(frame)`` for every
    complete frame, in order: ``bytes`` for frames up to half the scratch buffer,
    a ``bytearray`` the callee now owns for larger ones (unless ``copy_large``).
    Protocol violations raise :class:`FramingError` from :meth:`feed`; the
    caller closes the connection.
    """

    __slots__ = (
        "_body",
        "_body_filled",
        "_buf",
        "_copy_large",
        "_end",
        "_have_hello",
        "_large",
        "_max_frame",
        "_on_frame",
        "_on_hello",
        "_start",
        "_view",
    )

    def __init__(
        self,
        max_frame: int,
        on_hello: Callable[[str, int], None],
        on_frame: Callable[[bytes | bytearray], None],
        scratch_size: int = 256 * 1024,
        copy_large: bool = False,
    ) -> None:
        if scratch_size < 2 * (_HELLO_FIXED + 255):
            raise ValueError("scratch buffer too small for the hello")
        self._max_frame = max_frame
        self._on_hello = on_hello
        self._on_frame = on_frame
        self._buf = bytearray(scratch_size)
        self._view = memoryview(self._buf)
        self._start = 0  # first unparsed byte in the scratch buffer
        self._end = 0  # one past the last received byte
        self._large = scratch_size // 2
        self._body: bytearray | None = None  # dedicated buffer of a large frame
        self._body_filled = 0
        self._have_hello = False
        self._copy_large = copy_large

    @property
    def mid_frame(self) -> bool:
        """True when bytes of an unfinished hello or frame are buffered."""
        return self._body is not None or self._end > self._start

    def get_buffer(self) -> memoryview:
        """Memory for the next ``recv_into``; never empty."""
        if self._body is not None:
            return memoryview(self._body)[self._body_filled :]
        if self._end == len(self._buf):
            self._compact()
        return self._view[self._end :]

    def feed(self, nbytes: int) -> None:
        """Account for ``nbytes`` written into the last buffer; emit what is whole."""
        if self._body is not None:
            self._body_filled += nbytes
            if self._body_filled < len(self._body):
                return
            body, self._body = self._body, None
            self._body_filled = 0
            self._on_frame(bytes(body) if self._copy_large else body)
            return
        self._end += nbytes
        self._parse()

    def _parse(self) -> None:
        buf = self._buf
        while True:
            avail = self._end - self._start
            if not self._have_hello:
                if not self._parse_hello(avail):
                    return
                continue
            if avail < HEADER_SIZE:
                break
            start = self._start
            length = int.from_bytes(buf[start : start + HEADER_SIZE], "big")
            if length > self._max_frame:
                raise FramingError(
                    "tcp_oversize", f"frame of {length} B > limit {self._max_frame} B"
                )
            body_at = start + HEADER_SIZE
            if avail - HEADER_SIZE >= length:
                self._start = body_at + length
                self._on_frame(bytes(buf[body_at : self._start]))
                continue
            if length > self._large:
                # Move what we have of it into its own buffer; read the rest there.
                have = self._end - body_at
                body = bytearray(length)
                body[:have] = buf[body_at : self._end]
                self._body, self._body_filled = body, have
                self._start = self._end = 0
                return
            if body_at + length > len(buf):
                self._compact()
            return
        if self._start == self._end:
            self._start = self._end = 0

    def _parse_hello(self, avail: int) -> bool:
        if avail < _HELLO_FIXED:
            return False
        start = self._start
        magic = bytes(self._buf[start : start + len(HELLO_MAGIC)])
        if magic != HELLO_MAGIC:
            raise FramingError("tcp_bad_hello", f"bad magic {magic!r}")
        port = int.from_bytes(self._buf[start + 4 : start + 6], "big")
        host_len = self._buf[start + 6]
        if avail < _HELLO_FIXED + host_len:
            return False
        raw = bytes(self._buf[start + _HELLO_FIXED : start + _HELLO_FIXED + host_len])
        try:
            host = raw.decode("ascii")
        except UnicodeDecodeError:
            raise FramingError("tcp_bad_hello", f"host is not ASCII: {raw!r}") from None
        if port == 0:
            raise FramingError("tcp_bad_hello", "port 0")
        self._start = start + _HELLO_FIXED + host_len
        self._have_hello = True
        self._on_hello(host, port)
        return True

    def _compact(self) -> None:
        """Move the unparsed tail to the front of the scratch buffer."""
        n = self._end - self._start
        if self._start:
            self._buf[:n] = self._buf[self._start : self._end]
        self._start, self._end = 0, n
