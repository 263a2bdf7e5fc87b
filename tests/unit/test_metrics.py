"""Dev-set metrics agree with scikit-learn and SciPy, over the whole set, per dev split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

import constants
from bert_glue.trial import metrics
from bert_glue.trial.settings import Searcher

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
    assert set(results) == {"acc", "validation_loss", "acc_mm", "validation_loss_mm", "glue_score"}


@pytest.mark.parametrize(
    ("task", "names"),
    [
        ("MRPC", ["validation_loss", "acc", "f1", "acc_and_f1", "glue_score"]),
        ("CoLA", ["validation_loss", "acc", "mcc", "glue_score"]),
        ("STS-B", ["validation_loss", "pearson", "spearmanr", "corr", "glue_score"]),
        ("MNLI", ["validation_loss", "acc", "validation_loss_mm", "acc_mm", "glue_score"]),
    ],
)
def test_reported_metrics_are_the_task_table_metrics_of_every_dev_split(task, names):
    assert list(metrics.reported_metrics(constants.TASKS[task])) == names


def test_reported_metrics_are_what_a_real_validation_reports():
    task = constants.TASKS["MNLI"]
    splits = np.repeat([0, 1], 50)
    logits = RNG.normal(size=(100, 3)).astype(np.float32)
    labels = RNG.integers(0, 3, 100)
    reported = metrics.compute_split_metrics(task, splits, logits, labels)
    assert tuple(reported) == metrics.reported_metrics(task)


@pytest.mark.parametrize(
    ("task", "searcher", "message"),
    [
        (
            "STS-B",
            {"metric": "acc", "smaller_is_better": False},
            "searcher.metric: 'acc' is not a metric the trial reports for STS-B; choose one of "
            "validation_loss, pearson, spearmanr, corr",
        ),
        (
            "MRPC",
            {"metric": "acc", "smaller_is_better": True},
            "searcher.smaller_is_better: true does not suit searcher.metric 'acc', a score, "
            "larger is better; set smaller_is_better: false",
        ),
        (
            "MRPC",
            {"metric": "acc"},  # Determined's default: smaller_is_better true
            "searcher.smaller_is_better: true does not suit",
        ),
        (
            "MNLI",
            {"metric": "validation_loss_mm", "smaller_is_better": False},
            "searcher.smaller_is_better: false does not suit searcher.metric "
            "'validation_loss_mm', a loss, smaller is better; set smaller_is_better: true",
        ),
        ("RTE", {"smaller_is_better": False}, "searcher.metric: None is not a metric"),
    ],
    ids=[
        "metric-of-another-task",
        "score-minimized",
        "default-direction",
        "loss-maximized",
        "none",
    ],
)
def test_check_searcher_names_the_key_and_the_choices(task, searcher, message):
    with pytest.raises(constants.ConfigError) as error:
        metrics.check_searcher(constants.TASKS[task], Searcher.of({"searcher": searcher}))
    assert str(error.value).startswith(message)


def test_check_searcher_accepts_each_reported_metric_with_its_direction():
    for task in constants.TASKS.values():
        for name in metrics.reported_metrics(task):
            smaller = name.startswith("validation_loss")
            metrics.check_searcher(task, Searcher(name, smaller))


@pytest.mark.parametrize("constant", ["predictions", "labels"])
def test_an_undefined_correlation_is_zero_with_a_warning(constant, caplog):
    scores = np.linspace(0, 5, 20, dtype=np.float32)
    flat = np.full(20, 2.5, dtype=np.float32)
    logits, labels = (flat, scores) if constant == "predictions" else (scores, flat)
    results = metrics.compute_metrics(constants.TASKS["STS-B"], logits[:, None], labels)
    assert (results["pearson"], results["spearmanr"], results["corr"]) == (0.0, 0.0, 0.0)
    assert [r.getMessage() for r in caplog.records] == [
        f"pearson is undefined for constant {constant}: reported as 0.0",
        f"spearmanr is undefined for constant {constant}: reported as 0.0",
    ]


def test_validation_metrics_that_are_not_numbers_are_refused():
    task = constants.TASKS["STS-B"]
    logits = np.linspace(0, 5, 20, dtype=np.float32)[:, None]
    logits[3] = np.nan  # a diverged model's output
    labels = np.linspace(0, 5, 20, dtype=np.float32)
    with pytest.raises(metrics.Diverged, match=r"^validation: validation_loss nan, pearson nan"):
        metrics.check_finite(metrics.compute_metrics(task, logits, labels))


@pytest.mark.parametrize(("smaller_is_better", "best_batch"), [(False, 20), (True, 10)])
def test_best_validation_follows_the_searcher(smaller_is_better, best_batch):
    validations = [(10, {"acc": 0.5}), (20, {"acc": 0.7}), (30, {"acc": 0.7}), (40, {"x": 1})]
    assert metrics.best_validation(validations, "acc", smaller_is_better)[0] == best_batch
    assert metrics.best_validation(validations, "f1", smaller_is_better) is None


VALIDATIONS = [(6, {"acc": 0.6}), (12, {"acc": 0.8}), (18, {"acc": 0.7}), (24, {"acc": 0.65})]
SEARCHER = Searcher("acc", smaller_is_better=False)


@pytest.mark.parametrize(
    ("patience", "checkpointed", "batch"),
    [
        (None, {6, 12, 18, 24}, 24),  # the trial ran its course: its last
        (2, {6, 12, 24}, 12),  # stopped early: its best, patience validations back
        (2, {6, 24}, 24),  # its best has no checkpoint: the best of those with one
        (2, set(), 12),  # none kept: the best all the same, with no checkpoint
        (None, {6, 12}, 12),  # the last validation's checkpoint failed: the last with one
    ],
)
def test_a_trial_is_reported_at_a_validation_whose_checkpoint_it_kept(
    patience, checkpointed, batch
):
    stops_early = patience is not None
    chosen = metrics.reported_validation(VALIDATIONS, checkpointed, stops_early, SEARCHER)
    assert chosen == next(v for v in VALIDATIONS if v[0] == batch)


def test_a_trial_without_validations_is_reported_at_none():
    assert metrics.reported_validation([], {6}, True, SEARCHER) is None
