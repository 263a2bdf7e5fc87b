"""Model classes and the GLUE task table: everything task- or model-specific lives here."""

from __future__ import annotations

import dataclasses
import inspect
import os
import pathlib
from typing import NamedTuple


class ConfigError(ValueError):
    """A setting that cannot work; the message names the key (or file) and how to fix it."""


def with_defaults(section: str, values: dict, required: tuple, optional: dict) -> dict:
    """values with defaults filled in; an unknown or missing key is an error that names it."""
    known = (*required, *optional)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"{section}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}"
        )
    missing = [key for key in required if values.get(key) is None]
    if missing:
        raise ConfigError(f"{section}: missing required key(s) {', '.join(missing)}")
    return {**optional, **values}


# model_type -> its ModelClasses (config, model, tokenizer), named as transformers exports them
# and imported on first use, so that the task table loads without transformers. In transformers 5
# the plain tokenizer names are the fast (Rust) tokenizers; XLM has only its Python tokenizer.
# "auto" takes whatever encoder the model folder's config.json names (DeBERTa-v3, ELECTRA, ...).
MODEL_CLASSES = {
    "auto": ("AutoConfig", "AutoModelForSequenceClassification", "AutoTokenizer"),
    "bert": ("BertConfig", "BertForSequenceClassification", "BertTokenizer"),
    "xlnet": ("XLNetConfig", "XLNetForSequenceClassification", "XLNetTokenizer"),
    "xlm": ("XLMConfig", "XLMForSequenceClassification", "XLMTokenizer"),
    "roberta": ("RobertaConfig", "RobertaForSequenceClassification", "RobertaTokenizer"),
    "distilbert": (
        "DistilBertConfig",
        "DistilBertForSequenceClassification",
        "DistilBertTokenizer",
    ),
}

# Only these models were pre-trained with segment embeddings; the others get no token_type_ids.
# model_type -> the encoder module whose output the classification head reads: the types that
# packed batches serve (bert_glue/trial/batching.py).
PACKED_ENCODERS = {
    "bert": "bert.encoder",
    "roberta": "roberta.encoder",
    "distilbert": "distilbert.transformer",
}
# Model types that number positions from pad_token_id + 1 (create_position_ids_from_input_ids)
POSITIONS_AFTER_PAD = ("roberta", "xlm-roberta", "camembert")
# Weights AdamW does not decay, as run_glue: biases and LayerNorm weights.
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight")
MODELS_WITH_TOKEN_TYPES = ("bert", "xlnet")


def feeds_token_types(model_type: str, tokenizer, model) -> bool:
    """Whether batches carry token_type_ids: by the list above for the named model types; for
    "auto" when the tokenizer makes them, the model takes them and has more than one type to
    embed (DeBERTa-v3 has 0, RoBERTa 1; ModernBERT takes none)."""
    if model_type != "auto":
        return model_type in MODELS_WITH_TOKEN_TYPES
    made = "token_type_ids" in tokenizer.model_input_names
    taken = "token_type_ids" in inspect.signature(model.forward).parameters
    types = getattr(model.config, "type_vocab_size", None)
    return made and taken and (types is None or types > 1)


@dataclasses.dataclass(frozen=True)
class Split:
    """Where one split of a task lives and how to read its rows (0-based column indices)."""

    path: str  # relative to data_dir
    text_a: int | str  # a column's index, or its name in the header (JSON Lines: the key)
    text_b: int | str | None
    label: int | str | None  # None for test files, which carry no labels
    header: bool = True
    index: int | None = None  # the column a GLUE submission file calls "index"
    format: str = "tsv_noquote"  # one of FORMATS
    require_text: bool = False  # an empty text is an error (custom files)


# File formats: comma- or tab-separated with quoting as Excel and pandas write it, tab-separated
# with quotes as plain text (GLUE's own files), and JSON Lines (one object per line).
FORMATS = ("csv", "tsv", "tsv_noquote", "jsonl")
CUSTOM = "custom"  # data.task of own data (bert_glue/trial/custom_task.py)


@dataclasses.dataclass(frozen=True)
class GlueTask:
    name: str  # the folder under data_dir, as the GLUE download lays it out
    labels: tuple[str, ...]  # as the files spell them; empty for regression
    metrics: tuple[str, ...]  # names of the validation metrics, see metrics.py
    train: Split
    dev: dict[str, Split]  # metric suffix -> dev split; "" is the main one
    test: dict[str, Split]  # submission file stem -> test split
    skip_malformed_rows: bool = False  # QQP's train/dev have a few rows with missing fields
    score_range: tuple[float, float] | None = None  # predictions are clipped to it (STS-B)
    custom: bool = False  # the user's own files (custom_task.py), not a GLUE download
    # The metrics whose mean is the task's GLUE score, reported as "glue_score" (metrics.py).
    score: tuple[str, ...] = ()
    # Below GLUE's download server: the zip of the task's folder (download_glue_data.py). MRPC
    # has none: it is built from SentEval's copies of the Microsoft files.
    download: str = ""
    # What a model's outputs are called (config.json's id2label, so what a pipeline says) where
    # the files' labels are codes: the names of the GLUE dataset card, in the same order.
    label_names: tuple[str, ...] = ()

    @property
    def is_regression(self) -> bool:
        return not self.labels

    @property
    def num_labels(self) -> int:
        return len(self.labels) or 1

    def missing_files(self, data_dir: str | os.PathLike) -> list[str]:
        """The task's train and dev files that data_dir lacks."""
        splits = (self.train, *self.dev.values())
        return [s.path for s in splits if not (pathlib.Path(data_dir) / s.path).is_file()]

    def missing(self, data_dir: str | os.PathLike, download: bool) -> str | None:
        """Why a GLUE task's train and dev files cannot be had, or None: present, or to be
        downloaded (own data's: custom_task.CustomData.missing)."""
        missing = self.missing_files(data_dir)
        if not missing or download:
            return None
        return (
            f"GLUE {self.name} data not found in {data_dir} (expected {', '.join(missing)}). "
            "Set data.download_data: true, point data.data_dir at a GLUE folder, or run "
            f"`python download_glue_data.py --data-dir {data_dir} --tasks {self.name}`."
        )


