"""How examples become batches: the collator the levers call for, and Determined's loader."""

from __future__ import annotations

import torch
from determined import pytorch

import constants
import data
from bert_glue.trial import packing, trial_config


def collator(hp: dict, levers: trial_config.Levers, tokenizer, model: torch.nn.Module):
    """Packed batches, their length bucketed for CUDA graphs; or padded batches."""
    token_types = constants.feeds_token_types(hp["model_type"], tokenizer, model)
    if levers.packing:
        return packing.PackedCollator(
            token_types,
            position_offset=packing.position_offset(model.config),
            pad_id=tokenizer.pad_token_id,
            bucket=hp["max_seq_length"] if levers.cuda_graphs else None,
        )
    return data.Collator(
        tokenizer,
        with_token_types=token_types,
        pad_to=hp["max_seq_length"] if hp["pad_to_max_length"] else None,
        multiple_of=hp["pad_to_multiple_of"],
        max_length=hp["max_seq_length"],
    )


def loader(
    dataset: torch.utils.data.Dataset, collate, workers: int, cuda: bool, **kwargs
) -> pytorch.DataLoader:
    """Determined's DataLoader (it shards and resumes); pinned memory for the GPU's copies."""
    return pytorch.DataLoader(
        dataset,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=cuda,
        persistent_workers=workers > 0,
        **kwargs,
    )
