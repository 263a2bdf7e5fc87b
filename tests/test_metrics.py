"""Dev-set metrics agree with scikit-learn and SciPy, over the whole set, per dev split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

import constants
import metrics

RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 2, 101)
LOGITS = RNG.normal(size=(101, 2)).astype(np.float32) + 0.8 * np.eye(2)[LABELS]


def test_mrpc_accuracy_f1_and_their_mean():
    results = metrics.compute_metrics(constants.TASKS["MRPC"], LOGITS, LABELS)
    preds = LOGITS.argmax(1)
    assert results["acc"] == pytest.approx(accuracy_score(LABELS, preds))
    assert results["f1"] == pytest.approx(f1_score(LABELS, preds))
    assert results["acc_and_f1"] == pytest.approx((results["acc"] + results["f1"]) / 2)
    assert 0.5 < results["acc"] < 1.0  # informative logits, not a degenerate case
    expected_loss = torch.nn.functional.cross_entropy(torch.tensor(LOGITS), torch.tensor(LABELS))
    assert results["validation_loss"] == pytest.approx(expected_loss.item(), rel=1e-6)


def test_cola_matthews_and_accuracy():
    results = metrics.compute_metrics(constants.TASKS["CoLA"], LOGITS, LABELS)
    assert results["mcc"] == pytest.approx(matthews_corrcoef(LABELS, LOGITS.argmax(1)))
    assert set(results) == {"mcc", "acc", "validation_loss"}


def test_stsb_pearson_spearman_and_their_mean():
    scores = RNG.uniform(0, 5, 50).astype(np.float32)
    outputs = (scores + RNG.normal(scale=1.0, size=50)).astype(np.float32)[:, None]
    results = metrics.compute_metrics(constants.TASKS["STS-B"], outputs, scores)
    assert results["pearson"] == pytest.approx(stats.pearsonr(outputs[:, 0], scores)[0])
    assert results["spearmanr"] == pytest.approx(stats.spearmanr(outputs[:, 0], scores)[0])
    assert results["corr"] == pytest.approx((results["pearson"] + results["spearmanr"]) / 2)
    assert results["validation_loss"] == pytest.approx(np.mean((outputs[:, 0] - scores) ** 2))


def test_whole_set_f1_is_not_the_mean_of_batch_f1s():
    """The original averaged F1 per batch; over the whole set the numbers differ."""
    preds = LOGITS.argmax(1)
    per_batch = np.mean([f1_score(LABELS[i : i + 8], preds[i : i + 8]) for i in range(0, 101, 8)])
    whole = metrics.compute_metrics(constants.TASKS["MRPC"], LOGITS, LABELS)["f1"]
    assert whole == pytest.approx(f1_score(LABELS, preds)) and whole != pytest.approx(per_batch)


def test_mnli_reports_matched_and_mismatched_separately():
    task = constants.TASKS["MNLI"]
    labels = RNG.integers(0, 3, 30)
    logits = np.eye(3, dtype=np.float32)[labels]
    splits = np.array([0] * 20 + [1] * 10)
    logits[20:25] = np.eye(3, dtype=np.float32)[(labels[20:25] + 1) % 3]  # 5 of 10 mm wrong
    results = metrics.compute_split_metrics(task, splits, logits, labels)
    assert results["acc"] == 1.0 and results["acc_mm"] == 0.5
    assert set(results) == {"acc", "validation_loss", "acc_mm", "validation_loss_mm"}
