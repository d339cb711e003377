"""Full-state tables for push-pull: encode them, check them, read them back.

A table is one msgpack array of ten columns, each holding one field for every
member (the sender first)::

    [ids, states, incarnations, alive_incarnations, hosts, ports,
     public_keys, alive_signatures, accusers, accusation_signatures]

``ids`` is the 16-byte ids concatenated and ``states`` one byte per member;
the rest are lists. ``incarnations`` belong to the states, ``alive_*`` to the
newest signed alive claim, and ``accusers``/``accusation_signatures`` back a
suspect or dead state (the accuser's signature) or a left one (the member's
own). Columns keep decoding at C speed: the type check of a column is one
``set(map(type, column))``, not a Python call per value. Merging rows is the
core's job (it applies the same precedence and signature rules as to gossip).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import msgpack

from deepgossip.membership.state import LEFT, NODE_ID_BYTES, Member, MemberState

_COLUMNS = 10


@dataclass(frozen=True, slots=True)
class Row:
    """One member as the remote side sees it."""

    node: bytes
    state: MemberState
    incarnation: int
    alive_incarnation: int
    host: str
    port: int
    public_key: bytes
    alive_signature: bytes
    accuser: bytes
    accusation_signature: bytes


@dataclass(frozen=True, slots=True)
class Table:
    """A decoded, shape-checked table."""

    ids: list[bytes]
    states: bytes
    incarnations: list[int]
    alive_incarnations: list[int]
    hosts: list[str]
    ports: list[int]
    public_keys: list[bytes]
    alive_signatures: list[bytes]
    accusers: list[bytes]
    accusation_signatures: list[bytes]

    def __len__(self) -> int:
        return len(self.ids)

    def row(self, i: int) -> Row:
        return Row(
            self.ids[i],
            MemberState(self.states[i]),
            self.incarnations[i],
            self.alive_incarnations[i],
            self.hosts[i],
            self.ports[i],
            self.public_keys[i],
            self.alive_signatures[i],
            self.accusers[i],
            self.accusation_signatures[i],
        )

    def rows(self) -> Iterator[Row]:
        for i in range(len(self.ids)):
            yield self.row(i)


def encode_table(first: Row, members: Iterable[Member]) -> bytes:
    """Pack ``first`` (ourselves) and ``members`` into a table."""
    ms = list(members)
    columns = [
        first.node + b"".join([m.node_id for m in ms]),
        bytes([int(first.state)] + [int(m.state) for m in ms]),
        [first.incarnation] + [m.incarnation for m in ms],
        [first.alive_incarnation] + [m.alive_incarnation for m in ms],
        [first.host] + [m.address[0] for m in ms],
        [first.port] + [m.address[1] for m in ms],
        [first.public_key] + [m.public_key for m in ms],
        [first.alive_signature] + [m.alive_signature for m in ms],
        [first.accuser] + [m.accuser for m in ms],
        [first.accusation_signature] + [m.accusation_signature for m in ms],
    ]
    return msgpack.packb(columns, use_bin_type=True)


def _all(column: object, kind: type, n: int) -> bool:
    if type(column) is not list or len(column) != n:
        return False
    return n == 0 or set(map(type, column)) == {kind}


def decode_table(blob: bytes, max_members: int) -> Table | str:
    """The table in ``blob``, or why it is unusable (a counter name)."""
    try:
        columns = msgpack.unpackb(
            blob,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_array_len=max(max_members, _COLUMNS),
        )
    except (ValueError, msgpack.UnpackException):
        return "push_pull_undecodable"
    if type(columns) is not list or len(columns) != _COLUMNS:
        return "push_pull_shape"
    ids_blob, states = columns[0], columns[1]
    if type(ids_blob) is not bytes or type(states) is not bytes:
        return "push_pull_shape"
    n = len(states)
    if n > max_members:
        return "push_pull_too_large"
    if len(ids_blob) != n * NODE_ID_BYTES:
        return "push_pull_ragged"
    kinds = (int, int, str, int, bytes, bytes, bytes, bytes)
    if not all(_all(column, kind, n) for column, kind in zip(columns[2:], kinds, strict=True)):
        return "push_pull_ragged"
    if n and max(states) > LEFT:
        return "push_pull_bad_state"
    ids = [ids_blob[i : i + NODE_ID_BYTES] for i in range(0, len(ids_blob), NODE_ID_BYTES)]
    return Table(ids, states, *columns[2:])
