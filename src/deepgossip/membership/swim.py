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
   claims (fewest-sent first, transmit-limited, byte-budgeted).
4. **Push-pull** exchanges the full view with a random member every ~30 s over
   the stream transport, and with a random *dead* member now and then (Serf's
   reconnect), which is what heals partitions.
5. **Local health** (Lifeguard) stretches our own probe interval and timeout
   when the evidence says we, not our peers, are the slow ones.

All randomness comes from the injected ``rng``; all time from the ``now``
arguments. Bad input never raises: it is dropped and counted in ``stats``.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from deepgossip.membership.awareness import Awareness
from deepgossip.membership.broadcast import BroadcastQueue, claim_size
from deepgossip.membership.config import SwimConfig
from deepgossip.membership.events import (
    MemberAlive,
    MemberDead,
    MemberJoined,
    MemberLeft,
    MemberReaped,
    MemberSuspected,
    MemberUpdated,
    NeedPeers,
    Refuted,
)
from deepgossip.membership.members import MemberTable
from deepgossip.membership.messages import Ack, Claim, Gossip, Nack, Ping, PingReq, PushPull
from deepgossip.membership.precedence import Verdict, decide
from deepgossip.membership.probe_order import ProbeOrder
from deepgossip.membership.pushpull import Row, Table, decode_table, encode_table
from deepgossip.membership.signing import (
    SwimIdentity,
    accusation_payload,
    alive_payload,
    left_payload,
    node_id_from_public_key,
)
from deepgossip.membership.state import (
    ALIVE,
    DEAD,
    LEFT,
    NODE_ID_BYTES,
    SUSPECT,
    Member,
    MemberInfo,
    MemberState,
)
from deepgossip.membership.suspicion import Suspicion
from deepgossip.membership.timers import Deadlines
from deepgossip.net.runtime import Address, Effect, Send
from deepgossip.wire.message import to_wire

log = logging.getLogger(__name__)

