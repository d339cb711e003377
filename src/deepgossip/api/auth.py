"""Who may talk to a node's API: the holder of its token, and one application only.

The API listens on localhost, but localhost is shared by every user and process
on the host. So at start the node writes a random bearer token to
``<data_dir>/api-token`` (mode 0600: readable by the node's own user only) and
every request except ``GET /v1/health`` must present it.

A node serves exactly one application: its private data and its model are that
application's. The first request that presents the token *and* an
``X-DeepGossip-App`` header claims the node for that app id; the claim is kept in
``<data_dir>/api-app.json`` across restarts, and a request naming another app id
is refused with 409. Requests with the token but without the header are served
(an operator's ``curl``, a monitor). To hand a node to another application, stop
it and delete ``api-app.json``.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "APP_FILE",
    "APP_HEADER",
    "TOKEN_FILE",
    "ApiAuth",
    "AuthResult",
    "read_token",
    "write_token",
]

TOKEN_FILE: Final = "api-token"
APP_FILE: Final = "api-app.json"
APP_HEADER: Final = "X-DeepGossip-App"
_APP_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$")


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # even if the file existed with looser bits
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_token(data_dir: str | os.PathLike[str]) -> str:
    """Create a fresh token in ``<data_dir>/api-token`` (mode 0600) and return it."""
    token = secrets.token_urlsafe(32)
    _write_private(Path(data_dir) / TOKEN_FILE, token + "\n")
    return token


def read_token(path: str | os.PathLike[str]) -> str:
    """The token in a token file (what the Python client does with ``token_file``)."""
    return Path(path).read_text(encoding="utf-8").strip()


@dataclass(frozen=True)
class AuthResult:
    """Outcome of :meth:`ApiAuth.check`: ``status`` 0 means allowed."""

    status: int = 0
    code: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 0


class ApiAuth:
    """Checks the bearer token and the one-application rule."""

    def __init__(self, token: str, claim_file: str | os.PathLike[str] | None = None) -> None:
        if not token:
            raise ValueError("empty API token")
        self._token = token.encode()
        self._claim_file = Path(claim_file) if claim_file is not None else None
        self._lock = threading.Lock()
        self.app_id: str | None = self._load_claim()

    def _load_claim(self) -> str | None:
        if self._claim_file is None or not self._claim_file.exists():
            return None
        try:
            app_id = json.loads(self._claim_file.read_text(encoding="utf-8"))["app_id"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{self._claim_file} is unreadable ({exc!r}); delete it to release the node"
            ) from None
        if not isinstance(app_id, str) or not _APP_ID.match(app_id):
            raise ValueError(f"{self._claim_file} holds an invalid app id; delete it")
        return app_id

    def check(self, authorization: str | None, app_id: str | None) -> AuthResult:
        """Decide on one request from its ``Authorization`` and app-id headers."""
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return AuthResult(
                401,
                "unauthorized",
                "send 'Authorization: Bearer <token>' (see <data_dir>/api-token)",
            )
        if not hmac.compare_digest(presented.strip().encode(), self._token):
            return AuthResult(401, "unauthorized", "wrong API token")
        if app_id is None:
            return AuthResult()
        if not _APP_ID.match(app_id):
            return AuthResult(
                400, "bad_app_id", f"{APP_HEADER} must be 1-128 letters, digits or ._:@/+-"
            )
        with self._lock:
            if self.app_id is None:
                self._claim(app_id)
            elif app_id != self.app_id:
                return AuthResult(
                    409,
                    "app_conflict",
                    f"this node already serves application {self.app_id!r}; one node serves "
                    "one application (run another node for another application)",
                )
        return AuthResult()

    def _claim(self, app_id: str) -> None:
        if self._claim_file is not None:
            _write_private(
                self._claim_file, json.dumps({"app_id": app_id, "claimed_at": time.time()})
            )
        self.app_id = app_id
