"""Session keys: from a shared join secret to per-sender frame keys.

A session (one collaborative training run) may be closed by a *join secret*
shared out of band. Nodes derive the session key from it with HKDF-SHA256, salted
with the session id so that one secret reused across sessions still yields
unrelated keys. The session file stores only :func:`secret_fingerprint` (SHA-256 of
the secret), which lets a node check that it was given the right secret without
the file itself granting entry.

HKDF is not a password hash: a guessable secret can be brute-forced offline from
one captured frame or from the fingerprint. Secrets must therefore be random;
:func:`new_join_secret` makes one and :meth:`SessionKey.derive` refuses secrets
shorter than :data:`MIN_SECRET_BYTES`.

Frames are not sealed with the session key itself but with a key derived per
(sender, epoch) (:meth:`SessionKey.frame_key`). Each such key is used by exactly
one process of one node, which numbers its frames with counters, so nonces are
unique by construction instead of by probability (see ``envelope``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "MIN_SECRET_BYTES",
    "SessionKey",
    "fingerprint_matches",
    "new_join_secret",
    "secret_fingerprint",
]

MIN_SECRET_BYTES = 16
"""128 bits if random: shorter secrets invite offline guessing (see module doc)."""

KEY_SIZE = 32
_SESSION_INFO = b"deepgossip/v1/session-key"
_FRAME_INFO = b"deepgossip/v1/frame-key"


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def new_join_secret() -> str:
    """A fresh random join secret (256 bits, URL-safe text for session files and CLIs)."""
    return secrets.token_urlsafe(32)


def secret_fingerprint(secret: str | bytes) -> str:
    """Hex SHA-256 of the secret: what a session file stores instead of the secret."""
    return hashlib.sha256(_as_bytes(secret)).hexdigest()


def fingerprint_matches(secret: str | bytes, fingerprint: str) -> bool:
    """Constant-time check of a secret against a stored fingerprint."""
    return hmac.compare_digest(secret_fingerprint(secret), fingerprint.lower())


@dataclass(frozen=True, slots=True)
class SessionKey:
    """The symmetric key of one session. ``repr`` never shows the key."""

    session_id: bytes
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_SIZE:
            raise ValueError(f"session key must be {KEY_SIZE} bytes")
        if len(self.session_id) > 255:
            raise ValueError("session id must be at most 255 bytes")

    @classmethod
    def derive(cls, secret: str | bytes, session_id: str | bytes) -> SessionKey:
        """HKDF-SHA256(secret, salt=session_id) -> 32-byte session key."""
        raw = _as_bytes(secret)
        if len(raw) < MIN_SECRET_BYTES:
            raise ValueError(
                f"join secret must be at least {MIN_SECRET_BYTES} bytes of randomness; "
                "generate one with deepgossip.wire.session.new_join_secret()"
            )
        sid = _as_bytes(session_id)
        key = HKDF(hashes.SHA256(), KEY_SIZE, salt=sid, info=_SESSION_INFO).derive(raw)
        return cls(session_id=sid, key=key)

    def frame_key(self, sender: bytes, epoch: bytes) -> bytes:
        """The AEAD key for frames from ``sender`` during process start ``epoch``."""
        info = _FRAME_INFO + bytes(sender) + bytes(epoch)
        return HKDF(hashes.SHA256(), KEY_SIZE, salt=None, info=info).derive(self.key)
