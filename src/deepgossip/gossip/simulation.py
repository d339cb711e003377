"""A simulated cluster of gossip nodes, for tests and the benchmark.

Each node is a :class:`~deepgossip.net.host.Host` running a :class:`RumorCore`
on one shared :class:`~deepgossip.net.sim.SimNetwork`, with the unauthenticated
:class:`~deepgossip.wire.plain.PlainCodec` and a *static* peer list (every other
node ever added, crashed ones included, as a membership layer would report them
until it detects the crash). Membership is benchmarked separately; this isolates
the gossip protocol.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from deepgossip.gossip.config import DEFAULT_CONFIG, GossipConfig
from deepgossip.gossip.events import ItemDelivered
from deepgossip.gossip.rumor import RumorCore
from deepgossip.net.host import Host
from deepgossip.net.runtime import Address
from deepgossip.net.sim import LinkModel, SimNetwork
from deepgossip.wire.plain import PlainCodec


class Identity(Protocol):
    node_id: bytes
    public_key: bytes

    def sign(self, data: bytes) -> bytes: ...

    def verify(self, node_id: bytes, public_key: bytes, signature: bytes, data: bytes) -> bool: ...


class UnsafeHashIdentity:
    """A stand-in identity for simulations: cheap, deterministic, NOT secure.

    The "signature" is a hash of the public key and the data, so anyone can forge
    it; it still catches every accidental mismatch (altered metadata, a key that
    is not the node id's, random bytes). Real nodes use Ed25519 (``wire``).
    """

    def __init__(self, seed: bytes) -> None:
        self.public_key = hashlib.sha256(b"unsafe-pk" + seed).digest()
        self.node_id = hashlib.sha256(self.public_key).digest()

    def sign(self, data: bytes) -> bytes:
        return hashlib.sha256(b"unsafe-sig" + self.public_key + data).digest()

    def verify(self, node_id: bytes, public_key: bytes, signature: bytes, data: bytes) -> bool:
        return (
            hashlib.sha256(public_key).digest() == node_id
            and hashlib.sha256(b"unsafe-sig" + public_key + data).digest() == signature
        )


class CountingCodec(PlainCodec):
    """PlainCodec that counts every encoded frame and its bytes by message type."""

    def __init__(self, frames: Counter[str], sizes: Counter[str]) -> None:
        self.frames = frames
        self.sizes = sizes

    def encode(self, msg: Any, *, reliable: bool = False) -> bytes:
        frame = super().encode(msg, reliable=reliable)
        self.frames[msg.TYPE] += 1
        self.sizes[msg.TYPE] += len(frame)
        return frame


@dataclass
class SimNode:
    index: int
    address: Address
    identity: Identity
    host: Host
    core: RumorCore
    deliveries: dict[bytes, ItemDelivered] = field(default_factory=dict)
    crashed: bool = False


IdentityFactory = Callable[[int], Identity]


class GossipSim:
    """N gossip nodes on a simulated network, with traffic counters by message type."""

    def __init__(
        self,
        nodes: int,
        *,
        seed: int = 0,
        loss: float = 0.0,
        config: GossipConfig = DEFAULT_CONFIG,
        link: LinkModel | None = None,
        identity: IdentityFactory | None = None,
    ) -> None:
        self.net = SimNetwork(seed=seed, link=link or LinkModel(loss=loss))
        self.config = config
        self.identity = identity or (lambda i: UnsafeHashIdentity(f"{seed}/{i}".encode()))
        self.frames: Counter[str] = Counter()
        self.frame_bytes: Counter[str] = Counter()
        self.nodes: list[SimNode] = []
        self.published: dict[bytes, tuple[int, float]] = {}  # item -> (origin index, time)
        self._addresses: list[Address] = []
        self._peer_cache: dict[Address, tuple[int, list[Address]]] = {}
        for _ in range(nodes):
            self.add_node()

    # -- building --------------------------------------------------------------------

    def add_node(self, config: GossipConfig | None = None) -> SimNode:
        """Start one more node (a late joiner once the run has begun)."""
        index = len(self.nodes)
        address = (f"10.{index // 250}.{index % 250}.1", 7000)
        ident = self.identity(index)
        host = Host(self.net, address, CountingCodec(self.frames, self.frame_bytes))
        core = RumorCore(
            node_id=ident.node_id,
            public_key=ident.public_key,
            sign=ident.sign,
            verify=ident.verify,
            peers=lambda: self.peers_of(address),
            rng=self.net.rng_for(("gossip", address)),
            config=config or self.config,
            now=self.net.now(),
        )
        host.add_core("gossip", core)
        node = SimNode(index, address, ident, host, core)
        host.subscribe(lambda event: self._on_event(node, event))
        self.nodes.append(node)
        self._addresses.append(address)
        self.net.attach(address, host.receive)
        host.start()
        return node

    def peers_of(self, address: Address) -> Sequence[Address]:
        cached = self._peer_cache.get(address)
        if cached is None or cached[0] != len(self._addresses):
            cached = (len(self._addresses), [a for a in self._addresses if a != address])
            self._peer_cache[address] = cached
        return cached[1]

    def _on_event(self, node: SimNode, event: object) -> None:
        if isinstance(event, ItemDelivered):
            if event.item_id in node.deliveries:
                raise AssertionError(f"node {node.index} got {event.item_id.hex()} twice")
            node.deliveries[event.item_id] = event

    # -- actions ---------------------------------------------------------------------

    def publish(self, index: int, body: bytes, kind: str = "test") -> bytes:
        node = self.nodes[index]
        item_id, effects = node.core.publish(body, kind, self.net.now())
        self.published[item_id] = (index, self.net.now())
        node.host.execute(effects)
        return item_id

    def crash(self, index: int) -> None:
        node = self.nodes[index]
        node.crashed = True
        self.net.detach(node.address)
        node.host.stop()

    # -- observation -------------------------------------------------------------------

    def holds(self, node: SimNode, item_id: bytes) -> bool:
        return node.core.has(item_id)

    def holders(self, item_id: bytes, live_only: bool = True) -> int:
        return sum(
            1 for n in self.nodes if (not live_only or not n.crashed) and n.core.has(item_id)
        )

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes if not n.crashed]

    def covered(self, item_id: bytes) -> bool:
        return all(n.core.has(item_id) for n in self.live())

    def idle(self) -> bool:
        return all(n.core.idle for n in self.live())

    def run_until(self, t: float) -> None:
        self.net.run_until(t)

    def run_for(self, duration: float) -> None:
        self.net.run_for(duration)

    def run_until_covered(self, item_id: bytes, limit: float = math.inf) -> bool:
        """Run until every live node holds ``item_id`` (or ``limit``); True if it does."""
        return self.run_until_true(lambda: self.covered(item_id), limit)

    def run_until_idle(self, limit: float = math.inf) -> bool:
        return self.run_until_true(self.idle, limit)

    def run_until_true(
        self, done: Callable[[], bool], limit: float = math.inf, check_every: float = 0.05
    ) -> bool:
        """Run until ``done()`` (checked every ``check_every`` s) or ``limit``."""
        while not done():
            if self.net.now() >= limit:
                return False
            self.net.run_until(min(limit, self.net.now() + check_every))
        return True
