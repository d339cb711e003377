"""Selective parameter sharing (DSSGD, Shokri & Shmatikov, CCS 2015), peer to peer.

A node never publishes its whole training trajectory. Every sharing period it
compares its flat parameter vector ``w`` with its *public state* ``r`` (what it
has published so far, coordinate by coordinate) and publishes only

* the ``theta_u`` fraction of coordinates where ``|w - r|`` is largest
  (``selection="topk"``), or a random ``theta_u`` fraction among the coordinates
  with ``|w - r| > tau`` (``selection="random"``);
* each change bounded: ``step = clip(w - r, -gamma, gamma)`` on those coordinates.

Then ``r[sel] += step`` (error feedback): unselected coordinates and the clipped
excess stay in the residual ``w - r`` and keep accumulating until they win a later
selection, so nothing the node learns is lost, only delayed.

What the update carries (``kind``):

``"values"`` (the default, and what :mod:`.mixing` merges)
    the new public values ``r[sel]`` (= old public value + bounded step). A
    receiver mixes them into its own parameters by a convex combination; see
    ``docs/learning.md`` for why this beats adding deltas.
``"delta"``
    the bounded steps themselves, as in the original DSSGD upload; receivers add
    them (:func:`apply_delta`). Kept to measure the alternative, not used by the
    mixing rules.

Both kinds reveal the same information to a receiver that knows the common
initial model: a value is the sum of all bounded steps published for that
coordinate. Values are, however, idempotent and loss-tolerant (a late, lost,
duplicated or reordered update does no lasting harm), as state-based CRDTs are
compared with operation-based ones.

Everything here is pure and deterministic given a seed: no I/O, no clocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Final, Literal

import numpy as np
import torch

from deepgossip.wire.limits import DEFAULT_LIMITS
from deepgossip.wire.tensor import SparseArray

__all__ = [
    "UPDATE_TENSOR",
    "DownloadFilter",
    "Sharer",
    "SharingConfig",
    "SparseUpdate",
    "UpdateKind",
    "UpdateLimits",
    "UpdateRejected",
    "apply_delta",
    "count_for_fraction",
    "select_random_above",
    "select_topk",
    "validate_update",
]

UpdateKind = Literal["values", "delta"]
UPDATE_KINDS: Final = ("values", "delta")
UPDATE_TENSOR: Final = "update"
"""Name of the one tensor in an update's tensor frame (see :meth:`SparseUpdate.tensors`)."""

_VALUE_DTYPES: Final = (np.dtype(np.float32), np.dtype(np.float16))
_INDEX_DTYPES: Final = (np.dtype(np.int32), np.dtype(np.int64))


class UpdateRejected(ValueError):
    """A received update is malformed or does not fit the local model; never merge it."""


# ------------------------------------------------------------------------- the update


