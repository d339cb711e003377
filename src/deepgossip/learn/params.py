"""A model's parameters as one flat float32 vector, and back.

Sharing and mixing work on a single vector rather than on a state dict: DSSGD
selects the top fraction of coordinates over the *whole* model (not per layer),
a sparse update is one index array into that vector, and a merge is one
vectorised operation. The layout is ``model.parameters()`` order, each tensor
flattened in row-major order; :func:`param_spec` names it so that a peer with a
different architecture is refused by size (and, if the caller compares specs,
by shape).

Only parameters travel. Buffers (e.g. batch-norm running statistics) are local
state: the zoo's models have none, and averaging them across peers with
different data is ill-defined.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ParamSpec", "ParamSpecEntry", "assign", "flatten", "num_params", "param_spec"]


@dataclass(frozen=True, slots=True)
class ParamSpecEntry:
    """Where one named parameter lives in the flat vector."""

    name: str
    shape: tuple[int, ...]
    offset: int
    numel: int


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """The layout of a model's flat parameter vector."""

    entries: tuple[ParamSpecEntry, ...]
    size: int

    def signature(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """Names and shapes: equal signatures mean vectors are interchangeable."""
        return tuple((e.name, e.shape) for e in self.entries)


def param_spec(model: nn.Module) -> ParamSpec:
    """Names, shapes and offsets of ``model``'s parameters in the flat vector."""
    entries = []
    offset = 0
    for name, p in model.named_parameters():
        entries.append(ParamSpecEntry(name, tuple(p.shape), offset, p.numel()))
        offset += p.numel()
    return ParamSpec(tuple(entries), offset)


def num_params(model: nn.Module) -> int:
    """Length of the flat vector (cheaper than building the spec)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def flatten(model: nn.Module, out: torch.Tensor | None = None) -> torch.Tensor:
    """A fresh (or ``out``) float32 copy of all parameters as one 1-D vector.

    The copy is exact for float32 models. It never aliases the parameters, so the
    caller may modify it (e.g. merge into it) and write it back with :func:`assign`.
    """
    params = list(model.parameters())
    size = sum(p.numel() for p in params)
    if out is None:
        out = torch.empty(size, dtype=torch.float32)
    elif out.shape != (size,) or out.dtype != torch.float32:
        raise ValueError(
            f"out must be a float32 vector of {size} elements, got {out.dtype} {tuple(out.shape)}"
        )
    offset = 0
    for p in params:
        n = p.numel()
        out[offset : offset + n].copy_(p.detach().reshape(-1))
        offset += n
    return out


@torch.no_grad()
def assign(model: nn.Module, vector: torch.Tensor) -> None:
    """Write a flat vector back into ``model``'s parameters (in place).

    In place (``copy_``) so that optimizers holding the parameter objects keep
    working. Raises ``ValueError`` if the vector is not 1-D, not floating point,
    or does not have exactly :func:`num_params` elements.
    """
    params = list(model.parameters())
    size = sum(p.numel() for p in params)
    if not isinstance(vector, torch.Tensor) or vector.ndim != 1:
        raise ValueError(f"expected a 1-D tensor, got {_describe(vector)}")
    if not vector.dtype.is_floating_point:
        raise ValueError(f"expected a floating-point vector, got {vector.dtype}")
    if vector.numel() != size:
        raise ValueError(
            f"parameter vector has {vector.numel()} elements but the model has {size} "
            "parameters (different architecture?)"
        )
    offset = 0
    for p in params:
        n = p.numel()
        p.copy_(vector[offset : offset + n].view(p.shape))
        offset += n


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
