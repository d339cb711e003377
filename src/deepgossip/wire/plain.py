"""Unauthenticated msgpack frames, for large simulations only.

Simulated networks of a thousand nodes spend most of their wall time in crypto if
every frame is sealed and signed, and the simulator has no attacker on the wire.
This codec keeps the exact message encoding (so sizes and validation are real)
and drops the AEAD and signatures. Never use it on real sockets.
"""

from __future__ import annotations

from typing import Any

import msgpack

from deepgossip.wire.message import MalformedMessage, from_wire, to_wire

MAX_PLAIN_FRAME = 64 * 1024 * 1024


class PlainCodec:
    """``[type, body]`` as msgpack; validates like the real codec."""

    def encode(self, msg: Any, *, reliable: bool = False) -> bytes:
        name, body = to_wire(msg)
        return msgpack.packb((name, body), use_bin_type=True)

    def decode_message(self, frame: bytes, reliable: bool = False) -> Any:
        if len(frame) > MAX_PLAIN_FRAME:
            raise MalformedMessage("frame too large")
        try:
            decoded = msgpack.unpackb(frame, raw=False, use_list=True, strict_map_key=True)
        except (ValueError, msgpack.UnpackException) as exc:
            raise MalformedMessage(f"bad msgpack: {exc}") from exc
        if not isinstance(decoded, list) or len(decoded) != 2:
            raise MalformedMessage("frame is not [type, body]")
        return from_wire(decoded[0], decoded[1])
