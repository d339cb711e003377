"""What a SWIM member signs, and the injected signer/verifier.

The membership layer does not depend on any key format: the node hands it a
``sign(data) -> signature`` for its own key and a
``verify(node_id, public_key, signature, data) -> bool`` for everyone else's
(Ed25519 in production). The payloads are fixed, domain-separated byte strings,
so a signature for one kind of claim can never be replayed as another.

:func:`insecure_identity` builds the identity used by simulations: a real key
*id* derivation (so the id/key binding check runs) but empty signatures that
always verify, because a thousand simulated nodes cannot afford Ed25519 and the
simulator has no attacker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from deepgossip.membership.state import NODE_ID_BYTES, MemberState

Signer = Callable[[bytes], bytes]
Verifier = Callable[[bytes, bytes, bytes, bytes], bool]
"""verify(node_id, public_key, signature, data) -> bool."""

_ALIVE = b"deepgossip/swim/alive\x00"
_ACCUSE = b"deepgossip/swim/accuse\x00"
_LEFT = b"deepgossip/swim/left\x00"


def node_id_from_public_key(public_key: bytes) -> bytes:
    """A node's id: the first 16 bytes of SHA-256 of its public key."""
    return hashlib.sha256(public_key).digest()[:NODE_ID_BYTES]


def alive_payload(node: bytes, incarnation: int, host: str, port: int) -> bytes:
    """Signed by the member: "I, ``node``, am alive at this address at ``incarnation``"."""
    return (
        _ALIVE
        + node
        + incarnation.to_bytes(8, "big")
        + port.to_bytes(2, "big")
        + host.encode("utf-8")
    )


def accusation_payload(kind: MemberState, node: bytes, incarnation: int, accuser: bytes) -> bytes:
    """Signed by the accuser of a suspect or dead claim."""
    return _ACCUSE + bytes((int(kind),)) + node + incarnation.to_bytes(8, "big") + accuser


def left_payload(node: bytes, incarnation: int) -> bytes:
    """Signed by a member leaving gracefully at ``incarnation``."""
    return _LEFT + node + incarnation.to_bytes(8, "big")


@dataclass(frozen=True, slots=True)
class SwimIdentity:
    """Who we are, and how we sign and check claims."""

    node_id: bytes
    public_key: bytes
    sign: Signer
    verify: Verifier

    def __post_init__(self) -> None:
        if node_id_from_public_key(self.public_key) != self.node_id:
            raise ValueError("node_id must be SHA-256(public_key)[:16]")


def _no_signature(data: bytes) -> bytes:
    return b""


def _accept_all(node_id: bytes, public_key: bytes, signature: bytes, data: bytes) -> bool:
    return True


def insecure_identity(name: object, seed: int = 0) -> SwimIdentity:
    """A deterministic identity for simulations: NO signatures, everything verifies.

    Never use it on real sockets; production identities sign with Ed25519.
    """
    public_key = hashlib.sha256(f"deepgossip-sim-key/{seed}/{name!r}".encode()).digest()
    return SwimIdentity(
        node_id=node_id_from_public_key(public_key),
        public_key=public_key,
        sign=_no_signature,
        verify=_accept_all,
    )