@dataclass(frozen=True, slots=True, eq=False)
class SparseUpdate:
    """One published update: selected coordinates of a flat parameter vector.

    ``indices`` is ``None`` for a dense update (every coordinate, in order: no index
    bytes on the wire); otherwise flat int32/int64 indices into the vector of
    ``size`` elements, strictly increasing. ``values`` (float32 or float16) holds one
    value per index, or ``size`` values if dense.

    Metadata: ``origin`` is the sender's node id; ``round`` its sharing counter
    (strictly increasing per origin, used to drop duplicates and stale updates);
    ``samples`` the size of its local training set; ``weight`` the mixing weight the
    update carries (GoSGD's alpha; 1.0 for rules that ignore it).
    """

    values: np.ndarray
    size: int
    indices: np.ndarray | None = None
    origin: bytes = b""
    round: int = 0
    samples: int = 0
    weight: float = 1.0
    kind: UpdateKind = "values"

    @property
    def dense(self) -> bool:
        return self.indices is None

    @property
    def nnz(self) -> int:
        return int(self.values.shape[0])

    @property
    def nbytes(self) -> int:
        """Payload bytes on the wire: values plus indices (metadata excluded)."""
        return int(self.values.nbytes) + (0 if self.indices is None else int(self.indices.nbytes))

    def index_tensor(self) -> torch.Tensor:
        """The coordinates as an int64 torch tensor (``arange(size)`` if dense)."""
        if self.indices is None:
            return torch.arange(self.size, dtype=torch.int64)
        return torch.from_numpy(self.indices.astype(np.int64, copy=False))

    def value_tensor(self) -> torch.Tensor:
        """The values as float32 torch tensor (a copy only if stored as float16)."""
        return torch.from_numpy(np.asarray(self.values, dtype=np.float32))

    def to_dense(self, base: torch.Tensor) -> torch.Tensor:
        """``base`` with this update's coordinates replaced by its values (a copy)."""
        out = base.clone()
        if self.indices is None:
            out.copy_(self.value_tensor())
        else:
            out[self.index_tensor()] = self.value_tensor()
        return out

    # -- wire helpers: the networking layer encodes these with deepgossip.wire -------

    def header(self) -> dict[str, Any]:
        """Metadata for a msgpack message (the tensors travel in a tensor frame)."""
        return {
            "kind": self.kind,
            "size": self.size,
            "origin": self.origin,
            "round": self.round,
            "samples": self.samples,
            "weight": self.weight,
        }

    def tensors(self) -> dict[str, np.ndarray | SparseArray]:
        """The payload for :func:`deepgossip.wire.tensor.encode_tensors`."""
        if self.indices is None:
            return {UPDATE_TENSOR: self.values}
        return {UPDATE_TENSOR: SparseArray(self.indices, self.values, (self.size,))}

    @classmethod
    def from_wire(
        cls, header: dict[str, Any], tensors: dict[str, np.ndarray | SparseArray]
    ) -> SparseUpdate:
        """Rebuild an update from :meth:`header` and a decoded tensor frame.

        Only checks types and shapes enough to build the object; call
        :func:`validate_update` before merging it.
        """
        try:
            payload = tensors[UPDATE_TENSOR]
            fields = {k: header[k] for k in ("kind", "size", "origin", "round", "samples")}
            weight = header["weight"]
        except (KeyError, TypeError) as exc:
            raise UpdateRejected(f"update message lacks {exc}") from None
        if isinstance(payload, SparseArray):
            if len(payload.shape) != 1 or payload.shape[0] != fields["size"]:
                raise UpdateRejected(
                    f"sparse payload shape {payload.shape} does not match size {fields['size']}"
                )
            indices, values = payload.indices, payload.values
        elif isinstance(payload, np.ndarray):
            indices, values = None, payload
        else:
            raise UpdateRejected(f"update payload is a {type(payload).__name__}")
        return cls(values=values, indices=indices, weight=weight, **fields)


# ----------------------------------------------------------------------- validation


@dataclass(frozen=True, slots=True)
class UpdateLimits:
    """What a received update may look like, beyond matching the local model."""

    max_size: int = DEFAULT_LIMITS.max_tensor_elements
    """Largest parameter vector accepted (the wire layer's tensor element limit)."""
    max_origin_len: int = 64
    """Node ids are hashes (32 bytes); 64 leaves room for another hash."""
    max_abs_value: float = 1e4
    """Largest |value|. Trained weights of sane models are O(1); a 1e4 value mixed
    with any positive weight would wreck a model while still being finite."""
    max_weight: float = 1.0
    """Largest carried weight: GoSGD alphas sum to 1 over the network."""


DEFAULT_UPDATE_LIMITS = UpdateLimits()


