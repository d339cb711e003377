"""Frames: AEAD, replay windows, epochs, signatures, limits (wire/envelope.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack
import pytest

from deepgossip.wire.envelope import HEADER_SIZE, FrameCodec, new_epoch
from deepgossip.wire.errors import (
    BadSignature,
    BadSuite,
    BadTag,
    BadVersion,
    FrameTooLarge,
    MalformedFrame,
    MalformedMessage,
    Reflected,
    Replay,
    StaleEpoch,
    UnknownSigner,
    UnknownType,
    WireError,
)
from deepgossip.wire.identity import Identity, KeyBook, NullSigner
from deepgossip.wire.message import MessageRegistry, message
from deepgossip.wire.replay import ReplayGuard
from deepgossip.wire.session import (
    SessionKey,
    fingerprint_matches,
    new_join_secret,
    secret_fingerprint,
)

REG = MessageRegistry()
SECRET = "correct horse battery staple 42"
MAX = 1400


@message("t.ping", REG)
@dataclass(frozen=True, slots=True)
class Ping:
    seq: int
    note: str = ""


@message("t.blob", REG)
@dataclass(frozen=True, slots=True)
class Blob:
    data: bytes


@message("t.rumour", REG, signed=True)
@dataclass(frozen=True, slots=True)
class Rumour:
    item: bytes


@message("t.alive", REG, signed=True, key_field="public_key")
@dataclass(frozen=True, slots=True)
class Alive:
    public_key: bytes
    incarnation: int


ALICE = Identity.from_private_bytes(b"\x01" * 32)
BOB = Identity.from_private_bytes(b"\x02" * 32)
MALLORY = Identity.from_private_bytes(b"\x03" * 32)
SESSION = SessionKey.derive(SECRET, "session-1")


def codec(ident: Identity = ALICE, session: SessionKey = SESSION, **kw: Any) -> FrameCodec:
    return FrameCodec(ident, session, registry=REG, **kw)


def pair(**kw: Any) -> tuple[FrameCodec, FrameCodec]:
    return codec(ALICE, **kw), codec(BOB, **kw)


# -- session keys -------------------------------------------------------------------


def test_session_key_derivation() -> None:
    again = SessionKey.derive(SECRET, "session-1")
    assert again == SESSION
    assert SessionKey.derive(SECRET, "session-2").key != SESSION.key  # salted by session id
    assert SECRET not in repr(SESSION) and SESSION.key.hex() not in repr(SESSION)
    assert secret_fingerprint(SECRET) == secret_fingerprint(SECRET.encode())
    assert len(secret_fingerprint(SECRET)) == 64
    assert fingerprint_matches(SECRET, secret_fingerprint(SECRET).upper())
    assert not fingerprint_matches("another secret of enough length", secret_fingerprint(SECRET))
    assert len(new_join_secret()) >= 32
    with pytest.raises(ValueError, match="at least 16"):
        SessionKey.derive("short", "s")


# -- round trips --------------------------------------------------------------------


def test_round_trip() -> None:
    a, b = pair()
    frame = a.encode(Ping(7, "hello"))
    got = b.decode(frame, max_size=MAX)
    assert got.msg == Ping(7, "hello")
    assert got.sender == ALICE.node_id
    assert (got.seq, got.signed, got.reliable, got.epoch) == (0, False, False, a.epoch)
    assert b"hello" not in frame  # encrypted
    payload = msgpack.packb(["t.ping", [7, "hello"]])
    assert len(frame) == a.overhead(signed=False) + len(payload) == 45 + 16 + 16


def test_round_trip_reliable_signed_and_bytes_inputs() -> None:
    a, b = pair(keys=KeyBook())
    b._keys.add(ALICE.public_key_bytes)  # type: ignore[union-attr]
    frame = a.encode(Blob(b"x" * 100_000), sign=True, reliable=True)
    got = b.decode(bytearray(frame), max_size=1 << 20)
    assert got.msg == Blob(b"x" * 100_000) and got.signed and got.reliable
    frame2 = a.encode(Ping(1))
    assert b.decode(memoryview(frame2), max_size=MAX).msg == Ping(1)


def test_plaintext_round_trip_and_no_downgrade() -> None:
    pa, pb = FrameCodec.plaintext(ALICE, registry=REG), FrameCodec.plaintext(BOB, registry=REG)
    assert not pa.encrypted
    frame = pa.encode(Ping(1, "visible"))
    assert b"visible" in frame
    assert pb.decode(frame, max_size=MAX).msg == Ping(1, "visible")
    enc = codec(BOB)
    with pytest.raises(BadSuite):
        enc.decode(pa.encode(Ping(2)), max_size=MAX)  # plaintext to an encrypted node
    with pytest.raises(BadSuite):
        pb.decode(codec(ALICE).encode(Ping(3)), max_size=MAX)
    with pytest.raises(TypeError, match="plaintext"):
        FrameCodec(ALICE, None)  # type: ignore[arg-type]


def test_encode_limits() -> None:
    a = codec()
    with pytest.raises(FrameTooLarge):
        a.encode(Blob(b"x" * 1400))  # datagrams are capped at 1400 B
    frame = a.encode(Blob(b"x" * 1400), reliable=True)
    assert len(frame) > 1400
    biggest = MAX - a.overhead(signed=False) - 8  # msgpack: array, str type, bin16 header
    assert len(a.encode(Blob(b"x" * (biggest - len("t.blob") - 1)))) <= MAX


# -- tampering ----------------------------------------------------------------------


def test_tampered_byte_anywhere_is_rejected() -> None:
    a, b = pair()
    frame = a.encode(Ping(42, "tamper me"))
    for i in range(len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x01
        with pytest.raises(WireError) as exc:
            b.decode(bytes(bad), max_size=MAX)
        if i >= 5:  # past magic/version/suite/flags every change is an AEAD failure
            assert isinstance(exc.value, BadTag), (i, exc.value)
    assert b.decode(frame, max_size=MAX).msg == Ping(42, "tamper me")  # state not moved


def test_truncation_and_trailing_bytes_rejected() -> None:
    a, b = pair()
    frame = a.encode(Ping(1))
    for cut in range(len(frame)):
        with pytest.raises((MalformedFrame, BadTag)):
            b.decode(frame[:cut], max_size=MAX)
    with pytest.raises(BadTag):
        b.decode(frame + b"\x00", max_size=MAX)


def test_wrong_session_secret_is_bad_tag() -> None:
    a = codec(ALICE)
    other = codec(BOB, SessionKey.derive("a different secret, long enough", "session-1"))
    with pytest.raises(BadTag):
        other.decode(a.encode(Ping(1)), max_size=MAX)
    wrong_sid = codec(BOB, SessionKey.derive(SECRET, "session-2"))
    with pytest.raises(BadTag):
        wrong_sid.decode(a.encode(Ping(1)), max_size=MAX)


def test_bad_magic_version_flags() -> None:
    a, b = pair()
    frame = bytearray(a.encode(Ping(1)))
    for i, exc in ((0, BadVersion), (2, BadVersion), (3, BadSuite), (4, MalformedFrame)):
        bad = bytearray(frame)
        bad[i] ^= 0x80
        with pytest.raises(exc):
            b.decode(bytes(bad), max_size=MAX)


# -- replay window ------------------------------------------------------------------


def test_replay_rejected() -> None:
    a, b = pair()
    frame = a.encode(Ping(1))
    b.decode(frame, max_size=MAX)
    with pytest.raises(Replay):
        b.decode(frame, max_size=MAX)


def test_reordered_within_window_accepted_once() -> None:
    a, b = pair()
    frames = [a.encode(Ping(i)) for i in range(50)]
    order = list(range(50))[::-1]  # fully reversed: every frame but the first is "late"
    assert [b.decode(frames[i], max_size=MAX).msg.seq for i in order] == order
    for f in frames:
        with pytest.raises(Replay):
            b.decode(f, max_size=MAX)


def test_too_old_beyond_window_rejected() -> None:
    a, b = pair(replay_window=64)
    old = a.encode(Ping(0))
    newer = [a.encode(Ping(i)) for i in range(1, 65)]
    b.decode(newer[-1], max_size=MAX)  # seq 64: seq 0 is now 64 behind, outside a 64 window
    with pytest.raises(Replay, match="beyond the window"):
        b.decode(old, max_size=MAX)
    assert b.decode(newer[0], max_size=MAX).seq == 1  # 63 behind: still inside


def test_lanes_have_independent_windows() -> None:
    a, b = pair(replay_window=8, keys=KeyBook())
    b._keys.add(ALICE.public_key_bytes)  # type: ignore[union-attr]
    slow = a.encode(Blob(b"update body"), reliable=True)  # stream lane, seq 0
    for i in range(100):  # a burst of datagrams meanwhile
        b.decode(a.encode(Ping(i)), max_size=MAX)
    assert b.decode(slow, max_size=1 << 20).seq == 0  # not pushed out of the window
    signed = a.encode(Ping(1), sign=True)
    assert b.decode(signed, max_size=MAX).seq == 0


def test_restart_epoch_rules() -> None:
    old_run = codec(ALICE, epoch=1000)
    b = codec(BOB)
    stale = [old_run.encode(Ping(i)) for i in range(3)]
    b.decode(stale[0], max_size=MAX)
    new_run = codec(ALICE, epoch=2000)  # restarted: seq starts again at 0
    first = new_run.encode(Ping(100))
    got = b.decode(first, max_size=MAX)
    assert (got.seq, got.epoch) == (0, 2000)  # a newer epoch resets the window
    with pytest.raises(StaleEpoch):
        b.decode(stale[1], max_size=MAX)  # the old run is over, even unseen seqs
    with pytest.raises(Replay):
        b.decode(first, max_size=MAX)
    assert b.decode(new_run.encode(Ping(101)), max_size=MAX).seq == 1
    b.forget(ALICE.node_id)  # e.g. declared dead: its state is dropped
    assert b.decode(stale[2], max_size=MAX).epoch == 1000


def test_new_epochs_increase() -> None:
    epochs = [new_epoch() for _ in range(1000)]
    assert epochs == sorted(set(epochs))
    assert codec().epoch != codec().epoch


def test_replay_guard_bounded() -> None:
    guard = ReplayGuard(width=16, max_streams=3)
    for i in range(5):
        guard.commit((bytes([i]) * 16, 0), 1, 0)
    assert len(guard) == 3


def test_reflection_rejected() -> None:
    a = codec(ALICE)
    with pytest.raises(Reflected):
        codec(ALICE).decode(a.encode(Ping(1)), max_size=MAX)


# -- signatures ---------------------------------------------------------------------


def test_signed_type_requires_signature() -> None:
    a, b = pair(keys=KeyBook())
    b._keys.add(ALICE.public_key_bytes)  # type: ignore[union-attr]
    got = b.decode(a.encode(Rumour(b"r1")), max_size=MAX)  # signed automatically
    assert got.signed
    # A sender that strips the signature flag is dropped (forged by an insider with
    # the session key: build an unsigned frame of a signed type by hand).
    insider = codec(MALLORY)
    unsigned = _encode_unsigned(insider, Rumour(b"r2"))
    with pytest.raises(BadSignature, match="must be signed"):
        b.decode(unsigned, max_size=MAX)


def _encode_unsigned(c: FrameCodec, msg: Any) -> bytes:
    """Encode bypassing the type's signed=True, as a malicious peer could."""
    cls = type(msg)
    cls.SIGNED = False
    try:
        return c.encode(msg)
    finally:
        cls.SIGNED = True


