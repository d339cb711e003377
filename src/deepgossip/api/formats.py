"""Request and response bodies of ``/v1/train`` and ``/v1/predict``.

Two encodings of the same batch, both parsed here into numpy arrays, and
validated by the data store's rules (:mod:`deepgossip.learn.datastore`):

``application/json``
    ``{"inputs": [[...], ...], "labels": [3, 1, ...]}``. ``inputs`` is a nested
    list shaped (n, H, W), (n, C, H, W) or flat (n, C*H*W). If every value is a
    JSON integer they are pixel bytes 0..255; otherwise numbers in [0, 1].
    ``labels``: n integers in ``[0, num_classes)``. Predict takes ``inputs``
    and optionally ``"probabilities": false``.

``application/x-deepgossip-tensors``
    A tensor frame (:mod:`deepgossip.wire.tensor`) with tensors ``inputs``
    (uint8 0..255 or float32 0..1, same shapes) and ``labels`` (integers; int64
    by convention). No pickles, no parsing of numbers: ~1 GB/s.

Every error is a :class:`~deepgossip.learn.datastore.DataError` with the code
the API answers with.
"""

from __future__ import annotations

import json
from typing import Any, Final

import numpy as np

from deepgossip.learn.datastore import DataError
from deepgossip.wire.errors import NonFiniteTensor, WireError
from deepgossip.wire.tensor import decode_tensors, encode_tensors

__all__ = [
    "JSON_TYPE",
    "TENSOR_TYPE",
    "Batch",
    "encode_prediction",
    "parse_batch",
]

JSON_TYPE: Final = "application/json"
TENSOR_TYPE: Final = "application/x-deepgossip-tensors"
_TRAIN_KEYS: Final = frozenset({"inputs", "labels"})
_PREDICT_KEYS: Final = frozenset({"inputs", "probabilities"})


class Batch:
    """A parsed request: raw ``inputs``, optional ``labels`` and options."""

    __slots__ = ("inputs", "labels", "probabilities")

    def __init__(self, inputs: Any, labels: Any, probabilities: bool) -> None:
        self.inputs = inputs
        self.labels = labels
        self.probabilities = probabilities


def parse_batch(content_type: str, body: bytes, *, with_labels: bool, max_elements: int) -> Batch:
    """Parse a train (``with_labels``) or predict body of either content type."""
    if not body:
        raise DataError("empty_body", "the request has no body")
    if content_type == JSON_TYPE:
        return _parse_json(body, with_labels)
    if content_type == TENSOR_TYPE:
        return _parse_tensors(body, with_labels, max_elements)
    raise DataError(
        "unsupported_media_type",
        f"Content-Type must be {JSON_TYPE} or {TENSOR_TYPE}, not {content_type or 'missing'}",
        415,
    )


def _parse_json(body: bytes, with_labels: bool) -> Batch:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise DataError("bad_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DataError("bad_request", "the body must be a JSON object")
    allowed = _TRAIN_KEYS if with_labels else _PREDICT_KEYS
    required = _TRAIN_KEYS if with_labels else {"inputs"}
    unknown, missing = set(doc) - allowed, required - set(doc)
    if unknown or missing:
        raise DataError(
            "bad_request",
            f"expected keys {sorted(allowed)} (required {sorted(required)}); "
            + (f"unknown {sorted(unknown)} " if unknown else "")
            + (f"missing {sorted(missing)}" if missing else ""),
        )
    probabilities = doc.get("probabilities", True)
    if not isinstance(probabilities, bool):
        raise DataError("bad_request", "probabilities must be true or false")
    inputs, labels = doc["inputs"], doc.get("labels")
    if not isinstance(inputs, list) or (with_labels and not isinstance(labels, list)):
        raise DataError("bad_request", "inputs and labels must be JSON arrays")
    if _has_bool(inputs) or (labels is not None and _has_bool(labels)):
        raise DataError("bad_dtype", "inputs and labels must be numbers, not booleans")
    return Batch(inputs, labels, probabilities)


def _has_bool(values: list[Any]) -> bool:
    """numpy would read true/false as 1/0; refuse them (looks at the first sample only:
    mixed lists become object arrays and fail the dtype check anyway)."""
    head: Any = values
    while isinstance(head, list) and head:
        head = head[0]
    return isinstance(head, bool)


def _parse_tensors(body: bytes, with_labels: bool, max_elements: int) -> Batch:
    try:
        tensors = decode_tensors(body, max_elements=max_elements)
    except NonFiniteTensor as exc:
        raise DataError("non_finite", f"inputs contain NaN or Inf ({exc})") from None
    except WireError as exc:
        raise DataError("bad_frame", f"not a valid tensor frame: {exc}") from None
    expected = {"inputs", "labels"} if with_labels else {"inputs"}
    if set(tensors) != expected:
        raise DataError(
            "bad_request", f"the frame must hold tensors {sorted(expected)}, got {sorted(tensors)}"
        )
    return Batch(tensors["inputs"], tensors.get("labels"), True)


def encode_prediction(classes: np.ndarray, probabilities: np.ndarray | None) -> bytes:
    """A binary predict response: ``classes`` (int64) and ``probabilities`` (float32)."""
    tensors: dict[str, np.ndarray] = {"classes": classes.astype(np.int64)}
    if probabilities is not None:
        tensors["probabilities"] = probabilities.astype(np.float32)
    return encode_tensors(tensors)
