"""A synchronous Python client for the node API.

Synchronous on purpose: an application that trains a model or serves
predictions should not have to run an event loop to talk to its node. It uses
only the standard library's ``http.client`` plus numpy (no torch, no aiohttp),
so importing it is cheap.

numpy arrays travel as tensor frames (``application/x-deepgossip-tensors``,
raw bytes, no number parsing); Python lists travel as JSON. Every failure,
including a node that cannot be reached (``status`` 0), raises
:class:`ApiError`::

    from deepgossip import Client

    client = Client("http://127.0.0.1:8080", token_file="node-data/api-token",
                    app_id="clinic-a")
    client.train(images, labels)          # uint8 (n, 28, 28), int labels
    classes, probabilities = client.predict(images[:10])
    print(client.status()["learning"]["holdout_accuracy"])
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import numpy as np

from deepgossip.wire.errors import WireError
from deepgossip.wire.tensor import decode_tensors, encode_tensors

__all__ = ["ApiError", "Client"]

TENSOR_TYPE: Final = "application/x-deepgossip-tensors"
JSON_TYPE: Final = "application/json"
APP_HEADER: Final = "X-DeepGossip-App"


class ApiError(Exception):
    """The node refused a request (``status`` 4xx/5xx) or could not be reached (0).

    ``code`` is the machine-readable reason from the API (see docs/api.md),
    ``message`` the human one.
    """

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def _inputs_array(inputs: Any) -> np.ndarray:
    """Narrow an array to what the wire carries cheaply: uint8 or float32."""
    arr = np.asarray(inputs)
    if arr.dtype.kind in "iu" and arr.size and arr.min() >= 0 and arr.max() <= 255:
        return arr.astype(np.uint8, copy=False)
    if arr.dtype.kind == "f" and arr.dtype != np.float32:
        return arr.astype(np.float32)
    return arr


def _labels_array(labels: Any) -> np.ndarray:
    arr = np.asarray(labels)
    return arr.astype(np.int64, copy=False) if arr.dtype.kind in "iu" else arr


def _is_array(value: Any) -> bool:
    return not isinstance(value, list | tuple)


class Client:
    """Talks to one node's API. Thread-safe: each call opens its own connection."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        token_file: str | os.PathLike[str] | None = None,
        app_id: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        """``token`` or ``token_file`` (``<data_dir>/api-token``; re-read once if
        the node answers 401, since a restarted node writes a new token).
        ``app_id`` claims the node for this application (see docs/api.md)."""
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"base_url must be http://HOST:PORT, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._prefix = parts.path.rstrip("/")
        self._token_file = Path(token_file) if token_file is not None else None
        self._token = token if token is not None else self._read_token()
        self.app_id = app_id
        self.timeout = timeout

    def _read_token(self) -> str | None:
        if self._token_file is None:
            return None
        try:
            return self._token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ApiError(
                "no_token", f"cannot read {self._token_file}: {exc.strerror}", 0
            ) from None

    # -- endpoints ----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/v1/health")

    def status(self) -> dict[str, Any]:
        """Node id, membership counts, traffic, update counters, ``learning``."""
        return self._json("GET", "/v1/status")

    def members(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/members")["members"])

    def openapi(self) -> dict[str, Any]:
        return self._json("GET", "/v1/openapi.json")

    def train(self, inputs: Any, labels: Any) -> int:
        """Store a labelled batch on the node; return how many samples it accepted.

        Returns once the node has made the batch durable. ``inputs``: uint8
        0..255 or floats 0..1, shaped (n, H, W) or (n, H*W); ``labels``: n ints.
        """
        if _is_array(inputs) or _is_array(labels):
            body = encode_tensors(
                {"inputs": _inputs_array(inputs), "labels": _labels_array(labels)},
                allow_nonfinite=True,  # the node decides, and says why
            )
            doc = self._json("POST", "/v1/train", body, TENSOR_TYPE)
        else:
            doc = self._json("POST", "/v1/train", {"inputs": inputs, "labels": labels})
        return int(doc["accepted"])

    def predict(
        self, inputs: Any, *, probabilities: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Classify ``inputs``: (classes int64 (n,), probabilities float32 (n, k) or None)."""
        query = "" if probabilities else "?probabilities=false"
        if not _is_array(inputs):
            doc = self._json("POST", "/v1/predict" + query, {"inputs": inputs})
            probs = doc.get("probabilities")
            return (
                np.asarray(doc["classes"], dtype=np.int64),
                np.asarray(probs, dtype=np.float32) if probs is not None else None,
            )
        body = encode_tensors({"inputs": _inputs_array(inputs)}, allow_nonfinite=True)
        status, content_type, data = self._request(
            "POST", "/v1/predict" + query, body, TENSOR_TYPE, accept=TENSOR_TYPE
        )
        if content_type != TENSOR_TYPE:
            raise self._error(status, data)
        try:
            tensors = decode_tensors(data)
        except WireError as exc:
            raise ApiError("bad_response", f"undecodable prediction: {exc}", status) from None
        probs_arr = tensors.get("probabilities")
        return (
            np.array(tensors["classes"]),
            np.array(probs_arr) if probs_arr is not None else None,
        )

    # -- transport ------------------------------------------------------------------------

    def _json(
        self, method: str, path: str, body: Any = None, content_type: str = JSON_TYPE
    ) -> dict[str, Any]:
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
        status, _, data = self._request(method, path, body, content_type)
        if status != 200:
            raise self._error(status, data)
        try:
            doc = json.loads(data)
        except ValueError:
            raise ApiError("bad_response", "the node answered with invalid JSON", status) from None
        return doc if isinstance(doc, dict) else {"value": doc}

    @staticmethod
    def _error(status: int, data: bytes) -> ApiError:
        try:
            err = json.loads(data)["error"]
            return ApiError(str(err["code"]), str(err["message"]), status)
        except (ValueError, KeyError, TypeError):
            return ApiError("http_error", data[:200].decode("utf-8", "replace"), status)

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        content_type: str,
        accept: str = JSON_TYPE,
    ) -> tuple[int, str, bytes]:
        result = self._send(method, path, body, content_type, accept)
        if result[0] == 401 and self._token_file is not None:
            fresh = self._read_token()
            if fresh != self._token:  # the node restarted with a new token
                self._token = fresh
                result = self._send(method, path, body, content_type, accept)
        return result

    def _send(
        self, method: str, path: str, body: bytes | None, content_type: str, accept: str
    ) -> tuple[int, str, bytes]:
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if self.app_id:
            headers[APP_HEADER] = self.app_id
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        try:
            # The node may refuse early (413, 401) and stop reading: read its answer.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                conn.request(method, self._prefix + path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            kind = (response.getheader("Content-Type") or "").split(";")[0].strip()
            return response.status, kind, data
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError("connection_failed", f"{self.base_url}: {exc}", 0) from None
        finally:
            conn.close()
