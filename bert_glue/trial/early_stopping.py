"""Early stopping: the trial ends once its searcher metric has stopped improving.

With hyperparameters.early_stopping_patience set, a validation improves when its
searcher.metric beats the best value so far by more than early_stopping_min_delta, in the
direction of searcher.smaller_is_better (a NaN never does). After `patience` validations in a
row without improvement the trial stops there, as adaptive ASHA stops it (boundary_stop.py):
every rank at the same boundary, no batch trained after it, exit code 0. The checkpoint taken at
its best validation (checkpoint_policy best) stays its best. A local run also checkpoints where
it stops: --resume from that checkpoint finds the patience run out (resumed_reason) and trains
nothing; a cluster never resumes a completed trial.
"""

from __future__ import annotations

import dataclasses
import math

import determined as det
from determined import pytorch

from bert_glue.determined_0_38 import boundary_stop
from bert_glue.trial import metrics

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

    def __init__(self, context: pytorch.PyTorchTrialContext, hp: dict, total_batches: int) -> None:
        searcher = context.get_experiment_config()["searcher"]
        self.context = context
        self.metric = searcher["metric"]
        self.total_batches = total_batches
        self.plateau: Plateau | None = None
        if hp["early_stopping_patience"] is not None:
            self.plateau = Plateau(
                hp["early_stopping_patience"],
                hp["early_stopping_min_delta"],
                metrics.smaller_is_better(searcher),
            )
        self.batches_trained = 0
        self.reason: str | None = None

    def on_trial_startup(self, first_batch_idx: int, checkpoint_uuid: str | None) -> None:
        self.batches_trained = first_batch_idx
        if self.plateau is not None:
            local = det.get_cluster_info() is None
            boundary_stop.stop_at_boundaries(self.context, lambda: self.reason, local)

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
