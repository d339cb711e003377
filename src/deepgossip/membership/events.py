"""Events the SWIM core hands to the layer above (via the host's listeners).

They are plain effects in the sans-I/O sense: returned next to ``Send`` effects,
never callbacks, so the core stays a pure state machine.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepgossip.membership.state import MemberInfo, MemberState
from deepgossip.net.runtime import Address


@dataclass(frozen=True, slots=True)
class MemberJoined:
    """A member we did not know is alive."""

    member: MemberInfo


@dataclass(frozen=True, slots=True)
class MemberSuspected:
    """``accuser`` could not reach the member; it may still refute."""

    member: MemberInfo
    accuser: bytes


@dataclass(frozen=True, slots=True)
class MemberAlive:
    """A suspect, dead or left member is alive again at a higher incarnation.

    ``previous`` is SUSPECT when it refuted a suspicion, DEAD or LEFT when it came
    back (a restart, or the other side of a healed partition).
    """

    member: MemberInfo
    previous: MemberState


@dataclass(frozen=True, slots=True)
class MemberDead:
    """The member is considered failed.

    ``reason`` is ``"suspicion_timeout"`` when our own suspicion timer ran out,
    ``"declared"`` when we adopted another member's dead claim (``accuser``).
    """

    member: MemberInfo
    reason: str
    accuser: bytes


@dataclass(frozen=True, slots=True)
class MemberLeft:
    """The member said goodbye (a signed left claim); it is not failed."""

    member: MemberInfo


@dataclass(frozen=True, slots=True)
class MemberUpdated:
    """The member moved: it signed an alive claim with a new address."""

    member: MemberInfo
    old_address: Address


@dataclass(frozen=True, slots=True)
class MemberReaped:
    """A dead or left member's tombstone expired; it is forgotten."""

    member: MemberInfo


@dataclass(frozen=True, slots=True)
class MemberExcluded:
    """The owner excluded ``node_id`` (:meth:`Swim.exclude`, e.g. it was blacklisted).

    ``member`` is what we knew of it at that moment (None: we had not met it).
    Until readmitted it is out of every live list and its traffic is ignored.
    """

    node_id: bytes
    member: MemberInfo | None


@dataclass(frozen=True, slots=True)
class MemberReadmitted:
    """The owner lifted the exclusion of ``node_id`` (:meth:`Swim.readmit`).

    ``member`` is the record restored as it was when excluded (None: we had not
    met it; gossip or the next push-pull will introduce it again).
    """

    node_id: bytes
    member: MemberInfo | None


@dataclass(frozen=True, slots=True)
class Refuted:
    """We heard a claim that we are ``accusation`` (suspect/dead/left, or an old
    alive of a previous run) and answered with a new ``incarnation``."""

    incarnation: int
    accusation: MemberState
    accuser: bytes


@dataclass(frozen=True, slots=True)
class NeedPeers:
    """We know fewer than ``wanted`` live peers: ask the tracker for more.

    The core has already contacted every address it remembers (seeds, departed
    members); this event is for the node layer, which owns the tracker client.
    """

    live: int
    wanted: int
