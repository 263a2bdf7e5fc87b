"""`data.task: custom`: your own labelled files, as a task of the task table built from data.custom.

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

Nothing here loads torch: a local run's checked_config (bert_glue/local/config.py) answers a
mistake in data.custom, or a file that data_dir lacks, before torch loads. task_from_config, the
one place a data config becomes a task (Settings.task), reads the labels of `labels: infer` from
the training file.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Sequence

from bert_glue.trial import metrics
from bert_glue.trial.data_files import DataError, read_fields
from constants import CUSTOM, FORMATS, ConfigError, GlueTask, Split, get_task, with_defaults

CUSTOM_KEY = "data.custom"
REQUIRED = ("train", "validation", "text_a", "label")
OPTIONAL = {
    "test": None,  # a file to predict (predict.py); its label column, if any, is not read
    "format": None,  # None: from each file's extension (FORMAT_OF_SUFFIX)
    "text_b": None,  # the second text of a pair
    "labels": "infer",  # infer: the training file's label values, sorted; or names; regression
    "metrics": None,  # None: metrics.DEFAULT_METRICS
}
FORMAT_OF_SUFFIX = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
FILES = ("train", "validation", "test")  # the data.custom keys that name files
LISTED = 12  # at most this many of data_dir's entries in an error


@dataclasses.dataclass(frozen=True)
class CustomData:
    """data.custom, checked: its files, label names and metrics."""

    files: dict[str, Split]  # by the key that names each: train, validation, test (when set)
    labels: tuple[str, ...] | None  # () for regression; None: infer, the training file's
    metrics: tuple[str, ...]
    score: tuple[str, ...]  # the metrics whose mean is the task's glue_score

    def task(self, labels: Sequence[str]) -> GlueTask:
        """The task, with these label names (the configured ones, or those inferred or
        recorded in a checkpoint)."""
        test = self.files.get("test")
        return GlueTask(
            CUSTOM,
            tuple(labels),
            self.metrics,
            train=self.files["train"],
            dev={"": self.files["validation"]},
            test={"predictions": test} if test else {},
            custom=True,
            score=self.score,
        )

    def missing(self, data_dir: str | os.PathLike) -> str | None:
        """Why the training or validation file cannot be read, or None: both are in data_dir.
        The message names each missing file's key and lists what data_dir holds."""
        folder = pathlib.Path(data_dir)
        missing = {
            key: self.files[key].path
            for key in ("train", "validation")
            if not (folder / self.files[key].path).is_file()
        }
        if not missing:
            return None
        named = ", ".join(f"{CUSTOM_KEY}.{key} {path}" for key, path in missing.items())
        keys = " and ".join(f"{CUSTOM_KEY}.{key}" for key in missing)
        if not folder.is_dir():
            return (
                f"data.data_dir {data_dir} is no folder, so {named} cannot be read; point "
                "data.data_dir at the folder of your files"
            )
        return (
            f"{named} not found in data.data_dir {data_dir}, which holds {holdings(folder)}; set "
            f"{keys} to your files' paths relative to it"
        )


def task_from_config(
    task: str, custom: dict | None, data_dir: str | os.PathLike, labels: Sequence[str] | None = None
) -> GlueTask:
    """The task of data.task: a GLUE task, or one of data.custom (its files in data_dir).

    `labels` are the label names a checkpoint recorded, used instead of inferring them again.
    """
    spec = checked(task, custom)
    if spec is None:
        return get_task(task)
    if labels is None:
        labels = spec.labels if spec.labels is not None else infer_labels(spec, data_dir)
    return spec.task(labels)


def infer_labels(custom: CustomData, data_dir: str | os.PathLike) -> tuple[str, ...]:
    """The training file's label values, sorted (as strings), so every run orders them alike."""
    problem = custom.missing(data_dir)
    if problem:
        raise FileNotFoundError(problem)
    train = custom.files["train"]
    path = pathlib.Path(data_dir) / train.path
    labels = sorted({label for _, (_, _, label, _) in read_fields(path, train)})
    if len(labels) < 2:
        raise DataError(
            f"{path}: the label column {train.label!r} holds {len(labels)} distinct value(s) "
            f"{labels}; a classifier needs two or more (for scores set {CUSTOM_KEY}.labels: "
            "regression)"
        )
    return tuple(labels)