def validate_update(
    update: SparseUpdate,
    size: int,
    *,
    kind: UpdateKind | None = "values",
    limits: UpdateLimits = DEFAULT_UPDATE_LIMITS,
) -> SparseUpdate:
    """Check a received update against the local model of ``size`` parameters.

    Raises :class:`UpdateRejected` naming the first problem: wrong kind, size or
    metadata types; indices not int32/int64, not 1-D, out of range, unsorted or
    duplicated; values not float32/float16, of the wrong length, NaN/Inf or beyond
    ``limits.max_abs_value``. Returns the update unchanged so calls can be chained.
    """
    if not isinstance(update, SparseUpdate):
        raise UpdateRejected(f"expected a SparseUpdate, got {type(update).__name__}")
    if update.kind not in UPDATE_KINDS:
        raise UpdateRejected(f"unknown update kind {update.kind!r}")
    if kind is not None and update.kind != kind:
        raise UpdateRejected(f"expected a {kind!r} update, got {update.kind!r}")
    _check_int("size", update.size, 0, limits.max_size)
    if update.size != size:
        raise UpdateRejected(f"update is for {update.size} parameters, the local model has {size}")
    if not isinstance(update.origin, bytes) or len(update.origin) > limits.max_origin_len:
        raise UpdateRejected(f"origin must be at most {limits.max_origin_len} bytes")
    _check_int("round", update.round, 0, 2**63 - 1)
    _check_int("samples", update.samples, 0, 2**63 - 1)
    weight = update.weight
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not math.isfinite(weight)
        or not 0.0 < weight <= limits.max_weight
    ):
        raise UpdateRejected(f"weight must be in (0, {limits.max_weight}], got {weight!r}")
    values = update.values
    if not isinstance(values, np.ndarray) or values.ndim != 1:
        raise UpdateRejected("values must be a 1-D numpy array")
    if values.dtype not in _VALUE_DTYPES:
        raise UpdateRejected(f"values must be float32 or float16, got {values.dtype}")
    if update.indices is None:
        if len(values) != size:
            raise UpdateRejected(f"dense update has {len(values)} values for {size} parameters")
    else:
        _check_indices(update.indices, len(values), size)
    if not np.isfinite(values).all():
        raise UpdateRejected("values contain NaN or Inf")
    if len(values) and float(np.abs(values).max()) > limits.max_abs_value:
        raise UpdateRejected(f"a value exceeds {limits.max_abs_value} in magnitude")
    return update


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise UpdateRejected(f"{name} must be an integer, got {type(value).__name__}")
    if not low <= int(value) <= high:
        raise UpdateRejected(f"{name} must be in [{low}, {high}], got {value}")


def _check_indices(indices: object, nnz: int, size: int) -> None:
    if not isinstance(indices, np.ndarray) or indices.ndim != 1:
        raise UpdateRejected("indices must be a 1-D numpy array")
    if indices.dtype not in _INDEX_DTYPES:
        raise UpdateRejected(f"indices must be int32 or int64, got {indices.dtype}")
    if len(indices) != nnz:
        raise UpdateRejected(f"{len(indices)} indices for {nnz} values")
    if nnz > size:
        raise UpdateRejected(f"{nnz} coordinates for a model of {size}")
    if nnz == 0:
        return
    if int(indices[0]) < 0 or int(indices[-1]) >= size:
        low, high = int(indices.min()), int(indices.max())
        raise UpdateRejected(f"indices span [{low}, {high}], outside [0, {size})")
    if nnz > 1 and not bool((np.diff(indices) > 0).all()):
        raise UpdateRejected("indices must be strictly increasing (sorted, no duplicates)")


# ------------------------------------------------------------------------ selection


def count_for_fraction(theta: float, n: int) -> int:
    """``ceil(theta * n)``, reading ``theta`` as the decimal it was written as.

    ``0.1 * 199210`` is ``19921.000000000004`` in binary floating point, whose
    ceiling would select one coordinate too many; ``theta`` is therefore taken as
    the nearest fraction with denominator <= 10**6 (0.1 -> 1/10) first.
    """
    if not 0.0 < theta <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {theta}")
    exact = Fraction(theta).limit_denominator(10**6)
    return min(n, math.ceil(exact * n))


def select_topk(delta: torch.Tensor, theta: float) -> torch.Tensor:
    """Sorted int64 indices of the ``ceil(theta * n)`` largest ``|delta|``."""
    k = count_for_fraction(theta, delta.numel())
    if k >= delta.numel():
        return torch.arange(delta.numel(), dtype=torch.int64)
    chosen = torch.topk(delta.abs(), k, sorted=False).indices
    return torch.sort(chosen).values


