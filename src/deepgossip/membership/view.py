"""The membership view: what we believe about every member, and the rules that
change it.

Everything that learns something about a member goes through :meth:`View.apply`
(gossiped claims, push-pull rows) or :meth:`View.accuse` (our own failed
probes): field checks, signature checks, the precedence table, Lifeguard
suspicion timers, refutation of claims about ourselves, and queueing what
changed for gossip. It also keeps ourselves: our incarnation and signed alive
claim, and whether we are leaving.

It also keeps the members the owner **excluded** (:meth:`View.exclude`): their
records leave the member table (so nothing that reads live members, samples
peers or walks the probe order can meet them) and wait in ``excluded`` until
:meth:`View.readmit` puts them back. While excluded, claims about them and
accusations they made are ignored, so no peer can gossip them back in.
"""

from __future__ import annotations

import random
from collections import Counter, OrderedDict
from collections.abc import Iterable

from deepgossip.membership.awareness import Awareness
from deepgossip.membership.broadcast import BroadcastQueue
from deepgossip.membership.config import SwimConfig
from deepgossip.membership.events import (
    MemberAlive,
    MemberDead,
    MemberJoined,
    MemberLeft,
    MemberReaped,
    MemberSuspected,
    MemberUpdated,
    Refuted,
)
from deepgossip.membership.members import MemberTable
from deepgossip.membership.messages import Claim, Gossip
from deepgossip.membership.precedence import Verdict, decide
from deepgossip.membership.probe_order import ProbeOrder
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
    MemberState,
)
from deepgossip.membership.suspicion import Suspicion
from deepgossip.membership.timers import Deadlines
from deepgossip.net.runtime import Address, Effect, Send

MAX_INCARNATION = 2**63 - 1
"""Incarnations travel as msgpack int64-compatible integers."""
MAX_HOST = 255
MAX_KEY = 128
MAX_SIGNATURE = 256


