"""The Node: one participant's protocol stack, on any runtime.

A node composes the layers below it for exactly one application:

* its identity (Ed25519; node id = SHA-256(public key)[:16]) and the session's
  frame codec (AES-GCM sealed with a key derived from the join secret);
* a :class:`~deepgossip.net.host.Host` that runs the protocol cores;
* SWIM membership (``swim``), and the tracker client (``tracker``) when the
  session names trackers;
* later layers (gossip, learning, defences) register more cores on the same
  host;
* optionally (``blacklist=BlacklistConfig(...)``) the gossiped blacklist
  (``blacklist``, core ``"trust"``): accusations arrive as gossip items of kind
  ``"trust.accuse"``, local verdicts go out through :meth:`Node.accuse`, and a
  blacklisted peer is excluded from SWIM (:meth:`Swim.exclude
  <deepgossip.membership.swim.Swim.exclude>` on ``PeerBlacklisted``,
  :meth:`~deepgossip.membership.swim.Swim.readmit` on ``PeerUnblacklisted``):
  it is no longer probed nor answered, its membership claims are ignored, and
  it drops out of :meth:`Node.live_peers` (the peers the rumour core, the update
  exchange and blacklist polls choose from). Mixing drops its updates through
  the defence's ``is_blacklisted``. The local detector's view reaches the core
  through :attr:`Node.own_suspicion`, set by whoever owns the detector
  (:class:`~deepgossip.trust.defense.Defense.own_suspicion`).

The class is runtime-agnostic: the simulator builds a thousand of them in one
process, :mod:`deepgossip.node_process` runs one on real sockets with its HTTP
API. Everything that is I/O (HTTP calls to the tracker, the API) lives outside,
driven by the events the cores emit.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from deepgossip.gossip.config import GossipConfig
from deepgossip.gossip.events import ItemDelivered
from deepgossip.gossip.rumor import RumorCore
from deepgossip.membership.config import SwimConfig
from deepgossip.membership.events import NeedPeers
from deepgossip.membership.signing import SwimIdentity
from deepgossip.membership.swim import Swim
from deepgossip.net.host import Host
from deepgossip.net.runtime import Address, Runtime
from deepgossip.session import Session, SessionError
from deepgossip.tracker.client import PeersFound, TrackerClient
from deepgossip.tracker.registration import Registration
from deepgossip.trust.accusation import ACCUSATION_KIND, Evidence
from deepgossip.trust.blacklist import (
    BlacklistConfig,
    BlacklistCore,
    EvidenceFn,
    LocalVerdict,
    PeerBlacklisted,
    PeerUnblacklisted,
    SuspicionFn,
)
from deepgossip.wire.envelope import FrameCodec
from deepgossip.wire.identity import Identity, node_id_of, verify
from deepgossip.wire.session import SessionKey

if TYPE_CHECKING:
    from deepgossip.learn.collaboration import DefenseSummary
    from deepgossip.learn.learner import Learner

log = logging.getLogger(__name__)

OPEN_SESSION_SECRET = "deepgossip/open-session/v1"
"""Key material of sessions without a join secret. Public by design: an open
session's frames are authenticated against corruption, not confidential."""


def session_key(session: Session, secret: str | None) -> SessionKey:
    """The session key: from the join secret, or the public one of open sessions."""
    return SessionKey.derive(secret or OPEN_SESSION_SECRET, session.session_id)


def _verify_origin(node_id: bytes, public_key: bytes, signature: bytes, data: bytes) -> bool:
    """An item's signature is valid only under the key its origin id hashes from."""
    return node_id_of(public_key) == node_id and verify(public_key, signature, data)


def swim_identity(identity: Identity) -> SwimIdentity:
    def check(node_id: bytes, public_key: bytes, signature: bytes, data: bytes) -> bool:
        return verify(public_key, signature, data)

    return SwimIdentity(identity.node_id, identity.public_key_bytes, identity.sign, check)


