"""The validating positional message codec (wire/message.py)."""

from __future__ import annotations

from dataclasses import dataclass

import msgpack
import pytest

from deepgossip.wire.errors import WireError
from deepgossip.wire.message import (
    MalformedMessage,
    MessageRegistry,
    UnknownType,
    from_wire,
    message,
    record,
    to_wire,
)

REG = MessageRegistry()


@record
@dataclass(frozen=True, slots=True)
class Member:
    node: bytes
    incarnation: int
    addr: str | None = None


@message("test.state", REG)
@dataclass(frozen=True, slots=True)
class State:
    seq: int
    weight: float
    alive: bool
    members: tuple[Member, ...] = ()
    tags: dict[str, int] | None = None
    leader: Member | None = None
    blobs: tuple[bytes, ...] = ()


@message("test.signed", REG, signed=True, key_field="key")
@dataclass(frozen=True, slots=True)
class Signed:
    key: bytes


def roundtrip(msg: object) -> object:
    name, body = to_wire(msg)
    packed = msgpack.packb([name, body], use_bin_type=True)
    name2, body2 = msgpack.unpackb(packed, raw=False)
    return from_wire(name2, body2, REG)


def test_nested_round_trip() -> None:
    msg = State(
        seq=7,
        weight=0.5,
        alive=True,
        members=(Member(b"\x01" * 16, 3, "10.0.0.1:7000"), Member(b"\x02" * 16, 0)),
        tags={"round": 4, "k": -1},
        leader=Member(b"\x03" * 16, 9, None),
        blobs=(b"", b"\x00\xff"),
    )
    assert roundtrip(msg) == msg


def test_optional_and_defaults_round_trip() -> None:
    msg = State(seq=0, weight=1.0, alive=False)
    assert roundtrip(msg) == msg


def test_int_accepted_for_float() -> None:
    assert from_wire("test.state", [1, 2, True], REG).weight == 2.0


def test_missing_trailing_defaults_and_extra_fields() -> None:
    # Older peers omit trailing defaults, newer ones append fields: both decode.
    assert from_wire("test.state", [1, 1.0, True], REG) == State(1, 1.0, True)
    extra = [1, 1.0, True, [], None, None, [], "future field"]
    assert from_wire("test.state", extra, REG) == State(1, 1.0, True, tags=None)


@pytest.mark.parametrize(
    "body",
    [
        [True, 1.0, True],  # bool is not an int
        [1, 1.0, 1],  # int is not a bool
        [1, "x", True],
        [1.0, 1.0, True],  # float is not an int
        [1, 1.0],  # missing required field
        [],
        {"seq": 1},  # not positional
        "garbage",
        None,
        [1, 1.0, True, "not a list"],
        [1, 1.0, True, [[b"n", "1"]]],  # nested type error
        [1, 1.0, True, [["n", 1]]],  # str where bytes expected
        [1, 1.0, True, [], {"a": "1"}],  # dict value type
        [1, 1.0, True, [], {1: 1}],  # dict key type
        [1, 1.0, True, [], [("a", 1)]],  # list where dict expected
        [1, 1.0, True, [], None, [b"x"]],  # record too short
        [1, 1.0, True, [], None, None, [1]],  # int where bytes expected
    ],
)
def test_type_mismatches_rejected(body: object) -> None:
    with pytest.raises(MalformedMessage):
        from_wire("test.state", body, REG)


def test_error_names_the_field() -> None:
    with pytest.raises(MalformedMessage, match=r"State\.members: Member\.incarnation"):
        from_wire("test.state", [1, 1.0, True, [[b"n", "1"]]], REG)


def test_unknown_type() -> None:
    with pytest.raises(UnknownType):
        from_wire("no.such.type", [], REG)
    with pytest.raises(MalformedMessage):
        from_wire(b"test.state", [1, 1.0, True], REG)
    assert issubclass(UnknownType, MalformedMessage)
    assert issubclass(MalformedMessage, WireError)
    assert issubclass(MalformedMessage, ValueError)  # the original contract


def test_signed_and_key_field_declared() -> None:
    assert Signed.SIGNED is True and Signed.KEY_FIELD == "key"  # type: ignore[attr-defined]
    assert State.SIGNED is False and State.KEY_FIELD is None  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="not a field"):

        @message("test.bad_key", MessageRegistry(), signed=True, key_field="nope")
        @dataclass(frozen=True)
        class Bad:
            key: bytes

    with pytest.raises(ValueError, match="signed=True"):

        @message("test.bad_key2", MessageRegistry(), key_field="key")
        @dataclass(frozen=True)
        class Bad2:
            key: bytes


def test_duplicate_registration_rejected() -> None:
    reg = MessageRegistry()

    @message("dup", reg)
    @dataclass(frozen=True)
    class A:
        x: int

    @dataclass(frozen=True)
    class B:
        x: int

    with pytest.raises(ValueError, match="registered twice"):
        message("dup", reg)(B)
    assert A.TYPE == "dup"  # type: ignore[attr-defined]
    # The failed registration did not half-decorate B.
    assert not hasattr(B, "TYPE") and not hasattr(B, "_wire_codec")


@dataclass(frozen=True)
class PlainSubclass(Signed):
    extra: int = 0


def test_unregistered_subclass_is_not_silently_encoded_as_parent() -> None:
    # Before the fix, to_wire used the inherited codec and dropped `extra`.
    with pytest.raises(TypeError, match="not a registered"):
        to_wire(PlainSubclass(b"k", 5))