BINARY = ("0", "1")
NLI = ("contradiction", "entailment", "neutral")
ENTAILMENT = ("entailment", "not_entailment")
ACC = ("acc",)
ACC_F1 = ("acc", "f1", "acc_and_f1")
F1_ACC = ("f1", "acc")  # GLUE scores MRPC and QQP by their mean


def _task(name, labels, metrics, a, b, label, test_a=None, test_b=None, **kwargs) -> GlueTask:
    """A task laid out as most are: {train,dev,test}.tsv with a header, test index in column 0."""
    test_a, test_b = (a, b) if test_a is None else (test_a, test_b)
    kwargs.setdefault("download", f"glue/data/{name}.zip")
    return GlueTask(
        name,
        labels,
        metrics,
        train=Split(f"{name}/train.tsv", a, b, label),
        dev={"": Split(f"{name}/dev.tsv", a, b, label)},
        test={name: Split(f"{name}/test.tsv", test_a, test_b, None, index=0)},
        **kwargs,
    )


# Column conventions and label orders of the original GLUE processors (transformers v2.2).
# Paths are relative to data_dir, in the layout download_glue_data.py produces.
TASKS = {
    task.name: task
    for task in (
        GlueTask(
            "CoLA",
            BINARY,
            ("mcc", "acc"),
            score=("mcc",),
            download="glue/data/CoLA.zip",
            label_names=("unacceptable", "acceptable"),
            train=Split("CoLA/train.tsv", 3, None, 1, header=False),
            dev={"": Split("CoLA/dev.tsv", 3, None, 1, header=False)},
            test={"CoLA": Split("CoLA/test.tsv", 1, None, None, index=0)},
        ),
        _task(
            "SST-2",
            BINARY,
            ACC,
            0,
            None,
            1,
            test_a=1,
            score=ACC,
            label_names=("negative", "positive"),
        ),
        _task(
            "MRPC",
            BINARY,
            ACC_F1,
            3,
            4,
            0,
            score=F1_ACC,
            download="",
            label_names=("not_equivalent", "equivalent"),
        ),
        _task(
            "STS-B",
            (),
            ("pearson", "spearmanr", "corr"),
            7,
            8,
            -1,
            score_range=(0.0, 5.0),
            score=("pearson", "spearmanr"),
        ),
        _task(
            "QQP",
            BINARY,
            ACC_F1,
            3,
            4,
            5,
            test_a=1,
            test_b=2,
            skip_malformed_rows=True,
            score=F1_ACC,
            download="glue/data/QQP-clean.zip",
            label_names=("not_duplicate", "duplicate"),
        ),
        GlueTask(
            "MNLI",
            NLI,
            ACC,
            # The leaderboard's MNLI score, the mean of both dev sets' accuracies: the trial's
            # glue_score and glue_report.py's table agree.
            score=("acc", "acc_mm"),
            download="glue/data/MNLI.zip",
            train=Split("MNLI/train.tsv", 8, 9, -1),
            dev={
                "": Split("MNLI/dev_matched.tsv", 8, 9, -1),
                "_mm": Split("MNLI/dev_mismatched.tsv", 8, 9, -1),
            },
            test={
                "MNLI-m": Split("MNLI/test_matched.tsv", 8, 9, None, index=0),
                "MNLI-mm": Split("MNLI/test_mismatched.tsv", 8, 9, None, index=0),
                # The diagnostic set is predicted with an MNLI model, in MNLI's label space.
                "AX": Split("diagnostic/diagnostic.tsv", 1, 2, None, index=0),
            },
        ),
        _task("QNLI", ENTAILMENT, ACC, 1, 2, -1, score=ACC, download="glue/data/QNLIv2.zip"),
        _task("RTE", ENTAILMENT, ACC, 1, 2, -1, score=ACC),
        _task(
            "WNLI", BINARY, ACC, 1, 2, -1, score=ACC, label_names=("not_entailment", "entailment")
        ),
    )
}


def get_task(name: str) -> GlueTask:
    """Look a task up by its GLUE name, case-insensitively, with an error that lists choices."""
    for task in TASKS.values():
        if task.name.lower() == str(name).lower():
            return task
    raise ConfigError(f"data.task: unknown GLUE task {name!r}; choose one of {', '.join(TASKS)}")


class ModelClasses(NamedTuple):
    """A model type's transformers classes."""

    config: type
    model: type  # ...ForSequenceClassification
    tokenizer: type


def get_model_classes(model_type: str) -> ModelClasses:
    if model_type not in MODEL_CLASSES:
        raise ConfigError(
            f"hyperparameters.model_type: unknown model type {model_type!r}; "
            f"choose one of {', '.join(MODEL_CLASSES)}"
        )
    import transformers  # here, not at the top: see MODEL_CLASSES

    return ModelClasses(*(getattr(transformers, name) for name in MODEL_CLASSES[model_type]))