class View:
    """Our view of the cluster and of ourselves."""

    def __init__(
        self,
        identity: SwimIdentity,
        address: Address,
        config: SwimConfig,
        rng: random.Random,
        timers: Deadlines,
        awareness: Awareness,
        stats: Counter[str],
        incarnation: int,
    ) -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self.address = address
        self.config = config
        self.timers = timers
        self.awareness = awareness
        self.stats = stats
        self.members = MemberTable()
        self.order = ProbeOrder(rng)
        self.broadcasts = BroadcastQueue()
        self.suspicions: dict[bytes, Suspicion] = {}
        self.corrections: dict[bytes, Claim] = {}
        """Newer claims owed to whoever sent us stale ones (filled by ``apply``)."""
        self.address_book: OrderedDict[Address, None] = OrderedDict()
        self.incarnation = incarnation
        self.leaving = False
        self.left_claim: Claim | None = None
        self.self_claim = self._sign_alive()
        self.excluded: dict[bytes, Member | None] = {}
        """Excluded node ids -> their record when excluded (None: never met)."""

    def bad(self, reason: str) -> None:
        self.stats["bad." + reason] += 1

    # -- ourselves -----------------------------------------------------------

    def _sign_alive(self) -> Claim:
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

    def leave(self) -> Claim:
        """Become leaving; return our signed left claim (also queued for gossip)."""
        self.leaving = True
        signature = self.identity.sign(left_payload(self.node_id, self.incarnation))
        claim = Claim(int(LEFT), self.node_id, self.incarnation, signature=signature)
        self.left_claim = claim
        self.broadcasts.push(claim)
        return claim

    # -- applying claims -----------------------------------------------------

    def apply(self, c: Claim, now: float, out: list[Effect]) -> None:
        """Apply one gossiped claim (the hot path: most claims are old news)."""
        node = c.node
        if node == self.node_id:
            self.about_self(c, out)
            return
        if node in self.excluded:
            # Whoever repeats it (the member itself, an honest peer that has not
            # excluded it, a push-pull row), it must not come back this way.
            self.stats["ignored.excluded_member"] += 1
            return
        m = self.members.get(node)
        kind = c.kind
        if m is not None:
            inc = c.incarnation
            if inc < m.incarnation:
                self.corrections[node] = self.claim_of(m)
                return
            if inc == m.incarnation:
                if kind == ALIVE or (kind == m.state and kind != SUSPECT):
                    return
                if kind == SUSPECT and m.state == SUSPECT:
                    suspicion = self.suspicions.get(node)
                    if suspicion is not None and suspicion.knows(c.accuser):
                        return  # a confirmation we already counted
            if inc - m.incarnation > self.config.max_incarnation_jump:
                self.bad("incarnation_jump")
                return
        if not self.fields_ok(c):
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

    def fields_ok(self, c: Claim) -> bool:
        """Cheap shape checks the codec cannot do (lengths, ranges, kinds)."""
        kind = c.kind
        if (
            len(c.node) != NODE_ID_BYTES
            or not 0 <= c.incarnation <= MAX_INCARNATION
            or len(c.signature) > MAX_SIGNATURE
        ):
            self.bad("claim_fields")
            return False
        if kind == ALIVE:
            ok = 0 < len(c.host) <= MAX_HOST and 0 < c.port < 65536
            ok = ok and 0 < len(c.public_key) <= MAX_KEY
        elif kind in (SUSPECT, DEAD):
            ok = len(c.accuser) == NODE_ID_BYTES
        else:
            ok = kind == LEFT
        if not ok:
            self.bad("claim_fields")
        return ok

    def alive_ok(self, c: Claim) -> bool:
        """Field, key-binding and signature checks of an alive claim."""
        if not self.fields_ok(c):
            return False
        if node_id_from_public_key(c.public_key) != c.node:
            self.bad("key_mismatch")
            return False
        payload = alive_payload(c.node, c.incarnation, c.host, c.port)
        if not self.identity.verify(c.node, c.public_key, c.signature, payload):
            self.bad("bad_signature")
            return False
        return True

    def accusation_ok(self, c: Claim) -> bool:
        """Verify a suspect/dead claim with the accuser's known key."""
        accuser = c.accuser
        if accuser in self.excluded:
            # An excluded member's word counts for nothing: it must not get
            # honest members suspected or declared dead through others' gossip.
            self.stats["ignored.excluded_accuser"] += 1
            return False
        if accuser == self.node_id:
            key = self.identity.public_key
        else:
            who = self.members.get(accuser)
            if who is None:
                self.stats["ignored.unknown_accuser"] += 1
                return False
            key = who.public_key
        payload = accusation_payload(MemberState(c.kind), c.node, c.incarnation, accuser)
        if not self.identity.verify(accuser, key, c.signature, payload):
            self.bad("bad_signature")
            return False
        return True

    def _on_alive(self, c: Claim, m: Member | None, now: float, out: list[Effect]) -> None:
        if m is not None and c.public_key != m.public_key:
            self.bad("key_mismatch")
            return
        if not self.alive_ok(c):
            return
        address = (c.host, c.port)
        if m is None:
            m = Member(c.node, address, c.public_key, c.incarnation, c.signature, now)
            self.members.add(m)
            self.order.add(c.node)
            out.append(MemberJoined(m.info()))
            self.broadcasts.push(c)
            return
        previous = m.state
        old_address = m.address
        m.incarnation = m.alive_incarnation = c.incarnation
        m.alive_signature = c.signature
        m.address = address
        m.accuser = m.accusation_signature = b""
        if previous != ALIVE:
            self.suspicions.pop(c.node, None)
            self.members.set_state(m, ALIVE, now)
            self.order.add(c.node)
            out.append(MemberAlive(m.info(), previous))
        else:
            self.members.touch()
        if address != old_address:
            out.append(MemberUpdated(m.info(), old_address))
        self.broadcasts.push(c)

    def _on_suspect(
        self, c: Claim, m: Member, now: float, out: list[Effect], *, verified: bool
    ) -> None:
        verdict = decide(SUSPECT, c.incarnation, m.state, m.incarnation)
        if verdict is Verdict.IGNORE:
            return
        if verdict is Verdict.CONFIRM:
            suspicion = self.suspicions.get(m.node_id)
            if suspicion is None:  # cannot happen; heal by starting one
                suspicion = self._start_suspicion(m, c.accuser, now)
            if suspicion.knows(c.accuser):
                return
            if not verified and not self.accusation_ok(c):
                return
            if suspicion.confirm(c.accuser):
                self.timers.push(suspicion.deadline, "suspicion", m.node_id)
                self.broadcasts.push(c)
            return
        if not verified and not self.accusation_ok(c):
            return
        previous = m.state
        m.incarnation = c.incarnation
        m.accuser, m.accusation_signature = c.accuser, c.signature
        self._start_suspicion(m, c.accuser, now)
        if previous == SUSPECT:
            # A new suspicion at a higher incarnation: fresh timer, same state.
            self.members.touch()
        else:
            self.members.set_state(m, SUSPECT, now)
            out.append(MemberSuspected(m.info(), c.accuser))
        self.broadcasts.push(c)

    def _start_suspicion(self, m: Member, accuser: bytes, now: float) -> Suspicion:
        cfg = self.config
        n = self.members.live_count + 1
        low, high = cfg.suspicion_bounds(n)
        k = min(cfg.suspicion_confirmations, max(0, n - 2))
        suspicion = Suspicion(accuser, now, k, low, high)
        self.suspicions[m.node_id] = suspicion
        self.timers.push(suspicion.deadline, "suspicion", m.node_id)
        return suspicion

    def _on_dead(self, c: Claim, m: Member, now: float, out: list[Effect]) -> None:
        verdict = decide(DEAD, c.incarnation, m.state, m.incarnation)
        if verdict is Verdict.IGNORE or not self.accusation_ok(c):
            return
        m.incarnation = c.incarnation
        m.accuser, m.accusation_signature = c.accuser, c.signature
        if verdict is Verdict.BUMP:
            self.members.touch()
            return
        self._mark_gone(m, DEAD, now)
        out.append(MemberDead(m.info(), "declared", c.accuser))
        self.broadcasts.push(c)

    def _on_left(self, c: Claim, m: Member, now: float, out: list[Effect]) -> None:
        verdict = decide(LEFT, c.incarnation, m.state, m.incarnation)
        if verdict is Verdict.IGNORE:
            return
        payload = left_payload(c.node, c.incarnation)
        if not self.identity.verify(c.node, m.public_key, c.signature, payload):
            self.bad("bad_signature")
            return
        m.incarnation = c.incarnation
        m.accuser, m.accusation_signature = c.node, c.signature
        if verdict is Verdict.BUMP:
            self.members.touch()
            return
        self._mark_gone(m, LEFT, now)
        out.append(MemberLeft(m.info()))
        self.broadcasts.push(c)

    def _mark_gone(self, m: Member, state: MemberState, now: float) -> None:
        self.suspicions.pop(m.node_id, None)
        self.members.set_state(m, state, now)
        self.remember_address(m.address)
        self.timers.push(now + self.config.dead_reap_after, "reap", m.node_id)

    # -- our own verdicts ----------------------------------------------------

    def accuse(self, m: Member, incarnation: int, now: float, out: list[Effect]) -> None:
        """Issue our own signed suspect claim about ``m`` and apply it."""
        payload = accusation_payload(SUSPECT, m.node_id, incarnation, self.node_id)
        signature = self.identity.sign(payload)
        claim = Claim(
            int(SUSPECT), m.node_id, incarnation, accuser=self.node_id, signature=signature
        )
        self._on_suspect(claim, m, now, out, verified=True)

    def suspicion_due(self, node_id: bytes, now: float, out: list[Effect]) -> None:
        """Our suspicion timer for ``node_id`` may have run out: declare it dead."""
        suspicion = self.suspicions.get(node_id)
        if suspicion is None or suspicion.deadline > now:
            return  # refuted, already dead, or a stale heap entry
        del self.suspicions[node_id]
        m = self.members.get(node_id)
        if m is None or m.state != SUSPECT:
            return
        signature = self.identity.sign(
            accusation_payload(DEAD, node_id, m.incarnation, self.node_id)
        )
        claim = Claim(int(DEAD), node_id, m.incarnation, accuser=self.node_id, signature=signature)
        m.accuser, m.accusation_signature = self.node_id, signature
        self._mark_gone(m, DEAD, now)
        out.append(MemberDead(m.info(), "suspicion_timeout", self.node_id))
        self.broadcasts.push(claim)

    def reap_due(self, node_id: bytes, now: float, out: list[Effect]) -> None:
        """Forget a dead or left member whose tombstone expired."""
        m = self.members.get(node_id)
        if m is None or m.state not in (DEAD, LEFT):
            return
        if now - m.changed_at < self.config.dead_reap_after - 1e-9:
            return  # it changed state since; a later entry covers it
        self.members.remove(node_id)
        self.remember_address(m.address)
        out.append(MemberReaped(m.info()))

    # -- exclusion (the owner's verdict, e.g. a blacklist) -------------------------

    def exclude(self, node_id: bytes) -> tuple[bool, Member | None]:
        """Take ``node_id`` out of the view until :meth:`readmit`.

        Returns (newly excluded?, the record removed). The record is kept, not
        forgotten, so that lifting the exclusion restores what we knew at once
        instead of waiting for someone to gossip the member back.
        """
        if node_id in self.excluded:
            return False, None
        m = self.members.remove(node_id)
        self.excluded[node_id] = m
        self.suspicions.pop(node_id, None)  # its timer entry goes stale
        self.broadcasts.discard(node_id)  # stop spreading news about it
        self.corrections.pop(node_id, None)
        return True, m

    def readmit(self, node_id: bytes, now: float) -> tuple[bool, Member | None]:
        """Lift the exclusion of ``node_id``; returns (was excluded?, restored record).

        The record comes back in the state it had: a live one is probed again
        (and, if it died meanwhile, suspected as usual), a suspect one gets a
        fresh suspicion timer, a dead or left one its reap timer.
        """
        if node_id not in self.excluded:
            return False, None
        m = self.excluded.pop(node_id)
        if m is None or self.members.get(node_id) is not None:
            return True, None
        self.members.add(m)
        if m.state == ALIVE:
            self.order.add(node_id)
        elif m.state == SUSPECT:
            self.order.add(node_id)
            self._start_suspicion(m, m.accuser, now)
        else:
            reap_at = max(now, m.changed_at + self.config.dead_reap_after)
            self.timers.push(reap_at, "reap", node_id)
        return True, m

    # -- claims about ourselves -------------------------------------------------

    def about_self(self, c: Claim, out: list[Effect]) -> None:
        """A claim about us: refute anything that would make us less than alive."""
        if self.leaving:
            return
        j = c.incarnation
        kind = c.kind
        mine = self.incarnation
        if j < mine:
            # Someone still repeats old news about us (our refutation missed
            # them): answer with our current alive claim.
            self.corrections[self.node_id] = self.self_claim
            return
        if kind == ALIVE and j == mine:
            return  # our own alive echoed back
        if j - mine > self.config.max_incarnation_jump or j >= MAX_INCARNATION:
            self.bad("incarnation_jump")
            return
        if not self.fields_ok(c):
            return
        key = self.identity.public_key
        verify = self.identity.verify
        if kind == ALIVE:
            # Only our key can sign this: an alive of a previous run of ours.
            payload = alive_payload(c.node, j, c.host, c.port)
            if c.public_key != key or not verify(self.node_id, key, c.signature, payload):
                self.bad("false_self_claim")
                return
        elif kind == LEFT:
            if not verify(self.node_id, key, c.signature, left_payload(c.node, j)):
                self.bad("false_self_claim")
                return
        elif self.members.get(c.accuser) is not None or c.accuser == self.node_id:
            if not self.accusation_ok(c):
                return
        else:
            # An accuser we cannot check. Refuting is always safe (it only costs
            # an incarnation), and staying silent could get us declared dead.
            self.stats["refuted_unverified"] += 1
        self.incarnation = j + 1
        self.self_claim = self._sign_alive()
        self.broadcasts.push(self.self_claim)
        self.awareness.apply(1)
        self.members.touch()
        accuser = c.accuser if kind in (SUSPECT, DEAD) else b""
        out.append(Refuted(self.incarnation, MemberState(kind), accuser))
        # Tell the accuser directly: it is the member whose path to us failed,
        # it started the first timer, and gossip reaches it only by chance.
        who = self.members.get(accuser) if accuser else None
        if who is not None:
            out.append(Send(who.address, Gossip((self.self_claim,))))

    # -- stale-news corrections ---------------------------------------------------

    def claim_of(self, m: Member) -> Claim:
        """Our current claim about ``m``: what we last verified, as it was signed."""
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

    def requeue_corrections(self) -> None:
        """Stale claims reached us: our newer ones have not reached everyone yet.
        Put them back on the piggyback queue unless they are still there."""
        for node, claim in self.corrections.items():
            if not self.broadcasts.has(node):
                self.stats["corrections_requeued"] += 1
                self.broadcasts.push(claim)
        self.corrections.clear()

    # -- bulk install and bookkeeping ----------------------------------------------

    def preload(self, claims: Iterable[Claim], now: float) -> int:
        """Install alive claims without events or gossip; returns how many."""
        installed = 0
        for claim in claims:
            if claim.kind != ALIVE or claim.node == self.node_id or claim.node in self.excluded:
                continue
            if self.members.get(claim.node) is not None or not self.alive_ok(claim):
                continue
            member = Member(
                claim.node,
                (claim.host, claim.port),
                claim.public_key,
                claim.incarnation,
                claim.signature,
                now,
            )
            self.members.add(member)
            installed += 1
        self.order.reset(self.members.live_ids())
        return installed

    def remember_address(self, address: Address) -> None:
        """Keep a departed member's address for re-bootstrap (bounded, LRU)."""
        book = self.address_book
        book[address] = None
        book.move_to_end(address)
        while len(book) > self.config.address_book_size:
            book.popitem(last=False)
