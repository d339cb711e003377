"""Training and evaluation utilities on small slices of real data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from deepgossip.learn.data import load_dataset, to_tensors
from deepgossip.learn.models import build_model
from deepgossip.learn.train import (
    TrainConfig,
    accuracy,
    evaluate,
    metrics_from_predictions,
    train_epochs,
)


def test_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, 500)
    y_pred = np.where(rng.random(500) < 0.7, y_true, rng.integers(0, 5, 500))
    y_pred[y_pred == 4] = 3  # class 4 is never predicted: precision 0, not NaN
    m = metrics_from_predictions(y_true, y_pred, 5)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=range(5), zero_division=0)
    np.testing.assert_allclose(m.precision, p)
    np.testing.assert_allclose(m.recall, r)
    np.testing.assert_allclose(m.f1, f)
    assert m.confusion == confusion_matrix(y_true, y_pred, labels=range(5)).tolist()
    assert m.accuracy == pytest.approx(float((y_true == y_pred).mean()))


@pytest.mark.parametrize("model_name", ["logreg", "cnn"])
def test_short_training_run_improves_accuracy_on_real_digits(model_name: str) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = load_dataset("digits")
    x, y = to_tensors(data.train_images, data.train_labels)
    xt, yt = to_tensors(data.test_images, data.test_labels)
    model = build_model(model_name, tuple(x.shape[1:]), data.num_classes)
    before = accuracy(model, xt, yt)
    config = TrainConfig(epochs=8, batch_size=32, lr=3e-3)
    losses = train_epochs(model, x, y, config, seed=0)
    after = evaluate(model, xt, yt, data.num_classes)
    assert before < 0.3
    assert losses[-1] < losses[0]
    assert after.accuracy > 0.85
    assert after.samples == len(yt)
    assert sum(map(sum, after.confusion)) == len(yt)
