"""The member table: every remote member we know, with O(1) live-peer sampling.

Live members (alive or suspect: not yet declared dead) are also kept in an
indexed list, so picking k random live peers (indirect probes, push-pull
partners, the gossip layer's peer sampling) is O(k) instead of a scan of the
whole view on every probe.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from deepgossip.membership.state import ALIVE, SUSPECT, Member, MemberState


class MemberTable:
    """Remote members by node id (the local node is not in the table)."""

    def __init__(self) -> None:
        self._members: dict[bytes, Member] = {}
        self._live: list[bytes] = []
        self._live_pos: dict[bytes, int] = {}
        self.version = 0
        """Bumped on every change, so snapshots can be cached."""

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[Member]:
        return iter(self._members.values())

    def get(self, node_id: bytes) -> Member | None:
        return self._members.get(node_id)

    @property
    def live_count(self) -> int:
        return len(self._live)

    def live_ids(self) -> list[bytes]:
        return list(self._live)

    def is_live(self, node_id: bytes) -> bool:
        return node_id in self._live_pos

    def add(self, member: Member) -> None:
        if member.node_id in self._members:
            raise ValueError("member already known")
        self._members[member.node_id] = member
        self._sync_live(member)
        self.version += 1

    def set_state(self, member: Member, state: MemberState, now: float) -> None:
        member.state = state
        member.changed_at = now
        self._sync_live(member)
        self.version += 1

    def touch(self) -> None:
        """Record a change that is not a state change (incarnation, address)."""
        self.version += 1

    def remove(self, node_id: bytes) -> Member | None:
        member = self._members.pop(node_id, None)
        if member is not None:
            self._drop_live(node_id)
            self.version += 1
        return member

    def _sync_live(self, member: Member) -> None:
        if member.state == ALIVE or member.state == SUSPECT:
            if member.node_id not in self._live_pos:
                self._live_pos[member.node_id] = len(self._live)
                self._live.append(member.node_id)
        else:
            self._drop_live(member.node_id)

    def _drop_live(self, node_id: bytes) -> None:
        pos = self._live_pos.pop(node_id, None)
        if pos is None:
            return
        last = self._live.pop()
        if pos < len(self._live):
            self._live[pos] = last
            self._live_pos[last] = pos

    def sample_live(self, k: int, rng: random.Random, exclude: bytes = b"") -> list[Member]:
        """Up to ``k`` distinct random live members, never ``exclude``."""
        live = self._live
        if k <= 0 or not live:
            return []
        want = k + 1 if exclude in self._live_pos else k
        picked = rng.sample(live, min(want, len(live)))
        members = self._members
        return [members[node_id] for node_id in picked if node_id != exclude][:k]
