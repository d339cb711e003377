"""The update exchange: how a node's selective updates reach chosen peers.

A sans-I/O core (registered on the node's host as ``"learn"``). The mixing rule
decides *when* to push and *what* (:mod:`.mixing`, :mod:`.sharing`); this core
puts the update on the wire and hands received ones up, checked:

* the update travels as one ``learn.update`` message over the stream transport:
  a small header (round, samples, weight, kind, size) and a pickle-free tensor
  frame (dense values, or sparse indices + values);
* the message is always signed and carries the sender's public key, so the
  frame codec verifies it and binds it to the sender id: the update's *origin*
  is the node id of that key, which no peer can forge;
* the tensor frame is decoded with an element limit of the local model's size,
  non-finite values are refused, and the mixing rule validates shape, indices and
  staleness before anything is merged. Every refusal is counted by reason and
  never raises.

GoSGD needs point-to-point pushes (its weights must be conserved), so every rule
sends to ``fanout`` random live peers rather than broadcasting by rumour.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepgossip.learn.sharing import SparseUpdate, UpdateRejected
from deepgossip.net.runtime import Address, Send
from deepgossip.wire.errors import WireError
from deepgossip.wire.identity import node_id_of
from deepgossip.wire.message import message
from deepgossip.wire.tensor import SparseArray, decode_tensor_frame, encode_tensors

log = logging.getLogger(__name__)


@message("learn.update", signed=True, key_field="public_key")
@dataclass(frozen=True, slots=True)
class UpdateMessage:
    public_key: bytes
    round: int
    samples: int
    weight: float
    kind: str
    size: int
    frame: bytes


@message("learn.pull", signed=True, key_field="public_key")
@dataclass(frozen=True, slots=True)
class PullRequest:
    """ "Send me your current model": a late joiner or a reconnected node catching up."""

    public_key: bytes


@dataclass(frozen=True, slots=True)
class PullRequested:
    """A peer asked for our model; answer with :meth:`UpdateExchange.send_to`."""

    src: Address
    origin: bytes


@dataclass(frozen=True, slots=True)
class UpdateReceived:
    """A received, decoded update for the mixing rule (not yet validated by it)."""

    update: SparseUpdate
    src: Address
    nbytes: int


def _owned(tensor: np.ndarray | SparseArray) -> np.ndarray | SparseArray:
    """Frames decode zero-copy into read-only views of the frame: own the data."""
    if isinstance(tensor, SparseArray):
        return SparseArray(tensor.indices.copy(), tensor.values.copy(), tensor.shape)
    return tensor.copy()


class UpdateExchange:
    """Sends this node's updates to random peers; decodes and checks peers' updates."""

    def __init__(
        self,
        public_key: bytes,
        size: int,
        peers: Callable[[], Sequence[Address]],
        rng: random.Random,
    ) -> None:
        self.public_key = public_key
        self.node_id = node_id_of(public_key)
        self.size = size
        self._peers = peers
        self._rng = rng
        self.sent = 0
        self.bytes_sent = 0
        self.received = 0
        self.bytes_received = 0
        self.rejected: Counter[str] = Counter()
        self.pulls_sent = 0
        self.pulls_received = 0

    def push(self, update: SparseUpdate, fanout: int) -> list[Any]:
        """Send ``update`` to ``fanout`` distinct random live peers."""
        peers = list(self._peers())
        if not peers:
            return []
        return self.send_to(self._rng.sample(peers, min(fanout, len(peers))), update)

    def send_to(self, targets: Sequence[Address], update: SparseUpdate) -> list[Any]:
        """Send ``update`` to exactly these peers (a pull's answer, or a push)."""
        frame = encode_tensors(update.tensors())  # a SparseArray encodes itself sparse
        msg = UpdateMessage(
            self.public_key,
            update.round,
            update.samples,
            float(update.weight),
            update.kind,
            update.size,
            frame,
        )
        self.sent += len(targets)
        self.bytes_sent += len(targets) * len(frame)
        return [Send(peer, msg, reliable=True) for peer in targets]

    def request_pull(self, count: int) -> list[Any]:
        """Ask ``count`` random live peers for their current models."""
        peers = list(self._peers())
        targets = self._rng.sample(peers, min(count, len(peers)))
        self.pulls_sent += len(targets)
        return [Send(peer, PullRequest(self.public_key), reliable=True) for peer in targets]

    # -- core --------------------------------------------------------------------

    def handle(self, src: Address, msg: Any, now: float) -> list[Any]:
        if isinstance(msg, PullRequest):
            self.pulls_received += 1
            return [PullRequested(src, node_id_of(msg.public_key))]
        if not isinstance(msg, UpdateMessage):
            self.rejected["unexpected"] += 1
            return []
        if msg.size != self.size:
            self.rejected["wrong_size"] += 1
            return []
        try:
            # Bounded by the local model: a frame declaring more elements is
            # refused before anything is allocated.
            tensors = decode_tensor_frame(msg.frame, max_elements=self.size)
            header = {
                "kind": msg.kind,
                "size": msg.size,
                "origin": node_id_of(msg.public_key),
                "round": msg.round,
                "samples": msg.samples,
                "weight": msg.weight,
            }
            tensors = {name: _owned(t) for name, t in tensors.items()}
            update = SparseUpdate.from_wire(header, tensors)
        except (WireError, UpdateRejected) as exc:
            self.rejected[type(exc).__name__] += 1
            log.debug("rejected update from %s: %s", src, exc)
            return []
        self.received += 1
        self.bytes_received += len(msg.frame)
        return [UpdateReceived(update, src, len(msg.frame))]

    def tick(self, now: float) -> list[Any]:
        return []

    def next_deadline(self) -> float:
        return float("inf")