def test_require_signatures_drops_all_unsigned() -> None:
    a, b = codec(ALICE), codec(BOB, require_signatures=True, keys=KeyBook())
    with pytest.raises(BadSignature):
        b.decode(a.encode(Ping(1)), max_size=MAX)
    b._keys.add(ALICE.public_key_bytes)  # type: ignore[union-attr]
    assert b.decode(a.encode(Ping(1), sign=True), max_size=MAX).signed


def test_unknown_signer() -> None:
    a, b = pair(keys=KeyBook())
    with pytest.raises(UnknownSigner):
        b.decode(a.encode(Rumour(b"r")), max_size=MAX)
    assert issubclass(UnknownSigner, BadSignature)


def test_embedded_key_verifies_unknown_node() -> None:
    a, b = pair(keys=KeyBook())
    got = b.decode(a.encode(Alive(ALICE.public_key_bytes, 1)), max_size=MAX)
    assert got.msg.public_key == ALICE.public_key_bytes and got.signed


def test_forged_sender_rejected() -> None:
    # Mallory (an insider: knows the session key) claims to be Alice.
    b = codec(BOB, keys=KeyBook())
    b._keys.add(ALICE.public_key_bytes)  # type: ignore[union-attr]
    forger = impersonator(MALLORY, ALICE)
    with pytest.raises(BadSignature):
        b.decode(forger.encode(Rumour(b"evil")), max_size=MAX)
    # Embedding her own key does not help: it does not hash to Alice's id.
    with pytest.raises(BadSignature, match="does not belong"):
        b.decode(forger.encode(Alive(MALLORY.public_key_bytes, 9)), max_size=MAX)
    # Embedding Alice's key does not help either: the signature is not Alice's.
    with pytest.raises(BadSignature, match="does not verify"):
        b.decode(forger.encode(Alive(ALICE.public_key_bytes, 9)), max_size=MAX)


