"""Typed protocol messages and their validated msgpack-ready form.

Every protocol message is a frozen dataclass decorated with :func:`message`, which
gives it a wire type name and derives a compact, *validating* codec from the
field annotations. ``to_wire`` turns a message into nested lists of plain values
(what msgpack packs natively); ``from_wire`` rebuilds it and raises
:class:`MalformedMessage` on any shape or type mismatch, so a protocol core only
ever sees well-typed messages.

Supported field types: ``int``, ``float``, ``str``, ``bytes``, ``bool``,
``X | None``, ``tuple[X, ...]``, ``dict[str, X]`` and nested ``@record``
dataclasses. Messages are encoded as a positional list (field order), which keeps
datagrams small: a SWIM ping is a few dozen bytes.

A message type may also declare how the envelope treats it (see
:mod:`deepgossip.wire.envelope`): ``signed=True`` makes every frame of that type
carry an Ed25519 signature, and receivers drop unsigned ones; ``key_field`` names
a ``bytes`` field that carries the sender's own public key (join and alive
announcements), so a receiver can verify a node it has never heard of.

Example::

    @message("swim.ping")
    @dataclass(frozen=True, slots=True)
    class Ping:
        seq: int
        piggyback: tuple[MemberUpdate, ...] = ()
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from deepgossip.wire.errors import MalformedMessage, UnknownType

__all__ = [
    "REGISTRY",
    "MalformedMessage",
    "MessageRegistry",
    "UnknownType",
    "WireMessage",
    "from_wire",
    "message",
    "record",
    "to_wire",
]

T = TypeVar("T")

Encoder = Callable[[Any], Any]
Decoder = Callable[[Any], Any]


def _scalar(kind: type) -> tuple[Encoder, Decoder]:
    def decode(value: Any) -> Any:
        # bool is an int subclass; a schema that says int must not accept True.
        if type(value) is not kind:
            if kind is float and type(value) is int:
                return float(value)
            raise MalformedMessage(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return (lambda v: v), decode


def _optional(inner: tuple[Encoder, Decoder]) -> tuple[Encoder, Decoder]:
    enc, dec = inner
    return (lambda v: None if v is None else enc(v)), (lambda v: None if v is None else dec(v))


def _sequence(inner: tuple[Encoder, Decoder]) -> tuple[Encoder, Decoder]:
    enc, dec = inner

    def decode(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise MalformedMessage(f"expected a list, got {type(value).__name__}")
        return tuple(dec(item) for item in value)

    return (lambda v: [enc(item) for item in v]), decode


def _mapping(inner: tuple[Encoder, Decoder]) -> tuple[Encoder, Decoder]:
    enc, dec = inner

    def decode(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise MalformedMessage(f"expected a map, got {type(value).__name__}")
        out: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                raise MalformedMessage("map keys must be strings")
            out[key] = dec(item)
        return out

    return (lambda v: {k: enc(item) for k, item in v.items()}), decode


def _own_codec(cls: Any) -> _RecordCodec | None:
    """The codec ``@record`` attached to ``cls`` itself, not one inherited.

    A plain dataclass subclass of a record would otherwise inherit its parent's
    codec and be encoded (and decoded) as the parent, silently dropping its own
    fields.
    """
    codec = vars(cls).get("_wire_codec") if isinstance(cls, type) else None
    return codec if isinstance(codec, _RecordCodec) else None


def _codec_for(annotation: Any) -> tuple[Encoder, Decoder]:
    if annotation in (int, float, str, bytes, bool):
        return _scalar(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1 and len(args) == 2:
            return _optional(_codec_for(non_none[0]))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _sequence(_codec_for(args[0]))
    if origin is dict and args and args[0] is str:
        return _mapping(_codec_for(args[1]))
    codec = _own_codec(annotation)
    if codec is not None:
        return codec.encode, codec.decode
    raise TypeError(f"unsupported message field type: {annotation!r}")


class _RecordCodec:
    """Positional list codec for one dataclass, built lazily from its hints."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self._fields: list[tuple[str, Encoder, Decoder]] | None = None
        self._required = 0

    def _build(self) -> list[tuple[str, Encoder, Decoder]]:
        if self._fields is None:
            hints = typing.get_type_hints(self.cls)
            fields = []
            required = 0
            for field in dataclasses.fields(self.cls):
                enc, dec = _codec_for(hints[field.name])
                fields.append((field.name, enc, dec))
                has_default = (
                    field.default is not dataclasses.MISSING
                    or field.default_factory is not dataclasses.MISSING
                )
                if not has_default:
                    required = len(fields)
            self._required = required
            self._fields = fields
        return self._fields

    def field_names(self) -> list[str]:
        return [name for name, _, _ in self._build()]

    def encode(self, obj: Any) -> list[Any]:
        return [enc(getattr(obj, name)) for name, enc, _ in self._build()]

    def decode(self, value: Any) -> Any:
        fields = self._build()
        if not isinstance(value, list | tuple):
            raise MalformedMessage(f"{self.cls.__name__}: expected a list")
        # Newer peers may append optional fields; older ones may omit trailing
        # defaults. Both stay compatible within one protocol version.
        if len(value) < self._required:
            raise MalformedMessage(f"{self.cls.__name__}: missing fields")
        kwargs = {}
        for (name, _, dec), item in zip(fields, value, strict=False):
            try:
                kwargs[name] = dec(item)
            except MalformedMessage as exc:
                # Name the offending field: "Ping.piggyback: expected a list".
                raise MalformedMessage(f"{self.cls.__name__}.{name}: {exc}") from None
        try:
            return self.cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise MalformedMessage(f"{self.cls.__name__}: {exc}") from exc