class _MemberKeys:
    """Public keys of known members, for checking signed frames (a KeyLookup)."""

    def __init__(self, swim: Callable[[], Swim]) -> None:
        self._swim = swim

    def get(self, node_id: bytes, /) -> bytes | None:
        member = self._swim().member(node_id)
        return member.public_key if member is not None else None


@dataclass(frozen=True)
class NodeSettings:
    """Protocol settings every node of a session shares (from the session file)."""

    swim: SwimConfig = field(default_factory=SwimConfig)
    gossip: GossipConfig = field(default_factory=GossipConfig)

    @classmethod
    def from_session(cls, session: Session) -> NodeSettings:
        try:
            return cls(
                swim=SwimConfig(**session.section("swim")),
                gossip=GossipConfig(**session.section("gossip")),
            )
        except TypeError as exc:  # an unknown key in [swim] or [gossip]
            raise SessionError(f"session {session.session_id!r}: {exc}") from exc


@dataclass
class UpdateStats:
    """Counters of the model-update exchange, shown by ``/v1/status``.

    The gossip and mixing layers increment them; they start at 0 so the API
    reports the fields before those layers exist.
    """

    sent: int = 0
    received: int = 0
    rejected: int = 0
    merged: int = 0


class Node:
    """Membership (and, as layers land, gossip and learning) for one application."""

    def __init__(
        self,
        runtime: Runtime,
        address: Address,
        identity: Identity,
        session: Session,
        secret: str | None = None,
        *,
        settings: NodeSettings | None = None,
        rng: random.Random | None = None,
        incarnation: int = 0,
        api_address: Address | None = None,
        wall_clock: Callable[[], float] | None = None,
        blacklist: BlacklistConfig | None = None,
    ) -> None:
        self.identity = identity
        self.session = session
        self.settings = settings or NodeSettings.from_session(session)
        self.address = address
        self.api_address = api_address
        self._secret = session.check_secret(secret)
        self._rng = rng or random.Random()
        self.codec = FrameCodec(
            identity, session_key(session, self._secret), keys=_MemberKeys(lambda: self.swim)
        )
        self.host = Host(runtime, address, self.codec)
        self.swim = Swim(
            swim_identity(identity),
            address,
            self._rng,
            self.settings.swim,
            now=runtime.now(),
            incarnation=incarnation,
        )
        self.host.add_core("swim", self.swim)
        clock = wall_clock or time.time
        self.gossip = RumorCore(
            node_id=identity.node_id,
            public_key=identity.public_key_bytes,
            sign=identity.sign,
            verify=_verify_origin,
            peers=lambda: [m.address for m in self.live_peers()],
            rng=random.Random(self._rng.getrandbits(64)),
            config=self.settings.gossip,
            now=runtime.now(),
            # Items are numbered per origin and peers refuse old numbers, so a
            # restarted node must start above everything it published before:
            # milliseconds of the wall clock do that without persisted state.
            first_seq=max(1, int(clock() * 1000)),
        )
        self.host.add_core("gossip", self.gossip)
        # The gossiped blacklist (optional; off unless configured, so a node
        # without defences behaves exactly as before).
        self.own_suspicion: SuspicionFn | None = None
        """The local detector's view of a peer, in [0, 1] (None: no opinion)."""
        self.own_evidence: EvidenceFn | None = None
        """What the local detector holds against a peer (attached to endorsements)."""
        self.blacklist: BlacklistCore | None = None
        if blacklist is not None:
            self.blacklist = BlacklistCore(
                signer=identity,
                publish=lambda body, kind, now: self.gossip.publish(body, kind, now)[1],
                live_peers=lambda: [(m.node_id, m.address) for m in self.live_peers()],
                n_estimate=lambda: len(self.live_peers()) + 1,  # this node included
                own_suspicion=self._own_suspicion,
                own_evidence=self._own_evidence,
                rng=random.Random(self._rng.getrandbits(64)),
                config=blacklist,
                now=runtime.now(),
                wall_offset=clock() - runtime.now(),  # core time -> Unix time
                first_seq=max(1, int(clock() * 1000)),  # above any seq of a previous run
            )
            self.host.add_core("trust", self.blacklist)
        self.tracker: TrackerClient | None = None
        if session.trackers:
            self.tracker = TrackerClient(
                list(session.trackers),
                lambda: Registration.create(
                    identity, session.session_id, address, api_address, clock(), self._secret
                ),
                session.session_id,
                rng=random.Random(self._rng.getrandbits(64)),
            )
            self.host.add_core("tracker", _TrackerCore(self.tracker))
        self.host.subscribe(self._on_event)
        # Learning (optional): the process that runs the node attaches a Learner;
        # the API serves train/predict through it, status() reports it.
        self.learner: Learner | None = None
        self.update_stats = UpdateStats()
        self.defense_summary: Callable[[], DefenseSummary] | None = None
        """What the defence screening this node's merges did (set by the process
        that wires the defence into the mixing rule); ``/v1/status`` reports it."""

    @property
    def node_id(self) -> bytes:
        return self.identity.node_id

    def is_blacklisted(self, node_id: bytes) -> bool:
        """Whether the node's blacklist excludes ``node_id`` (False without one)."""
        return self.blacklist is not None and self.blacklist.is_blacklisted(node_id)

    def live_peers(self) -> list[Any]:
        """Live SWIM members that are not blacklisted: whom to gossip and push to.

        SWIM already leaves blacklisted peers out (the node excludes them there
        the moment the blacklist convicts them, see ``_on_event``); the filter
        stays as a guard for a blacklist whose effects were not run through
        this node's host (its events are what reach SWIM).
        """
        members = self.swim.live_members()
        if self.blacklist is None or not self.blacklist.blacklisted():
            return members
        return [m for m in members if not self.blacklist.is_blacklisted(m.node_id)]

    def accuse(
        self, peer_id: bytes, suspicion: float, evidence: Sequence[Evidence], reason: str = "auror"
    ) -> None:
        """A local verdict: blacklist ``peer_id`` here and spread a signed accusation."""
        if self.blacklist is None:
            raise RuntimeError("this node has no blacklist (Node(..., blacklist=...))")
        now = self.host.runtime.now()
        self.host.execute(self.blacklist.local_verdict(peer_id, suspicion, evidence, now, reason))

    def restore_verdicts(self, verdicts: Iterable[LocalVerdict]) -> int:
        """Re-issue local verdicts saved before a restart (:mod:`.trust.verdict_store`):
        each peer is blacklisted again and accused with a freshly signed record.
        Returns how many were restored; one that the core refuses (our own id,
        say) is logged and skipped."""
        restored = 0
        for verdict in verdicts:
            try:
                self.accuse(verdict.peer_id, verdict.suspicion, verdict.evidence, verdict.reason)
            except ValueError as exc:
                log.warning("not restoring the verdict on %s: %s", verdict.peer_id.hex(), exc)
            else:
                restored += 1
        return restored

    def reconsider_accusations(self) -> None:
        """The local detector's evidence changed: adopt held accusations it now backs."""
        if self.blacklist is not None:
            self.host.execute(self.blacklist.reconsider(self.host.runtime.now()))

    def _own_suspicion(self, peer_id: bytes, evidence: Sequence[Evidence]) -> float | None:
        return self.own_suspicion(peer_id, evidence) if self.own_suspicion is not None else None

    def _own_evidence(self, peer_id: bytes) -> Sequence[Evidence]:
        return self.own_evidence(peer_id) if self.own_evidence is not None else ()

    def start(self, seeds: Sequence[Address] = ()) -> None:
        self.host.start()
        if seeds:
            self.host.execute(self.swim.join(list(seeds), self.host.runtime.now()))

    def publish(self, body: bytes, kind: str) -> bytes:
        """Spread ``body`` to every node of the session as a signed item; its id."""
        item_id, effects = self.gossip.publish(body, kind, self.host.runtime.now())
        self.host.execute(effects)
        return item_id

    def leave(self) -> None:
        """Tell peers we are leaving (``left``, not dead); keep serving briefly."""
        self.host.execute(self.swim.leave(self.host.runtime.now()))

    def stop(self) -> None:
        self.host.stop()

    def tracker_result(self, call: Any, ok: bool, body: Any) -> None:
        """Feed back an HTTP call's outcome (made by the I/O layer)."""
        if self.tracker is not None:
            self.host.execute(self.tracker.on_result(call, ok, body, self.host.runtime.now()))

    def _on_event(self, event: Any) -> None:
        if isinstance(event, ItemDelivered):
            if event.kind == ACCUSATION_KIND and self.blacklist is not None:
                self.host.execute(self.blacklist.on_item(event))
        elif isinstance(event, PeerBlacklisted) and self.blacklist is not None:
            # A blacklisted node is ignored by membership too: unprobed,
            # unanswered, its claims unheard, gone from every peer list. (Only
            # our own blacklist's verdicts count: a core someone else registered
            # on this host does not speak for the node.)
            self.host.execute(self.swim.exclude(event.peer_id, self.host.runtime.now()))
        elif isinstance(event, PeerUnblacklisted) and self.blacklist is not None:
            self.host.execute(self.swim.readmit(event.peer_id, self.host.runtime.now()))
        elif isinstance(event, PeersFound):
            seeds = [p.address for p in event.peers if p.address != self.address]
            if seeds:
                self.host.execute(self.swim.join(seeds, self.host.runtime.now()))
        elif isinstance(event, NeedPeers) and self.tracker is not None:
            self.tracker.want_peers(self.host.runtime.now())

    # -- introspection (what the API serves) ------------------------------------

    def members(self) -> list[dict[str, Any]]:
        return [
            {
                "id": m.node_id.hex(),
                "address": list(m.address),
                "state": m.state.name.lower(),
                "incarnation": m.incarnation,
            }
            for m in self.swim.members()
        ]

    def status(self) -> dict[str, Any]:
        host, wire = self.host.stats, self.codec.stats
        return {
            "id": self.node_id.hex(),
            "session": self.session.session_id,
            "address": list(self.address),
            "incarnation": self.swim.incarnation,
            "members": {"live": self.swim.live_count, "known": len(self.swim.members())},
            "health": self.swim.awareness.score,
            "traffic": {
                "frames_in": host.frames_in,
                "frames_out": host.frames_out,
                "bytes_in": host.bytes_in,
                "bytes_out": host.bytes_out,
            },
            "dropped": {**wire.dropped, **host.dropped},
            "swim": dict(self.swim.stats),
            "gossip": {
                "items": len(self.gossip.store),
                "hot": self.gossip.hot_count,
                "sent": dict(self.gossip.stats.sent),
                "received": dict(self.gossip.stats.received),
                "dropped": dict(self.gossip.stats.dropped),
            },
            "updates": asdict(self.update_stats),
            "learning": self.learner.status() if self.learner is not None else None,
            "trust": self.trust_status(),
        }

    def trust_status(self) -> dict[str, Any]:
        """The defence and the blacklist, for ``/v1/status``.

        ``blacklisted``: the peers this node ignores, i.e. its gossiped
        blacklist's entries plus the local detector's own convictions (all
        there is when verdicts stay local).
        """
        summary = self.defense_summary() if self.defense_summary is not None else None
        listed = set(self.blacklist.blacklisted()) if self.blacklist is not None else set()
        if summary is not None:
            listed |= summary.convicted
        return {
            "defense": summary.name if summary is not None else "none",
            "blacklisted": sorted(peer.hex() for peer in listed),
            "blacklisted_count": len(listed),
            "updates_rejected": summary.rejected if summary is not None else 0,
            "rejected_by_reason": dict(summary.rejected_by_reason) if summary else {},
            "blacklist": self.blacklist.status() if self.blacklist is not None else None,
        }


class _TrackerCore:
    """Adapts the tracker client to the core interface (it receives no messages)."""

    def __init__(self, client: TrackerClient) -> None:
        self.client = client

    def handle(self, src: Address, msg: Any, now: float) -> list[Any]:
        return []

    def tick(self, now: float) -> list[Any]:
        return self.client.tick(now)

    def next_deadline(self) -> float:
        return self.client.next_deadline()