def impersonator(insider: Identity, victim: Identity) -> FrameCodec:
    """A codec of ``insider`` that puts ``victim``'s id in its headers.

    Anyone holding the session key can derive any sender's frame key, so the AEAD
    passes: only signatures tell them apart.
    """
    forger = codec(insider)
    forger.node_id = victim.node_id
    forger._own_aead = forger._aead_for(victim.node_id, forger._epoch_bytes)
    return forger


def test_unsigned_lanes_spoofable_by_insider_but_signed_lanes_protected() -> None:
    b = codec(BOB, keys=KeyBook())
    b._keys.add(ALICE.public_key_bytes)  # type: ignore[union-attr]
    alice = codec(ALICE, epoch=10)
    forger = impersonator(MALLORY, ALICE)
    forger.epoch, forger._epoch_bytes = 2**100, (2**100).to_bytes(16, "big")
    forger._own_aead = forger._aead_for(ALICE.node_id, forger._epoch_bytes)
    # The insider jams Alice's unsigned datagram lane with a far-future epoch...
    b.decode(forger.encode(Ping(0)), max_size=MAX)
    with pytest.raises(StaleEpoch):
        b.decode(alice.encode(Ping(1)), max_size=MAX)
    # ...but cannot touch her signed lane: the forged signed frame fails, hers pass.
    with pytest.raises(BadSignature):
        b.decode(forger.encode(Ping(2), sign=True), max_size=MAX)
    assert b.decode(alice.encode(Ping(3), sign=True), max_size=MAX).signed


