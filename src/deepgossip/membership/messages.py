"""SWIM wire messages (type prefix ``swim.``) and the claim record they carry.

Datagrams (``ping``, ``ack``, ``ping_req``, ``nack``, ``gossip``) each carry up to
``max_piggyback`` :class:`Claim` records: that is how membership news spreads,
for free, on the failure detector's own traffic. ``push_pull`` is the full-state
exchange over the stream transport; it is columnar (one list per field) because
decoding a thousand nested records is ~8x slower than a dozen flat lists.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepgossip.wire.message import message, record


@record
@dataclass(frozen=True, slots=True)
class Claim:
    """One statement about one member: ``kind`` is a MemberState value.

    * alive: ``host``, ``port``, ``public_key``, and ``signature`` by the member
      itself over (node, incarnation, address): only the member can refute or
      move, and nobody can point its id at another address.
    * suspect / dead: ``accuser`` and its ``signature`` over (kind, node,
      incarnation, accuser), so confirmations cannot be forged in bulk.
    * left: ``signature`` by the member itself: only it can say goodbye.
    """

    kind: int
    node: bytes
    incarnation: int
    host: str = ""
    port: int = 0
    public_key: bytes = b""
    signature: bytes = b""
    accuser: bytes = b""


Updates = tuple[Claim, ...]


@message("swim.ping")
@dataclass(frozen=True, slots=True)
class Ping:
    """Are you alive? ``target`` is the id we expect to answer (a different node
    now living at the address stays silent). ``reliable_reply`` asks for the ack
    on the stream transport (the stream fallback ping)."""

    seq: int
    target: bytes
    updates: Updates = ()
    reliable_reply: bool = False


@message("swim.ack")
@dataclass(frozen=True, slots=True)
class Ack:
    """Answer to the ping with ``seq`` (relayed unchanged by intermediaries)."""

    seq: int
    updates: Updates = ()


@message("swim.ping_req")
@dataclass(frozen=True, slots=True)
class PingReq:
    """Please ping ``target`` at (host, port) for me and relay its ack for ``seq``."""

    seq: int
    target: bytes
    host: str
    port: int
    updates: Updates = ()


@message("swim.nack")
@dataclass(frozen=True, slots=True)
class Nack:
    """Lifeguard: I pinged the target for your ``seq`` and heard nothing in time.
    Proves the path to the intermediary works, which feeds local health."""

    seq: int
    updates: Updates = ()


@message("swim.gossip")
@dataclass(frozen=True, slots=True)
class Gossip:
    """Bare carrier of claims: a graceful leave tells a few peers directly."""

    updates: Updates


@message("swim.push_pull")
@dataclass(frozen=True, slots=True)
class PushPull:
    """Our whole view, sent over the stream transport.

    Sent as a request (``reply`` false; the receiver answers with its own view)
    or as that answer; ``join`` marks a first contact. ``table`` is the view as
    one msgpack document of columns (see ``membership.pushpull``): validating a
    thousand rows element by element through the generic codec costs ~3 ms, the
    columnar check in ``pushpull.decode_table`` ~0.2 ms.
    """

    reply: bool
    join: bool
    table: bytes = b""
