"""The experiment config as the trial reads it: one frozen Settings, built and checked once.

Determined's YAML is the configuration. Settings.of() reads the `hyperparameters` and `data`
keys the trial reads (required ones, and every optional one with its default: here and nowhere
else), the searcher's metric and the run's periods, and checks what Determined itself would let
through to fail later (levers.py resolves the levers' "auto" for a device). It reads a config
already loaded: a local run's file and overrides are bert_glue/local/config.py's. Nothing here
imports torch or transformers: the command line is checked before either loads.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

from bert_glue.trial import custom_task
from bert_glue.trial.levers import AUTO
from constants import (
    TASKS,
    ConfigError,
    GlueTask,
    ModelClasses,
    get_model_classes,
    with_defaults,
)


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a key may hold: accepts(value), and the words of what it expects."""

    accepts: Callable[[Any], bool]
    expected: str

    def check(self, key: str, value) -> None:
        if not self.accepts(value):
            raise ConfigError(f"{key}: {value!r} is not {self.expected}")


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def one_of(*choices) -> Rule:
    """Exactly one of the choices: "false" in quotes is not false, nor 1 true."""
    shown = ", ".join(str(c).lower() if isinstance(c, bool) else c for c in choices)
    same = lambda value, c: value is c if isinstance(c, bool) else value == c  # noqa: E731
    return Rule(lambda v: any(same(v, c) for c in choices), f"one of {shown}")


COUNT = Rule(lambda v: _whole(v) and v >= 1, "an integer >= 1")
RATE = Rule(lambda v: _number(v) and v >= 0, "a number >= 0")  # "2e-5" in quotes is not
SHARE = Rule(lambda v: _number(v) and 0 <= v <= 1, "a share of the steps, 0 to 1")
SWITCH = one_of(AUTO, True, False)
BOOLEAN = one_of(True, False)
PRECISIONS = ("fp32", "bf16", "fp16")