def test_signature_bound_to_session() -> None:
    # The same signed message re-sealed for another session does not verify there:
    # an insider of both sessions cannot carry Alice's signed frames across.
    s2 = SessionKey.derive(SECRET, "session-2")
    a1, b2 = codec(ALICE), codec(BOB, s2, keys=KeyBook())
    b2._keys.add(ALICE.public_key_bytes)  # type: ignore[union-attr]
    frame = a1.encode(Rumour(b"x"))
    header, nonce = frame[:HEADER_SIZE], _nonce_of(frame)
    plain = a1._own_aead.decrypt(nonce, frame[HEADER_SIZE:], header)  # type: ignore[union-attr]
    key2 = b2._aead_for(ALICE.node_id, frame[21:37])
    resealed = header + key2.encrypt(nonce, plain, header)  # type: ignore[union-attr]
    with pytest.raises(BadSignature, match="does not verify"):
        b2.decode(resealed, max_size=MAX)


def _nonce_of(frame: bytes) -> bytes:
    return bytes((frame[4], 0, 0, 0)) + frame[37:45]


def test_null_signer_mode() -> None:
    na = FrameCodec.plaintext(NullSigner.insecure_for_simulation(b"\x0a" * 16), registry=REG)
    nb = FrameCodec.plaintext(NullSigner.insecure_for_simulation(b"\x0b" * 16), registry=REG)
    got = nb.decode(na.encode(Rumour(b"sim")), max_size=MAX)
    assert got.signed and got.msg == Rumour(b"sim")
    # A real node does not accept null-signed frames.
    real = FrameCodec.plaintext(BOB, registry=REG, keys=KeyBook())
    with pytest.raises(WireError):
        real.decode(na.encode(Rumour(b"sim")), max_size=MAX)


