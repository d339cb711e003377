"""Items: content ids, origin signatures, metadata and their sanity checks.

An item is an opaque body published by an *origin*. Its id is the SHA-256 of the
body, so a body is verified by hashing it, whoever served it. The origin signs
a digest of the metadata (never the body itself, which may be megabytes; the id
already commits to it), so relays cannot alter kind, size or sequence number.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

from deepgossip.gossip.messages import Announcement

ID_LEN = 32
MAX_KEY_LEN = 64
MAX_SIG_LEN = 128
MAX_SEQ = 2**63 - 1
SIGNING_DOMAIN = b"deepgossip/gossip/item/v1\x00"

SignFn = Callable[[bytes], bytes]
"""``sign(data) -> signature`` with the local node's private key."""
VerifyFn = Callable[[bytes, bytes, bytes, bytes], bool]
"""``verify(node_id, public_key, signature, data)``: True iff the signature is
valid for ``public_key`` and ``public_key`` belongs to ``node_id``."""


def item_id_of(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def signing_digest(
    item_id: bytes,
    origin: bytes,
    public_key: bytes,
    seq: int,
    size: int,
    kind: str,
    created: float,
) -> bytes:
    """The 32 bytes the origin signs: a domain-separated hash of the metadata."""
    h = hashlib.sha256(SIGNING_DOMAIN)
    h.update(item_id)
    for part in (origin, public_key, kind.encode()):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    h.update(struct.pack(">QQd", seq, size, created))
    return h.digest()


@dataclass(frozen=True, slots=True)
class ItemMeta:
    """Verified metadata of an item (the announcement without the body)."""

    item_id: bytes
    origin: bytes
    public_key: bytes
    seq: int
    size: int
    kind: str
    created: float
    signature: bytes

    @classmethod
    def from_announcement(cls, a: Announcement) -> ItemMeta:
        return cls(a.item_id, a.origin, a.public_key, a.seq, a.size, a.kind, a.created, a.signature)

    def announcement(self, body: bytes | None = None) -> Announcement:
        return Announcement(
            self.item_id,
            self.origin,
            self.public_key,
            self.seq,
            self.size,
            self.kind,
            self.created,
            self.signature,
            body,
        )

    def digest(self) -> bytes:
        return signing_digest(
            self.item_id, self.origin, self.public_key, self.seq, self.size, self.kind, self.created
        )


def check_announcement(a: Announcement, max_item_bytes: int, max_kind_len: int) -> str | None:
    """Return why ``a`` is malformed or absurd (a drop reason), or None if sane.

    Cheap checks only; the signature is checked separately (and only once per id).
    """
    if len(a.item_id) != ID_LEN:
        return "bad_id"
    if not 0 < len(a.origin) <= MAX_KEY_LEN or not 0 < len(a.public_key) <= MAX_KEY_LEN:
        return "bad_origin"
    if not 0 < len(a.signature) <= MAX_SIG_LEN:
        return "bad_signature"
    if not 0 <= a.seq <= MAX_SEQ:
        return "bad_seq"
    if not 0 <= a.size <= max_item_bytes:
        return "absurd_size"
    if not a.kind or len(a.kind) > max_kind_len:
        return "bad_kind"
    if not math.isfinite(a.created):
        return "bad_created"
    if a.body is not None and len(a.body) != a.size:
        return "size_mismatch"
    return None


def verify_origin(verify: VerifyFn, meta: ItemMeta) -> bool:
    """Check the origin's signature; a verifier that raises counts as a rejection."""
    try:
        return bool(verify(meta.origin, meta.public_key, meta.signature, meta.digest()))
    except Exception:  # a malformed key must not take the node down
        return False
