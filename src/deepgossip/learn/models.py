"""The model zoo: small, well-known classifiers for 28x28 (or 8x8) images.

Every entry is a factory ``(input_shape, num_classes) -> torch.nn.Module``; any
user factory with the same signature plugs in the same way (see
:func:`register_model`). Models take images shaped ``(N, 1, H, W)`` in [0, 1]
and return logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

ModelFactory = Callable[[tuple[int, int, int], int], nn.Module]

_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str, factory: ModelFactory) -> None:
    """Make ``factory`` available as ``build_model(name, ...)``."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = factory


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def build_model(
    name: str, input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10
) -> nn.Module:
    """Build a fresh model; seed torch before calling for reproducible weights."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(model_names())}") from None
    return factory(input_shape, num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: the Berkeley tables' model."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        features = input_shape[0] * input_shape[1] * input_shape[2]
        self.linear = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class MLP(nn.Module):
    """784-200-200-10 with ReLU: the classic MNIST multilayer perceptron."""

    def __init__(
        self, input_shape: tuple[int, int, int], num_classes: int, hidden: int = 200
    ) -> None:
        super().__init__()
        features = input_shape[0] * input_shape[1] * input_shape[2]
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two 3x3 conv blocks (32, 64 channels) and a 128-unit head, ~420k parameters.

    Big enough for >99% on MNIST and >90.5% on Fashion-MNIST, small enough to train
    at about a thousand images per second on one CPU thread. No batch norm: its
    running statistics are not parameters, and averaging them across peers with
    different data is ill-defined; dropout does the regularising instead.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = 64 * (height // 4) * (width // 4)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(flat, 128),
            nn.ReLU(),
            nn.Dropout(0.25),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


register_model("logreg", LogisticRegression)
register_model("mlp", MLP)
register_model("cnn", SmallCNN)
