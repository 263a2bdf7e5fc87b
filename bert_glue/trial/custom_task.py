"""`data.task: custom`: the task table's entry for your own labelled files, built from data.custom.

    data:
      task: custom
      data_dir: my_data            # the files below are relative to it
      custom:
        train: train.csv
        validation: dev.csv
        test: test.csv             # optional: predict.py writes predictions.tsv for it
        text_a: premise
        text_b: hypothesis         # optional: single texts without it
        label: gold
        labels: infer              # or [no, yes, maybe]; or regression
        metrics: [acc, f1]         # optional: by default [acc, f1]; regression's: STS-B's

The task's score (reported as glue_score, metrics.py) is the mean of its metrics, those computed
from others (acc_and_f1, corr) aside, as GLUE scores MRPC and STS-B.

Everything downstream (reading, caching, metrics, predictions, export) takes the GlueTask built
here like a GLUE task's. `task_from_config` is the one place a data config becomes a task.
"""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Sequence

import constants
import data
from bert_glue.trial import trial_config
from constants import FORMATS, ConfigError, GlueTask, Split

logger = logging.getLogger(__name__)

NAME = trial_config.CUSTOM
KEY = "data.custom"
REQUIRED = ("train", "validation", "text_a", "label")
OPTIONAL = {
    "test": None,  # a file to predict (predict.py); its label column, if any, is not read
    "format": None,  # None: from each file's extension (FORMAT_OF_SUFFIX)
    "text_b": None,  # the second text of a pair
    "labels": "infer",  # infer: the training file's label values, sorted; or names; regression
    "metrics": None,  # None: DEFAULT_METRICS
}
FORMAT_OF_SUFFIX = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
METRICS = {  # a metric -> the metrics it is computed from
    "classification": {"acc": (), "f1": (), "acc_and_f1": ("acc", "f1"), "mcc": ()},
    "regression": {"pearson": (), "spearmanr": (), "corr": ("pearson", "spearmanr")},
}
DEFAULT_METRICS = {
    "classification": ("acc", "f1"),
    "regression": ("pearson", "spearmanr", "corr"),  # STS-B's
}


def task_from_config(cfg: dict, labels: Sequence[str] | None = None) -> GlueTask:
    """The task of a data config (with its defaults): a GLUE task, or one of data.custom.

    `labels` are the label names a checkpoint recorded, used instead of inferring them again.
    """
    if str(cfg["task"]).lower() != NAME:
        if cfg["custom"] is not None:
            raise ConfigError(f"{KEY}: read only with data.task: {NAME}; remove it")
        return constants.get_task(cfg["task"])
    if not isinstance(cfg["custom"], dict):
        raise ConfigError(
            f"data.task: {NAME} needs a {KEY} section: train, validation, text_a, label "
            "(docs/own-data.md)"
        )
    spec = trial_config.with_defaults(KEY, cfg["custom"], REQUIRED, OPTIONAL)
    splits = {role: _split(spec, role) for role in ("train", "validation", "test")}
    if labels is None:
        labels = _labels(spec, splits["train"], cfg["data_dir"])
    labels = tuple(labels)
    kind = "regression" if not labels else "classification"
    metrics = _metrics(spec["metrics"], kind)
    return GlueTask(
        NAME,
        labels,
        metrics,
        train=splits["train"],
        dev={"": splits["validation"]},
        test={"predictions": splits["test"]} if splits["test"] else {},
        custom=True,
        score=tuple(name for name in metrics if not METRICS[kind][name]),
    )


def warn_of_missing_test(task: GlueTask, data_dir: str | os.PathLike) -> None:
    """One warning for a data.custom.test file that data_dir lacks: training needs none, and
    predict.py says there is none to predict."""
    for split in task.test.values() if task.custom else ():
        if not (pathlib.Path(data_dir) / split.path).is_file():
            logger.warning(
                f"{KEY}.test: {split.path} not found in data.data_dir {data_dir}: this run trains "
                f"and validates, but predict.py will have no test file; put it there or remove "
                f"{KEY}.test"
            )


def _split(spec: dict, role: str) -> Split | None:
    path = spec[role]
    if path is None:
        return None
    fmt = spec["format"] or FORMAT_OF_SUFFIX.get(pathlib.PurePath(path).suffix.lower())
    if fmt not in FORMATS:
        raise ConfigError(
            f"{KEY}.format: {spec['format'] or path!r} is no format; "
            f"set {KEY}.format to one of {', '.join(FORMATS)}"
            + ("" if spec["format"] else " (or name the file .csv, .tsv, .jsonl or .json)")
        )
    for key in ("text_a", "text_b", "label"):
        if spec[key] is not None and not (isinstance(spec[key], str) and spec[key]):
            raise ConfigError(f"{KEY}.{key}: {spec[key]!r} is not a column name")
    return Split(
        str(path),
        spec["text_a"],
        spec["text_b"],
        spec["label"] if role != "test" else None,
        header=fmt != "jsonl",
        format=fmt,
        require_text=True,
    )


def _labels(spec: dict, train: Split, data_dir: str | os.PathLike) -> tuple[str, ...]:
    labels = spec["labels"]
    if labels == "regression":
        return ()
    if labels == "infer":
        return infer_labels(train, data_dir)
    if (
        not isinstance(labels, list)
        or len(labels) < 2
        or not all(isinstance(label, str) and label for label in labels)
    ):
        raise ConfigError(
            f"{KEY}.labels: {labels!r}; give infer, regression or a list of two or more label "
            "names (quote names YAML reads as numbers or booleans: ['0', '1'])"
        )
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{KEY}.labels: {labels} names a label twice")
    return tuple(labels)


def infer_labels(train: Split, data_dir: str | os.PathLike) -> tuple[str, ...]:
    """The training file's label values, sorted (as strings), so every run orders them alike."""
    path = pathlib.Path(data_dir) / train.path
    if not path.is_file():
        raise FileNotFoundError(f"{KEY}.train: {train.path} not found in data.data_dir {data_dir}")
    labels = sorted({label for _, (_, _, label, _) in data.read_fields(path, train)})
    if len(labels) < 2:
        raise data.DataError(
            f"{path}: the label column {train.label!r} holds {len(labels)} distinct value(s) "
            f"{labels}; a classifier needs two or more (for scores set {KEY}.labels: regression)"
        )
    return tuple(labels)


def _metrics(names: list | None, kind: str) -> tuple[str, ...]:
    if names is None:
        return DEFAULT_METRICS[kind]
    known = METRICS[kind]
    unknown = [name for name in names if name not in known] if isinstance(names, list) else names
    if unknown or not names:
        raise ConfigError(
            f"{KEY}.metrics: {unknown or names!r} not a {kind} metric; "
            f"choose from {', '.join(known)}"
        )
    for name in names:
        missing = [need for need in known[name] if need not in names]
        if missing:
            raise ConfigError(f"{KEY}.metrics: {name} needs {' and '.join(known[name])} too")
    return tuple(names)
