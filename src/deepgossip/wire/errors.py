"""The one exception hierarchy of the wire layer.

Everything that can go wrong while decoding bytes from a peer is a
:class:`WireError`. A host wraps every decode in ``except WireError``, counts the
drop under ``exc.reason`` and moves on; any other exception escaping a decoder is a
bug (the fuzz tests check this). ``WireError`` derives from :class:`ValueError` so
that code written against the original ``MalformedMessage(ValueError)`` keeps
working.

Each class carries a short, stable ``reason`` used as the key of drop counters
(:class:`deepgossip.wire.envelope.WireStats`), so dashboards do not depend on
message wording.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BadSignature",
    "BadSuite",
    "BadTag",
    "BadVersion",
    "FrameTooLarge",
    "MalformedFrame",
    "MalformedMessage",
    "MalformedTensor",
    "NonFiniteTensor",
    "Reflected",
    "Replay",
    "StaleEpoch",
    "UnknownSigner",
    "UnknownType",
    "WireError",
]


class WireError(ValueError):
    """Bytes from the network were rejected. Safe to drop and count."""

    reason: ClassVar[str] = "wire_error"


class FrameTooLarge(WireError):
    """The frame exceeds the size limit; rejected before any parsing or decryption."""

    reason = "too_large"


class MalformedFrame(WireError):
    """The fixed frame header is truncated or has reserved bits set."""

    reason = "malformed_frame"


class BadVersion(WireError):
    """Wrong magic bytes or an unsupported protocol version."""

    reason = "bad_version"


class BadSuite(BadVersion):
    """The frame's cipher suite differs from ours (e.g. plaintext frame to an AEAD node).

    A node never accepts a weaker suite than it is configured for: this is what makes
    the plaintext simulation mode impossible to downgrade into.
    """

    reason = "bad_suite"


class BadTag(WireError):
    """AEAD authentication failed: tampered frame, wrong session secret or wrong key."""

    reason = "bad_tag"


class BadSignature(WireError):
    """A required signature is missing, invalid, or made by a key that is not the sender's."""

    reason = "bad_signature"


class UnknownSigner(BadSignature):
    """The frame is signed but the receiver knows no public key for the sender id.

    Distinct from a bad signature: the host may fetch the key (e.g. from membership)
    and the peer's next announcement that carries its key will succeed.
    """

    reason = "unknown_signer"


class Replay(WireError):
    """The (sender, lane, epoch, seq) was already accepted or is older than the window."""

    reason = "replay"


class StaleEpoch(Replay):
    """The frame belongs to an older process start of the sender than one already seen."""

    reason = "stale_epoch"


class Reflected(Replay):
    """The frame claims to come from this very node: a reflection of our own traffic."""

    reason = "reflected"


class MalformedMessage(WireError):
    """A message body does not match its declared schema."""

    reason = "malformed_message"


class UnknownType(MalformedMessage):
    """The message type name is not registered on this node."""

    reason = "unknown_type"


class MalformedTensor(MalformedMessage):
    """A tensor frame is inconsistent (dtype, shape, offsets, lengths, indices)."""

    reason = "malformed_tensor"


class NonFiniteTensor(MalformedTensor):
    """A tensor contains NaN or Inf and the caller did not allow it."""

    reason = "nonfinite_tensor"
