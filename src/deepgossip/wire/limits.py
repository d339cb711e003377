"""Every size limit of the wire layer, written once, each with its reason.

A peer controls every byte we decode, so every length it declares is checked
against one of these numbers *before* we allocate, decrypt or parse. The defaults
live in :class:`WireLimits`; a deployment that ships bigger models may raise
``max_stream_frame`` and ``max_tensor_elements`` together (the other limits follow
from them or from the protocol, not from the model size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_LIMITS", "MSGPACK_MAX_DEPTH", "WireLimits"]

KIB = 1024
MIB = 1024 * KIB

MSGPACK_MAX_DEPTH = 1024
"""Nesting depth at which msgpack's C unpacker raises ``StackError``.

It is a compile-time constant of msgpack (not configurable), recorded here so that
the limit is visible; our schemas nest a handful of levels, so any frame that
reaches it is garbage and is rejected as :class:`~.errors.MalformedMessage`.
"""


@dataclass(frozen=True, slots=True)
class WireLimits:
    """Size limits for frames, messages and tensor frames."""

    max_datagram: int = 1400
    """Largest UDP frame we send or accept. An Ethernet path MTU of 1500 minus the
    IPv6 (40 B) and UDP (8 B) headers leaves 1452; 1400 keeps ~50 B of headroom for
    tunnels (PPPoE, VPN encapsulation) so datagrams are never IP-fragmented, where a
    single lost fragment loses the whole datagram."""

    max_stream_frame: int = 64 * MIB
    """Largest frame on the stream (TCP) transport: a whole model update body.
    ResNet-18 (11.7M float32 parameters) is ~45 MiB dense; 64 MiB leaves room for
    headers while bounding what one peer can make us buffer."""

    max_str_len: int = 64 * KIB
    """Longest msgpack string. Strings are type names, dataset names, addresses;
    bulk data travels as ``bytes``."""

    max_array_len: int = 128 * KIB
    """Most elements in one msgpack array. msgpack preallocates the list from the
    declared count (8 B per slot), so this bounds that allocation to 1 MiB; 131072
    covers a push-pull membership sync of a 100k-node network."""

    max_map_len: int = 16 * KIB
    """Most entries in one msgpack map (string-keyed option dicts are small)."""

    max_tensor_elements: int = 64 * MIB
    """Most elements a tensor frame may decode to, summed over its tensors
    (67M: ResNet-50's 25.6M parameters with room to spare). It bounds the memory a
    decode allocates, notably when a sparse update is densified."""

    max_tensors: int = 16 * KIB
    """Most tensors in one tensor frame (ResNet-50's state dict has ~320 entries,
    transformer checkpoints a few thousand)."""

    max_tensor_header: int = 1 * MIB
    """Largest tensor-frame header (names, dtypes, shapes, offsets): ~60 B per
    tensor at ``max_tensors``."""

    max_tensor_name: int = 256
    """Longest tensor name in characters (PyTorch state-dict keys are < 100)."""

    max_ndim: int = 8
    """Most dimensions of one tensor (conv weights have 4, video 5)."""

    @property
    def max_bin_len(self) -> int:
        """Longest msgpack ``bytes`` value: at most the whole stream frame."""
        return self.max_stream_frame

    def msgpack_unpack_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``msgpack.unpackb`` that enforce these limits.

        ``max_ext_len=0`` because no message uses msgpack extension types and
        ``timestamp=0`` keeps the timestamp extension out as well: both then surface
        as values no schema accepts.
        """
        return {
            "raw": False,
            "strict_map_key": True,
            "use_list": True,
            "max_bin_len": self.max_bin_len,
            "max_str_len": self.max_str_len,
            "max_array_len": self.max_array_len,
            "max_map_len": self.max_map_len,
            "max_ext_len": 0,
            "timestamp": 0,
        }


DEFAULT_LIMITS = WireLimits()
