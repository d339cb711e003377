"""The SWIM + Lifeguard membership core (sans-I/O).

One :class:`Swim` per node. It is driven like every protocol core
(``handle``/``tick``/``next_deadline``, see ``deepgossip.net.runtime``) and
answers with ``Send`` effects and membership events. What it does each period:

1. **Probe** the next member of a shuffled round-robin order with a ``ping``.
   No ack within the probe timeout: ask ``k`` random members to ``ping_req`` it
   (they ``nack`` if they hear nothing, Lifeguard) and send one fallback ping.
   Still no ack when the period ends: **suspect** it. Probing a suspect member
   carries the suspicion in the ping (Lifeguard's "buddy system") so it can
   refute at once.
2. **Suspicion** is gossiped; every member starts its own Lifeguard timer, which
   shrinks as independent accusers confirm. When it runs out the member is
   declared **dead**. A suspected member that hears of it **refutes** with a
   higher incarnation, which overrides the suspicion everywhere.
3. **Gossip** rides on the probe traffic: every datagram piggybacks the queued
   claims (fewest-sent first, transmit-limited, byte-budgeted); fresh claims are
   also pushed to a few peers at once (``SwimConfig.gossip_interval``).
4. **Push-pull** exchanges the full view with a random member every ~30 s over
   the stream transport, and with a random *dead* member now and then (Serf's
   reconnect), which is what heals partitions.
5. **Local health** (Lifeguard) stretches our own probe interval and timeout
   when the evidence says we, not our peers, are the slow ones.

**Exclusion.** The owner can shut a member out (:meth:`Swim.exclude`; the node
does it for peers its blacklist convicts) and let it back in
(:meth:`Swim.readmit`). An excluded member is never probed, never asked to relay
a ``ping_req``, never returned by ``live_members``/``sample`` nor chosen for
gossip or push-pull; every datagram and push-pull from its address is dropped
(``stats["ignored.excluded_sender"]``), so its pings go unanswered and its
claims about others go unheard; claims *about* it from anyone else are ignored
(``ignored.excluded_member``), so honest peers that have not excluded it cannot
gossip it back in; and accusations it signed are ignored wherever they come
from (``ignored.excluded_accuser``). It is an explicit call rather than a
predicate given at construction because the live list is an index (O(1)
sampling) that must change when the verdict does, and because exclusion has
effects of its own (dropping its suspicion timer, its queued claims, an open
probe).

All randomness comes from the injected ``rng``; all time from the ``now``
arguments. Bad input never raises: it is dropped and counted in ``stats``.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from deepgossip.membership.awareness import Awareness
from deepgossip.membership.broadcast import claim_size
from deepgossip.membership.config import SwimConfig
from deepgossip.membership.events import MemberExcluded, MemberReadmitted
from deepgossip.membership.messages import Ack, Claim, Gossip, Nack, Ping, PingReq, PushPull
from deepgossip.membership.signing import SwimIdentity
from deepgossip.membership.state import ALIVE, NODE_ID_BYTES, SUSPECT, MemberInfo
from deepgossip.membership.statesync import StateSync
from deepgossip.membership.timers import Deadlines
from deepgossip.membership.view import MAX_HOST, View
from deepgossip.net.runtime import Address, Effect, Send
from deepgossip.wire.message import to_wire

log = logging.getLogger(__name__)

SEQ_MODULUS = 2**32
CORRECTIONS_PER_ACK = 4
"""Newer claims answered directly to a ping that carried stale ones."""
MAX_PENDING_RELAYS = 256
"""Open ping_req relays we serve at once; beyond that we are being flooded."""


def _base_size(msg: Any) -> int:
    """Encoded size of a message with empty updates, +2 for a longer list header."""
    name, body = to_wire(msg)
    return len(msgpack.packb((name, body), use_bin_type=True)) + 2


_PING_BASE = _base_size(Ping(SEQ_MODULUS - 1, bytes(NODE_ID_BYTES), (), True))
_ACK_BASE = _base_size(Ack(SEQ_MODULUS - 1))
_NACK_BASE = _base_size(Nack(SEQ_MODULUS - 1))
_GOSSIP_BASE = _base_size(Gossip(()))


@dataclass(slots=True)
class _Probe:
    seq: int
    target: bytes
    address: Address
    incarnation: int
    timeout_at: float
    acked: bool = False
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class _Relay:
    origin: Address
    origin_seq: int


class Swim:
    """SWIM membership with Lifeguard for the node ``identity`` at ``address``.

    ``incarnation`` lets a restarted node that persisted its last incarnation
    start above it; without it the node starts at 0 and learns its old number
    from the first peer that still remembers it, then refutes past it.
    """

    def __init__(
        self,
        identity: SwimIdentity,
        address: Address,
        rng: random.Random,
        config: SwimConfig | None = None,
        *,
        now: float = 0.0,
        incarnation: int = 0,
    ) -> None:
        self.config = cfg = config or SwimConfig()
        self.identity = identity
        self.node_id = identity.node_id
        self.address: Address = (address[0], int(address[1]))
        self.rng = rng
        self.stats: Counter[str] = Counter()
        """Dropped/ignored input and notable actions, by reason."""
        self.awareness = Awareness(cfg.awareness_max)
        self._timers = Deadlines()
        self._view = view = View(
            identity, self.address, cfg, rng, self._timers, self.awareness, self.stats, incarnation
        )
        self._members = view.members
        self._broadcasts = view.broadcasts
        self._relays: dict[int, _Relay] = {}
        self._probe: _Probe | None = None
        self._seq = rng.getrandbits(32)
        self._budget = cfg.max_datagram - cfg.envelope_overhead
        # Spread the first probe over one period: nodes started together must
        # not probe in lockstep.
        self._next_probe_at = now + rng.uniform(0.0, cfg.probe_interval)
        self._next_gossip_at = now
        self._sync = StateSync(view, cfg, rng, self._timers, now)
        self._excluded_at: dict[Address, bytes] = {}
        """Addresses of excluded members (whose traffic is dropped) -> their ids."""

    # ------------------------------------------------------------------ API --

    def join(self, seeds: Sequence[Address], now: float) -> list[Effect]:
        """Contact ``seeds`` with a push-pull (our view, theirs back) and announce
        ourselves. Seeds are remembered for later re-bootstrap."""
        return self._sync.join(list(seeds))

    def leave(self, now: float) -> list[Effect]:
        """Leave gracefully: sign a ``left`` claim, tell a few peers directly, stop
        probing. Keep the host running about one probe interval afterwards so
        acks can carry the news further."""
        if self._view.leaving:
            return []
        claim = self._view.leave()
        self._probe = None
        self._next_probe_at = math.inf
        out: list[Effect] = []
        for peer in self._members.sample_live(self.config.leave_fanout, self.rng):
            out.append(Send(peer.address, Gossip((claim,))))
        return out

    def preload(self, claims: Iterable[Claim], now: float) -> int:
        """Install signed alive claims as our view without gossiping them.

        For a converged start in simulations (and for restoring a saved view):
        the claims are checked exactly like gossip, but produce no events and
        no broadcasts. Returns how many were installed.
        """
        installed = self._view.preload(claims, now)
        # The view jumped in size: spread the first push-pull over the new period.
        self._sync.schedule(now, self.config.push_pull_period(self._members.live_count + 1))
        return installed

    @property
    def incarnation(self) -> int:
        return self._view.incarnation

    @property
    def leaving(self) -> bool:
        return self._view.leaving

    @property
    def alive_claim(self) -> Claim:
        """Our current signed alive claim (what peers need to know us)."""
        return self._view.self_claim

    def member(self, node_id: bytes) -> MemberInfo | None:
        m = self._members.get(node_id)
        return m.info() if m is not None else None

    def members(self) -> list[MemberInfo]:
        """Every remote member we know, tombstones included."""
        return [m.info() for m in self._members]

    def live_members(self) -> list[MemberInfo]:
        """Remote members not (yet) declared dead: alive or suspect."""
        get = self._members.get
        return [get(i).info() for i in self._members.live_ids()]  # type: ignore[union-attr]

    @property
    def live_count(self) -> int:
        return self._members.live_count

    def sample(self, k: int, rng: random.Random | None = None) -> list[MemberInfo]:
        """Up to ``k`` distinct random live peers (never ourselves): peer sampling
        for the gossip layer. Uses the core's rng unless one is given."""
        return [m.info() for m in self._members.sample_live(k, rng or self.rng)]

    # ------------------------------------------------------------ exclusion --

    def exclude(self, node_id: bytes, now: float) -> list[Effect]:
        """Shut ``node_id`` out of membership until :meth:`readmit` (see the module
        docstring for what that means). Idempotent; returns a
        :class:`MemberExcluded` event the first time.

        Its traffic is recognised by the address we last verified for it: a
        member excluded before we ever met it has no known address, so only the
        claims about it are ignored (which keeps it out of our view all the same).
        Raises ``ValueError`` for our own id or a malformed one (owner misuse).
        """
        node_id = bytes(node_id)
        if len(node_id) != NODE_ID_BYTES or node_id == self.node_id:
            raise ValueError("cannot exclude this node id")
        fresh, m = self._view.exclude(node_id)
        if not fresh:
            return []
        self.stats["excluded"] += 1
        probe = self._probe
        if probe is not None and probe.target == node_id:
            # Its ack would now be dropped: end the probe without a verdict (and
            # without the local-health penalty of an unanswered one).
            self._probe = None
        if m is not None:
            self._excluded_at[m.address] = node_id
            for seq in [s for s, r in self._relays.items() if r.origin == m.address]:
                del self._relays[seq]  # no nack owed to it
        return [MemberExcluded(node_id, m.info() if m is not None else None)]

    def readmit(self, node_id: bytes, now: float) -> list[Effect]:
        """Lift the exclusion of ``node_id`` (e.g. its blacklist entry was lifted).

        Its record comes back as it was when excluded; anything newer arrives by
        the usual gossip and push-pull. Returns a :class:`MemberReadmitted`
        event, or nothing if it was not excluded.
        """
        node_id = bytes(node_id)
        was, m = self._view.readmit(node_id, now)
        if not was:
            return []
        self.stats["readmitted"] += 1
        for address in [a for a, i in self._excluded_at.items() if i == node_id]:
            del self._excluded_at[address]
        return [MemberReadmitted(node_id, m.info() if m is not None else None)]

    def is_excluded(self, node_id: bytes) -> bool:
        return node_id in self._view.excluded

    @property
    def excluded(self) -> frozenset[bytes]:
        """Node ids currently excluded."""
        return frozenset(self._view.excluded)

    @property
    def pending_broadcasts(self) -> int:
        return len(self._broadcasts)

    # ------------------------------------------------------- protocol core --

    def next_deadline(self) -> float:
        deadline = self._next_probe_at
        probe = self._probe
        if (
            probe is not None
            and not probe.acked
            and not probe.indirect_sent
            and probe.timeout_at < deadline
        ):
            deadline = probe.timeout_at
        if (
            self._next_gossip_at < deadline
            and not self._view.leaving
            and self._broadcasts.has_fresh(self.config.gossip_transmits)
        ):
            deadline = self._next_gossip_at
        timers = self._timers.next()
        return timers if timers < deadline else deadline

    def tick(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        try:
            probe = self._probe
            if (
                probe is not None
                and not probe.acked
                and not probe.indirect_sent
                and now >= probe.timeout_at
            ):
                self._indirect_probe(probe, out)
            if now >= self._next_probe_at:
                if self._probe is not None:
                    self._finish_probe(now, out)
                self._start_probe(now, out)
            if now >= self._next_gossip_at and self._broadcasts.has_fresh(
                self.config.gossip_transmits
            ):
                self._gossip(now, out)
            view = self._view
            while (due := self._timers.pop_due(now)) is not None:
                kind, key, _ = due
                if kind == "suspicion":
                    view.suspicion_due(key, now, out)  # type: ignore[arg-type]
                elif kind == "nack":
                    self._nack_due(key, out)  # type: ignore[arg-type]
                elif kind == "push_pull":
                    self._sync.push_pull_due(key, now, out)
                elif kind == "bootstrap":
                    self._sync.bootstrap_due(now, out)
                elif kind == "reap":
                    view.reap_due(key, now, out)  # type: ignore[arg-type]
        except Exception:  # a bug must not take the node's event loop down
            log.exception("swim %s: internal error in tick", self.address)
            self.stats["internal_error"] += 1
        return out

    def handle(self, src: Address, msg: Any, now: float) -> list[Effect]:
        out: list[Effect] = []
        try:
            if self._excluded_at and (src[0], src[1]) in self._excluded_at:
                self.stats["ignored.excluded_sender"] += 1
                return out
            kind = type(msg)
            if kind is PushPull:
                self._sync.on_push_pull(src, msg, now, out)
                return out
            updates = getattr(msg, "updates", None)
            if updates is None:
                self._view.bad("unknown_message")
                return out
            if len(updates) > self.config.max_piggyback:
                self._view.bad("piggyback_over_limit")
                return out
            view = self._view
            view.corrections.clear()
            for claim in updates:
                view.apply(claim, now, out)
            if view.corrections and kind is not Ping:
                view.requeue_corrections()
            if kind is Ping:
                self._on_ping(src, msg, out)
            elif kind is Ack:
                self._on_ack(msg, now, out)
            elif kind is PingReq:
                self._on_ping_req(src, msg, now, out)
            elif kind is Nack:
                self._on_nack(msg)
        except Exception:
            log.exception("swim %s: internal error handling %r", self.address, msg)
            self.stats["internal_error"] += 1
        return out

    # --------------------------------------------------------------- probing --

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % SEQ_MODULUS
        return self._seq

    def _probeable(self, node_id: bytes) -> bool:
        return self._members.is_live(node_id)

    def _start_probe(self, now: float, out: list[Effect]) -> None:
        cfg = self.config
        scale = self.awareness.scale
        self._next_probe_at = now + scale(cfg.probe_interval)
        self._probe = None
        if self._view.leaving:
            self._next_probe_at = math.inf
            return
        target = self._view.order.next(self._probeable, self._members.live_ids)
        if target is None:
            return
        m = self._members.get(target)
        assert m is not None
        seq = self._next_seq()
        self._probe = _Probe(seq, target, m.address, m.incarnation, now + scale(cfg.probe_timeout))
        budget = self._budget - _PING_BASE
        updates: list[Claim] = []
        if m.state == SUSPECT:
            # Buddy system: tell the suspect first, so it can refute right away.
            buddy = Claim(
                int(SUSPECT),
                target,
                m.incarnation,
                accuser=m.accuser,
                signature=m.accusation_signature,
            )
            updates.append(buddy)
            budget -= claim_size(buddy)
        updates.extend(c for c in self._piggyback(budget, len(updates)) if c not in updates)
        out.append(Send(m.address, Ping(seq, target, tuple(updates))))

    def _indirect_probe(self, probe: _Probe, out: list[Effect]) -> None:
        cfg = self.config
        probe.indirect_sent = True
        host, port = probe.address
        peers = self._members.sample_live(cfg.indirect_checks, self.rng, exclude=probe.target)
        if peers:
            base = _base_size(PingReq(probe.seq, probe.target, host, port))
            for peer in peers:
                updates = tuple(self._piggyback(self._budget - base))
                out.append(
                    Send(peer.address, PingReq(probe.seq, probe.target, host, port, updates))
                )
        probe.expected_nacks = len(peers)
        if cfg.fallback_ping == "datagram":
            updates = tuple(self._piggyback(self._budget - _PING_BASE))
            out.append(Send(probe.address, Ping(probe.seq, probe.target, updates)))
        elif cfg.fallback_ping == "stream":
            out.append(Send(probe.address, Ping(probe.seq, probe.target, (), True), True))

    def _finish_probe(self, now: float, out: list[Effect]) -> None:
        probe = self._probe
        self._probe = None
        if probe is None or probe.acked:
            return
        if probe.expected_nacks:
            # Lifeguard: intermediaries are presumed healthy; nacks that did not
            # reach us are evidence against *our* health.
            self.awareness.apply(probe.expected_nacks - min(probe.nacks, probe.expected_nacks))
        else:
            self.awareness.apply(1)
        m = self._members.get(probe.target)
        if m is None or m.state not in (ALIVE, SUSPECT):
            return
        self.stats["probe_failed"] += 1
        self._view.accuse(m, probe.incarnation, now, out)

    def _on_ping(self, src: Address, msg: Ping, out: list[Effect]) -> None:
        if not 0 <= msg.seq < SEQ_MODULUS:
            self._view.bad("seq_range")
            return
        if msg.target != self.node_id:
            # Addressed to whoever lived at this address before: stay silent so
            # the prober learns that node is gone.
            self._view.bad("misdirected_ping")
            return
        budget = self._budget - _ACK_BASE
        first: list[Claim] = []
        for claim in self._view.corrections.values():
            size = claim_size(claim)
            if size <= budget and len(first) < CORRECTIONS_PER_ACK:
                first.append(claim)
                budget -= size
        self._view.corrections.clear()
        first.extend(self._piggyback(budget, len(first)))
        out.append(Send(src, Ack(msg.seq, tuple(first)), msg.reliable_reply))

    def _on_ack(self, msg: Ack, now: float, out: list[Effect]) -> None:
        seq = msg.seq
        probe = self._probe
        if probe is not None and seq == probe.seq:
            if not probe.acked:
                probe.acked = True
                if not probe.indirect_sent:
                    self.awareness.apply(-1)
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            updates = tuple(self._piggyback(self._budget - _ACK_BASE))
            out.append(Send(relay.origin, Ack(relay.origin_seq, updates)))
            return
        self._view.bad("unknown_ack")  # unknown seq, or late: the probe already ended

    def _on_nack(self, msg: Nack) -> None:
        probe = self._probe
        if probe is not None and msg.seq == probe.seq and probe.nacks < probe.expected_nacks:
            probe.nacks += 1
            return
        self._view.bad("unknown_nack")

    def _on_ping_req(self, src: Address, msg: PingReq, now: float, out: list[Effect]) -> None:
        if not 0 <= msg.seq < SEQ_MODULUS:
            self._view.bad("seq_range")
            return
        if (
            len(msg.target) != NODE_ID_BYTES
            or msg.target == self.node_id
            or not 0 < len(msg.host) <= MAX_HOST
            or not 0 < msg.port < 65536
        ):
            self._view.bad("ping_req_fields")
            return
        if len(self._relays) >= MAX_PENDING_RELAYS:
            self._view.bad("relay_overload")
            return
        seq = self._next_seq()
        self._relays[seq] = _Relay(src, msg.seq)
        cfg = self.config
        self._timers.push(now + cfg.probe_timeout * cfg.nack_fraction, "nack", seq)
        updates = tuple(self._piggyback(self._budget - _PING_BASE))
        out.append(Send((msg.host, msg.port), Ping(seq, msg.target, updates)))

    def _nack_due(self, seq: int, out: list[Effect]) -> None:
        relay = self._relays.pop(seq, None)
        if relay is None:
            return  # the target answered in time
        updates = tuple(self._piggyback(self._budget - _NACK_BASE))
        out.append(Send(relay.origin, Nack(relay.origin_seq, updates)))

    # ---------------------------------------------------------- dissemination --

    def _gossip(self, now: float, out: list[Effect]) -> None:
        """Push queued news to a few random peers (see ``SwimConfig.gossip_interval``)."""
        self._next_gossip_at = now + self.config.gossip_interval * (self.awareness.score + 1)
        if self._view.leaving:
            return
        fresh = self.config.gossip_transmits
        for peer in self._members.sample_live(self.config.gossip_nodes, self.rng):
            updates = self._piggyback(self._budget - _GOSSIP_BASE, fresh_below=fresh)
            if not updates:
                break
            out.append(Send(peer.address, Gossip(tuple(updates))))
            self.stats["gossip_out"] += 1

    def _piggyback(
        self, budget: int, already: int = 0, fresh_below: int | None = None
    ) -> list[Claim]:
        if not len(self._broadcasts):
            return []
        limit = self.config.retransmit_limit(self._members.live_count + 1)
        return self._broadcasts.take(
            budget, limit, self.config.max_piggyback - already, fresh_below
        )
