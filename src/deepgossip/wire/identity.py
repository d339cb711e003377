"""Node identity: an Ed25519 key pair, its node id, and signature checks.

The node id is the first 16 bytes of SHA-256 over the raw 32-byte public key. It is
*self-certifying*: anyone holding a public key can check that it belongs to a
claimed id, so a node can introduce itself by sending its key once, signed.

Signatures are made over the SHA-256 **digest** of the data, not the data itself.
Ed25519 hashes its whole input twice (SHA-512), so signing a 40 MB update directly
costs two passes over it inside the signer; signing its 32-byte digest costs a few
tens of microseconds whatever the payload size, and the digest is often already at
hand (update bodies are content-addressed by it). Callers that hash incrementally
(the envelope does, to avoid concatenating header and payload) use
:meth:`Identity.sign_digest` and :func:`verify_digest`.

:class:`NullSigner` produces empty signatures for very large simulations where
Ed25519 costs too much wall time. It can only be built through
:meth:`NullSigner.insecure_for_simulation`; nothing in this module ever returns one
implicitly.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = [
    "KEY_FILE_NAME",
    "NODE_ID_SIZE",
    "PUBLIC_KEY_SIZE",
    "SIGNATURE_SIZE",
    "Identity",
    "IdentityFileError",
    "KeyBook",
    "KeyLookup",
    "NodeId",
    "NullSigner",
    "Signer",
    "node_id_of",
    "short_id",
    "verify",
    "verify_digest",
]

NodeId = bytes
"""16 bytes: SHA-256(raw public key)[:16]. 128 bits keep accidental collisions out of
reach (birthday bound 2^64 nodes) while saving 16 B per mention in datagrams."""

NODE_ID_SIZE = 16
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
DIGEST_SIZE = 32
KEY_FILE_NAME = "node.key"


class IdentityFileError(RuntimeError):
    """The key file exists but cannot be used; it is never silently replaced."""


def node_id_of(public_key_bytes: bytes) -> NodeId:
    """The node id that belongs to a raw 32-byte Ed25519 public key."""
    if len(public_key_bytes) != PUBLIC_KEY_SIZE:
        raise ValueError(f"public key must be {PUBLIC_KEY_SIZE} bytes")
    return hashlib.sha256(public_key_bytes).digest()[:NODE_ID_SIZE]


def short_id(node_id: bytes, chars: int = 8) -> str:
    """Render a node id as short hex for logs (``chars`` hex digits, default 8)."""
    return bytes(node_id).hex()[:chars]


class Signer(Protocol):
    """What the envelope needs from an identity."""

    @property
    def node_id(self) -> NodeId: ...

    @property
    def public_key_bytes(self) -> bytes: ...

    @property
    def signature_size(self) -> int: ...

    def sign_digest(self, digest: bytes) -> bytes: ...


class Identity:
    """An Ed25519 key pair and the node id derived from it."""

    __slots__ = ("_key", "_node_id", "_public")

    signature_size = SIGNATURE_SIZE

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise TypeError("Identity needs an Ed25519PrivateKey")
        self._key = private_key
        self._public = private_key.public_key().public_bytes_raw()
        self._node_id = node_id_of(self._public)

    @classmethod
    def generate(cls) -> Identity:
        """A fresh random identity (not persisted)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> Identity:
        """Rebuild an identity from a raw 32-byte private key (tests, fixtures)."""
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Identity:
        """Load a PEM (PKCS#8) Ed25519 key file; :class:`IdentityFileError` if unusable.

        Refuses files readable by group or others, like OpenSSH does: a leaked key
        lets anyone sign as this node.
        """
        path = Path(path)
        try:
            st = path.stat()
            data = path.read_bytes()
        except OSError as exc:
            raise IdentityFileError(f"cannot read key file {path}: {exc}") from exc
        if os.name == "posix" and st.st_mode & 0o077:
            raise IdentityFileError(
                f"key file {path} is accessible by other users "
                f"(mode {stat.filemode(st.st_mode)}); run: chmod 600 {path}"
            )
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise IdentityFileError(
                f"key file {path} is corrupt or not an unencrypted PEM private key "
                f"({exc}); it was left untouched. Restore it from backup, or delete it "
                "to start as a NEW node with a new id."
            ) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityFileError(
                f"key file {path} holds a {type(key).__name__}, not an Ed25519 key"
            )
        return cls(key)

    @classmethod
    def load_or_create(cls, data_dir: str | os.PathLike[str]) -> Identity:
        """Load ``data_dir/node.key``, creating it (mode 0600, atomically) on first start.

        An existing but unreadable or corrupt file raises :class:`IdentityFileError`
        instead of being replaced: replacing it would silently give the node a new id
        and orphan its reputation and state in the network.
        """
        directory = Path(data_dir)
        path = directory / KEY_FILE_NAME
        if path.exists() or path.is_symlink():
            return cls.load(path)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        identity = cls.generate()
        if identity._write_new(path):
            return identity
        # Another process created the file between our check and our link: use theirs.
        return cls.load(path)

    def _write_new(self, path: Path) -> bool:
        """Write the key to a new file atomically; False if ``path`` appeared meanwhile.

        The key goes to a temporary file created 0600 from the start (no window with
        wider permissions), is fsynced, then hard-linked to its final name. ``link``
        fails if the name exists, so two processes starting at once cannot overwrite
        each other's key; a crash leaves either no key file or a complete one.
        """
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            _fsync_dir(path.parent)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    @property
    def public_key_bytes(self) -> bytes:
        """The raw 32-byte public key."""
        return self._public

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    def sign(self, data: bytes | bytearray | memoryview) -> bytes:
        """Ed25519 signature (64 B) over SHA-256(data); see the module docstring."""
        return self._key.sign(hashlib.sha256(data).digest())

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign a precomputed SHA-256 digest (what :meth:`sign` does after hashing)."""
        if len(digest) != DIGEST_SIZE:
            raise ValueError("digest must be 32 bytes (SHA-256)")
        return self._key.sign(digest)

    def __repr__(self) -> str:
        return f"Identity(node_id={short_id(self._node_id)})"


def _fsync_dir(directory: Path) -> None:
    """Persist a directory entry (the new key file's name) across a crash."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform / filesystem
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_PUBLIC_KEY_CACHE: OrderedDict[bytes, Ed25519PublicKey] = OrderedDict()
_PUBLIC_KEY_CACHE_SIZE = 4096
"""Parsed public keys kept for reuse: about one per live peer."""


def _public_key(raw: bytes) -> Ed25519PublicKey:
    key = _PUBLIC_KEY_CACHE.get(raw)
    if key is None:
        key = Ed25519PublicKey.from_public_bytes(raw)
        _PUBLIC_KEY_CACHE[raw] = key
        if len(_PUBLIC_KEY_CACHE) > _PUBLIC_KEY_CACHE_SIZE:
            _PUBLIC_KEY_CACHE.popitem(last=False)
    return key


def verify_digest(public_key_bytes: bytes, signature: bytes, digest: bytes) -> bool:
    """True iff ``signature`` is a valid signature of ``digest``; never raises."""
    try:
        if (
            len(public_key_bytes) != PUBLIC_KEY_SIZE
            or len(signature) != SIGNATURE_SIZE
            or len(digest) != DIGEST_SIZE
        ):
            return False
        _public_key(bytes(public_key_bytes)).verify(bytes(signature), bytes(digest))
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def verify(public_key_bytes: bytes, signature: bytes, data: bytes) -> bool:
    """True iff ``signature`` was made by :meth:`Identity.sign` over ``data``.

    Returns False, never raises, for garbage of any kind (wrong lengths, invalid
    key encodings, non-bytes arguments).
    """
    try:
        digest = hashlib.sha256(data).digest()
    except TypeError:
        return False
    return verify_digest(public_key_bytes, signature, digest)


class NullSigner:
    """INSECURE: a signer whose signatures are empty and always accepted.

    For large simulated networks only, where thousands of Ed25519 operations per
    simulated second dominate the wall time. A :class:`FrameCodec` built with it
    neither produces nor checks signatures (any frame claiming any sender is
    accepted), so it must never reach a real socket. It cannot be constructed by
    accident: use :meth:`insecure_for_simulation`.
    """

    __slots__ = ("_node_id",)

    signature_size = 0
    _TOKEN = object()

    def __init__(self, node_id: bytes, *, _token: object = None) -> None:
        if _token is not NullSigner._TOKEN:
            raise TypeError("use NullSigner.insecure_for_simulation(node_id)")
        if len(node_id) != NODE_ID_SIZE:
            raise ValueError(f"node id must be {NODE_ID_SIZE} bytes")
        self._node_id = bytes(node_id)

    @classmethod
    def insecure_for_simulation(cls, node_id: bytes) -> NullSigner:
        """A null signer for a simulated node; frames it signs are not authenticated."""
        return cls(node_id, _token=cls._TOKEN)

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    @property
    def public_key_bytes(self) -> bytes:
        return b""

    def sign_digest(self, digest: bytes) -> bytes:
        return b""

    def __repr__(self) -> str:
        return f"NullSigner(node_id={short_id(self._node_id)}, INSECURE)"


class KeyLookup(Protocol):
    """Where the envelope finds a sender's public key: ``get(node_id) -> key | None``."""

    def get(self, node_id: bytes, /) -> bytes | None: ...


class KeyBook:
    """Known public keys by node id; every entry is checked to hash to its id.

    ``max_keys`` bounds memory: when full, the least recently added key is evicted
    (a peer evicted this way re-announces its key in its next alive message).
    """

    def __init__(self, max_keys: int = 65536) -> None:
        # 65536 peers x ~100 B per entry: a few MB at most.
        self._keys: OrderedDict[bytes, bytes] = OrderedDict()
        self._max = max_keys

    def add(self, public_key_bytes: bytes) -> NodeId:
        """Remember a key; returns its node id."""
        key = bytes(public_key_bytes)
        nid = node_id_of(key)
        self._keys[nid] = key
        self._keys.move_to_end(nid)
        if len(self._keys) > self._max:
            self._keys.popitem(last=False)
        return nid

    def get(self, node_id: bytes, /) -> bytes | None:
        return self._keys.get(bytes(node_id))

    def discard(self, node_id: bytes) -> None:
        self._keys.pop(bytes(node_id), None)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)
