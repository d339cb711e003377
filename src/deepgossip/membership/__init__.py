"""Membership: SWIM failure detection with Lifeguard, as a sans-I/O core.

Start with :class:`Swim` (the core), :class:`SwimConfig` (every default and its
reason) and the events in :mod:`deepgossip.membership.events`. The protocol,
its precedence rules and measured figures are described in docs/membership.md.
"""

from deepgossip.membership.config import SwimConfig
from deepgossip.membership.events import (
    MemberAlive,
    MemberDead,
    MemberExcluded,
    MemberJoined,
    MemberLeft,
    MemberReadmitted,
    MemberReaped,
    MemberSuspected,
    MemberUpdated,
    NeedPeers,
    Refuted,
)
from deepgossip.membership.messages import Ack, Claim, Gossip, Nack, Ping, PingReq, PushPull
from deepgossip.membership.signing import (
    SwimIdentity,
    insecure_identity,
    node_id_from_public_key,
)
from deepgossip.membership.state import MemberInfo, MemberState
from deepgossip.membership.swim import Swim

__all__ = [
    "Ack",
    "Claim",
    "Gossip",
    "MemberAlive",
    "MemberDead",
    "MemberExcluded",
    "MemberInfo",
    "MemberJoined",
    "MemberLeft",
    "MemberReadmitted",
    "MemberReaped",
    "MemberState",
    "MemberSuspected",
    "MemberUpdated",
    "Nack",
    "NeedPeers",
    "Ping",
    "PingReq",
    "PushPull",
    "Refuted",
    "Swim",
    "SwimConfig",
    "SwimIdentity",
    "insecure_identity",
    "node_id_from_public_key",
]
