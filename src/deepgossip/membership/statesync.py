"""Push-pull state sync, reconnects to dead members, and re-bootstrap.

Gossip is probabilistic; this is the deterministic backstop. Periodically (and
on join) a node exchanges its whole view with one random member over the stream
transport. Now and then it tries a *dead* member instead (Serf's reconnect),
which is how the two sides of a healed partition find each other again. And
while it knows fewer than ``min_live_peers`` live peers it emits ``NeedPeers``
and contacts every address it remembers (seeds, departed members).
"""

from __future__ import annotations

import random

from deepgossip.membership.config import SwimConfig
from deepgossip.membership.events import NeedPeers
from deepgossip.membership.messages import Claim, PushPull
from deepgossip.membership.precedence import Verdict, decide
from deepgossip.membership.pushpull import Row, Table, decode_table, encode_table
from deepgossip.membership.state import ALIVE, DEAD, LEFT, SUSPECT, Member
from deepgossip.membership.timers import Deadlines
from deepgossip.membership.view import View
from deepgossip.net.runtime import Address, Effect, Send


def _state_claim(r: Row) -> Claim:
    return Claim(
        int(r.state), r.node, r.incarnation, signature=r.accusation_signature, accuser=r.accuser
    )


class StateSync:
    """Full-state exchange and bootstrap contacts for one node."""

    def __init__(
        self, view: View, config: SwimConfig, rng: random.Random, timers: Deadlines, now: float
    ) -> None:
        self.view = view
        self.config = config
        self.rng = rng
        self.timers = timers
        self.seeds: list[Address] = []
        self._table_cache: tuple[tuple[int, int, bool], bytes] | None = None
        self._generation = 0
        # Spread the first exchange over one period: nodes started together
        # must not push-pull in lockstep.
        self.schedule(now, config.push_pull_interval)
        timers.push(now + config.bootstrap_interval, "bootstrap")

    # -- our view as a table ---------------------------------------------------

    def snapshot(self, *, reply: bool, join: bool) -> PushPull:
        view = self.view
        key = (view.members.version, view.incarnation, view.leaving)
        cached = self._table_cache
        if cached is None or cached[0] != key:
            claim = view.self_claim
            left = view.left_claim
            me = Row(
                view.node_id,
                LEFT if left is not None else ALIVE,
                view.incarnation,
                claim.incarnation,
                claim.host,
                claim.port,
                claim.public_key,
                claim.signature,
                view.node_id if left is not None else b"",
                left.signature if left is not None else b"",
            )
            cached = self._table_cache = (key, encode_table(me, view.members))
        return PushPull(reply, join, cached[1])

    # -- receiving -------------------------------------------------------------

    def on_push_pull(self, src: Address, msg: PushPull, now: float, out: list[Effect]) -> None:
        view = self.view
        table = decode_table(msg.table, self.config.max_push_pull_members)
        if isinstance(table, str):
            view.bad(table)
            return
        view.stats["push_pull_in"] += 1
        ids, states, incs = table.ids, table.states, table.incarnations
        get = view.members.get
        for i in range(len(ids)):
            m = get(ids[i])
            if m is not None and m.state == states[i] and m.incarnation == incs[i]:
                continue  # we agree: the common case, kept cheap
            self._merge_row(table, i, m, now, out)
        view.corrections.clear()  # our reply (or request) carries our whole view
        if not msg.reply:
            out.append(Send(src, self.snapshot(reply=True, join=False), True))

    def _merge_row(
        self, table: Table, i: int, m: Member | None, now: float, out: list[Effect]
    ) -> None:
        view = self.view
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
        if r.node == view.node_id:
            view.about_self(alive, out)
            if r.state != ALIVE:
                view.about_self(_state_claim(r), out)
            return
        if m is None and r.state in (DEAD, LEFT):
            return  # never seen alive: nothing to learn but a tombstone
        if m is None or r.alive_incarnation > m.incarnation:
            view.apply(alive, now, out)
            m = view.members.get(r.node)
            if m is None:
                return
        if r.state == SUSPECT or r.state == LEFT:
            view.apply(_state_claim(r), now, out)
        elif r.state == DEAD:
            # memberlist's rule: a peer's "dead" only makes us *suspect*, so a
            # stale view (the other side of a partition) cannot kill live members
            # outright; they get the suspicion timeout to refute.
            if decide(SUSPECT, r.incarnation, m.state, m.incarnation) is Verdict.IGNORE:
                return
            if r.incarnation - m.incarnation > self.config.max_incarnation_jump:
                view.bad("incarnation_jump")
                return
            claim = _state_claim(r)
            if view.fields_ok(claim) and view.accusation_ok(claim):
                view.accuse(m, r.incarnation, now, out)

    # -- initiating ----------------------------------------------------------------

    def join(self, seeds: list[Address]) -> list[Effect]:
        """Push-pull (marked join) with each seed; remember the seeds."""
        view = self.view
        out: list[Effect] = []
        snapshot = self.snapshot(reply=False, join=True)
        for seed in seeds:
            addr = (seed[0], int(seed[1]))
            if addr == view.address:
                continue
            if addr not in self.seeds:
                self.seeds.append(addr)
            out.append(Send(addr, snapshot, True))
        if not view.leaving:
            view.broadcasts.push(view.self_claim)
        return out

    def schedule(self, now: float, period: float) -> None:
        """(Re)plan the next push-pull at a random point of the coming period."""
        self._generation += 1
        when = now + self.rng.uniform(0.0, period)
        self.timers.push(when, "push_pull", self._generation)

    def push_pull_due(self, generation: object, now: float, out: list[Effect]) -> None:
        view = self.view
        if generation != self._generation or view.leaving:
            return  # superseded by a re-plan, or we are leaving
        live = view.members.live_count
        self.timers.push(
            now + self.config.push_pull_period(live + 1), "push_pull", self._generation
        )
        peers = view.members.sample_live(1, self.rng)
        if peers:
            out.append(Send(peers[0].address, self.snapshot(reply=False, join=False), True))
        # Serf-style reconnect: now and then try a dead member, in proportion to
        # how many are dead. Across a healed partition this is the first contact.
        dead = [m for m in view.members if m.state == DEAD]
        if dead and self.rng.random() < len(dead) / max(1, live):
            target = self.rng.choice(dead)
            view.stats["reconnect_attempts"] += 1
            out.append(Send(target.address, self.snapshot(reply=False, join=False), True))

    def bootstrap_due(self, now: float, out: list[Effect]) -> None:
        view = self.view
        if view.leaving:
            return
        cfg = self.config
        self.timers.push(now + cfg.bootstrap_interval, "bootstrap")
        live = view.members.live_count
        if live >= cfg.min_live_peers:
            return
        out.append(NeedPeers(live, cfg.min_live_peers))
        members = view.members
        live_addresses = {m.address for m in members if m.state == ALIVE or m.state == SUSPECT}
        candidates: dict[Address, None] = {}
        for addr in self.seeds:
            candidates[addr] = None
        for addr in reversed(view.address_book):
            candidates[addr] = None
        for m in members:
            if m.state == DEAD or m.state == LEFT:
                candidates[m.address] = None
        # Excluded members are out of the table, but their addresses may linger
        # in the seeds or the address book: never ask them for a view.
        shut_out = {m.address for m in view.excluded.values() if m is not None}
        pool = [
            a
            for a in candidates
            if a != view.address and a not in live_addresses and a not in shut_out
        ]
        if not pool:
            return
        view.stats["bootstrap_attempts"] += 1
        snapshot = self.snapshot(reply=False, join=True)
        for addr in self.rng.sample(pool, min(cfg.bootstrap_fanout, len(pool))):
            out.append(Send(addr, snapshot, True))
