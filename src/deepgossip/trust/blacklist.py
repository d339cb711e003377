"""The gossiped blacklist: signed accusations, quorum adoption, neighbour polls.

A sans-I/O state machine (see :mod:`deepgossip.net.runtime`), registered on the
node's host under the ``"trust"`` prefix for its own messages (``trust.poll``,
``trust.poll_reply``) and fed the gossip layer's accusation items. Every method
takes the current time and returns effects (``Send``, events, and whatever the
``publish`` callback returns); nothing here touches sockets, threads or clocks.

**Accusing.** When the local detector (AUROR, a robust aggregator) convicts a
peer, :meth:`BlacklistCore.local_verdict` blacklists it here at once and
publishes a signed :class:`~deepgossip.trust.accusation.Accusation` with the
evidence (update digests, rounds, scores) as a gossip item of kind
``"trust.accuse"``. The accusation is renewed every ``republish_period`` while
the verdict stands, so it keeps counting and late joiners learn it through
anti-entropy; :meth:`BlacklistCore.forgive` withdraws it with a signed
retraction (a later record with ``withdraw=True``).

**Adopting.** A node adopts someone else's accusation only when

* a *quorum* of distinct accusers agrees: more than ``max_malicious_fraction``
  of the network (``floor(f * n) + 1``, at least ``min_quorum``), so colluders
  who are at most that fraction can never banish an honest node on their own.
  ``n`` is the largest network size ever estimated here, not the current one:
  every peer blacklisted (or declared dead by lying SWIM messages) drops out
  of the live count, and a quorum that shrank with it would let 3 colluders
  among 10 banish an honest node once one attacker is out. A network that
  really shrinks keeps the larger quorum; adoption then rests on own evidence,
  which fails safe;
* or it already has an accusation in hand and *its own evidence agrees*: the
  caller's ``own_suspicion(peer, evidence)`` reaches ``own_evidence_threshold``.
  The question is asked when an accusation arrives and again whenever the
  caller says its evidence changed (:meth:`BlacklistCore.reconsider`, after
  each detector evaluation): an accusation that arrived a round before the
  node's own detector leaned the same way is adopted a round later, not only
  when the node convicts on its own.

A node that adopts on its own evidence also *endorses* the accusation
(``endorse``, on by default): it publishes its own signed record (reason
``"endorse"``, its own suspicion and evidence), which counts toward other
nodes' quorum like any accuser's, and withdraws it as soon as its own evidence
no longer reaches ``own_evidence_threshold`` (checked at every review). Why:
under non-IID data some honest detectors lag by a round or two; without
endorsements only nodes that convict on their own count toward the quorum, so
the laggards waited for their own evidence (10-11 gossip rounds for 30% label
flippers on a Dirichlet split) although most of the network had already
agreed. Why it is safe: an endorsement needs the endorser's own detector to
agree and stands only while it does, so an accusation cannot echo its way to
a quorum; colluders accusing an honest node gain an endorser only where that
node was already blacklisted on its own evidence, which is the failure the
quorum cannot prevent either.

An accuser counts once per accused however many records it sends (the latest
one stands), only while its record is younger than ``accusation_max_age``, and
never while it is itself blacklisted here: when a node is blacklisted its held
accusations are discarded, and whatever they supported is re-examined. Adopted
entries last as long as their support: a withdrawal, an expiry or a periodic
review (``review_period``; the network may have grown, the detector may have
changed its mind) can lift them. Only local verdicts and endorsements (own
evidence) are ever published: adopting on a quorum alone never turns a node
into an accuser.

**Dropping.** Nothing a peer sends makes the core raise. Refused input is
counted in :attr:`BlacklistCore.dropped` by reason: every reason of
:class:`~deepgossip.trust.accusation.AccusationRejected` (forged or unsigned:
``bad_signature``, ``wrong_signer``, ``malformed``, ``oversized``, ...) plus
``origin_mismatch`` (the gossip origin is not the accuser: someone re-published
another node's record), ``replayed`` (a sequence number not above the last one
seen from that accuser about that peer; identical bytes are already
de-duplicated by the gossip layer), ``too_old`` / ``from_future`` (outside
``accusation_max_age`` / ``max_clock_skew`` of the local wall clock),
``accuser_blacklisted``, ``about_self``, ``own_accusation``,
``accuser_over_limit`` / ``table_full`` (memory bounds), ``not_accusation`` (an
item of another kind was handed in), and, for polls,
``malformed_poll``, ``poller_blacklisted``, ``unsolicited_reply``,
``duplicate_reply``, ``voter_blacklisted``, ``unexpected_message``.

**Polling.** Before discarding a *borderline* update (:meth:`is_borderline`)
the caller asks :meth:`BlacklistCore.poll`; the polls themselves (who is
asked, how votes count, when a poll ends) are
:mod:`~deepgossip.trust.neighbour_polls`.

**Wiring into a node** (``node.py``; the integrator's part)::

    from deepgossip.gossip.events import ItemDelivered
    from deepgossip.trust.accusation import ACCUSATION_KIND
    from deepgossip.trust.blacklist import BlacklistConfig, BlacklistCore

    # Scores here are in [0, 1], and ``suspicion_threshold`` (0.5) is where the local
    # detector convicts. AUROR's decayed score lives in [0, 1 / (1 - decay)] = [0, 4]
    # and convicts at ``blacklist_threshold`` (2.0): map that threshold to 0.5. A
    # peer it never judged has no opinion (None), not 0. Defense.own_suspicion
    # (trust/defense.py) is this function over all of a node's detectors.
    def own_suspicion(peer_id, evidence):
        if not auror.has_judged(peer_id):
            return None
        return min(1.0, auror.suspicion(peer_id) / (2 * auror_config.blacklist_threshold))

    self.blacklist = BlacklistCore(
        signer=identity,
        publish=lambda body, kind, now: self.gossip.publish(body, kind, now)[1],
        live_peers=lambda: [(m.node_id, m.address) for m in self.swim.live_members()],
        n_estimate=lambda: self.swim.live_count + 1,  # the network, this node included
        own_suspicion=own_suspicion,
        rng=random.Random(self._rng.getrandbits(64)),
        config=self.settings.blacklist,               # BlacklistConfig
        now=runtime.now(),
        wall_offset=clock() - runtime.now(),          # core time -> Unix time
        first_seq=max(1, int(clock() * 1000)),        # above any seq of a previous run
    )
    self.host.add_core("trust", self.blacklist)
    # in Node._on_event:
    if isinstance(event, ItemDelivered) and event.kind == ACCUSATION_KIND:
        self.host.execute(self.blacklist.on_item(event))
    # the detector's verdict:   self.host.execute(self.blacklist.local_verdict(...))
    # a borderline update:      poll_id, fx = self.blacklist.poll(peer, now); execute(fx);
    #                           hold the update until PollDecided(poll_id) arrives.

**Ignoring blacklisted nodes** (also the integrator's part): ``is_blacklisted``
is the predicate. Mixing must drop every update whose origin is blacklisted
and never push to one (filter the ``peers`` callbacks of the update exchange
and of the rumour core with it). Membership must stop probing it, refuse its
pings and claims, and leave it out of ``live_members`` and peer sampling: the
node calls ``Swim.exclude`` on :class:`PeerBlacklisted` and ``Swim.readmit`` on
:class:`PeerUnblacklisted` (see ``node.py``), after which
``swim.live_members()`` no longer holds it. ``n_estimate`` then counts the
members that are not blacklisted.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Final, Literal

from deepgossip.gossip.events import ItemDelivered
from deepgossip.net.runtime import Address, Effect
from deepgossip.trust.accusation import (
    ACCUSATION_KIND,
    MAX_SEQ,
    AccusationLimits,
    AccusationRejected,
    AccusationSigner,
    Evidence,
    open_accusation,
    sign_accusation,
)
from deepgossip.trust.neighbour_polls import (
    NeighbourPolls,
    PollDecided,
    PollReply,
    PollRequest,
)
from deepgossip.wire.identity import NODE_ID_SIZE

__all__ = [
    "DEFAULT_CONFIG",
    "BlacklistConfig",
    "BlacklistCore",
    "BlacklistEntry",
    "EvidenceFn",
    "LivePeersFn",
    "LocalVerdict",
    "PeerBlacklisted",
    "PeerUnblacklisted",
    "PollDecided",
    "PollReply",
    "PollRequest",
    "PublishFn",
    "SuspicionFn",
    "Verdict",
    "quorum_size",
]

PublishFn = Callable[[bytes, str, float], Sequence[Effect]]
"""``publish(body, kind, now) -> effects``: spread a gossip item (RumorCore.publish
without its item id). May raise ``ValueError`` if the gossip layer refuses."""
LivePeersFn = Callable[[], Sequence[tuple[bytes, Address]]]
"""Live members other than this node, as ``(node_id, address)`` pairs."""
SuspicionFn = Callable[[bytes, Sequence[Evidence]], "float | None"]
"""``own_suspicion(peer_id, evidence) -> score in [0, 1] or None`` (no opinion).

