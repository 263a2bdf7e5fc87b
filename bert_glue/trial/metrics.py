"""GLUE validation metrics over a whole dev set (never averaged per batch): what each metric is,
which a task reports, and which validation a searcher would call best."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from math import isfinite
from typing import Protocol

import numpy as np

from constants import ConfigError, GlueTask

logger = logging.getLogger(__name__)


def load_backends() -> None:
    """Import what computing the metrics needs, scipy and scikit-learn, now. Their first import
    draws from Python's global random (rich's style ids, through scikit-learn's progress bars), so
    it must come before a trial is seeded: else a resumed process, which imports them again, draws
    where the uninterrupted run did not, and the two runs' random streams part."""
    import scipy.stats  # noqa: F401
    import sklearn.metrics  # noqa: F401


class Ranking(Protocol):
    """What validations are ranked by: a searcher's metric and its direction (settings.Searcher,
    which this module does not import: settings.py builds own data's task, which reads METRICS)."""

    metric: str
    smaller_is_better: bool


LOSS = "validation_loss"  # the dev-set loss; the one metric a searcher should minimize
# Every GLUE task's score under one name, so that one searcher.metric ranks trials of all tasks.
GLUE_SCORE = "glue_score"


def predictions(task: GlueTask, logits: np.ndarray) -> np.ndarray:
    """Label ids (classification) or scores (regression) from the model's outputs."""
    return logits[:, 0] if task.is_regression else logits.argmax(axis=-1)


def loss(task: GlueTask, logits: np.ndarray, labels: np.ndarray) -> float:
    """The mean of the same loss the model trains with (MSE or cross-entropy)."""
    import torch  # here, as scipy and scikit-learn below: METRICS is read before torch loads

    logits_t, labels_t = torch.from_numpy(logits).float(), torch.from_numpy(labels)
    if task.is_regression:
        return torch.nn.functional.mse_loss(logits_t[:, 0], labels_t.float()).item()
    return torch.nn.functional.cross_entropy(logits_t, labels_t.long()).item()


@dataclasses.dataclass(frozen=True)
class Metric:
    """One validation metric: its kind of task, and how it is computed from the dev set's
    predictions and labels, or as the mean of other metrics (as GLUE scores MRPC and STS-B)."""

    kind: str  # "classification" or "regression"
    compute: Callable[[GlueTask, np.ndarray, np.ndarray], float] | None = None
    mean_of: tuple[str, ...] = ()


def _f1(task: GlueTask, preds: np.ndarray, labels: np.ndarray) -> float:
    """Binary (of label 1) for two labels, the unweighted mean over labels for more: over every
    label, also one the dev set lacks (its F1 counts as 0)."""
    from sklearn.metrics import f1_score

    if task.num_labels == 2:
        return float(f1_score(labels, preds))
    return float(f1_score(labels, preds, average="macro", labels=range(task.num_labels)))


def _accuracy(task: GlueTask, preds: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(labels, preds))


def _mcc(task: GlueTask, preds: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(labels, preds))


# Every metric a task may report (constants.TASKS names each GLUE task's, data.custom its own),
# named as in transformers' old glue_compute_metrics, in report order. Read without scipy and
# scikit-learn (data.custom's check before torch loads): each metric imports its own.
METRICS = {
    "pearson": Metric("regression", lambda _, p, y: correlation("pearsonr", "pearson", p, y)),
    "spearmanr": Metric("regression", lambda _, p, y: correlation("spearmanr", "spearmanr", p, y)),
    "corr": Metric("regression", mean_of=("pearson", "spearmanr")),
    "acc": Metric("classification", _accuracy),
    "f1": Metric("classification", _f1),
    "acc_and_f1": Metric("classification", mean_of=("acc", "f1")),
    "mcc": Metric("classification", _mcc),
}
DEFAULT_METRICS = {  # own data's, unless data.custom.metrics names others
    "classification": ("acc", "f1"),
    "regression": ("pearson", "spearmanr", "corr"),  # STS-B's
}