MAX_INCARNATION = 2**63 - 1
"""Incarnations travel as msgpack int64-compatible integers."""
SEQ_MODULUS = 2**32
MAX_HOST = 255
MAX_KEY = 128
MAX_SIGNATURE = 256
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
        self.incarnation = incarnation
        self.stats: Counter[str] = Counter()
        """Dropped/ignored input and notable actions, by reason."""
        self.awareness = Awareness(cfg.awareness_max)
        self._members = MemberTable()
        self._order = ProbeOrder(rng)
        self._broadcasts = BroadcastQueue()
        self._suspicions: dict[bytes, Suspicion] = {}
        self._timers = Deadlines()
        self._relays: dict[int, _Relay] = {}
        self._probe: _Probe | None = None
        self._seq = rng.getrandbits(32)
        self._leaving = False
        self._left_claim: Claim | None = None
        self._seeds: list[Address] = []
        self._address_book: OrderedDict[Address, None] = OrderedDict()
        self._budget = cfg.max_datagram - cfg.envelope_overhead
        self._corrections: dict[bytes, Claim] = {}
        self._table_cache: tuple[tuple[int, int, bool], bytes] | None = None
        self._push_pull_generation = 0
        self._self_claim = self._make_self_claim()
        # Spread the first actions over one period: nodes started together must
        # not probe (or push-pull) in lockstep.
        self._next_probe_at = now + rng.uniform(0.0, cfg.probe_interval)
        self._schedule_push_pull(now, cfg.push_pull_interval)
        self._timers.push(now + cfg.bootstrap_interval, "bootstrap")

    # ------------------------------------------------------------------ API --

    def join(self, seeds: Sequence[Address], now: float) -> list[Effect]:
        """Contact ``seeds`` with a push-pull (our view, theirs back) and announce
        ourselves. Seeds are remembered for later re-bootstrap."""
        out: list[Effect] = []
        snapshot = self._snapshot(reply=False, join=True)
        for seed in seeds:
            addr = (seed[0], int(seed[1]))
            if addr == self.address:
                continue
            if addr not in self._seeds:
                self._seeds.append(addr)
            out.append(Send(addr, snapshot, True))
        if not self._leaving:
            self._broadcasts.push(self._self_claim)
        return out

    def leave(self, now: float) -> list[Effect]:
        """Leave gracefully: sign a ``left`` claim, tell a few peers directly, stop
        probing. Keep the host running about one probe interval afterwards so
        acks can carry the news further."""
        if self._leaving:
            return []
        self._leaving = True
        signature = self.identity.sign(left_payload(self.node_id, self.incarnation))
        claim = Claim(int(LEFT), self.node_id, self.incarnation, signature=signature)
        self._left_claim = claim
        self._broadcasts.push(claim)
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
        installed = 0
        for claim in claims:
            if claim.kind != ALIVE or claim.node == self.node_id:
                continue
            if self._members.get(claim.node) is not None or not self._alive_ok(claim):
                continue
            member = Member(
                claim.node,
                (claim.host, claim.port),
                claim.public_key,
                claim.incarnation,
                claim.signature,
                now,
            )
            self._members.add(member)
            installed += 1
        self._order.reset(self._members.live_ids())
        # The view jumped in size: spread the first push-pull over the new period.
        self._schedule_push_pull(now, self.config.push_pull_period(self._members.live_count + 1))
        return installed

    @property
    def leaving(self) -> bool:
        return self._leaving

    @property
    def alive_claim(self) -> Claim:
        """Our current signed alive claim (what peers need to know us)."""
        return self._self_claim

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
            while (due := self._timers.pop_due(now)) is not None:
                kind, key, _ = due
                if kind == "suspicion":
                    self._suspicion_due(key, now, out)  # type: ignore[arg-type]
                elif kind == "nack":
                    self._nack_due(key, out)  # type: ignore[arg-type]
                elif kind == "push_pull":
                    if key == self._push_pull_generation:
                        self._push_pull_due(now, out)
                elif kind == "bootstrap":
                    self._bootstrap_due(now, out)
                elif kind == "reap":
                    self._reap_due(key, now, out)  # type: ignore[arg-type]
        except Exception:  # a bug must not take the node's event loop down
            log.exception("swim %s: internal error in tick", self.address)
            self.stats["internal_error"] += 1
        return out

    def handle(self, src: Address, msg: Any, now: float) -> list[Effect]:
        out: list[Effect] = []
        try:
            kind = type(msg)
            if kind is PushPull:
                self._on_push_pull(src, msg, now, out)
                return out
            updates = getattr(msg, "updates", None)
            if updates is None:
                self._bad("unknown_message")
                return out
            if len(updates) > self.config.max_piggyback:
                self._bad("piggyback_over_limit")
                return out
            corrections = self._corrections
            corrections.clear()
            for claim in updates:
                self._on_claim(claim, now, out)
            if corrections and kind is not Ping:
                self._requeue_corrections()
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
        if self._leaving:
            self._next_probe_at = math.inf
            return
        target = self._order.next(self._probeable, self._members.live_ids)
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
        if m is None or not (m.state == ALIVE or m.state == SUSPECT):
            return
        self.stats["probe_failed"] += 1
        self._accuse(m, probe.incarnation, now, out)

    def _on_ping(self, src: Address, msg: Ping, out: list[Effect]) -> None:
        if not 0 <= msg.seq < SEQ_MODULUS:
            self._bad("seq_range")
            return
        if msg.target != self.node_id:
            # Addressed to whoever lived at this address before: stay silent so
            # the prober learns that node is gone.
            self._bad("misdirected_ping")
            return
        budget = self._budget - _ACK_BASE
        first: list[Claim] = []
        for claim in self._corrections.values():
            size = claim_size(claim)
            if size <= budget and len(first) < CORRECTIONS_PER_ACK:
                first.append(claim)
                budget -= size
        self._corrections.clear()
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
        self._bad("unknown_ack")  # unknown seq, or late: the probe already ended

    def _on_nack(self, msg: Nack) -> None:
        probe = self._probe
        if probe is not None and msg.seq == probe.seq and probe.nacks < probe.expected_nacks:
            probe.nacks += 1
            return
        self._bad("unknown_nack")

    def _on_ping_req(self, src: Address, msg: PingReq, now: float, out: list[Effect]) -> None:
        if not 0 <= msg.seq < SEQ_MODULUS:
            self._bad("seq_range")
            return
        if (
            len(msg.target) != NODE_ID_BYTES
            or msg.target == self.node_id
            or not 0 < len(msg.host) <= MAX_HOST
            or not 0 < msg.port < 65536
        ):
            self._bad("ping_req_fields")
            return
        if len(self._relays) >= MAX_PENDING_RELAYS:
            self._bad("relay_overload")
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

    def _piggyback(self, budget: int, already: int = 0) -> list[Claim]:
        if not len(self._broadcasts):
            return []
        limit = self.config.retransmit_limit(self._members.live_count + 1)
        return self._broadcasts.take(budget, limit, self.config.max_piggyback - already)

    def _broadcast(self, claim: Claim) -> None:
        self._broadcasts.push(claim)

    # ----------------------------------------------------------------- claims --

    def _claim_of(self, m: Member) -> Claim:
        """Our current claim about ``m``, re-signed by nobody: what we last verified."""
        state = m.state
        if state == ALIVE:
            host, port = m.address
            return Claim(
                int(ALIVE),
                m.node_id,
                m.alive_incarnation,
                host,
                port,
                m.public_key,
                m.alive_signature,
            )
        if state == LEFT:
            return Claim(int(LEFT), m.node_id, m.incarnation, signature=m.accusation_signature)
        return Claim(
            int(state),
            m.node_id,
            m.incarnation,
            accuser=m.accuser,
            signature=m.accusation_signature,
        )

    def _requeue_corrections(self) -> None:
        """Stale claims reached us: our newer ones have not reached everyone yet.
        Put them back on the piggyback queue unless they are still there."""
        for node, claim in self._corrections.items():
            if not self._broadcasts.has(node):
                self.stats["corrections_requeued"] += 1
                self._broadcasts.push(claim)
        self._corrections.clear()

    def _bad(self, reason: str) -> None:
        self.stats["bad." + reason] += 1

    def _on_claim(self, c: Claim, now: float, out: list[Effect]) -> None:
        """Apply one gossiped claim (the hot path: most claims are old news)."""
        node = c.node
        if node == self.node_id:
            self._about_self(c, out)
            return
        m = self._members.get(node)
        kind = c.kind
        if m is not None:
            inc = c.incarnation
            if inc < m.incarnation:
                self._corrections[node] = self._claim_of(m)
                return
            if inc == m.incarnation:
                if kind == ALIVE or (kind == m.state and kind != SUSPECT):
                    return
                if kind == SUSPECT and m.state == SUSPECT:
                    suspicion = self._suspicions.get(node)
                    if suspicion is not None and suspicion.knows(c.accuser):
                        return  # a confirmation we already counted
            if inc - m.incarnation > self.config.max_incarnation_jump:
                self._bad("incarnation_jump")
                return
        if not self._claim_fields_ok(c):
            return
        if kind == ALIVE:
            self._on_alive(c, m, now, out)
        elif m is None:
            self.stats["ignored.unknown_member"] += 1
        elif kind == SUSPECT:
            self._on_suspect(c, m, now, out, verified=False)
        elif kind == DEAD:
            self._on_dead(c, m, now, out)
        else:
            self._on_left(c, m, now, out)

    def _claim_fields_ok(self, c: Claim) -> bool:
        kind = c.kind
        if (
            len(c.node) != NODE_ID_BYTES
            or not 0 <= c.incarnation <= MAX_INCARNATION
            or len(c.signature) > MAX_SIGNATURE
        ):
            self._bad("claim_fields")
            return False
        if kind == ALIVE:
            ok = 0 < len(c.host) <= MAX_HOST and 0 < c.port < 65536
            ok = ok and 0 < len(c.public_key) <= MAX_KEY
        elif kind in (SUSPECT, DEAD):
            ok = len(c.accuser) == NODE_ID_BYTES
        else:
            ok = kind == LEFT
        if not ok:
            self._bad("claim_fields")
        return ok

    def _alive_ok(self, c: Claim) -> bool:
        """Field, key-binding and signature checks of an alive claim."""
        if not self._claim_fields_ok(c):
            return False
        if node_id_from_public_key(c.public_key) != c.node:
            self._bad("key_mismatch")
            return False
        payload = alive_payload(c.node, c.incarnation, c.host, c.port)
        if not self.identity.verify(c.node, c.public_key, c.signature, payload):
            self._bad("bad_signature")
            return False
        return True

    def _accusation_ok(self, c: Claim, kind: MemberState | None = None) -> bool:
        """Verify a suspect/dead claim with the accuser's known key."""
        accuser = c.accuser
        if accuser == self.node_id:
            key = self.identity.public_key
        else:
            who = self._members.get(accuser)
            if who is None:
                self.stats["ignored.unknown_accuser"] += 1
                return False
            key = who.public_key
        kind = MemberState(c.kind) if kind is None else kind
        payload = accusation_payload(kind, c.node, c.incarnation, accuser)
        if not self.identity.verify(accuser, key, c.signature, payload):
            self._bad("bad_signature")
            return False
        return True

    def _on_alive(self, c: Claim, m: Member | None, now: float, out: list[Effect]) -> None:
        if m is not None and c.public_key != m.public_key:
            self._bad("key_mismatch")
            return
        if not self._alive_ok(c):
            return
        address = (c.host, c.port)
        if m is None:
            m = Member(c.node, address, c.public_key, c.incarnation, c.signature, now)
            self._members.add(m)
            self._order.add(c.node)
            out.append(MemberJoined(m.info()))
            self._broadcast(c)
            return
        previous = m.state
        old_address = m.address
        m.incarnation = m.alive_incarnation = c.incarnation
        m.alive_signature = c.signature
        m.address = address
        m.accuser = m.accusation_signature = b""
        if previous != ALIVE:
            self._suspicions.pop(c.node, None)
            self._members.set_state(m, ALIVE, now)
            self._order.add(c.node)
            out.append(MemberAlive(m.info(), previous))
        else:
            self._members.touch()
        if address != old_address:
            out.append(MemberUpdated(m.info(), old_address))
        self._broadcast(c)

    def _on_suspect(
        self, c: Claim, m: Member, now: float, out: list[Effect], *, verified: bool
    ) -> None:
        verdict = decide(SUSPECT, c.incarnation, m.state, m.incarnation)
        if verdict is Verdict.IGNORE:
            return
        if verdict is Verdict.CONFIRM:
            suspicion = self._suspicions.get(m.node_id)
            if suspicion is None:  # cannot happen; heal by starting one
                suspicion = self._start_suspicion(m, c.accuser, now)
            if suspicion.knows(c.accuser):
                return
            if not verified and not self._accusation_ok(c):
                return
            if suspicion.confirm(c.accuser):
                self._timers.push(suspicion.deadline, "suspicion", m.node_id)
                self._broadcast(c)
            return
        if not verified and not self._accusation_ok(c):
            return
        previous = m.state
        m.incarnation = c.incarnation
        m.accuser, m.accusation_signature = c.accuser, c.signature
        self._start_suspicion(m, c.accuser, now)
        if previous == SUSPECT:
            # A new suspicion at a higher incarnation: fresh timer, same state.
            self._members.touch()
        else:
            self._members.set_state(m, SUSPECT, now)
            out.append(MemberSuspected(m.info(), c.accuser))
        self._broadcast(c)

    def _start_suspicion(self, m: Member, accuser: bytes, now: float) -> Suspicion:
        cfg = self.config
        n = self._members.live_count + 1
        low, high = cfg.suspicion_bounds(n)
        k = min(cfg.suspicion_confirmations, max(0, n - 2))
        suspicion = Suspicion(accuser, now, k, low, high)
        self._suspicions[m.node_id] = suspicion
        self._timers.push(suspicion.deadline, "suspicion", m.node_id)
        return suspicion

    def _on_dead(self, c: Claim, m: Member, now: float, out: list[Effect]) -> None:
        verdict = decide(DEAD, c.incarnation, m.state, m.incarnation)
        if verdict is Verdict.IGNORE or not self._accusation_ok(c):
            return
        m.incarnation = c.incarnation
        m.accuser, m.accusation_signature = c.accuser, c.signature
        if verdict is Verdict.BUMP:
            self._members.touch()
            return
        self._mark_gone(m, DEAD, now)
        out.append(MemberDead(m.info(), "declared", c.accuser))
        self._broadcast(c)

    def _on_left(self, c: Claim, m: Member, now: float, out: list[Effect]) -> None:
        verdict = decide(LEFT, c.incarnation, m.state, m.incarnation)
        if verdict is Verdict.IGNORE:
            return
        payload = left_payload(c.node, c.incarnation)
        if not self.identity.verify(c.node, m.public_key, c.signature, payload):
            self._bad("bad_signature")
            return
        m.incarnation = c.incarnation
        m.accuser, m.accusation_signature = c.node, c.signature
        if verdict is Verdict.BUMP:
            self._members.touch()
            return
        self._mark_gone(m, LEFT, now)
        out.append(MemberLeft(m.info()))
        self._broadcast(c)

    def _mark_gone(self, m: Member, state: MemberState, now: float) -> None:
        self._suspicions.pop(m.node_id, None)
        self._members.set_state(m, state, now)
        self._remember_address(m.address)
        self._timers.push(now + self.config.dead_reap_after, "reap", m.node_id)

    def _accuse(self, m: Member, incarnation: int, now: float, out: list[Effect]) -> None:
        """Issue our own signed suspect claim about ``m`` and apply it."""
        payload = accusation_payload(SUSPECT, m.node_id, incarnation, self.node_id)
        signature = self.identity.sign(payload)
        claim = Claim(
            int(SUSPECT), m.node_id, incarnation, accuser=self.node_id, signature=signature
        )
        self._on_suspect(claim, m, now, out, verified=True)

    def _suspicion_due(self, node_id: bytes, now: float, out: list[Effect]) -> None:
        suspicion = self._suspicions.get(node_id)
        if suspicion is None or suspicion.deadline > now:
            return  # refuted, already dead, or a stale heap entry
        del self._suspicions[node_id]
        m = self._members.get(node_id)
        if m is None or m.state != SUSPECT:
            return
        signature = self.identity.sign(
            accusation_payload(DEAD, node_id, m.incarnation, self.node_id)
        )
        claim = Claim(int(DEAD), node_id, m.incarnation, accuser=self.node_id, signature=signature)
        m.accuser, m.accusation_signature = self.node_id, signature
        self._mark_gone(m, DEAD, now)
        out.append(MemberDead(m.info(), "suspicion_timeout", self.node_id))
        self._broadcast(claim)

    # ---------------------------------------------------------------- ourself --

    def _make_self_claim(self) -> Claim:
        host, port = self.address
        signature = self.identity.sign(alive_payload(self.node_id, self.incarnation, host, port))
        return Claim(
            int(ALIVE),
            self.node_id,
            self.incarnation,
            host,
            port,
            self.identity.public_key,
            signature,
        )

    def _about_self(self, c: Claim, out: list[Effect]) -> None:
        """A claim about us: refute anything that would make us less than alive."""
        if self._leaving:
            return
        j = c.incarnation
        kind = c.kind
        mine = self.incarnation
        if j < mine:
            # Someone still repeats old news about us (our refutation missed
            # them): answer with our current alive claim.
            self._corrections[self.node_id] = self._self_claim
            return
        if kind == ALIVE and j == mine:
            return  # our own alive echoed back
        if j - mine > self.config.max_incarnation_jump or j >= MAX_INCARNATION:
            self._bad("incarnation_jump")
            return
        if not self._claim_fields_ok(c):
            return
        key = self.identity.public_key
        verify = self.identity.verify
        if kind == ALIVE:
            # Only our key can sign this: an alive of a previous run of ours.
            payload = alive_payload(c.node, j, c.host, c.port)
            if c.public_key != key or not verify(self.node_id, key, c.signature, payload):
                self._bad("false_self_claim")
                return
        elif kind == LEFT:
            if not verify(self.node_id, key, c.signature, left_payload(c.node, j)):
                self._bad("false_self_claim")
                return
        elif self._members.get(c.accuser) is not None or c.accuser == self.node_id:
            if not self._accusation_ok(c):
                return
        else:
            # An accuser we cannot check. Refuting is always safe (it only costs
            # an incarnation), and staying silent could get us declared dead.
            self.stats["refuted_unverified"] += 1
        self.incarnation = j + 1
        self._self_claim = self._make_self_claim()
        self._broadcast(self._self_claim)
        self.awareness.apply(1)
        self._members.touch()
        accuser = c.accuser if kind in (SUSPECT, DEAD) else b""
        out.append(Refuted(self.incarnation, MemberState(kind), accuser))
        # Tell the accuser directly: it is the member whose path to us failed,
        # it started the first timer, and gossip reaches it only by chance.
        who = self._members.get(accuser) if accuser else None
        if who is not None:
            out.append(Send(who.address, Gossip((self._self_claim,))))

    # ---------------------------------------------------------------- push-pull --

    def _snapshot(self, *, reply: bool, join: bool) -> PushPull:
        key = (self._members.version, self.incarnation, self._leaving)
        cached = self._table_cache
        if cached is None or cached[0] != key:
            claim = self._self_claim
            left = self._left_claim
            me = Row(
                self.node_id,
                LEFT if left is not None else ALIVE,
                self.incarnation,
                claim.incarnation,
                claim.host,
                claim.port,
                claim.public_key,
                claim.signature,
                self.node_id if left is not None else b"",
                left.signature if left is not None else b"",
            )
            cached = self._table_cache = (key, encode_table(me, self._members))
        return PushPull(reply, join, cached[1])

    def _on_push_pull(self, src: Address, msg: PushPull, now: float, out: list[Effect]) -> None:
        table = decode_table(msg.table, self.config.max_push_pull_members)
        if isinstance(table, str):
            self._bad(table)
            return
        self.stats["push_pull_in"] += 1
        ids, states, incs = table.ids, table.states, table.incarnations
        get = self._members.get
        for i in range(len(ids)):
            m = get(ids[i])
            if m is not None and m.state == states[i] and m.incarnation == incs[i]:
                continue  # we agree: the common case, kept cheap
            self._merge_row(table, i, m, now, out)
        self._corrections.clear()  # our reply (or request) carried our whole view
        if not msg.reply:
            out.append(Send(src, self._snapshot(reply=True, join=False), True))

    def _merge_row(
        self, table: Table, i: int, m: Member | None, now: float, out: list[Effect]
    ) -> None:
        r = table.row(i)
        alive = Claim(
            int(ALIVE),
            r.node,
            r.alive_incarnation,
            r.host,
            r.port,
            r.public_key,
            r.alive_signature,
        )
        if r.node == self.node_id:
            self._about_self(alive, out)
            if r.state != ALIVE:
                self._about_self(self._state_claim(r), out)
            return
        if m is None and r.state in (DEAD, LEFT):
            return  # never seen alive: nothing to learn but a tombstone
        if m is None or r.alive_incarnation > m.incarnation:
            self._on_claim(alive, now, out)
            m = self._members.get(r.node)
            if m is None:
                return
        if r.state == SUSPECT or r.state == LEFT:
            self._on_claim(self._state_claim(r), now, out)
        elif r.state == DEAD:
            # memberlist's rule: a peer's "dead" only makes us *suspect*, so a
            # stale view (the other side of a partition) cannot kill live members
            # outright; they get the suspicion timeout to refute.
            if decide(SUSPECT, r.incarnation, m.state, m.incarnation) is Verdict.IGNORE:
                return
            if r.incarnation - m.incarnation > self.config.max_incarnation_jump:
                self._bad("incarnation_jump")
                return
            claim = self._state_claim(r)
            if self._claim_fields_ok(claim) and self._accusation_ok(claim):
                self._accuse(m, r.incarnation, now, out)

    @staticmethod
    def _state_claim(r: Row) -> Claim:
        return Claim(
            int(r.state), r.node, r.incarnation, signature=r.accusation_signature, accuser=r.accuser
        )

    def _schedule_push_pull(self, now: float, period: float) -> None:
        """(Re)plan the next push-pull at a random point of the coming period."""
        self._push_pull_generation += 1
        when = now + self.rng.uniform(0.0, period)
        self._timers.push(when, "push_pull", self._push_pull_generation)

    def _push_pull_due(self, now: float, out: list[Effect]) -> None:
        if self._leaving:
            return
        live = self._members.live_count
        self._timers.push(
            now + self.config.push_pull_period(live + 1), "push_pull", self._push_pull_generation
        )
        peers = self._members.sample_live(1, self.rng)
        if peers:
            out.append(Send(peers[0].address, self._snapshot(reply=False, join=False), True))
        # Serf-style reconnect: now and then try a dead member, in proportion to
        # how many are dead. Across a healed partition this is the first contact.
        dead = [m for m in self._members if m.state == DEAD]
        if dead and self.rng.random() < len(dead) / max(1, live):
            target = self.rng.choice(dead)
            self.stats["reconnect_attempts"] += 1
            out.append(Send(target.address, self._snapshot(reply=False, join=False), True))

    # ------------------------------------------------------------ bootstrap --

    def _remember_address(self, address: Address) -> None:
        book = self._address_book
        book[address] = None
        book.move_to_end(address)
        while len(book) > self.config.address_book_size:
            book.popitem(last=False)

    def _bootstrap_due(self, now: float, out: list[Effect]) -> None:
        if self._leaving:
            return
        cfg = self.config
        self._timers.push(now + cfg.bootstrap_interval, "bootstrap")
        live = self._members.live_count
        if live >= cfg.min_live_peers:
            return
        out.append(NeedPeers(live, cfg.min_live_peers))
        live_addresses = {
            m.address for m in self._members if m.state == ALIVE or m.state == SUSPECT
        }
        candidates: dict[Address, None] = {}
        for addr in self._seeds:
            candidates[addr] = None
        for addr in reversed(self._address_book):
            candidates[addr] = None
        for m in self._members:
            if m.state == DEAD or m.state == LEFT:
                candidates[m.address] = None
        pool = [a for a in candidates if a != self.address and a not in live_addresses]
        if not pool:
            return
        self.stats["bootstrap_attempts"] += 1
        snapshot = self._snapshot(reply=False, join=True)
        for addr in self.rng.sample(pool, min(cfg.bootstrap_fanout, len(pool))):
            out.append(Send(addr, snapshot, True))

    def _reap_due(self, node_id: bytes, now: float, out: list[Effect]) -> None:
        m = self._members.get(node_id)
        if m is None or m.state not in (DEAD, LEFT):
            return
        if now - m.changed_at < self.config.dead_reap_after - 1e-9:
            return  # it changed state since; a later entry covers it
        self._members.remove(node_id)
        self._remember_address(m.address)
        out.append(MemberReaped(m.info()))