def key(default=dataclasses.MISSING, rule: Rule | None = None, *, help: str) -> dataclasses.Field:
    """A hyperparameter: its default (none: required), the rule its value must meet, its help."""
    return dataclasses.field(default=default, metadata={"rule": rule, "help": help})


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """`hyperparameters`: the four required keys, then every optional one. Each key is one
    field: its default (none: required), the rule its value must meet (the errors quote it) and
    its help (the README's table, Markdown, which tests/test_docs.py holds to it)."""

    global_batch_size: int = key(rule=COUNT, help="examples per optimizer step, over all slots")
    learning_rate: float = key(rule=RATE, help="AdamW's peak learning rate")
    num_train_epochs: int = key(
        rule=COUNT, help="the run's length; the linear warmup/decay schedule is derived from it"
    )
    model_type: str = key(
        help="`auto` (any encoder), `bert`, `xlnet`, `xlm`, `roberta` or `distilbert`"
    )
    max_seq_length: int = key(128, COUNT, help="tokens per pair after truncation")
    adam_epsilon: float = key(1e-8, RATE, help="AdamW (`torch.optim.AdamW`)")
    weight_decay: float = key(0.0, RATE, help="AdamW; no decay on biases and LayerNorm weights")
    warmup_ratio: float = key(
        0.0, SHARE, help="share of the optimizer steps with a linear LR warmup"
    )
    max_grad_norm: float = key(
        1.0, RATE, help="clip the gradients' norm to this, as run_glue; 0: no clipping"
    )
    pad_to_max_length: bool = key(
        False,
        BOOLEAN,
        help="pad every batch to `max_seq_length` (run_glue's default) instead of its longest pair",
    )
    pad_to_multiple_of: int = key(
        8,
        COUNT,
        help="round each batch's padded length up to a multiple of this: few distinct shapes",
    )
    # The levers: "auto" is resolved for the device by levers.Levers.resolve.
    group_by_length: str | bool = key(
        AUTO, SWITCH, help="batch pairs of similar length together; `auto`: on unless packing"
    )
    precision: str = key(
        AUTO,
        one_of(AUTO, *PRECISIONS),
        help=(
            "`fp32`, `bf16`, `fp16`; `auto`: bf16 on GPUs from compute capability 8.0, A100, H100 "
            "and later (fp16 with a loss scaler below, V100 and T4), and on CPUs with native "
            "bf16, AMX or AVX-512 BF16, else fp32"
        ),
    )
    fused_adamw: str | bool = key(
        AUTO, SWITCH, help="`true`, `false`; `auto`: fused on CPUs and CUDA GPUs"
    )
    fast_dropout: str | bool = key(
        AUTO, SWITCH, help="`true`, `false`: dropout masks from fewer random draws; `auto`: on CPUs"
    )
    attn_implementation: str = key(
        AUTO,
        Rule(
            lambda v: isinstance(v, str) and v != "", "auto or an attention name (eager, sdpa, ...)"
        ),
        help=(
            "`eager`, `sdpa`, or any other transformers accepts; `auto`: SDPA on GPUs, eager on "
            "CPUs"
        ),
    )
    dataloader_workers: str | int = key(
        AUTO,
        Rule(lambda v: v == AUTO or (_whole(v) and v >= 0), "auto or a count >= 0"),
        help="processes that batch while the model steps; `auto`: 2 on GPUs, 0 on CPUs",
    )
    torch_compile: bool = key(
        False,
        BOOLEAN,
        help=(
            "`true` compiles the model with Inductor (`torch.compile`), which needs a host "
            "compiler: `gcc` or `$CC` on GPUs, `g++` or `$CXX` on CPUs (PyTorch's runtime images "
            "have none)"
        ),
    )
    packing: str | bool = key(
        AUTO,
        SWITCH,
        help=(
            "padding-free batches; `auto`: on GPUs (bf16/fp16; BERT, RoBERTa, DistilBERT), "
            "attending with FlashAttention-2 from compute capability 8.0 and the memory-efficient "
            "kernel below (V100, T4); off on CPUs"
        ),
    )
    cuda_graphs: str | bool = key(
        AUTO,
        SWITCH,
        help=(
            "CUDA graphs of each batch shape (no compiler needed); `auto`: on one GPU only, off "
            "with several processes"
        ),
    )
    # Early stopping (callbacks.py): end the trial once searcher.metric stops improving.
    early_stopping_patience: int | None = key(
        None,
        Rule(
            lambda v: v is None or COUNT.accepts(v),
            "an integer >= 1 (validations without improvement) or null (no early stopping)",
        ),
        help=(
            "end the trial after this many validations in a row without improvement of "
            "`searcher.metric`; `null`: off ([docs](docs/search.md#early-stopping-on-a-plateau))"
        ),
    )
    early_stopping_min_delta: float = key(0.0, RATE, help="an improvement must exceed this")
    # For searches over tasks and seeds (glue.yaml):
    task: str | None = key(
        None,
        help="the GLUE task, in place of `data.task`, so that a searcher can vary it (glue.yaml)",
    )
    seed: int | None = key(
        None,
        Rule(lambda v: v is None or (_whole(v) and v >= 0), "an integer >= 0"),
        help=(
            "seeds the classifier's initial weights, dropout and data order; unset: Determined's "
            "trial seed (locally `reproducibility.experiment_seed`)"
        ),
    )
    per_task: dict | None = key(
        None,
        help=(
            "`{<task>: {<hyperparameter>: value}}`: what differs for a task, e.g. `{MRPC: "
            "{num_train_epochs: 5}}`; any hyperparameter but `task`, `seed` and `per_task`, "
            "`global_batch_size` included"
        ),
    )

    @staticmethod
    def check(section: str, values: dict) -> None:
        """Each value meets its key's rule; the error names the key."""
        for name, value in values.items():
            rule = RULES.get(name)
            if rule is not None:
                rule.check(f"{section}.{name}", value)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """`data`: where the task's files and the pre-trained model are."""

    task: str  # a GLUE task, or custom (hyperparameters.task, when set)
    model_name_or_path: str
    data_dir: str
    download_data: bool = False  # fetch the task's files into data_dir when they are missing
    path_to_mrpc: str = ""  # a folder with msr_paraphrase_{train,test}.txt, not downloading
    cache_dir: str | None = None  # tokenized-feature cache; None: ~/.cache/bert_glue_features
    custom: dict | None = None  # with task: custom, your own files (custom_task.py)
    max_train_samples: int | None = None  # train on this many examples (a fixed random subset)
    # Where the starting weights come from, when not model_name_or_path: a fine-tuned model or a
    # checkpoint of this trial (pretrained.py).
    init_from: str | None = None

    @classmethod
    def of(cls, values: dict) -> DataConfig:
        data = _with_defaults("data", values, cls)
        source = data.init_from
        if source is not None and not (isinstance(source, str) and source.strip()):
            raise ConfigError(
                f"data.init_from: {source!r} names no model or checkpoint; give a Hub name, a "
                "folder or a checkpoint uuid, or leave it unset"
            )
        return data


