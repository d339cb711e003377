"""Neighbour polls: ask a few random neighbours before discarding a borderline update.

The part of :class:`~deepgossip.trust.blacklist.BlacklistCore` that holds
polls (it owns one :class:`NeighbourPolls` and routes ``trust.poll`` and
``trust.poll_reply`` to it). Sans-I/O like the core: methods take the current
time and return effects.

``poll_size`` random live neighbours (never the peer in question, never a
blacklisted one) get a signed ``trust.poll`` and answer a signed
``trust.poll_reply`` with their own view (blacklisted? suspicion score?). A
reply votes *discard* when the neighbour has the peer blacklisted or its
suspicion reaches ``suspicion_threshold``, *keep* below, and abstains without
an opinion. The poll ends when every neighbour has answered or at
``poll_timeout``, with a :class:`PollDecided` event: the majority of votes
decides, a tie keeps the update, and no vote at all falls back on the caller's
``default_discard``. A *confirmation* (``min_discard``) asks more neighbours and
discards only on that many votes to discard, whatever the others say: the
defence confirms a conviction that only its memory panel reached this way
(:meth:`~deepgossip.trust.blacklist.BlacklistCore.confirm`). Replies are
authenticated by the frame codec (the
messages declare ``key_field``: the key in the message must hash to the
frame's sender), and only the neighbours asked, once each, are counted.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from deepgossip.net.runtime import Address, Effect, Send
from deepgossip.trust.accusation import MAX_SEQ
from deepgossip.wire.identity import NODE_ID_SIZE, PUBLIC_KEY_SIZE, node_id_of
from deepgossip.wire.message import message

if TYPE_CHECKING:
    from deepgossip.trust.blacklist import BlacklistConfig, LivePeersFn, SuspicionFn

__all__ = ["NeighbourPolls", "PollDecided", "PollReply", "PollRequest"]


@message("trust.poll", signed=True, key_field="public_key")
@dataclass(frozen=True, slots=True)
class PollRequest:
    """What is your view of ``accused``? Signed: the poller's key is in it."""

    public_key: bytes
    poll_id: int
    accused: bytes


@message("trust.poll_reply", signed=True, key_field="public_key")
@dataclass(frozen=True, slots=True)
class PollReply:
    """A neighbour's view: blacklisted there? its suspicion (None: no opinion)."""

    public_key: bytes
    poll_id: int
    accused: bytes
    blacklisted: bool
    suspicion: float | None = None


@dataclass(frozen=True, slots=True)
class PollDecided:
    """The outcome of poll ``poll_id`` about ``peer_id``.

    ``discard``: the majority of votes says discard the update; a tie keeps it;
    no vote at all (no neighbour, no reply, only abstentions) gives the caller's
    default. For a confirmation: at least ``min_discard`` votes to discard.
    ``votes_for`` are votes to discard.
    """

    poll_id: int
    peer_id: bytes
    discard: bool
    votes_for: int
    votes_against: int
    abstained: int
    unanswered: int


@dataclass(slots=True)
class _Poll:
    peer_id: bytes
    deadline: float
    asked: dict[bytes, Address]
    default_discard: bool
    min_discard: int | None = None
    answered: set[bytes] = field(default_factory=set)
    votes_for: int = 0
    votes_against: int = 0
    abstained: int = 0