def select_random_above(
    delta: torch.Tensor, theta: float, tau: float, rng: np.random.Generator
) -> torch.Tensor:
    """Sorted int64 indices: ``ceil(theta * n)`` drawn uniformly among ``|delta| > tau``.

    If fewer coordinates exceed ``tau``, all of them are selected (possibly none).
    """
    k = count_for_fraction(theta, delta.numel())
    candidates = torch.nonzero(delta.abs() > tau).flatten().numpy()
    if len(candidates) > k:
        candidates = np.sort(rng.choice(candidates, size=k, replace=False))
    return torch.from_numpy(candidates.astype(np.int64, copy=False))


# ---------------------------------------------------------------------------- sender


@dataclass(frozen=True)
class SharingConfig:
    """How a node builds its updates (upload) and filters received ones (download).

    Defaults: dense sharing (``theta_u = 1``), as the mixing rules were designed
    for; ``theta_u = 0.1`` keeps the accuracy within the measured margin for about
    a fifth of the bytes (docs/learning.md). ``gamma = 0.1`` bounds how far one
    update can move a coordinate of the public state; Adam at lr 1e-3 moves a
    weight by at most ~0.001 per step, so 0.1 only binds on outliers, and the
    clipped excess is not lost (error feedback).
    """

    theta_u: float = 1.0
    selection: Literal["topk", "random"] = "topk"
    tau: float = 0.0
    """Threshold for ``selection="random"``: only coordinates with |delta| > tau."""
    gamma: float = 0.1
    kind: UpdateKind = "values"
    value_dtype: Literal["float32", "float16"] = "float32"
    theta_d: float = 1.0
    """Fraction of the model a received update may touch (see :class:`DownloadFilter`)."""
    heat_decay: float = 0.9
    """Per received update, the recent-update counts of :class:`DownloadFilter` decay
    by this factor: a half-life of ~6.6 updates."""

    def __post_init__(self) -> None:
        if not 0.0 < self.theta_u <= 1.0:
            raise ValueError(f"theta_u must be in (0, 1], got {self.theta_u}")
        if not 0.0 < self.theta_d <= 1.0:
            raise ValueError(f"theta_d must be in (0, 1], got {self.theta_d}")
        if self.selection not in ("topk", "random"):
            raise ValueError(f"selection must be 'topk' or 'random', got {self.selection!r}")
        if not self.gamma > 0:
            raise ValueError(f"gamma must be > 0 (math.inf for no bound), got {self.gamma}")
        if not self.tau >= 0:
            raise ValueError(f"tau must be >= 0, got {self.tau}")
        if self.kind not in UPDATE_KINDS:
            raise ValueError(f"kind must be one of {UPDATE_KINDS}, got {self.kind!r}")
        if self.value_dtype not in ("float32", "float16"):
            raise ValueError(f"value_dtype must be float32 or float16, got {self.value_dtype!r}")
        if not 0.0 <= self.heat_decay <= 1.0:
            raise ValueError(f"heat_decay must be in [0, 1], got {self.heat_decay}")