def record(cls: type[T]) -> type[T]:
    """Make a dataclass usable as a nested field of messages."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError("@record needs a dataclass (apply @dataclass first)")
    cls._wire_codec = _RecordCodec(cls)  # type: ignore[attr-defined]
    return cls


class MessageRegistry:
    """Maps wire type names to message classes."""

    def __init__(self) -> None:
        self._by_name: dict[str, type] = {}

    def register(self, name: str, cls: type) -> None:
        existing = self._by_name.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"message type {name!r} registered twice")
        self._by_name[name] = cls

    def lookup(self, name: str) -> type:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownType(f"unknown message type {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name


REGISTRY = MessageRegistry()


def message(
    name: str,
    registry: MessageRegistry = REGISTRY,
    *,
    signed: bool = False,
    key_field: str | None = None,
) -> Callable[[type[T]], type[T]]:
    """Register a dataclass as a protocol message with wire type ``name``.

    ``signed``: frames of this type are always signed, and receivers drop them
    unsigned. ``key_field``: name of a ``bytes`` field holding the sender's raw
    Ed25519 public key, which lets a receiver verify the signature of a node it has
    no key for yet (the envelope checks that the key hashes to the sender id).
    """

    def wrap(cls: type[T]) -> type[T]:
        if not isinstance(name, str) or not name:
            raise ValueError("message type name must be a non-empty string")
        if not dataclasses.is_dataclass(cls):
            raise TypeError("@message needs a dataclass (apply @dataclass first)")
        if key_field is not None:
            if not signed:
                raise ValueError(f"{name}: key_field only makes sense with signed=True")
            if key_field not in {f.name for f in dataclasses.fields(cls)}:  # type: ignore[arg-type]
                raise ValueError(f"{name}: key_field {key_field!r} is not a field")
        registry.register(name, cls)
        record(cls)
        cls.TYPE = name  # type: ignore[attr-defined]
        cls.SIGNED = signed  # type: ignore[attr-defined]
        cls.KEY_FIELD = key_field  # type: ignore[attr-defined]
        return cls

    return wrap


def to_wire(msg: Any) -> tuple[str, list[Any]]:
    """Return ``(type name, positional body)`` for a registered message."""
    cls = type(msg)
    codec = _own_codec(cls)
    name = vars(cls).get("TYPE")
    if codec is None or not isinstance(name, str):
        raise TypeError(f"{cls.__name__} is not a registered @message")
    return name, codec.encode(msg)


def from_wire(name: Any, body: Any, registry: MessageRegistry = REGISTRY) -> Any:
    """Rebuild a message; raises :class:`MalformedMessage` on any mismatch.

    An unregistered type name raises :class:`UnknownType` (a ``MalformedMessage``).
    """
    if type(name) is not str:
        raise MalformedMessage("message type must be a string")
    cls = registry.lookup(name)
    return cls._wire_codec.decode(body)  # type: ignore[attr-defined]


class WireMessage(typing.Protocol):
    """What :func:`message` adds to a dataclass (for type checkers)."""

    TYPE: ClassVar[str]
    SIGNED: ClassVar[bool]
    KEY_FIELD: ClassVar[str | None]
