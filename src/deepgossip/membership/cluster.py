"""Many SWIM nodes on one simulated network: what tests and the benchmark drive.

Each node is a :class:`~deepgossip.net.host.Host` with a :class:`Swim` core,
the :class:`~deepgossip.wire.plain.PlainCodec` (real message encoding, no
crypto) and, unless given, an :func:`insecure_identity`. Every event any node
emits is recorded with its virtual time and node address, which is what the
tests assert on and what makes "same seed, same trace" checkable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from deepgossip.membership.config import SwimConfig
from deepgossip.membership.signing import SwimIdentity, insecure_identity
from deepgossip.membership.state import MemberState
from deepgossip.membership.swim import Swim
from deepgossip.net.host import Host
from deepgossip.net.runtime import Address
from deepgossip.net.sim import LinkModel, SimNetwork
from deepgossip.wire.plain import PlainCodec

SWIM_PORT = 7946


def sim_address(index: int) -> Address:
    """A distinct, readable address for node ``index``."""
    return (f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}", SWIM_PORT)


@dataclass
class SimNode:
    """One simulated member: its host, core and identity."""

    address: Address
    identity: SwimIdentity
    host: Host
    swim: Swim
    generation: int = 0
    """How many times this address was (re)started."""


@dataclass
class TraceEntry:
    time: float
    node: Address
    event: Any


@dataclass
class SimCluster:
    """A set of SWIM nodes sharing one :class:`SimNetwork`."""

    seed: int = 0
    config: SwimConfig = field(default_factory=SwimConfig)
    link: LinkModel = field(default_factory=LinkModel)
    record: bool = True
    identity_factory: Callable[[Address], SwimIdentity] | None = None

    def __post_init__(self) -> None:
        self.net = SimNetwork(seed=self.seed, link=self.link)
        self.codec = PlainCodec()
        self.nodes: dict[Address, SimNode] = {}
        self.trace: list[TraceEntry] = []
        self.listeners: list[Callable[[float, Address, Any], None]] = []

    # -- building ----------------------------------------------------------

    def identity_for(self, address: Address) -> SwimIdentity:
        if self.identity_factory is not None:
            return self.identity_factory(address)
        return insecure_identity(address, self.seed)

    def add_node(
        self,
        address: Address,
        *,
        incarnation: int = 0,
        config: SwimConfig | None = None,
        identity: SwimIdentity | None = None,
    ) -> SimNode:
        """Create, attach and start a node (it knows nobody until it joins)."""
        previous = self.nodes.get(address)
        if previous is not None and self.net.is_attached(address):
            raise ValueError(f"{address} is running; crash it first")
        identity = identity or (previous.identity if previous else self.identity_for(address))
        now = self.net.now()
        rng = self.net.rng_for((address, previous.generation + 1 if previous else 0))
        swim = Swim(identity, address, rng, config or self.config, now=now, incarnation=incarnation)
        host = Host(self.net, address, self.codec)
        host.add_core("swim", swim)
        host.subscribe(self._listener(address))
        node = SimNode(address, identity, host, swim, previous.generation + 1 if previous else 0)
        self.nodes[address] = node
        self.net.attach(address, host.receive)
        host.start()
        return node

    def _listener(self, address: Address) -> Callable[[Any], None]:
        def listen(event: Any) -> None:
            now = self.net.now()
            if self.record:
                self.trace.append(TraceEntry(now, address, event))
            for listener in self.listeners:
                listener(now, address, event)

        return listen

    def add_nodes(self, addresses: Iterable[Address]) -> list[SimNode]:
        return [self.add_node(a) for a in addresses]

    def converge(self, addresses: Iterable[Address] | None = None) -> None:
        """Give every node (or those listed) everyone's alive claim: a converged
        start, as if all had joined long ago. No events, no gossip."""
        chosen = [self.nodes[a] for a in (addresses or list(self.nodes))]
        claims = [n.swim.alive_claim for n in chosen]
        now = self.net.now()
        for node in chosen:
            node.swim.preload(claims, now)
            node.host.execute(())  # re-arm the timer for the new view

    def join(self, address: Address, seeds: Iterable[Address]) -> None:
        node = self.nodes[address]
        node.host.execute(node.swim.join(list(seeds), self.net.now()))

    def leave(self, address: Address) -> None:
        node = self.nodes[address]
        node.host.execute(node.swim.leave(self.net.now()))

    # -- faults ------------------------------------------------------------

    def crash(self, address: Address) -> None:
        """The node stops dead: no goodbye, frames to it vanish."""
        self.net.detach(address)
        self.nodes[address].host.stop()

    def stop(self, address: Address) -> None:
        """Stop a node that has left (same mechanics as a crash)."""
        self.crash(address)

    def restart(self, address: Address, seeds: Iterable[Address], incarnation: int = 0) -> SimNode:
        """Start a crashed node again with the same identity and join via ``seeds``."""
        node = self.add_node(address, incarnation=incarnation)
        self.join(address, seeds)
        return node

    # -- running and looking -----------------------------------------------

    def run_until(self, when: float) -> None:
        self.net.run_until(when)

    def run_for(self, duration: float) -> None:
        self.net.run_for(duration)

    def running(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.host.running]

    def view(self, address: Address) -> dict[bytes, MemberState]:
        """``address``'s view: node id -> state, itself included as alive."""
        node = self.nodes[address]
        view = {m.node_id: m.state for m in node.swim.members()}
        view[node.swim.node_id] = MemberState.LEFT if node.swim.leaving else MemberState.ALIVE
        return view

    def state_of(self, observer: Address, subject: Address) -> MemberState | None:
        """What ``observer`` thinks of ``subject`` (None: unknown)."""
        info = self.nodes[observer].swim.member(self.nodes[subject].identity.node_id)
        return info.state if info else None

    def all_see(self, subject: Address, state: MemberState) -> bool:
        """True if every running node other than ``subject`` sees it in ``state``."""
        return all(
            self.state_of(n.address, subject) == state
            for n in self.running()
            if n.address != subject
        )

    def converged(self) -> bool:
        """Every running node sees every running node alive and every other
        known node as not alive (one shared view of who is up)."""
        up = {n.swim.node_id for n in self.running()}
        for node in self.running():
            view = self.view(node.address)
            for node_id in up:
                if view.get(node_id) != MemberState.ALIVE:
                    return False
            for node_id, state in view.items():
                if node_id not in up and state in (MemberState.ALIVE, MemberState.SUSPECT):
                    return False
        return True

    def events(self, kind: type | None = None, node: Address | None = None) -> list[TraceEntry]:
        return [
            e
            for e in self.trace
            if (kind is None or isinstance(e.event, kind)) and (node is None or e.node == node)
        ]