The local detector's view of a peer. ``evidence`` is the evidence of the
accusation being considered, so a detector may check whether it scored the same
update digests; it is empty for polls and periodic reviews."""
EvidenceFn = Callable[[bytes], Sequence[Evidence]]
"""``own_evidence(peer_id) -> evidence``: what the local detector holds against a
peer, most telling first (attached to our endorsements; may be empty)."""

Verdict = Literal["local", "quorum", "own_evidence"]
"""Why a peer is blacklisted: our own detector, enough accusers, or accusers
backed by our own (weaker) evidence."""


def quorum_size(n: int, max_malicious_fraction: float, min_quorum: int) -> int:
    """Distinct accusers needed in a network of ``n`` nodes.

    The smallest integer strictly greater than ``max_malicious_fraction * n``,
    at least ``min_quorum``. Computed in exact rationals: in floating point
    ``0.3 * 20`` is exactly 6.0 but ``0.3 * 10`` is 3.0000000000000004, and an
    error in the other direction would let exactly 30% of colluders through.
    """
    fraction = Fraction(repr(float(max_malicious_fraction)))
    return max(min_quorum, math.floor(fraction * max(n, 0)) + 1)


@dataclass(frozen=True, slots=True)
class BlacklistConfig:
    """Tunables of :class:`BlacklistCore`, every default with its reason."""

    max_malicious_fraction: float = 0.3
    """The design's threat model: at most 30% of the nodes are malicious. A quorum
    strictly exceeds this fraction of the network, so that many colluders can
    never banish an honest node by themselves."""
    min_quorum: int = 2
    """Floor of the quorum. In networks of 3 or fewer ``floor(0.3 n) + 1`` is 1,
    and a single (possibly malicious) accuser would banish alone."""
    suspicion_threshold: float = 0.5
    """Suspicion at or above which a node considers a peer malicious when it
    answers a poll. Suspicion is in [0, 1]; for AUROR it is the fraction of
    indicative features on which the peer sat in the minority cluster, so 0.5
    means "on most of them". Set it to the local detector's own threshold."""
    borderline_margin: float = 0.1
    """An update whose suspicion lies within this of ``suspicion_threshold`` is
    borderline: poll neighbours before discarding it. Narrow, because polls cost
    a round trip of delay per update; clear cases are decided locally."""
    own_evidence_threshold: float = 0.4
    """Own suspicion from which a single accusation is enough to adopt: the lower
    edge of the borderline band. The node leans the same way on its own
    evidence but would not have acted alone (at ``suspicion_threshold`` its
    detector convicts anyway)."""
    endorse: bool = True
    """Publish an endorsement (a signed record of our own) while we hold an
    accusation backed by our own evidence, so it counts toward others' quorum
    (module docstring). Off: only local verdicts count, and nodes whose
    detector lags wait for it."""
    poll_size: int = 5
    """Neighbours asked per poll. Odd, so a full answer has a majority; with 30%
    malicious neighbours a random 5 has a malicious majority 16% of the time
    (3 would: 22%), at the cost of a few small datagrams per borderline update."""
    poll_timeout: float = 1.0
    """Seconds a poll waits for replies: two SWIM direct-probe timeouts (0.5 s),
    a WAN round trip plus a signature on a busy node. A borderline update is
    held at most this long."""
    max_open_polls: int = 64
    """Polls in flight. Borderline updates are rare; under a flood of them the
    extra ones are decided at once by the caller's default instead of piling up
    state and traffic."""
    accusation_max_age: float = 600.0
    """Seconds an accusation counts after its accuser signed it (its wall clock).
    Accusers renew theirs every ``republish_period``, so 2.5 periods tolerate a
    lost renewal; an accuser that crashed, left or was silenced stops counting
    within ten minutes, and a captured record cannot be replayed after that."""
    max_clock_skew: float = 60.0
    """How far in the future (by our clock) an accusation may be dated: NTP keeps
    honest clocks within a second; a minute forgives unsynchronised hosts."""
    republish_period: float = 240.0
    """Seconds between renewals of our own accusations: below the gossip store's
    ``max_age`` (300 s), so some node always holds a fresh copy for anti-entropy
    to give late joiners, and well below ``accusation_max_age``."""
    review_period: float = 30.0
    """Seconds between re-checks of adopted entries against the current quorum
    (the network may have grown) and the detector's current view."""
    max_accused_per_accuser: int = 32
    """Peers one accuser may have records about at a time. An honest node convicts
    a handful of peers; this bounds what one hostile accuser makes us remember."""
    max_accusations: int = 65_536
    """(accuser, accused) records kept in all, withdrawals included (~200 B each:
    ~13 MB at worst). Beyond it, records about new pairs are dropped."""
    limits: AccusationLimits = field(default_factory=AccusationLimits)
    """Size limits of accusation bodies (evidence entries, reason length)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_malicious_fraction < 0.5:
            raise ValueError("max_malicious_fraction must be in [0, 0.5)")
        if self.min_quorum < 1 or self.poll_size < 1 or self.max_open_polls < 1:
            raise ValueError("min_quorum, poll_size and max_open_polls must be >= 1")
        if not 0.0 <= self.own_evidence_threshold <= 1.0:
            raise ValueError("own_evidence_threshold must be in [0, 1]")
        if not 0.0 <= self.suspicion_threshold <= 1.0 or self.borderline_margin < 0:
            raise ValueError("suspicion_threshold in [0, 1], borderline_margin >= 0")
        periods = (self.poll_timeout, self.accusation_max_age, self.republish_period)
        if min(periods) <= 0 or self.review_period <= 0 or self.max_clock_skew < 0:
            raise ValueError("timeouts and periods must be > 0, max_clock_skew >= 0")
        if self.republish_period >= self.accusation_max_age:
            raise ValueError("republish_period must be below accusation_max_age")
        if self.max_accused_per_accuser < 1 or self.max_accusations < 1:
            raise ValueError("record limits must be >= 1")


DEFAULT_CONFIG: Final = BlacklistConfig()


# -- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerBlacklisted:
    """``peer_id`` is now blacklisted here; ``accusers`` backed it at that moment."""

    peer_id: bytes
    by: Verdict
    accusers: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class PeerUnblacklisted:
    """``peer_id`` is no longer blacklisted here.

    ``why``: ``"forgiven"`` (our verdict was withdrawn), ``"withdrawn"``,
    ``"expired"``, ``"accusers_blacklisted"`` (its support fell with them) or
    ``"review"`` (quorum or own evidence no longer holds).
    """

    peer_id: bytes
    why: str


@dataclass(frozen=True, slots=True)
class LocalVerdict:
    """One of our own standing convictions: what :meth:`BlacklistCore.local_verdict`
    was given, as :mod:`~deepgossip.trust.verdict_store` keeps it across restarts."""

    peer_id: bytes
    reason: str
    suspicion: float
    evidence: tuple[Evidence, ...]


@dataclass(frozen=True, slots=True)
class BlacklistEntry:
    """A blacklisted peer, as :meth:`BlacklistCore.entry` reports it."""

    peer_id: bytes
    by: Verdict
    since: float
    accusers: tuple[bytes, ...]
    """Accusers whose records currently count (sorted)."""
    reasons: tuple[str, ...]
    """Distinct reasons: ours for a local verdict, then the accusers'."""