class Sharer:
    """Builds a node's updates and remembers what it has published (its public state).

    ``initial`` must be the model the node starts from, which all nodes of a
    session share (same seed): the public state starts there, so the first sparse
    update already only carries what changed.
    """

    def __init__(
        self, initial: torch.Tensor, config: SharingConfig | None = None, *, seed: int = 0
    ) -> None:
        self.config = config or SharingConfig()
        self.reference = _as_vector(initial).clone()
        self._rng = np.random.default_rng(seed)
        self._index_dtype = np.int32 if self.reference.numel() < 2**31 else np.int64

    @property
    def size(self) -> int:
        return int(self.reference.numel())

    def residual(self, params: torch.Tensor) -> torch.Tensor:
        """What has not been published yet: ``params - reference``."""
        return _as_vector(params, self.size) - self.reference

    def reset(self, params: torch.Tensor) -> None:
        """Declare ``params`` published (e.g. after a dense resynchronisation)."""
        self.reference.copy_(_as_vector(params, self.size))

    def select(self, delta: torch.Tensor) -> torch.Tensor:
        """The coordinates to publish for this ``delta`` (sorted int64)."""
        c = self.config
        if c.selection == "topk":
            return select_topk(delta, c.theta_u)
        return select_random_above(delta, c.theta_u, c.tau, self._rng)

    def make_update(
        self,
        params: torch.Tensor,
        *,
        origin: bytes = b"",
        round: int = 0,
        samples: int = 0,
        weight: float = 1.0,
    ) -> SparseUpdate:
        """Select, bound and publish; advance the public state by what was sent.

        The public state moves by exactly what receivers can reconstruct (after
        float16 rounding, if used), so rounding and clipping errors stay in the
        residual and are published later.
        """
        c = self.config
        delta = self.residual(params)
        sel = self.select(delta)
        step = delta[sel].clamp_(-c.gamma, c.gamma)
        dtype = np.float16 if c.value_dtype == "float16" else np.float32
        if c.kind == "values":
            values = (self.reference[sel] + step).numpy().astype(dtype)
            self.reference[sel] = torch.from_numpy(values.astype(np.float32))
        else:
            values = step.numpy().astype(dtype)
            self.reference[sel] += torch.from_numpy(values.astype(np.float32))
        indices = None if len(sel) == self.size else sel.numpy().astype(self._index_dtype)
        return SparseUpdate(
            values=values,
            size=self.size,
            indices=indices,
            origin=origin,
            round=round,
            samples=samples,
            weight=weight,
            kind=c.kind,
        )


# -------------------------------------------------------------------------- receiver


@dataclass
class DownloadFilter:
    """DSSGD's download fraction ``theta_d``, per received update.

    DSSGD's server counts how often each parameter was updated and participants
    download the ``theta_d`` most-updated ones. Without a server, each receiver
    keeps ``heat``: an exponentially decayed count of received updates touching
    each coordinate (``heat *= decay; heat[idx] += 1`` per received update, this
    one included). Of an update's coordinates it keeps at most
    ``ceil(theta_d * size)``: highest heat first, ties broken by the larger
    ``|value - local|`` (the more informative coordinate), then the lower index.
    ``theta_d = 1`` keeps everything and tracks nothing.
    """

    size: int
    theta_d: float = 1.0
    decay: float = 0.9
    heat: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        count_for_fraction(self.theta_d, max(self.size, 1))  # validates theta_d
        self.heat = torch.zeros(self.size if self.theta_d < 1.0 else 0, dtype=torch.float32)

    def __call__(self, update: SparseUpdate, local: torch.Tensor) -> SparseUpdate:
        if self.theta_d >= 1.0:
            return update
        idx = update.index_tensor()
        self.heat.mul_(self.decay)
        self.heat[idx] += 1.0
        k = count_for_fraction(self.theta_d, self.size)
        if update.nnz <= k:
            return update
        gap = (update.value_tensor() - local[idx]).abs().numpy()
        order = np.lexsort((idx.numpy(), -gap, -self.heat[idx].numpy()))
        keep = np.sort(order[:k])
        indices = idx.numpy()[keep].astype(
            update.indices.dtype if update.indices is not None else np.int64
        )
        return replace(update, indices=indices, values=update.values[keep])


def apply_delta(local: torch.Tensor, update: SparseUpdate, eta: float) -> None:
    """The rejected alternative: ``local[idx] += eta * values`` for a delta update.

    Kept so that the benchmark can measure it against value mixing.
    """
    if update.kind != "delta":
        raise UpdateRejected(f"apply_delta needs a 'delta' update, got {update.kind!r}")
    if update.indices is None:
        local.add_(update.value_tensor(), alpha=eta)
    else:
        local.index_add_(0, update.index_tensor(), update.value_tensor(), alpha=eta)


def _as_vector(params: torch.Tensor, size: int | None = None) -> torch.Tensor:
    if not isinstance(params, torch.Tensor) or params.ndim != 1:
        raise ValueError("parameters must be a 1-D tensor (see deepgossip.learn.params.flatten)")
    if params.dtype != torch.float32:
        raise ValueError(f"parameters must be float32, got {params.dtype}")
    if size is not None and params.numel() != size:
        raise ValueError(f"parameter vector has {params.numel()} elements, expected {size}")
    return params
