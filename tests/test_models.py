"""Model zoo: output shapes, parameter counts, plug-in factories."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepgossip.learn.models import build_model, count_parameters, model_names, register_model


@pytest.mark.parametrize("name", ["logreg", "mlp", "cnn"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8)])
def test_models_map_images_to_logits(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(name, shape, 10)
    out = model(torch.rand(5, *shape))
    assert out.shape == (5, 10)
    assert torch.isfinite(out).all()


def test_parameter_counts_match_their_descriptions() -> None:
    assert count_parameters(build_model("logreg")) == 784 * 10 + 10
    assert count_parameters(build_model("mlp")) == 784 * 200 + 200 + 200 * 200 + 200 + 2010
    assert 100_000 <= count_parameters(build_model("cnn")) <= 1_000_000


def test_same_seed_same_weights() -> None:
    torch.manual_seed(3)
    a = build_model("cnn")
    torch.manual_seed(3)
    b = build_model("cnn")
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_any_module_factory_plugs_in() -> None:
    def tiny(shape: tuple[int, int, int], classes: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], classes))

    register_model("test-tiny", tiny)
    assert "test-tiny" in model_names()
    assert build_model("test-tiny", (1, 4, 4), 3)(torch.rand(2, 1, 4, 4)).shape == (2, 3)
    with pytest.raises(ValueError, match="already registered"):
        register_model("test-tiny", tiny)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("nope")
