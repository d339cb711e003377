"""The session file: the "torrent" of a collaborative training run.

A TOML file that every participant and the tracker share. It names the session,
lists tracker URLs, pins the protocol parameters every node must agree on, and
holds the *fingerprint* of the join secret (never the secret: the file may be
published; the secret travels out of band). Example::

    [session]
    id = "mnist-demo"
    trackers = ["http://127.0.0.1:7070"]
    secret_sha256 = "4f9c..."          # deepgossip.wire.session.secret_fingerprint

    [swim]                             # passed to the membership config
    protocol_period = 1.0

    [gossip]
    [learning]

Sections other than ``[session]`` are kept as plain tables and validated by the
layer that owns them, so this module stays below every protocol.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from deepgossip.wire.session import fingerprint_matches

SECRET_ENV = "DEEPGOSSIP_JOIN_SECRET"
"""Environment variable that carries the join secret to a node or tracker."""

_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
MAX_SESSION_FILE = 64 * 1024
"""Session files are small; a larger one is a mistake or an attack on the parser."""


class SessionError(ValueError):
    """A session file or join secret is missing or invalid; the message says why."""


@dataclass(frozen=True)
class Session:
    session_id: str
    trackers: tuple[str, ...] = ()
    secret_sha256: str = ""
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _SESSION_ID.match(self.session_id):
            raise SessionError(
                f"session id {self.session_id!r} must be 1-64 characters of letters, digits, "
                "'.', '_' or '-'"
            )
        if self.secret_sha256 and not _FINGERPRINT.match(self.secret_sha256):
            raise SessionError("secret_sha256 must be 64 lowercase hex digits")
        for url in self.trackers:
            if not url.startswith(("http://", "https://")):
                raise SessionError(f"tracker URL {url!r} must start with http:// or https://")

    def section(self, name: str) -> dict[str, Any]:
        """The ``[name]`` table (empty when absent)."""
        return dict(self.sections.get(name, {}))

    def check_secret(self, secret: str | None) -> str | None:
        """Return the secret if it matches the fingerprint; raise SessionError if not.

        A session without a fingerprint is open: it needs no secret and frames are
        still sealed with a key derived from the session id alone.
        """
        if not self.secret_sha256:
            return secret
        if not secret:
            raise SessionError(
                f"session {self.session_id!r} needs its join secret: set {SECRET_ENV} "
                "or pass --secret-file"
            )
        if not fingerprint_matches(secret, self.secret_sha256):
            raise SessionError(f"the join secret does not match session {self.session_id!r}")
        return secret

    def to_toml(self) -> str:
        data: dict[str, Any] = {
            "session": {
                "id": self.session_id,
                "trackers": list(self.trackers),
                **({"secret_sha256": self.secret_sha256} if self.secret_sha256 else {}),
            }
        }
        data.update(self.sections)
        return tomli_w.dumps(data)

    @classmethod
    def from_toml(cls, text: str) -> Session:
        if len(text.encode()) > MAX_SESSION_FILE:
            raise SessionError(f"session file larger than {MAX_SESSION_FILE} bytes")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SessionError(f"session file is not valid TOML: {exc}") from exc
        head = data.pop("session", None)
        if not isinstance(head, dict) or "id" not in head:
            raise SessionError("session file needs a [session] table with an id")
        unknown = set(head) - {"id", "trackers", "secret_sha256"}
        if unknown:
            raise SessionError(f"unknown keys in [session]: {sorted(unknown)}")
        trackers = head.get("trackers", [])
        if not isinstance(trackers, list) or not all(isinstance(u, str) for u in trackers):
            raise SessionError("[session] trackers must be a list of URLs")
        for name, table in data.items():
            if not isinstance(table, dict):
                raise SessionError(f"top-level key {name!r} must be a table")
        return cls(
            session_id=str(head["id"]),
            trackers=tuple(trackers),
            secret_sha256=str(head.get("secret_sha256", "")).lower(),
            sections=data,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Session:
        path = Path(path)
        try:
            if path.stat().st_size > MAX_SESSION_FILE:
                raise SessionError(f"{path}: larger than {MAX_SESSION_FILE} bytes")
            return cls.from_toml(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SessionError(f"cannot read session file {path}: {exc.strerror}") from exc

    def save(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_toml(), encoding="utf-8")
        tmp.replace(path)


def read_secret(secret_file: str | os.PathLike[str] | None) -> str | None:
    """The join secret from ``secret_file`` or the environment (file wins)."""
    if secret_file is not None:
        try:
            return Path(secret_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SessionError(f"cannot read secret file {secret_file}: {exc.strerror}") from exc
    return os.environ.get(SECRET_ENV) or None