def holdings(folder: pathlib.Path) -> str:
    """What a folder holds, sorted, folders marked with a slash: `dev.tsv, sub/, train.tsv`."""
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not entries:
        return "nothing"
    more = len(entries) - LISTED
    return ", ".join(entries[:LISTED]) + (f" and {more} more" if more > 0 else "")


def checked(task: str, custom: dict | None) -> CustomData | None:
    """data.custom for data.task, checked; None for a GLUE task, which takes none."""
    if str(task).lower() != CUSTOM:
        if custom is not None:
            raise ConfigError(f"{CUSTOM_KEY}: read only with data.task: {CUSTOM}; remove it")
        return None
    if not isinstance(custom, dict):
        raise ConfigError(
            f"data.task: {CUSTOM} needs a {CUSTOM_KEY} section: train, validation, text_a, label "
            "(docs/own-data.md)"
        )
    spec = with_defaults(CUSTOM_KEY, custom, REQUIRED, OPTIONAL)
    files = {key: _split(spec, key) for key in FILES if spec[key] is not None}
    labels = _labels(spec["labels"])
    kind = "regression" if labels == () else "classification"
    return CustomData(files, labels, *_metrics(spec["metrics"], kind))


def _split(spec: dict, key: str) -> Split:
    path = spec[key]
    fmt = spec["format"] or FORMAT_OF_SUFFIX.get(pathlib.PurePath(path).suffix.lower())
    if fmt not in FORMATS:
        raise ConfigError(
            f"{CUSTOM_KEY}.format: {spec['format'] or path!r} is no format; "
            f"set {CUSTOM_KEY}.format to one of {', '.join(FORMATS)}"
            + ("" if spec["format"] else " (or name the file .csv, .tsv, .jsonl or .json)")
        )
    for column in ("text_a", "text_b", "label"):
        if spec[column] is not None and not (isinstance(spec[column], str) and spec[column]):
            raise ConfigError(f"{CUSTOM_KEY}.{column}: {spec[column]!r} is not a column name")
    return Split(
        str(path),
        spec["text_a"],
        spec["text_b"],
        spec["label"] if key != "test" else None,
        header=fmt != "jsonl",
        format=fmt,
        require_text=True,
    )


def _labels(labels) -> tuple[str, ...] | None:
    if labels == "regression":
        return ()
    if labels == "infer":
        return None
    if (
        not isinstance(labels, list)
        or len(labels) < 2
        or not all(isinstance(label, str) and label for label in labels)
    ):
        raise ConfigError(
            f"{CUSTOM_KEY}.labels: {labels!r}; give infer, regression or a list of two or more "
            "label names (quote names YAML reads as numbers or booleans: ['0', '1'])"
        )
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{CUSTOM_KEY}.labels: {labels} names a label twice")
    return tuple(labels)


def _metrics(names: list | None, kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The task's metrics and its score's: those not computed from others."""
    if names is None:
        names = list(metrics.DEFAULT_METRICS[kind])
    known = {name: m.mean_of for name, m in metrics.METRICS.items() if m.kind == kind}
    unknown = [name for name in names if name not in known] if isinstance(names, list) else names
    if unknown or not names:
        raise ConfigError(
            f"{CUSTOM_KEY}.metrics: {unknown or names!r} not a {kind} metric; "
            f"choose from {', '.join(known)}"
        )
    for name in names:
        missing = [need for need in known[name] if need not in names]
        if missing:
            raise ConfigError(f"{CUSTOM_KEY}.metrics: {name} needs {' and '.join(known[name])} too")
    return tuple(names), tuple(name for name in names if not known[name])
