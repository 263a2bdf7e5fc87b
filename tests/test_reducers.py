"""Determined's reducers: the training loss's mean over slots, and where it diverged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bert_glue.trial import callbacks, metrics

RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 2, 101)
LOGITS = RNG.normal(size=(101, 2)).astype(np.float32) + 0.8 * np.eye(2)[LABELS]


def training_loss(describe=lambda batch: f"at {batch}") -> callbacks.TrainingLoss:
    return callbacks.TrainingLoss(describe)


def test_training_loss_is_the_periods_mean_over_every_slot():
    slots = [training_loss(), training_loss()]
    for batch in range(3):
        for rank, slot in enumerate(slots):
            slot.update(torch.tensor(float(batch + 10 * rank)), batch)
    per_slot = [slot.per_slot_reduce() for slot in slots]
    assert per_slot == [(3.0, 3, None), (33.0, 3, None)]
    assert slots[0].cross_slot_reduce(per_slot) == 6.0


def test_a_loss_that_is_not_finite_names_its_first_batch_on_any_slot():
    slots = [training_loss(lambda batch: f"learning rate {batch / 10}"), training_loss()]
    losses = [[0.5, 0.4, float("inf"), float("nan")], [0.5, float("nan"), 0.3, 0.2]]
    for rank, slot in enumerate(slots):
        for batch, loss in enumerate(losses[rank], start=100):
            slot.update(torch.tensor(loss), batch)
    per_slot = [slot.per_slot_reduce() for slot in slots]
    assert [str(bad) for *_, bad in per_slot] == ["(102, inf)", "(101, nan)"]
    message = (
        r"^the training loss is nan at batch 102 \(learning rate 10.1\): training diverged; "
        r"lower hyperparameters.learning_rate, or train in bf16 or fp32$"
    )
    with pytest.raises(metrics.Diverged, match=message):
        slots[0].cross_slot_reduce(per_slot)
