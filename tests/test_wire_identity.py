"""Node identity: key persistence, node ids, signatures (wire/identity.py)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from deepgossip.wire.identity import (
    KEY_FILE_NAME,
    Identity,
    IdentityFileError,
    KeyBook,
    NullSigner,
    node_id_of,
    short_id,
    verify,
    verify_digest,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def test_node_id_is_truncated_sha256_of_public_key() -> None:
    ident = Identity.generate()
    assert len(ident.public_key_bytes) == 32
    assert ident.node_id == hashlib.sha256(ident.public_key_bytes).digest()[:16]
    assert node_id_of(ident.public_key_bytes) == ident.node_id
    assert short_id(ident.node_id) == ident.node_id.hex()[:8]
    assert short_id(ident.node_id) in repr(ident)
    with pytest.raises(ValueError):
        node_id_of(b"short")


def test_load_or_create_persists_and_reloads(tmp_path: Path) -> None:
    data_dir = tmp_path / "node-a"
    first = Identity.load_or_create(data_dir)
    again = Identity.load_or_create(data_dir)
    assert again.node_id == first.node_id
    assert again.public_key_bytes == first.public_key_bytes
    assert [p.name for p in data_dir.iterdir()] == [KEY_FILE_NAME]  # no temp files left
    assert Identity.load(data_dir / KEY_FILE_NAME).node_id == first.node_id


@posix_only
def test_key_file_mode_0600(tmp_path: Path) -> None:
    old = os.umask(0)  # even a permissive umask must not widen the key file
    try:
        Identity.load_or_create(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / KEY_FILE_NAME).stat().st_mode) == 0o600


@posix_only
def test_world_readable_key_file_refused(tmp_path: Path) -> None:
    Identity.load_or_create(tmp_path)
    (tmp_path / KEY_FILE_NAME).chmod(0o644)
    with pytest.raises(IdentityFileError, match="chmod 600"):
        Identity.load_or_create(tmp_path)


@pytest.mark.parametrize("content", [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nxx\n"])
def test_corrupt_key_file_is_a_clear_error_and_left_untouched(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / KEY_FILE_NAME
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(IdentityFileError, match="corrupt"):
        Identity.load_or_create(tmp_path)
    assert path.read_bytes() == content  # never silently replaced


def test_non_ed25519_key_file_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = tmp_path / KEY_FILE_NAME
    path.write_bytes(pem)
    path.chmod(0o600)
    with pytest.raises(IdentityFileError, match="not an Ed25519"):
        Identity.load_or_create(tmp_path)


def test_lost_creation_race_uses_the_winners_key(tmp_path: Path) -> None:
    winner = Identity.load_or_create(tmp_path / "w")
    loser = Identity.generate()
    # The loser finds the file already linked in place and must not overwrite it.
    assert loser._write_new(tmp_path / "w" / KEY_FILE_NAME) is False
    assert Identity.load_or_create(tmp_path / "w").node_id == winner.node_id
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == [KEY_FILE_NAME]


def test_sign_and_verify() -> None:
    ident = Identity.generate()
    data = b"payload" * 1000
    sig = ident.sign(data)
    assert len(sig) == 64
    assert verify(ident.public_key_bytes, sig, data)
    assert verify_digest(ident.public_key_bytes, sig, hashlib.sha256(data).digest())
    assert ident.sign_digest(hashlib.sha256(data).digest()) == sig  # Ed25519 is deterministic
    assert not verify(ident.public_key_bytes, sig, data + b"!")
    assert not verify(Identity.generate().public_key_bytes, sig, data)


@pytest.mark.parametrize(
    ("key", "sig", "data"),
    [
        (b"", b"", b""),
        (b"\x00" * 32, b"\x00" * 64, b"x"),
        (b"\xff" * 32, b"\xff" * 64, b"x"),
        (b"\x01" * 31, b"\x00" * 64, b"x"),
        (b"\x01" * 32, b"\x00" * 63, b"x"),
        (None, None, None),
        ("a" * 32, "b" * 64, "text"),
        (12, 34, 56),
    ],
)
def test_verify_false_on_garbage(key: object, sig: object, data: object) -> None:
    assert verify(key, sig, data) is False  # type: ignore[arg-type]
    assert verify_digest(key, sig, b"\x00" * 32) is False  # type: ignore[arg-type]


def test_null_signer_only_explicit() -> None:
    with pytest.raises(TypeError, match="insecure_for_simulation"):
        NullSigner(b"\x00" * 16)
    signer = NullSigner.insecure_for_simulation(b"\x07" * 16)
    assert signer.node_id == b"\x07" * 16
    assert signer.sign_digest(b"\x00" * 32) == b""
    assert "INSECURE" in repr(signer)


def test_key_book() -> None:
    book = KeyBook(max_keys=2)
    a, b, c = (Identity.generate() for _ in range(3))
    assert book.add(a.public_key_bytes) == a.node_id
    book.add(b.public_key_bytes)
    assert book.get(a.node_id) == a.public_key_bytes
    book.add(c.public_key_bytes)  # evicts the oldest (a)
    assert book.get(a.node_id) is None and c.node_id in book and len(book) == 2
    book.discard(c.node_id)
    assert book.get(c.node_id) is None
