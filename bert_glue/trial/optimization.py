"""The trial's optimizer: AdamW as run_glue builds it, with no weight decay on biases and
LayerNorm weights."""

from __future__ import annotations

import torch

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
