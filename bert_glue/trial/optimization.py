"""The trial's optimizer and schedule, as run_glue builds them: AdamW with no weight decay on
biases and LayerNorm weights; a linear warmup, then a linear decay to 0."""

from __future__ import annotations

import torch
from transformers import get_linear_schedule_with_warmup

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight")


def adamw(model: torch.nn.Module, hp: dict, fused: bool) -> torch.optim.AdamW:
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decayed = [p for n, p in params if not any(nd in n for nd in NO_DECAY)]
    kept = [p for n, p in params if any(nd in n for nd in NO_DECAY)]
    groups = [
        {"params": decayed, "weight_decay": hp["weight_decay"]},
        {"params": kept, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=hp["learning_rate"], eps=hp["adam_epsilon"], fused=fused)


def linear_schedule(
    optimizer: torch.optim.Optimizer, hp: dict, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over warmup_ratio of all optimizer steps, then linear decay to 0."""
    warmup_steps = round(hp["warmup_ratio"] * total_steps)
    return get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