# -- internal state -------------------------------------------------------------------


@dataclass(slots=True)
class _Held:
    """An accusation that counts (evidence is not kept: it was used on arrival)."""

    seq: int
    issued_at: float
    expires: float  # core time
    reason: str
    suspicion: float


@dataclass(slots=True)
class _Local:
    reason: str
    suspicion: float
    evidence: tuple[Evidence, ...]
    published_at: float


@dataclass(slots=True)
class _Listed:
    by: Verdict
    since: float


def _no_opinion(peer_id: bytes, evidence: Sequence[Evidence]) -> float | None:
    return None


class BlacklistCore:
    """Signed blacklist gossip with quorum adoption and neighbour polling.

    Args:
        signer: this node's identity (signs accusations).
        publish: spreads an accusation body as a gossip item (see :data:`PublishFn`).
        live_peers: live members other than this node (see :data:`LivePeersFn`).
        n_estimate: current size of the network, this node included.
        own_suspicion: the local detector's view (see :data:`SuspicionFn`);
            default: no opinion (never adopts on own evidence, abstains in polls).
        rng: the only source of randomness (poll ids and neighbours).
        config: tunables.
        now: current core time.
        wall_offset: Unix time minus core time. Accusations are dated with the
            wall clock (``now + wall_offset``) because peers compare the date
            with theirs; 0 in the simulator, where virtual time is the clock.
        first_seq: sequence number of our first accusation; must exceed any we
            issued before (wall-clock milliseconds do, without persisted state).
    """

    def __init__(
        self,
        *,
        signer: AccusationSigner,
        publish: PublishFn,
        live_peers: LivePeersFn,
        n_estimate: Callable[[], int],
        own_suspicion: SuspicionFn | None = None,
        own_evidence: EvidenceFn | None = None,
        rng: random.Random,
        config: BlacklistConfig = DEFAULT_CONFIG,
        now: float = 0.0,
        wall_offset: float = 0.0,
        first_seq: int = 1,
    ) -> None:
        if not 0 <= first_seq <= MAX_SEQ:
            raise ValueError("first_seq out of range")
        self.config = config
        self.node_id = bytes(signer.node_id)
        self.public_key = bytes(signer.public_key_bytes)
        self._signer = signer
        self._publish = publish
        self._live_peers = live_peers
        self._n_estimate = n_estimate
        self._own = own_suspicion or _no_opinion
        self._own_evidence = own_evidence
        self._rng = rng
        self.wall_offset = wall_offset
        self._seq = first_seq
        self.dropped: Counter[str] = Counter()
        """Refused input by reason (see the module docstring)."""
        self.events: Counter[str] = Counter()
        """What happened: ``accepted``, ``withdrawn``, ``published``, ``polls`` ..."""
        # Accusations that count, by accused then accuser (one per accuser).
        self._held: dict[bytes, dict[bytes, _Held]] = {}
        # Highest seq seen per (accuser, accused) and when that record expires.
        self._floors: dict[tuple[bytes, bytes], tuple[int, float]] = {}
        self._by_accuser: dict[bytes, set[bytes]] = {}
        self._expiry: list[tuple[float, bytes, bytes, int]] = []  # lazy-deletion heap
        self._local: dict[bytes, _Local] = {}
        self._endorsed: dict[bytes, _Local] = {}  # our endorsements (own evidence)
        self._listed: dict[bytes, _Listed] = {}
        self._polls = NeighbourPolls(
            node_id=self.node_id,
            public_key=self.public_key,
            config=config,
            rng=rng,
            live_peers=live_peers,
            is_blacklisted=self.is_blacklisted,
            own_suspicion=self._own,
            dropped=self.dropped,
            events=self.events,
        )
        self._next_review = math.inf
        self._peak_n = 0  # high-water mark of n_estimate (see "Adopting")

    # -- queries --------------------------------------------------------------------

    def is_blacklisted(self, peer_id: bytes) -> bool:
        """The predicate membership and mixing must use to ignore a peer."""
        return peer_id in self._listed

    def blacklisted(self) -> frozenset[bytes]:
        return frozenset(self._listed)

    def entry(self, peer_id: bytes) -> BlacklistEntry | None:
        listed = self._listed.get(peer_id)
        if listed is None:
            return None
        held = self._held.get(peer_id, {})
        reasons: list[str] = []
        local = self._local.get(peer_id)
        if local is not None:
            reasons.append(local.reason)
        for accuser in sorted(held):
            if held[accuser].reason not in reasons:
                reasons.append(held[accuser].reason)
        return BlacklistEntry(peer_id, listed.by, listed.since, tuple(sorted(held)), tuple(reasons))

    def local_verdicts(self) -> tuple[LocalVerdict, ...]:
        """Our standing convictions, oldest first: what a restart must not forget."""
        return tuple(
            LocalVerdict(peer, local.reason, local.suspicion, local.evidence)
            for peer, local in self._local.items()
        )

    def accused(self) -> frozenset[bytes]:
        """Peers that someone's counting accusation names here, blacklisted or not."""
        return frozenset(self._held)

    def accusers_of(self, peer_id: bytes) -> tuple[bytes, ...]:
        """Distinct accusers whose records about ``peer_id`` currently count."""
        return tuple(sorted(self._held.get(peer_id, ())))

    def quorum(self) -> int:
        """Distinct accusers needed now: from the largest ``n_estimate`` seen so far."""
        cfg = self.config
        self._peak_n = max(self._peak_n, self._n_estimate())
        return quorum_size(self._peak_n, cfg.max_malicious_fraction, cfg.min_quorum)

    def is_borderline(self, suspicion: float) -> bool:
        """Whether an update this suspicious deserves a poll before discarding."""
        return abs(suspicion - self.config.suspicion_threshold) <= self.config.borderline_margin

    @property
    def open_polls(self) -> int:
        return len(self._polls)

    def status(self) -> dict[str, Any]:
        """Counters and the blacklist, for ``/v1/status``."""
        return {
            "blacklisted": {
                peer.hex(): {"by": e.by, "accusers": len(self._held.get(peer, ()))}
                for peer, e in self._listed.items()
            },
            "quorum": self.quorum(),
            "records": len(self._floors),
            "open_polls": len(self._polls),
            "dropped": dict(self.dropped),
            "events": dict(self.events),
        }

    # -- local verdicts -------------------------------------------------------------

    def local_verdict(
        self,
        peer_id: bytes,
        suspicion: float,
        evidence: Sequence[Evidence],
        now: float,
        reason: str = "auror",
    ) -> list[Effect]:
        """Our detector convicted ``peer_id``: blacklist it and accuse it publicly.

        ``evidence``: the most telling updates first; entries beyond the limit
        are left out. Raises ``ValueError`` on local misuse (our own id, a
        suspicion outside [0, 1], a reason too long, a bad digest).
        """
        peer_id = bytes(peer_id)
        if len(peer_id) != NODE_ID_SIZE or peer_id == self.node_id:
            raise ValueError("cannot accuse this peer id")
        local = _Local(
            reason, float(suspicion), tuple(evidence)[: self.config.limits.max_evidence], now
        )
        # Sign before touching state: a record peers would refuse raises here.
        body = self._sign(peer_id, local, withdraw=False, now=now)
        self._local[peer_id] = local
        self.events["local_verdicts"] += 1
        out = self._settle([peer_id], now, "local")
        out.extend(self._spread(body, now))
        return out

    def reconsider(self, now: float) -> list[Effect]:
        """Re-judge the accused peers held but not blacklisted: our own evidence
        may have grown since their accusations arrived. Call it after each
        evaluation of the local detector; cheap when nothing is pending."""
        pending = [peer for peer in self._held if peer not in self._listed]
        return self._settle(pending, now, "review") if pending else []

    def forgive(self, peer_id: bytes, now: float) -> list[Effect]:
        """Withdraw our verdict on ``peer_id`` (a signed retraction is published).

        The peer stays blacklisted if others' accusations still justify it.
        """
        local = self._local.pop(bytes(peer_id), None)
        if local is None:
            return []
        body = self._sign(peer_id, _Local(local.reason, 0.0, (), now), withdraw=True, now=now)
        self.events["forgiven"] += 1
        out = self._settle([peer_id], now, "forgiven")
        out.extend(self._spread(body, now))
        return out

    def _sign(self, peer_id: bytes, local: _Local, *, withdraw: bool, now: float) -> bytes:
        body = sign_accusation(
            self._signer,
            peer_id,
            seq=self._seq,
            issued_at=now + self.wall_offset,
            reason=local.reason,
            suspicion=local.suspicion,
            evidence=local.evidence,
            withdraw=withdraw,
            limits=self.config.limits,
        )
        self._seq += 1  # per accuser, across accused: replays are always older
        return body

    def _spread(self, body: bytes, now: float) -> list[Effect]:
        try:
            effects = list(self._publish(body, ACCUSATION_KIND, now))
        except ValueError:  # the gossip layer refused (store full, ...): retried on renewal
            self.events["publish_failed"] += 1
            return []
        self.events["published"] += 1
        return effects

    # -- accusations from the network -------------------------------------------------

    def on_item(self, item: ItemDelivered) -> list[Effect]:
        """Take in a delivered gossip item (only ``"trust.accuse"`` ones matter)."""
        if item.kind != ACCUSATION_KIND:
            self.dropped["not_accusation"] += 1
            return []
        try:
            acc = open_accusation(item.body, self.config.limits)
        except AccusationRejected as exc:
            self.dropped[exc.reason] += 1
            return []
        now = item.delivered_at
        cfg = self.config
        if item.origin != acc.accuser:
            # Only the accuser may publish its record: a relay re-publishing an old
            # record under its own origin would dodge the gossip layer's dedup.
            self.dropped["origin_mismatch"] += 1
            return []
        if acc.accuser == self.node_id:
            self.dropped["own_accusation"] += 1  # ours, back through anti-entropy
            return []
        if acc.accused == self.node_id:
            self.dropped["about_self"] += 1  # we cannot ignore ourselves
            return []
        age = now + self.wall_offset - acc.issued_at
        if age > cfg.accusation_max_age:
            self.dropped["too_old"] += 1
            return []
        if -age > cfg.max_clock_skew:
            self.dropped["from_future"] += 1
            return []
        if acc.accuser in self._listed:
            self.dropped["accuser_blacklisted"] += 1
            return []
        key = (acc.accuser, acc.accused)
        floor = self._floors.get(key)
        if floor is not None and acc.seq <= floor[0]:
            self.dropped["replayed"] += 1
            return []
        if floor is None:
            if len(self._by_accuser.get(acc.accuser, ())) >= cfg.max_accused_per_accuser:
                self.dropped["accuser_over_limit"] += 1
                return []
            if len(self._floors) >= cfg.max_accusations:
                self.dropped["table_full"] += 1
                return []
        # Counts until its age reaches the limit (a record dated slightly in the
        # future gets no more than the full max age from now).
        expires = now + cfg.accusation_max_age - max(age, 0.0)
        self._floors[key] = (acc.seq, expires)
        self._by_accuser.setdefault(acc.accuser, set()).add(acc.accused)
        heapq.heappush(self._expiry, (expires, acc.accuser, acc.accused, acc.seq))
        self._compact_expiry()
        if acc.withdraw:
            self._drop_held(acc.accused, acc.accuser)
            self.events["withdrawn"] += 1
            return self._settle([acc.accused], now, "withdrawn")
        held = self._held.setdefault(acc.accused, {})
        held[acc.accuser] = _Held(acc.seq, acc.issued_at, expires, acc.reason, acc.suspicion)
        self.events["accepted"] += 1
        # Support only grew, but the detector's view may have changed: "review".
        return self._settle([acc.accused], now, "review", {acc.accused: acc.evidence})

    def _drop_held(self, accused: bytes, accuser: bytes) -> bool:
        held = self._held.get(accused)
        if held is None or held.pop(accuser, None) is None:
            return False
        if not held:
            del self._held[accused]
        return True

    def _compact_expiry(self) -> None:
        """Rebuild the expiry heap when superseded records dominate it (a hostile
        accuser renewing one record very often must not grow it without bound)."""
        if len(self._expiry) > 4 * len(self._floors) + 64:
            self._expiry = [(exp, a, b, seq) for (a, b), (seq, exp) in self._floors.items()]
            heapq.heapify(self._expiry)

    # -- the verdict ----------------------------------------------------------------

    def _verdict(
        self, peer: bytes, evidence: Sequence[Evidence]
    ) -> tuple[Verdict | None, tuple[bytes, ...]]:
        accusers = tuple(sorted(self._held.get(peer, ())))
        if peer in self._local:
            return "local", accusers
        if not accusers:
            return None, accusers
        if len(accusers) >= self.quorum():
            return "quorum", accusers
        own = self._own(peer, evidence)
        if own is not None and own >= self.config.own_evidence_threshold:
            return "own_evidence", accusers
        return None, accusers

    def _settle(
        self,
        peers: Iterable[bytes],
        now: float,
        why: str,
        evidence: Mapping[bytes, Sequence[Evidence]] | None = None,
    ) -> list[Effect]:
        """Bring the blacklist status of ``peers`` (and what depends on it) up to date.

        Blacklisting a node discards the accusations it made, which may lift
        entries they supported; lifting never restores anything, so this ends.
        """
        out: list[Effect] = []
        todo: dict[bytes, str] = dict.fromkeys(peers, why)  # insertion-ordered queue
        while todo:
            peer = next(iter(todo))
            why = todo.pop(peer)
            verdict, accusers = self._verdict(peer, (evidence or {}).get(peer, ()))
            listed = self._listed.get(peer)
            if verdict is not None and listed is None:
                self._listed[peer] = _Listed(verdict, now)
                self.events[f"blacklisted_{verdict}"] += 1
                out.append(PeerBlacklisted(peer, verdict, accusers))
                for accused in sorted(self._by_accuser.get(peer, ())):
                    if self._drop_held(accused, peer):
                        todo.setdefault(accused, "accusers_blacklisted")
            elif verdict is not None and listed is not None:
                # Our detector now agrees with the quorum, or we forgave a peer
                # that the quorum still condemns.
                listed.by = verdict
            elif verdict is None and listed is not None:
                del self._listed[peer]
                self.events["unblacklisted"] += 1
                out.append(PeerUnblacklisted(peer, why))
            if verdict not in (None, "local") and self._next_review == math.inf:
                self._next_review = now + self.config.review_period  # adopted: re-check it
            out.extend(self._endorsement(peer, verdict, now, (evidence or {}).get(peer, ())))
        return out

    def _endorsement(
        self, peer: bytes, verdict: Verdict | None, now: float, evidence: Sequence[Evidence]
    ) -> list[Effect]:
        """Publish or withdraw our endorsement of the accusations against ``peer``:
        it stands exactly while we blacklist the peer on others' word and our own
        evidence reaches ``own_evidence_threshold``, whatever else backs it."""
        if peer in self._local:
            # Our verdict's record (same accuser, higher seq) supersedes it everywhere.
            self._endorsed.pop(peer, None)
            return []
        own = self._own(peer, evidence) if verdict is not None else None
        if own is not None and own >= self.config.own_evidence_threshold:
            if not self.config.endorse or peer in self._endorsed:
                return []
            found = tuple(self._own_evidence(peer)) if self._own_evidence is not None else ()
            limit = self.config.limits.max_evidence
            local = _Local("endorse", min(1.0, float(own)), found[:limit], now)
            self._endorsed[peer] = local
            self.events["endorsed"] += 1
            return self._spread(self._sign(peer, local, withdraw=False, now=now), now)
        if peer in self._endorsed:
            local = self._endorsed.pop(peer)
            self.events["endorsements_withdrawn"] += 1
            retraction = _Local(local.reason, 0.0, (), now)
            return self._spread(self._sign(peer, retraction, withdraw=True, now=now), now)
        return []

    # -- polls ----------------------------------------------------------------------

    def poll(
        self, peer_id: bytes, now: float, *, default_discard: bool = False
    ) -> tuple[int, list[Effect]]:
        """Ask ``poll_size`` random live neighbours whether to discard ``peer_id``'s update.

        Returns the poll id and effects; a :class:`PollDecided` with that id
        follows (at once when no neighbour can be asked or too many polls are
        open). ``default_discard``: the outcome when no vote arrives.
        """
        return self._polls.start(bytes(peer_id), now, default_discard)

    def confirm(self, peer_id: bytes, now: float) -> tuple[int, list[Effect]]:
        """Ask ``2q - 1`` random live neighbours (``q``: the quorum) whether to
        convict ``peer_id``; the :class:`PollDecided` that follows discards
        (convict) only on ``q`` votes to discard.

        For verdicts our own evidence cannot carry alone (the defence's memory
        panel): as with the quorum, colluders, fewer than ``q``, can never
        confirm one by themselves, and a conviction nobody else's detector
        shares (an honest peer that only looks off from where we stand) is
        not confirmed.
        """
        q = self.quorum()
        return self._polls.start(bytes(peer_id), now, False, size=2 * q - 1, min_discard=q)

    # -- the sans-I/O contract --------------------------------------------------------

    def handle(self, src: Address, msg: Any, now: float) -> list[Effect]:
        if isinstance(msg, PollRequest):
            return self._polls.answer(src, msg)
        if isinstance(msg, PollReply):
            return self._polls.on_reply(msg)
        self.dropped["unexpected_message"] += 1
        return []

    def tick(self, now: float) -> list[Effect]:
        out = self._polls.expire(now)
        # Records past their age stop counting; their replay floors go with them
        # (a replay would now be refused as too old anyway).
        expired: list[bytes] = []
        while self._expiry and self._expiry[0][0] <= now:
            _, accuser, accused, seq = heapq.heappop(self._expiry)
            floor = self._floors.get((accuser, accused))
            if floor is None or floor[0] != seq:
                continue  # superseded by a later record
            del self._floors[(accuser, accused)]
            targets = self._by_accuser[accuser]
            targets.discard(accused)
            if not targets:
                del self._by_accuser[accuser]
            if self._drop_held(accused, accuser):
                self.events["expired"] += 1
                expired.append(accused)
        out.extend(self._settle(expired, now, "expired"))
        # Renew our own accusations before they lapse at other nodes.
        for peer, local in [*self._local.items(), *self._endorsed.items()]:
            if now >= local.published_at + self.config.republish_period:
                local.published_at = now
                out.extend(self._spread(self._sign(peer, local, withdraw=False, now=now), now))
        if now >= self._next_review:
            adopted = [p for p, e in self._listed.items() if e.by != "local"]
            out.extend(self._settle(adopted, now, "review"))
            still = any(e.by != "local" for e in self._listed.values())
            self._next_review = now + self.config.review_period if still else math.inf
        return out

    def next_deadline(self) -> float:
        deadline = min(self._next_review, self._polls.next_deadline())
        if self._expiry:
            deadline = min(deadline, self._expiry[0][0])
        if self._local or self._endorsed:
            renew = min(x.published_at for x in [*self._local.values(), *self._endorsed.values()])
            deadline = min(deadline, renew + self.config.republish_period)
        return deadline