# -- limits and ordering of checks --------------------------------------------------


class CountingCodec(FrameCodec):
    """Counts AEAD decryptions, to prove which frames never reach one."""

    opens = 0

    def _open(self, *args: Any) -> bytes:
        CountingCodec.opens += 1
        return super()._open(*args)


def test_oversize_rejected_before_decryption() -> None:
    a = codec(ALICE)
    b = CountingCodec(BOB, SESSION, registry=REG)
    CountingCodec.opens = 0
    big = a.encode(Blob(b"x" * 5000), reliable=True)
    with pytest.raises(FrameTooLarge):
        b.decode(big, max_size=MAX)
    with pytest.raises(FrameTooLarge):
        b.decode(b"\x00" * (b.limits.max_stream_frame + 1), max_size=1 << 40)  # capped
    assert CountingCodec.opens == 0
    assert b.decode(big, max_size=1 << 20).msg.data == b"x" * 5000
    assert CountingCodec.opens == 1


def test_replay_rejected_before_decryption() -> None:
    a = codec(ALICE)
    b = CountingCodec(BOB, SESSION, registry=REG)
    frame = a.encode(Ping(1))
    b.decode(frame, max_size=MAX)
    CountingCodec.opens = 0
    with pytest.raises(Replay):
        b.decode(frame, max_size=MAX)
    assert CountingCodec.opens == 0


def test_forged_frame_does_not_move_the_window() -> None:
    a, b = pair()
    frame = a.encode(Ping(1))
    bad = bytearray(frame)
    bad[-1] ^= 1
    with pytest.raises(BadTag):
        b.decode(bytes(bad), max_size=MAX)
    assert b.decode(frame, max_size=MAX).msg == Ping(1)  # the real one still gets in


def test_unknown_type_and_malformed_body() -> None:
    other_reg = MessageRegistry()

    @message("t.unknown", other_reg)
    @dataclass(frozen=True)
    class Unknown:
        x: int

    @message("t.ping", other_reg)
    @dataclass(frozen=True)
    class WrongPing:
        seq: str

    a = FrameCodec(ALICE, SESSION, registry=other_reg)
    b = codec(BOB)
    with pytest.raises(UnknownType):
        b.decode(a.encode(Unknown(1)), max_size=MAX)
    with pytest.raises(MalformedMessage):
        b.decode(a.encode(WrongPing("not an int")), max_size=MAX)


def test_stats_counted() -> None:
    a, b = pair()
    frame = a.encode(Ping(1))
    b.decode(frame, max_size=MAX)
    fresh = a.encode(Ping(2))
    for bad in (frame, b"\x00" * 2000, b"DG", fresh[:-1] + bytes([fresh[-1] ^ 1])):
        with pytest.raises(WireError):
            b.decode(bad, max_size=MAX)
    stats = b.stats.as_dict()
    assert stats["frames_in"] == 5 and stats["accepted"] == 1
    assert stats["dropped.replay"] == 1
    assert stats["dropped.too_large"] == 1
    assert stats["dropped.malformed_frame"] == 1
    assert stats["dropped.bad_tag"] == 1
    assert a.stats.frames_out == 2 and a.stats.bytes_out == len(frame) + len(fresh)


def test_decode_message_uses_the_transport_limit() -> None:
    a, b = pair()
    assert b.decode_message(a.encode(Ping(5))) == Ping(5)
    big = a.encode(Blob(b"x" * 5000), reliable=True)
    with pytest.raises(FrameTooLarge):
        b.decode_message(big)  # datagram limit by default
    assert b.decode_message(big, reliable=True) == Blob(b"x" * 5000)
