"""What the trial gives Determined to call once per period: its callbacks (early stopping,
portable checkpoints, the task's labels) and its metric reducers (the training loss, the
validation metrics).

Early stopping: the trial ends once its searcher metric has stopped improving. With
hyperparameters.early_stopping_patience set, a validation improves when its searcher.metric
beats the best value so far by more than early_stopping_min_delta, in the direction of
searcher.smaller_is_better (a NaN never does). After `patience` validations in a row without
improvement the trial stops there, as adaptive ASHA stops it (workarounds.stop_at_boundaries):
every rank at the same boundary, no batch trained after it, exit code 0. The checkpoint taken at
its best validation (checkpoint_policy best) stays its best. A local run also checkpoints where
it stops: --resume from that checkpoint finds the patience run out (resumed_reason) and trains
nothing; a cluster never resumes a completed trial.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Callable

import numpy as np
import torch
from determined import pytorch
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from bert_glue.determined_0_38 import workarounds
from bert_glue.trial import checkpointing, metrics
from bert_glue.trial.settings import Settings
from constants import ConfigError, GlueTask

PROGRESS = ("best", "best_batch", "stale")  # what a checkpoint keeps of a Plateau


@dataclasses.dataclass
class Plateau:
    """Validations of one metric since it last improved."""

    patience: int
    min_delta: float
    smaller_is_better: bool
    best: float | None = None  # the value an improvement must beat
    best_batch: int | None = None  # batches trained at its validation
    stale: int = 0  # validations since, none of which improved on it

    def update(self, value: float, batch: int) -> bool:
        """Takes the value of the validation after `batch` batches; whether patience ran out."""
        if self.improves(value):
            self.best, self.best_batch, self.stale = value, batch, 0
        else:
            self.stale += 1
        return self.stale >= self.patience

    def improves(self, value: float) -> bool:
        if self.best is None:
            return not math.isnan(value)
        gain = self.best - value if self.smaller_is_better else value - self.best
        return gain > self.min_delta  # False for a NaN

    def reason(self, metric: str) -> str:
        """Why the trial stops, once patience has run out."""
        validations = "validation" if self.patience == 1 else "validations"
        if self.best is None:
            best = "none was a number"
        else:
            best = f"best {self.best:.4g} at batch {self.best_batch}"
        return (
            f"stopped early: {metric} did not improve by more than {self.min_delta:g} in "
            f"{self.patience} {validations} ({best})"
        )


class EarlyStopping(pytorch.PyTorchCallback):
    """Ends the trial once searcher.metric has plateaued (see the module docstring); does
    nothing when hyperparameters.early_stopping_patience is null. `reason` says why it stopped
    the trial, once it has."""

    def __init__(
        self, context: pytorch.PyTorchTrialContext, settings: Settings, total_batches: int
    ) -> None:
        self.context = context
        self.metric = settings.searcher.metric
        self.total_batches = total_batches
        self.plateau: Plateau | None = None
        if settings.early_stopping:
            self.plateau = Plateau(
                settings.hparams.early_stopping_patience,
                settings.hparams.early_stopping_min_delta,
                settings.searcher.smaller_is_better,
            )
        self.batches_trained = 0
        self.reason: str | None = None

    def on_trial_startup(self, first_batch_idx: int, checkpoint_uuid: str | None) -> None:
        self.batches_trained = first_batch_idx
        if self.plateau is not None:
            local = workarounds.cluster_trial() is None
            workarounds.stop_at_boundaries(self.context, lambda: self.reason, local)

    def on_training_workload_end(self, avg_metrics: dict, batch_metrics: list[dict]) -> None:
        self.batches_trained = avg_metrics["batches"]  # every rank has the chief's metrics

    def on_validation_end(self, metrics: dict) -> None:
        if self.plateau is None:
            return
        ran_out = self.plateau.update(float(metrics[self.metric]), self.batches_trained)
        # At the last batch the run ends anyway, and a stop would skip its final checkpoint.
        if ran_out and self.batches_trained < self.total_batches:
            self.reason = self.plateau.reason(self.metric)

    def resumed_reason(self, state_dict: dict, batches_trained: int) -> str | None:
        """Why a run resumed from a checkpoint after batches_trained, holding state_dict, had
        stopped early, if its patience (this trial's: it may have been raised) had run out."""
        self.load_state_dict(state_dict)
        plateau = self.plateau
        if plateau is None or plateau.stale < plateau.patience:
            return None
        return plateau.reason(self.metric) if batches_trained < self.total_batches else None

    def state_dict(self) -> dict:
        """The count so far, so that a resumed trial goes on counting."""
        if self.plateau is None:
            return {}
        return {name: getattr(self.plateau, name) for name in PROGRESS}

    def load_state_dict(self, state_dict: dict) -> None:
        if self.plateau is not None and state_dict:  # none from a run without early stopping
            for name in PROGRESS:
                setattr(self.plateau, name, state_dict[name])


# The trial's own PyTorchCallbacks: what its checkpoints hold beyond Determined's defaults.


class PortableCheckpoints(pytorch.PyTorchCallback):
    """Checkpoints that load anywhere. The weights are saved without DDP's "module." prefix, so
    that a checkpoint loads alike in one process (Trainer or
    pytorch.load_trial_from_checkpoint_path) or in several (where Determined adds the prefix
    back). Beside them go the model's config and its tokenizer (checkpointing.MODEL_FILES), so
    that predict.py and export.py need only the checkpoint, not data.model_name_or_path, which
    names a folder or a Hub model where the trial ran."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig) -> None:
        self.tokenizer, self.config = tokenizer, config

    def on_checkpoint_save_start(self, checkpoint: dict) -> None:
        for state in checkpoint["models_state_dict"]:
            torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state, "module.")

    def on_checkpoint_write_end(self, checkpoint_dir: str) -> None:
        # Determined calls this on the chief only, before it writes metadata.json.
        staging = pathlib.Path(checkpoint_dir) / f".{checkpointing.MODEL_FILES}.partial"
        self.config.save_pretrained(staging)
        self.tokenizer.save_pretrained(staging)
        staging.rename(staging.with_name(checkpointing.MODEL_FILES))  # whole, or not there


class TaskLabels(pytorch.PyTorchCallback):
    """Records the task's label names in the checkpoint (state_dict.pth, "callbacks"), where
    checkpointing.read reads a custom task's back: inferred ones too, in the order trained."""

    def __init__(self, task: GlueTask) -> None:
        self.labels = list(task.labels)

    def state_dict(self) -> dict:
        return {"labels": self.labels}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict["labels"] != self.labels:
            raise ConfigError(
                f"data.custom.labels: the checkpoint was trained with the labels "
                f"{state_dict['labels']}, not {self.labels}; resume with the same labels"
            )


# Determined's metric reducers: the training loss and the validation metrics, each reduced
# across ranks once per period (the arithmetic is metrics.py's).


class TrainingLoss(pytorch.MetricReducer):
    """The mean training loss of a reporting period, read from the device once per period.

    A tensor that train_batch returns is copied to the host by Determined at once, which makes
    the host wait for the GPU every batch; this keeps each batch's loss where it is until the
    period ends. A loss that is not finite then stops the run, naming its batch and what
    describe(batch) says of it (the learning rate and precision).
    """

    def __init__(self, describe: Callable[[int], str]) -> None:
        self.describe = describe
        self.reset()

    def reset(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.batches: list[int] = []

    def update(self, loss: torch.Tensor, batch_idx: int) -> None:
        self.losses.append(loss.detach())
        self.batches.append(batch_idx)

    def per_slot_reduce(self) -> tuple[float, int, tuple[int, float] | None]:
        losses = torch.stack(self.losses).float().tolist() if self.losses else []
        batches = zip(self.batches, losses, strict=True)
        bad = next(((batch, loss) for batch, loss in batches if not math.isfinite(loss)), None)
        return sum(losses), len(losses), bad

    def cross_slot_reduce(self, per_slot: list[tuple]) -> float:
        totals, counts, bad = zip(*per_slot, strict=True)
        bad = [b for b in bad if b is not None]
        if bad:
            batch, loss = min(bad)
            raise metrics.Diverged(
                f"the training loss is {loss} at batch {batch + 1} ({self.describe(batch)}): "
                "training diverged; lower hyperparameters.learning_rate, or train in bf16 or fp32"
            )
        return sum(totals) / sum(counts)


class GlueMetricReducer(pytorch.MetricReducer):
    """Gathers every rank's logits and labels, then computes metrics over the whole dev set.

    Determined's DataLoader gives each rank whole, disjoint batches of the dev set, so the
    union of all ranks' rows is the dev set exactly once, whatever its size.
    """

    def __init__(self, task: GlueTask) -> None:
        self.task = task
        self.reset()

    def reset(self) -> None:
        self.splits, self.logits, self.labels = [], [], []

    def update(self, splits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.splits.append(splits.cpu().numpy())
        self.logits.append(logits.float().cpu().numpy())
        self.labels.append(labels.cpu().numpy())

    def per_slot_reduce(self) -> tuple:
        return tuple(np.concatenate(x) for x in (self.splits, self.logits, self.labels))

    def cross_slot_reduce(self, per_slot: list[tuple]) -> dict[str, float]:
        splits, logits, labels = (np.concatenate(x) for x in zip(*per_slot, strict=True))
        results = metrics.compute_split_metrics(self.task, splits, logits, labels)
        return metrics.check_finite(results)  # nothing NaN reaches the master