class NeighbourPolls:
    """The polls one node holds, and its answers to others' polls.

    Args:
        node_id, public_key: this node's (requests carry the key).
        config: the blacklist's tunables (``poll_size``, ``poll_timeout``,
            ``max_open_polls``, ``suspicion_threshold``).
        rng: poll ids and the neighbours asked.
        live_peers: live members other than this node.
        is_blacklisted: nobody blacklisted is asked, answered or counted.
        own_suspicion: our view of a peer, for our answers.
        dropped, events: the owner's counters (refused input, what happened).
    """

    def __init__(
        self,
        *,
        node_id: bytes,
        public_key: bytes,
        config: BlacklistConfig,
        rng: random.Random,
        live_peers: LivePeersFn,
        is_blacklisted: Callable[[bytes], bool],
        own_suspicion: SuspicionFn,
        dropped: Counter[str],
        events: Counter[str],
    ) -> None:
        self.node_id = node_id
        self.public_key = public_key
        self.config = config
        self._rng = rng
        self._live_peers = live_peers
        self._is_blacklisted = is_blacklisted
        self._own = own_suspicion
        self._dropped = dropped
        self._events = events
        self._polls: dict[int, _Poll] = {}
        self._heap: list[tuple[float, int]] = []  # lazy-deletion heap of deadlines

    def __len__(self) -> int:
        return len(self._polls)

    def start(
        self,
        peer_id: bytes,
        now: float,
        default_discard: bool,
        *,
        size: int | None = None,
        min_discard: int | None = None,
    ) -> tuple[int, list[Effect]]:
        """Ask ``size`` (default ``poll_size``) random live neighbours about
        ``peer_id``; the poll id and effects (a :class:`PollDecided` at once
        when nobody can be asked or too many polls are open). With
        ``min_discard`` the poll discards on that many votes to discard and
        keeps otherwise (``default_discard`` is then unused)."""
        poll_id = self._rng.getrandbits(62)
        while poll_id in self._polls:
            poll_id = self._rng.getrandbits(62)
        self._events["polls"] += 1
        poll = _Poll(peer_id, now + self.config.poll_timeout, {}, default_discard, min_discard)
        if len(self._polls) >= self.config.max_open_polls:
            self._events["poll_overflow"] += 1
            return poll_id, [self._decide(poll_id, poll)]
        candidates: dict[bytes, Address] = {}
        for node_id, address in self._live_peers():
            if node_id not in (peer_id, self.node_id) and not self._is_blacklisted(node_id):
                candidates[bytes(node_id)] = address
        wanted = self.config.poll_size if size is None else size
        chosen = self._rng.sample(sorted(candidates), min(wanted, len(candidates)))
        if not chosen:
            return poll_id, [self._decide(poll_id, poll)]
        poll.asked = {node_id: candidates[node_id] for node_id in chosen}
        self._polls[poll_id] = poll
        heapq.heappush(self._heap, (poll.deadline, poll_id))
        request = PollRequest(self.public_key, poll_id, peer_id)
        return poll_id, [Send(address, request) for address in poll.asked.values()]

    def _decide(self, poll_id: int, poll: _Poll) -> PollDecided:
        self._polls.pop(poll_id, None)
        if poll.min_discard is not None:
            discard = poll.votes_for >= poll.min_discard
        elif poll.votes_for == poll.votes_against == 0:
            discard = poll.default_discard  # nobody had an opinion: the caller's call
        else:
            discard = poll.votes_for > poll.votes_against  # a tie keeps the update
        self._events["polls_discard" if discard else "polls_keep"] += 1
        return PollDecided(
            poll_id,
            poll.peer_id,
            discard,
            poll.votes_for,
            poll.votes_against,
            poll.abstained,
            len(poll.asked) - len(poll.answered),
        )

    def answer(self, src: Address, msg: PollRequest) -> list[Effect]:
        """Someone polls us: reply with our view of the peer it asks about."""
        if (
            len(msg.public_key) != PUBLIC_KEY_SIZE
            or len(msg.accused) != NODE_ID_SIZE
            or not 0 <= msg.poll_id <= MAX_SEQ
        ):
            self._dropped["malformed_poll"] += 1
            return []
        if self._is_blacklisted(node_id_of(msg.public_key)):
            self._dropped["poller_blacklisted"] += 1
            return []
        suspicion: float | None = None
        if msg.accused != self.node_id:
            suspicion = self._own(msg.accused, ())
            if suspicion is not None:
                # Keep the reply decodable and meaningful whatever the detector says.
                suspicion = None if math.isnan(suspicion) else min(1.0, max(0.0, suspicion))
        self._events["polls_answered"] += 1
        blacklisted = self._is_blacklisted(msg.accused)
        return [
            Send(src, PollReply(self.public_key, msg.poll_id, msg.accused, blacklisted, suspicion))
        ]

    def on_reply(self, msg: PollReply) -> list[Effect]:
        """A neighbour's vote; the decision once every neighbour asked has voted."""
        poll = self._polls.get(msg.poll_id)
        if poll is None or poll.peer_id != msg.accused or len(msg.public_key) != PUBLIC_KEY_SIZE:
            self._dropped["unsolicited_reply"] += 1
            return []
        voter = node_id_of(msg.public_key)
        if voter not in poll.asked:
            self._dropped["unsolicited_reply"] += 1
            return []
        if voter in poll.answered:
            self._dropped["duplicate_reply"] += 1
            return []
        if self._is_blacklisted(voter):  # blacklisted since we asked: its vote is void
            self._dropped["voter_blacklisted"] += 1
            return []
        poll.answered.add(voter)
        if msg.blacklisted:
            poll.votes_for += 1
        elif msg.suspicion is None or not math.isfinite(msg.suspicion):
            poll.abstained += 1
        elif msg.suspicion >= self.config.suspicion_threshold:
            poll.votes_for += 1
        else:
            poll.votes_against += 1
        if len(poll.answered) == len(poll.asked) or self._settled(poll):
            return [self._decide(msg.poll_id, poll)]
        return []

    @staticmethod
    def _settled(poll: _Poll) -> bool:
        """A confirmation whose outcome the missing votes can no longer change."""
        if poll.min_discard is None:
            return False
        missing = len(poll.asked) - len(poll.answered)
        return poll.votes_for >= poll.min_discard or poll.votes_for + missing < poll.min_discard

    def expire(self, now: float) -> list[Effect]:
        """Polls past their deadline end with the votes that arrived."""
        out: list[Effect] = []
        while self._heap and self._heap[0][0] <= now:
            _, poll_id = heapq.heappop(self._heap)
            poll = self._polls.get(poll_id)
            if poll is not None:  # else: decided early, all neighbours answered
                self._events["poll_timeouts"] += 1
                out.append(self._decide(poll_id, poll))
        return out

    def next_deadline(self) -> float:
        return self._heap[0][0] if self._heap else math.inf