@dataclasses.dataclass(frozen=True)
class Searcher:
    """What the searcher ranks validations by."""

    metric: str | None
    smaller_is_better: bool = True  # unset meaning true, as in Determined

    @classmethod
    def of(cls, config: dict) -> Searcher:
        searcher = config.get("searcher") or {}
        return cls(searcher.get("metric"), searcher.get("smaller_is_better", True))


@dataclasses.dataclass(frozen=True)
class Periods:
    """Trainer.fit's periods and checkpoint policy: min_validation_period, min_checkpoint_period
    (each a (unit, count): "batches" or "epochs"), checkpoint_policy, scheduling_unit (None:
    the launcher's default) and perform_initial_validation. In script mode Determined 0.38.1's
    Trainer reads none of them from the config (only its legacy harness did)."""

    validation: tuple[str, int]
    checkpoint: tuple[str, int]
    checkpoint_policy: str
    reporting: int | None
    step_zero_validation: bool

    @classmethod
    def of(cls, config: dict, global_batch_size: int) -> Periods:
        """Unset periods (or Determined's default of 0 batches) validate and checkpoint every
        epoch; records count in whole batches of the task's global_batch_size."""
        policy = config.get("checkpoint_policy") or "best"
        if policy not in ("best", "all", "none"):
            raise ConfigError(f"checkpoint_policy: {policy!r} is not one of best, all, none")
        reporting = config.get("scheduling_unit")
        return cls(
            validation=_period(config, "min_validation_period", global_batch_size),
            checkpoint=_period(config, "min_checkpoint_period", global_batch_size),
            checkpoint_policy=policy,
            reporting=None if reporting is None else _count("scheduling_unit", reporting),
            step_zero_validation=bool(config.get("perform_initial_validation")),
        )


@dataclasses.dataclass(frozen=True)
class Settings:
    """The trial's settings: its task's hyperparameters (per_task's values in place), data,
    searcher and periods. The levers' auto is resolved for a device apart (levers.py)."""

    hparams: Hyperparameters
    data: DataConfig
    searcher: Searcher
    periods: Periods
    experiment_seed: int | None  # reproducibility.experiment_seed
    # Own data's label names as a checkpoint recorded them (callbacks.TaskLabels); None: the
    # configured ones, or those the training file holds.
    labels: tuple[str, ...] | None = None

    @classmethod
    def of(cls, config: dict, hparams: dict, slots: int | None = None) -> Settings:
        """The settings of an experiment config and a trial's hyperparameter values (a local
        run's: bert_glue/local/config.py's local_hparams), checked; with slots, the batch's split
        across them too.

        hyperparameters.task, when set, is the task (data.task then stays unset); the
        hyperparameters under hyperparameters.per_task.<task> then replace the ones they name.
        """
        data = dict(config.get("data") or {})
        top = _with_defaults("hyperparameters", hparams, Hyperparameters)
        if top.task is not None:
            if data.get("task") is not None:
                raise ConfigError(
                    f"data.task {data['task']!r} and hyperparameters.task {top.task!r}: "
                    "set the task in one place"
                )
            data["task"] = top.task
        Hyperparameters.check("hyperparameters", hparams)
        data_config = DataConfig.of(data)
        task_values = task_hyperparameters(top.per_task or {}, str(data_config.task))
        hp = dataclasses.replace(top, **task_values)
        check_length(hp.num_train_epochs, config.get("searcher") or {})
        settings = cls(
            hparams=hp,
            data=data_config,
            searcher=Searcher.of(config),
            periods=Periods.of(config, hp.global_batch_size),
            experiment_seed=(config.get("reproducibility") or {}).get("experiment_seed"),
        )
        if slots is not None:
            settings.check_batch_split(slots)
        return settings

    @classmethod
    def of_checkpoint(
        cls, checkpoint: str | os.PathLike, labels: Sequence[str] | None = None
    ) -> Settings:
        """The settings a checkpoint's trial trained with (its load_data.json); labels: the
        label names its state recorded (checkpointing.read), which need no training file."""
        saved = json.loads((pathlib.Path(checkpoint) / "load_data.json").read_text())
        settings = cls.of(saved["experiment_config"], saved["hparams"])
        return settings if labels is None else dataclasses.replace(settings, labels=tuple(labels))

    @functools.cached_property
    def task(self) -> GlueTask:
        """The task, built once, on first use: own data's `labels: infer` reads the training
        file (custom_task.task_from_config)."""
        data = self.data
        return custom_task.task_from_config(data.task, data.custom, data.data_dir, self.labels)

    @property
    def model_classes(self) -> ModelClasses:
        return get_model_classes(self.hparams.model_type)

    @property
    def early_stopping(self) -> bool:
        return self.hparams.early_stopping_patience is not None

    def key_of(self, name: str) -> str:
        """Where the task's value of a hyperparameter is set: per_task's entry, or the top."""
        per_task = self.hparams.per_task or {}
        entry = per_task_entry(per_task, str(self.data.task))
        if entry is not None and name in per_task[entry]:
            return f"hyperparameters.per_task.{entry}.{name}"
        return f"hyperparameters.{name}"

    def check_batch_split(self, slots: int) -> None:
        """Every slot (process) must get the same number of examples per optimizer step."""
        size = self.hparams.global_batch_size
        if size % slots:
            raise ConfigError(
                f"{self.key_of('global_batch_size')}: {size} examples do not split evenly across "
                f"{slots} slots (processes); use a multiple of {slots}"
            )


