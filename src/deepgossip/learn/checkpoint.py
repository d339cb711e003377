"""Checkpoints: a learner's model, optimizer and bookkeeping in one safetensors file.

Why this format: a checkpoint is loaded at every start, and ``torch.load`` /
pickle would run whatever code a tampered file holds. safetensors stores raw
tensors with a JSON header and nothing executable; the scalar bits (optimizer
hyperparameters and step counts, the learner's counters, the mixing rule's
state) go as JSON into the same file's ``__metadata__``.

Why one file: tensors and metadata must describe the same moment. Two files
replaced one after the other can be torn apart by a crash between the two
renames; one file written to a temporary name, ``fsync``-ed and then
``os.replace``-d over the old one is either the old or the new checkpoint.

Tensor names: ``model/<state-dict key>``, ``optimizer/<param index>/<state key>``
(Adam's ``exp_avg``, ``exp_avg_sq``, ``step``; SGD's ``momentum_buffer``),
``generator`` (the torch RNG state that draws mini-batches, so a reloaded
learner draws the same batches it would have drawn) and ``extra/<name>`` for
tensors other layers keep (e.g. a mixing rule's reference parameters). A
SHA-256 over every tensor's name, dtype, shape and bytes sits in the metadata,
because safetensors itself has no checksum and a flipped bit in a weight would
otherwise load silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

__all__ = [
    "CHECKPOINT_FILE",
    "Checkpoint",
    "CheckpointError",
    "check_model_state",
    "check_optimizer_state",
    "flatten_optimizer_state",
    "load_checkpoint",
    "save_checkpoint",
    "unflatten_optimizer_state",
]

CHECKPOINT_FILE: Final = "checkpoint.safetensors"
FORMAT: Final = 1
_META_KEY: Final = "deepgossip.checkpoint"
MAX_HEADER: Final = 64 * 1024 * 1024
"""A safetensors header larger than this is corruption, not a model."""

_SCALAR = (bool, int, float, str, type(None))


class CheckpointError(ValueError):
    """The checkpoint is missing, corrupt or does not fit this learner."""


@dataclass
class Checkpoint:
    """What a checkpoint holds, as plain tensors and JSON-able dicts."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    """A ``torch.optim.Optimizer.state_dict()`` (``state`` and ``param_groups``)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Learner and mixing state: JSON values only (others add their own keys)."""
    generator: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


# -- optimizer state <-> (named tensors, JSON) --------------------------------------------


def _json_value(where: str, value: Any) -> Any:
    if isinstance(value, _SCALAR):
        return value
    if isinstance(value, tuple | list) and all(isinstance(v, _SCALAR) for v in value):
        return list(value)
    raise CheckpointError(f"{where}: a {type(value).__name__} cannot be stored as JSON")


def flatten_optimizer_state(
    state_dict: Mapping[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer ``state_dict`` into named tensors and a JSON dict.

    Tensors (moments, momentum buffers, Adam's ``step``) become
    ``optimizer/<index>/<key>``; everything else (hyperparameters, plain-number
    states, ``None`` buffers) goes to JSON.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state_dict["state"].items():
        plain: dict[str, Any] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{int(index)}/{key}"] = value.detach().clone().contiguous()
            else:
                plain[key] = _json_value(f"optimizer state {index}.{key}", value)
        scalars[str(int(index))] = plain
    groups = [
        {key: _json_value(f"param group {i} {key}", value) for key, value in group.items()}
        for i, group in enumerate(state_dict["param_groups"])
    ]
    return tensors, {"state": scalars, "param_groups": groups}


def unflatten_optimizer_state(
    tensors: Mapping[str, torch.Tensor], plain: Mapping[str, Any]
) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state`."""
    try:
        state: dict[int, dict[str, Any]] = {
            int(index): dict(entry) for index, entry in plain["state"].items()
        }
        for name, tensor in tensors.items():
            _, index, key = name.split("/", 2)
            state.setdefault(int(index), {})[key] = tensor
        groups = []
        for group in plain["param_groups"]:
            restored = {
                k: tuple(v) if isinstance(v, list) and k != "params" else v
                for k, v in group.items()
            }
            restored["params"] = [int(p) for p in group["params"]]
            groups.append(restored)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"optimizer state is malformed: {exc!r}") from None
    return {"state": state, "param_groups": groups}


# -- validation against the live objects ----------------------------------------------


