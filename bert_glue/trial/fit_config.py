"""Trainer.fit's arguments from the experiment config: the run's length, its periods and the
checkpoint policy, checked as the rest of the config is (one ConfigError naming the key)."""

from __future__ import annotations

from determined import pytorch

from bert_glue.trial import metrics, trial_config
from constants import ConfigError, GlueTask


def checked_length(hparams: dict, searcher: dict, task: GlueTask, slots: int) -> pytorch.Epoch:
    """The run's length, once the batch splits over the slots and the searcher suits the task."""
    trial_config.check_batch_split(hparams, task.name, slots)
    metrics.check_searcher(task, searcher)
    return train_length(hparams, searcher)


def train_length(hparams: dict, searcher: dict) -> pytorch.Epoch:
    """The run's length: hyperparameters.num_train_epochs, over which the LR schedule runs.

    A searcher that stops trials early (adaptive_asha) counts progress in searcher.time_metric
    up to searcher.max_time; those must be the same epochs, or its rungs would fall elsewhere
    than the trial's schedule (Determined itself only logs a warning).
    """
    epochs = hparams["num_train_epochs"]
    time_metric, max_time = searcher.get("time_metric"), searcher.get("max_time")
    if time_metric is not None and (time_metric, max_time) != ("epochs", epochs):
        raise ConfigError(
            f"searcher: time_metric {time_metric!r} and max_time {max_time} must be 'epochs' and "
            f"{epochs}, the run's length (hyperparameters.num_train_epochs)"
        )
    return pytorch.Epoch(epochs)


LENGTH_UNITS = ("batches", "records", "epochs")  # of min_validation_period, min_checkpoint_period
LOCAL_REPORTING_BATCHES = 20  # scheduling_unit when a local config sets none (a cluster's: 100)


def fit_options(config: dict, global_batch_size: int, local: bool) -> dict:
    """Trainer.fit's periods and checkpoint policy from the experiment config's
    min_validation_period, min_checkpoint_period, checkpoint_policy, scheduling_unit and
    perform_initial_validation. In script mode Determined 0.38.1's Trainer reads none of them
    (only its legacy harness did), so the trial passes them on.

    Unset periods (or Determined's default of 0 batches) validate and checkpoint every epoch.
    Locally there is no experiment to compare a validation with, so checkpoint_policy "best"
    (Determined's default) becomes "none": checkpoints come every min_checkpoint_period.
    """
    policy = config.get("checkpoint_policy") or "best"
    if policy not in ("best", "all", "none"):
        raise ConfigError(f"checkpoint_policy: {policy!r} is not one of best, all, none")
    reporting = config.get("scheduling_unit")
    if reporting is None:
        reporting = LOCAL_REPORTING_BATCHES if local else 100  # the master's default
    return {
        "validation_period": _period(config, "min_validation_period", global_batch_size),
        "checkpoint_period": _period(config, "min_checkpoint_period", global_batch_size),
        "checkpoint_policy": "none" if local and policy == "best" else policy,
        "reporting_period": pytorch.Batch(_count("scheduling_unit", reporting)),
        "step_zero_validation": bool(config.get("perform_initial_validation")),
    }


def _period(config: dict, key: str, global_batch_size: int) -> pytorch.TrainUnit:
    length = config.get(key) or {}
    if not isinstance(length, dict) or len(length) > 1 or not set(length) <= set(LENGTH_UNITS):
        raise ConfigError(f"{key}: expected one of {', '.join(LENGTH_UNITS)} with a count")
    unit, count = next(iter(length.items()), ("epochs", 0))
    count = _count(f"{key}.{unit}", count, minimum=0)
    if count == 0:
        return pytorch.Epoch(1)
    if unit == "epochs":
        return pytorch.Epoch(count)
    return pytorch.Batch(count if unit == "batches" else max(count // global_batch_size, 1))


def _count(key: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}: expected a whole number >= {minimum}, got {value!r}")
    return value