def _required(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING)


def _optional(cls: type) -> dict:
    return {
        f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
    }


REQUIRED_HPARAMS, OPTIONAL_HPARAMS = _required(Hyperparameters), _optional(Hyperparameters)
REQUIRED_DATA, OPTIONAL_DATA = _required(DataConfig), _optional(DataConfig)
RULES = {f.name: f.metadata["rule"] for f in dataclasses.fields(Hyperparameters)}
# What per_task may not change: the keys that pick the trial.
TRIAL_KEYS = ("task", "seed", "per_task")
LENGTH_UNITS = ("batches", "records", "epochs")  # of min_validation_period, min_checkpoint_period


def _with_defaults(section: str, values: dict, cls: type):
    """cls, a dataclass of a section's keys, from the section's values and cls's defaults."""
    return cls(**with_defaults(section, values, _required(cls), _optional(cls)))


def check_length(epochs: int, searcher: dict) -> None:
    """The run's length is hyperparameters.num_train_epochs, over which the LR schedule runs.

    A searcher that stops trials early (adaptive_asha) counts progress in searcher.time_metric
    up to searcher.max_time; those must be the same epochs, or its rungs would fall elsewhere
    than the trial's schedule (Determined itself only logs a warning).
    """
    time_metric, max_time = searcher.get("time_metric"), searcher.get("max_time")
    if time_metric is not None and (time_metric, max_time) != ("epochs", epochs):
        raise ConfigError(
            f"searcher: time_metric {time_metric!r} and max_time {max_time} must be 'epochs' and "
            f"{epochs}, the run's length (hyperparameters.num_train_epochs)"
        )


def _period(config: dict, key: str, global_batch_size: int) -> tuple[str, int]:
    length = config.get(key) or {}
    if not isinstance(length, dict) or len(length) > 1 or not set(length) <= set(LENGTH_UNITS):
        raise ConfigError(f"{key}: expected one of {', '.join(LENGTH_UNITS)} with a count")
    unit, count = next(iter(length.items()), ("epochs", 0))
    count = _count(f"{key}.{unit}", count, minimum=0)
    if count == 0:
        return ("epochs", 1)
    if unit == "records":
        return ("batches", max(count // global_batch_size, 1))
    return (unit, count)


def _count(key: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}: expected a whole number >= {minimum}, got {value!r}")
    return value


def per_task_entry(per_task: dict, task: str) -> str | None:
    """per_task's name for the task (data.task's spelling in any case), None if it has none."""
    return next((name for name in per_task if name.lower() == task.lower()), None)


def task_hyperparameters(per_task: dict, task: str) -> dict:
    """hyperparameters.per_task's entry for the task (data.task's spelling in any case)."""
    unknown = sorted(str(name) for name in per_task if name not in TASKS)
    if unknown:
        raise ConfigError(
            f"hyperparameters.per_task: unknown GLUE task(s) {', '.join(unknown)}; "
            f"choose from {', '.join(TASKS)}"
        )
    name = per_task_entry(per_task, task)
    if name is None:
        return {}
    section, values = f"hyperparameters.per_task.{name}", per_task[name]
    if not isinstance(values, dict):
        raise ConfigError(f"{section}: expected hyperparameter: value pairs, got {values!r}")
    optional = {key: v for key, v in OPTIONAL_HPARAMS.items() if key not in TRIAL_KEYS}
    with_defaults(section, values, (), {**dict.fromkeys(REQUIRED_HPARAMS), **optional})
    Hyperparameters.check(section, values)
    return values