def compute_metrics(task: GlueTask, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's metrics plus the loss."""
    preds = predictions(task, logits)
    results: dict[str, float] = {LOSS: loss(task, logits, labels)}
    for name, metric in METRICS.items():
        if name in task.metrics:
            if metric.mean_of:
                results[name] = sum(results[m] for m in metric.mean_of) / len(metric.mean_of)
            else:
                results[name] = metric.compute(task, preds, labels)
    return results


def correlation(measure: str, name: str, preds: np.ndarray, labels: np.ndarray) -> float:
    """scipy.stats' correlation `measure`, or 0.0 with a warning where it is undefined: constant
    predictions (an untrained or collapsed regressor) or constant labels."""
    from scipy import stats

    constant = [what for what, x in (("predictions", preds), ("labels", labels)) if np.ptp(x) == 0]
    if constant and np.isfinite(preds).all():
        logger.warning(
            f"{name} is undefined for constant {' and '.join(constant)}: reported as 0.0"
        )
        return 0.0
    return float(getattr(stats, measure)(preds, labels)[0])


def compute_split_metrics(
    task: GlueTask, splits: np.ndarray, logits: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """Metrics of every dev split, each name suffixed with its split's suffix (MNLI: "_mm")."""
    results = {}
    for split_id, suffix in enumerate(task.dev):
        rows = splits == split_id
        for name, value in compute_metrics(task, logits[rows], labels[rows]).items():
            results[name + suffix] = value
    if task.score:  # of the main dev split
        results[GLUE_SCORE] = float(np.mean([results[name] for name in task.score]))
    return results


class Diverged(ValueError):
    """A training loss or validation metric that is not a number: nothing NaN is reported."""


def check_finite(results: dict[str, float]) -> dict[str, float]:
    bad = {name: value for name, value in results.items() if not isfinite(value)}
    if bad:
        shown = ", ".join(f"{name} {value}" for name, value in bad.items())
        raise Diverged(f"validation: {shown}: the model's outputs are not numbers; not reported")
    return results


def reported_metrics(task: GlueTask) -> tuple[str, ...]:
    """The names of the validation metrics the trial reports for the task, in report order.

    Read off compute_split_metrics itself, on a stand-in dev set of 4 distinct rows per split
    (perfect predictions, so that no correlation or F1 is undefined).
    """
    splits = np.repeat(np.arange(len(task.dev)), 4)
    if task.is_regression:
        labels = np.arange(len(splits), dtype=np.float32)
        logits = labels[:, None]
    else:
        labels = np.arange(len(splits)) % task.num_labels
        logits = np.eye(task.num_labels, dtype=np.float32)[labels]
    return tuple(compute_split_metrics(task, splits, logits, labels))


Validation = tuple[int, dict]  # batches trained, and the metrics at that point


def best_validation(
    validations: list[Validation], metric: str, smaller_is_better: bool
) -> Validation | None:
    """The validation the searcher would call best (the first of equals), or None."""
    scored = [v for v in validations if isfinite(v[1].get(metric, float("nan")))]
    if not scored:
        return None
    pick = min if smaller_is_better else max
    return pick(scored, key=lambda v: v[1][metric])


def reported_validation(
    validations: list[Validation], checkpointed: set[int], early_stopping: bool, searcher: Ranking
) -> Validation | None:
    """The validation a finished trial is reported at, among those whose checkpoint it kept
    (`checkpointed`: their batch counts), if any: its last or, with early stopping on, its best,
    as a trial that stopped early trained `patience` validations past its best."""
    candidates = [v for v in validations if v[0] in checkpointed] or validations
    if early_stopping:
        best = best_validation(candidates, searcher.metric, searcher.smaller_is_better)
        if best is not None:
            return best
    return candidates[-1] if candidates else None


def check_searcher(task: GlueTask, searcher: Ranking) -> None:
    """searcher.metric must be one the trial reports, and smaller_is_better must suit it."""
    names = reported_metrics(task)
    metric = searcher.metric
    if metric not in names:
        raise ConfigError(
            f"searcher.metric: {metric!r} is not a metric the trial reports for {task.name}; "
            f"choose one of {', '.join(names)}"
        )
    is_loss = metric.startswith(LOSS)
    smaller = searcher.smaller_is_better
    if smaller != is_loss:
        kind = "a loss, smaller is better" if is_loss else "a score, larger is better"
        raise ConfigError(
            f"searcher.smaller_is_better: {str(smaller).lower()} does not suit "
            f"searcher.metric {metric!r}, {kind}; set smaller_is_better: {str(is_loss).lower()}"
        )
