"""The stream framing parser: any chunking of a valid stream yields the same frames."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepgossip.net.framing import (
    FrameReader,
    FramingError,
    encode_header,
    encode_hello,
    is_wildcard,
)

SCRATCH = 4096  # small, so that frames over 2 KiB take the large-frame path


class Collector:
    def __init__(self, max_frame: int = 1 << 20, copy_large: bool = False) -> None:
        self.hello: tuple[str, int] | None = None
        self.frames: list[bytes | bytearray] = []
        self.reader = FrameReader(
            max_frame, self.on_hello, self.frames.append, SCRATCH, copy_large=copy_large
        )

    def on_hello(self, host: str, port: int) -> None:
        self.hello = (host, port)

    def push(self, data: bytes, chunk_sizes: list[int] | None = None) -> None:
        """Feed ``data`` the way a socket would: into the buffers the reader gives."""
        sizes = iter(chunk_sizes or [])
        pos = 0
        while pos < len(data):
            buf = self.reader.get_buffer()
            assert len(buf) > 0
            n = min(len(buf), len(data) - pos, next(sizes, len(data)) or 1)
            buf[:n] = data[pos : pos + n]
            pos += n
            self.reader.feed(n)


def stream(frames: list[bytes], host: str = "10.1.2.3", port: int = 4242) -> bytes:
    return encode_hello(host, port) + b"".join(encode_header(len(f)) + f for f in frames)


frame_st = st.one_of(
    st.binary(max_size=300),
    st.integers(2000, 12_000).map(lambda n: bytes(range(256)) * (n // 256) + b"x"),
)


@settings(max_examples=150, deadline=None)
@given(
    frames=st.lists(frame_st, max_size=12),
    chunks=st.lists(st.integers(1, 5000), max_size=60),
)
def test_any_chunking_yields_the_frames_in_order(frames: list[bytes], chunks: list[int]) -> None:
    c = Collector()
    c.push(stream(frames), chunks)
    assert c.hello == ("10.1.2.3", 4242)
    assert [bytes(f) for f in c.frames] == frames
    assert not c.reader.mid_frame


def test_small_frames_are_bytes_large_are_handed_over_bytearrays() -> None:
    small, large = b"s" * 100, b"L" * 10_000
    c = Collector()
    c.push(stream([small, large, small]), [7, 50, 3000])
    assert [type(f) for f in c.frames] == [bytes, bytearray, bytes]
    copied = Collector(copy_large=True)
    copied.push(stream([large]), [7, 50, 3000])
    assert type(copied.frames[0]) is bytes


def test_oversize_length_raises_before_allocating() -> None:
    c = Collector(max_frame=1000)
    with pytest.raises(FramingError) as err:
        c.push(encode_hello("1.2.3.4", 5) + encode_header(0xFFFFFFFF))
    assert err.value.reason == "tcp_oversize"


@pytest.mark.parametrize(
    "preamble",
    [
        b"HTTP/1.1 200 OK\r\n",
        b"DGT\x02\x00\x05\x00",
        b"DGT\x01\x00\x00\x00",
        b"DGT\x01\x00\x05\x01\xff",
    ],
)
def test_bad_hello_raises(preamble: bytes) -> None:
    c = Collector()
    with pytest.raises(FramingError) as err:
        c.push(preamble)
    assert err.value.reason == "tcp_bad_hello"


def test_partial_frame_is_reported_mid_frame() -> None:
    c = Collector()
    data = stream([b"x" * 50])
    c.push(data[:-1])
    assert c.frames == [] and c.reader.mid_frame


def test_hello_limits_and_wildcards() -> None:
    with pytest.raises(ValueError):
        encode_hello("h" * 256, 1)
    with pytest.raises(ValueError):
        encode_hello("1.2.3.4", 0)
    assert all(is_wildcard(h) for h in ("", "0.0.0.0", "::"))
    assert not any(is_wildcard(h) for h in ("127.0.0.1", "::1", "example.org"))
