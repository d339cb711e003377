"""Signed tracker registrations: who a node is and where to reach it.

A registration binds a node id to its public key and addresses, signed by that
key, so neither a third party nor the tracker itself can point a node id at
someone else's address: nodes verify every registration the tracker hands out.
The timestamp (wall clock: freshness across machines cannot use a monotonic
clock) bounds replays; the tracker also refuses a timestamp that is not newer
than the last one it accepted from that node. When the session has a join
secret, ``proof`` (an HMAC keyed from the secret) shows the registrant holds it.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import msgpack
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from deepgossip.net.runtime import Address
from deepgossip.wire.identity import Identity, node_id_of, verify

_DOMAIN = b"deepgossip/v1/tracker-register"
_PROOF_INFO = b"deepgossip/v1/tracker-proof"
MAX_HOST_LENGTH = 253
"""The longest DNS name; anything longer is not an address."""


class RegistrationError(ValueError):
    """A registration is malformed, forged, stale or replayed."""


def proof_key(secret: str, session_id: str) -> bytes:
    """HMAC key for registration proofs, derived from the join secret."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=session_id.encode(), info=_PROOF_INFO
    ).derive(secret.encode())


def _address(value: Any, what: str) -> Address:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not isinstance(value[0], str)
        or not 0 < len(value[0]) <= MAX_HOST_LENGTH
        or type(value[1]) is not int
        or not 0 < value[1] < 65536
    ):
        raise RegistrationError(f"{what} must be [host, port]")
    return (value[0], value[1])


def _hex(value: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str) or len(value) > 256:
        raise RegistrationError(f"{what} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise RegistrationError(f"{what} must be a hex string") from None
    if size is not None and len(raw) != size:
        raise RegistrationError(f"{what} must be {size} bytes")
    return raw


@dataclass(frozen=True)
class Registration:
    session_id: str
    node_id: bytes
    public_key: bytes
    address: Address  # SWIM/gossip address (UDP and TCP on the same port)
    api: Address | None
    timestamp: float
    signature: bytes = b""
    proof: bytes = b""

    def signed_bytes(self) -> bytes:
        return msgpack.packb(
            [
                _DOMAIN,
                self.session_id,
                self.node_id,
                self.public_key,
                list(self.address),
                list(self.api) if self.api else None,
                self.timestamp,
            ],
            use_bin_type=True,
        )

    @classmethod
    def create(
        cls,
        identity: Identity,
        session_id: str,
        address: Address,
        api: Address | None,
        timestamp: float,
        secret: str | None = None,
    ) -> Registration:
        unsigned = cls(
            session_id, identity.node_id, identity.public_key_bytes, address, api, timestamp
        )
        body = unsigned.signed_bytes()
        proof = (
            hmac.new(proof_key(secret, session_id), body, hashlib.sha256).digest()
            if secret
            else b""
        )
        return cls(
            session_id,
            identity.node_id,
            identity.public_key_bytes,
            address,
            api,
            timestamp,
            identity.sign(body),
            proof,
        )

    def check(self, secret: str | None = None) -> None:
        """Raise RegistrationError unless the key, id, signature (and proof) agree."""
        if node_id_of(self.public_key) != self.node_id:
            raise RegistrationError("node id does not match the public key")
        body = self.signed_bytes()
        if not verify(self.public_key, self.signature, body):
            raise RegistrationError("bad signature")
        if secret is not None:
            expected = hmac.new(proof_key(secret, self.session_id), body, hashlib.sha256)
            if not hmac.compare_digest(expected.digest(), self.proof):
                raise RegistrationError("missing or wrong join-secret proof")

    def to_json(self, *, with_proof: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "session": self.session_id,
            "node_id": self.node_id.hex(),
            "public_key": self.public_key.hex(),
            "address": list(self.address),
            "api": list(self.api) if self.api else None,
            "timestamp": self.timestamp,
            "signature": self.signature.hex(),
        }
        if with_proof and self.proof:
            data["proof"] = self.proof.hex()
        return data

    @classmethod
    def from_json(cls, data: Any) -> Registration:
        if not isinstance(data, dict):
            raise RegistrationError("registration must be a JSON object")
        session = data.get("session")
        timestamp = data.get("timestamp")
        if not isinstance(session, str) or not session:
            raise RegistrationError("session must be a string")
        if type(timestamp) not in (int, float):
            raise RegistrationError("timestamp must be a number")
        api = data.get("api")
        return cls(
            session_id=session,
            node_id=_hex(data.get("node_id"), "node_id", 16),
            public_key=_hex(data.get("public_key"), "public_key", 32),
            address=_address(data.get("address"), "address"),
            api=None if api is None else _address(api, "api"),
            timestamp=float(timestamp),
            signature=_hex(data.get("signature"), "signature", 64),
            proof=_hex(data.get("proof", ""), "proof"),
        )
