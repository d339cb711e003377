"""Member states, the local record of a member, and its public read-only view."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from deepgossip.net.runtime import Address

NODE_ID_BYTES = 16
"""Node ids are SHA-256(public key)[:16]: 128 bits, collision-free in practice."""


class MemberState(IntEnum):
    """Where a member stands in our view. The values are also the claim kinds."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


ALIVE = MemberState.ALIVE
SUSPECT = MemberState.SUSPECT
DEAD = MemberState.DEAD
LEFT = MemberState.LEFT


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A snapshot of one member as the local node sees it (what the API returns)."""

    node_id: bytes
    address: Address
    state: MemberState
    incarnation: int
    public_key: bytes


class Member:
    """Mutable record of one remote member; owned by the member table.

    Two incarnations are kept apart on purpose: ``incarnation`` belongs to the
    current ``state``, while ``alive_incarnation``/``alive_signature`` are the
    newest *signed* alive claim, which is what lets any peer re-verify the
    member's address and key when we pass our view on in a push-pull.
    """

    __slots__ = (
        "accusation_signature",
        "accuser",
        "address",
        "alive_incarnation",
        "alive_signature",
        "changed_at",
        "incarnation",
        "node_id",
        "public_key",
        "state",
    )

    def __init__(
        self,
        node_id: bytes,
        address: Address,
        public_key: bytes,
        incarnation: int,
        alive_signature: bytes,
        now: float,
    ) -> None:
        self.node_id = node_id
        self.address = address
        self.public_key = public_key
        self.state = ALIVE
        self.incarnation = incarnation
        self.alive_incarnation = incarnation
        self.alive_signature = alive_signature
        self.accuser = b""
        self.accusation_signature = b""
        self.changed_at = now

    def info(self) -> MemberInfo:
        return MemberInfo(self.node_id, self.address, self.state, self.incarnation, self.public_key)

    def __repr__(self) -> str:
        return (
            f"Member({self.node_id.hex()[:8]} {self.address[0]}:{self.address[1]} "
            f"{self.state.name} inc={self.incarnation})"
        )