def check_model_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly the model's
    names, shapes and dtypes (so ``load_state_dict`` cannot half-succeed)."""
    expected = model.state_dict()
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        raise CheckpointError(
            f"model tensors differ: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    for name, tensor in expected.items():
        got = state[name]
        if got.shape != tensor.shape or got.dtype != tensor.dtype:
            raise CheckpointError(
                f"model tensor {name}: {got.dtype} {list(got.shape)} in the checkpoint, "
                f"{tensor.dtype} {list(tensor.shape)} in the model"
            )


def check_optimizer_state(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    """Raise :class:`CheckpointError` unless ``state`` fits ``optimizer``'s parameters."""
    groups = optimizer.param_groups
    saved = state["param_groups"]
    if len(saved) != len(groups) or any(
        len(s.get("params", ())) != len(g["params"]) for s, g in zip(saved, groups, strict=False)
    ):
        raise CheckpointError("optimizer parameter groups differ from the model's")
    params = [p for g in groups for p in g["params"]]
    for index, entry in state["state"].items():
        if not 0 <= index < len(params):
            raise CheckpointError(f"optimizer state for parameter {index} of {len(params)}")
        for key, value in entry.items():
            if (
                isinstance(value, torch.Tensor)
                and value.ndim
                and value.shape != params[index].shape
            ):
                raise CheckpointError(
                    f"optimizer {key} of parameter {index}: shape {list(value.shape)}, "
                    f"parameter {list(params[index].shape)}"
                )


# -- files -----------------------------------------------------------------------------


def _digest(tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype}|{list(t.shape)}\n".encode())
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike[str], checkpoint: Checkpoint) -> int:
    """Write ``checkpoint`` to ``path`` atomically and durably; return its size in bytes.

    Temporary file in the same directory, ``fsync``, ``os.replace``, ``fsync`` of
    the directory: after a crash at any point ``path`` holds either the previous
    checkpoint or this one, whole.
    """
    path = Path(path)
    optim_tensors, optim_plain = flatten_optimizer_state(checkpoint.optimizer)
    tensors: dict[str, torch.Tensor] = {
        **{f"model/{k}": v.detach().clone().contiguous() for k, v in checkpoint.model.items()},
        **optim_tensors,
        **{f"extra/{k}": v.detach().clone().contiguous() for k, v in checkpoint.extra.items()},
    }
    if checkpoint.generator is not None:
        tensors["generator"] = checkpoint.generator.detach().clone().contiguous()
    meta = {
        "format": FORMAT,
        "saved_at": time.time(),
        "digest": _digest(tensors),
        "optimizer": optim_plain,
        "meta": checkpoint.meta,
    }
    try:
        metadata = {_META_KEY: json.dumps(meta, allow_nan=False)}
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint metadata is not JSON: {exc}") from None
    data = st_save(tensors, metadata=metadata)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return len(data)


def _read_metadata(data: bytes) -> dict[str, Any]:
    if len(data) < 8:
        raise CheckpointError("file is shorter than a safetensors header")
    (length,) = struct.unpack_from("<Q", data)
    if length > min(MAX_HEADER, len(data) - 8):
        raise CheckpointError("safetensors header length is out of range")
    try:
        header = json.loads(data[8 : 8 + length])
        meta = json.loads(header["__metadata__"][_META_KEY])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"no readable deepgossip metadata: {exc!r}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"unknown checkpoint format {meta.get('format')!r}")
    return meta


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and verify a checkpoint; raise :class:`CheckpointError` if it is unusable.

    Verifies the safetensors structure, the metadata and the SHA-256 of every
    tensor. It does not know the model: check the result with
    :func:`check_model_state` and :func:`check_optimizer_state` before loading.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    meta = _read_metadata(data)
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"not a valid safetensors file: {exc}") from None
    if _digest(tensors) != meta.get("digest"):
        raise CheckpointError("tensor checksum mismatch (the file is corrupt)")
    model: dict[str, torch.Tensor] = {}
    optim: dict[str, torch.Tensor] = {}
    extra: dict[str, torch.Tensor] = {}
    generator = tensors.pop("generator", None)
    for name, tensor in tensors.items():
        kind, _, rest = name.partition("/")
        target = {"model": model, "optimizer": optim, "extra": extra}.get(kind)
        if target is None or not rest:
            raise CheckpointError(f"unexpected tensor {name!r}")
        target[name if kind == "optimizer" else rest] = tensor
    inner = meta.get("meta", {})
    if not isinstance(inner, dict):
        raise CheckpointError("checkpoint metadata is not a JSON object")
    return Checkpoint(
        model=model,
        optimizer=unflatten_optimizer_state(optim, meta.get("optimizer", {})),
        meta=inner,
        generator=generator,
        extra=extra,
    )
