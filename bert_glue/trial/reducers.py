"""Determined's metric reducers: the training loss and the validation metrics, each reduced
across ranks once per period (the arithmetic is metrics.py's)."""

from __future__ import annotations

from collections.abc import Callable
from math import isfinite

import numpy as np
import torch
from determined import pytorch

from bert_glue.trial.metrics import Diverged, check_finite, compute_split_metrics
from constants import GlueTask


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
        bad = next(((batch, loss) for batch, loss in batches if not isfinite(loss)), None)
        return sum(losses), len(losses), bad

    def cross_slot_reduce(self, per_slot: list[tuple]) -> float:
        totals, counts, bad = zip(*per_slot, strict=True)
        bad = [b for b in bad if b is not None]
        if bad:
            batch, loss = min(bad)
            raise Diverged(
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
        results = compute_split_metrics(self.task, splits, logits, labels)
        return check_finite(results)  # nothing NaN reaches the master
