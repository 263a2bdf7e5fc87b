"""Padding-free (packed) batches: a batch's examples as one row of real tokens.

A packed batch holds every example's tokens back to back in one row ([1, T]), with position ids
that restart at each example, its token types, the examples' boundaries (`cu_seqlens`, int32,
as FlashAttention takes them) and each example's first token (`first_tokens`), where the
classification heads read it. The attention registered here ("packed") never crosses an
example: on CUDA in bf16 or fp16 it is FlashAttention-2 with variable lengths (torch's aten
flash kernel, attention dropout included); elsewhere (CPUs, fp32) each example is laid out in
a padded block for the attention alone, so the dense layers still see real tokens only.

    collate = PackedCollator(with_token_types=True, position_offset=0)
    model = use_packing(model)                       # BERT, RoBERTa or DistilBERT
    outputs = model(**model_inputs(collate(items), max_seqlen=128))  # logits [B, labels], loss

With `bucket` set (for CUDA graphs), the row is padded to a declared size (bucket_sizes): the
padding is one more segment of its own, so it attends to itself only, and nothing reads it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface

from constants import ConfigError

ATTENTION = "packed"
# model_type -> (the encoder module whose output the head reads, first position id): RoBERTa
# numbers positions from its padding index + 1 (create_position_ids_from_input_ids).
ENCODERS = {
    "bert": ("bert.encoder", 0),
    "roberta": ("roberta.encoder", None),
    "distilbert": ("distilbert.transformer", 0),
}
FLASH_DTYPES = (torch.float16, torch.bfloat16)


def position_offset(config) -> int:
    """The position id of each example's first token in this model."""
    offset = ENCODERS[config.model_type][1]
    return config.pad_token_id + 1 if offset is None else offset


def check_packable(config) -> None:
    if config.model_type not in ENCODERS:
        raise ConfigError(
            f"hyperparameters.packing: the model is {config.model_type!r}; packed batches serve "
            f"{', '.join(ENCODERS)} only; set packing: false (or auto) for this model"
        )


def bucket_sizes(batch_size: int, max_length: int, step: int) -> tuple[int, ...]:
    """The packed row lengths a batch may take: multiples of step, up to a batch of
    max_length examples and the one padding token that the largest bucket still needs."""
    largest = batch_size * max_length + 1
    return tuple(range(step, -(-largest // step) * step + 1, step))


class PackedCollator:
    """Concatenates a batch's examples into one packed row (see the module docstring).

    bucket: round the row's length up to a multiple of it (bucket_sizes), at least one padding
    token past the last example; at most max_length, so the padding segment is no longer than
    an example may be (the kernels' max_seqlen). None: the row is the real tokens exactly.
    """

    def __init__(
        self,
        with_token_types: bool,
        position_offset: int,
        pad_id: int = 0,
        bucket: int | None = None,
    ) -> None:
        self.with_token_types = with_token_types
        self.position_offset = position_offset
        self.pad_id = pad_id
        self.bucket = bucket

    def __call__(self, items: Sequence[tuple]) -> dict[str, torch.Tensor]:
        ids, types, labels, splits = zip(*items, strict=True)
        lengths = torch.tensor([len(row) for row in ids])
        total = int(lengths.sum())
        padding = -(-(total + 1) // self.bucket) * self.bucket - total if self.bucket else 0
        segments = torch.cat([lengths, torch.tensor([padding])]) if padding else lengths
        cu_seqlens = torch.zeros(len(segments) + 1, dtype=torch.int32)
        torch.cumsum(segments, 0, out=cu_seqlens[1:])
        starts = cu_seqlens[:-1].long()
        positions = torch.arange(total + padding) - torch.repeat_interleave(starts, segments)
        positions[:total] += self.position_offset
        batch = {
            "labels": torch.stack(labels),  # first: Determined counts a batch by its first value
            "input_ids": self._row(ids, self.pad_id, padding),
            "position_ids": positions[None],
            "cu_seqlens": cu_seqlens,
            "first_tokens": starts[: len(ids)],
            "split": torch.tensor(splits),
        }
        if self.with_token_types:
            batch["token_type_ids"] = self._row(types, 0, padding)
        return batch

    @staticmethod
    def _row(rows: Sequence[torch.Tensor], pad_value: int, padding: int) -> torch.Tensor:
        tail = [torch.full((padding,), pad_value, dtype=rows[0].dtype)] if padding else []
        return torch.cat([*rows, *tail]).long()[None]


def example_lengths(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each example's number of tokens (the padding segment left out)."""
    return batch["cu_seqlens"].diff()[: len(batch["first_tokens"])]


def model_inputs(batch: dict[str, torch.Tensor], max_seqlen: int) -> dict:
    """The keyword arguments a packed model takes for a packed batch (batch["split"] aside).

    max_seqlen bounds every segment (max_seq_length): a constant, so the step reads nothing
    back from the GPU, and one CUDA graph serves every batch of a bucket.
    """
    inputs = {k: v for k, v in batch.items() if k not in ("split", "cu_seqlens")}
    return {
        **inputs,
        "cu_seq_lens_q": batch["cu_seqlens"],
        "max_length_q": max_seqlen,
    }


def packed_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    *,
    cu_seq_lens_q: torch.Tensor,
    max_length_q: int,
    **_,
) -> tuple[torch.Tensor, None]:
    """Attention within each segment of a packed row: query, key, value [1, heads, T, dim] in,
    [1, T, heads, dim] out, as transformers' attention functions return it."""
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # [T, heads, dim]
    if q.is_cuda and q.dtype in FLASH_DTYPES:
        out = torch.ops.aten._flash_attention_forward(
            q, k, v, cu_seq_lens_q, cu_seq_lens_q, max_length_q, max_length_q, dropout, False,
            False, scale=scaling,
        )[0]  # fmt: skip
    else:
        out = blockwise_attention(module, q, k, v, cu_seq_lens_q, scaling)
    return out[None], None


def blockwise_attention(
    module: nn.Module,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """Eager attention with each segment in a block of its own, padded to the longest: the
    arithmetic of the padded model, its attention dropout (the module's own) included."""
    lengths = cu_seqlens.diff().long()
    count, width = len(lengths), int(lengths.max())
    segment = torch.repeat_interleave(torch.arange(count, device=q.device), lengths)
    slot = segment * width + torch.arange(len(q), device=q.device) - cu_seqlens[segment]

    def blocks(x: torch.Tensor) -> torch.Tensor:  # [T, heads, dim] -> [count, heads, width, dim]
        padded = x.new_zeros(count * width, *x.shape[1:]).index_copy(0, slot, x)
        return padded.view(count, width, *x.shape[1:]).transpose(1, 2)

    scores = torch.matmul(blocks(q), blocks(k).transpose(2, 3)) * scaling
    outside = torch.arange(width, device=q.device) >= lengths[:, None]
    scores = scores.masked_fill(outside[:, None, None, :], torch.finfo(scores.dtype).min)
    probabilities = module.dropout(nn.functional.softmax(scores, dim=-1))
    out = torch.matmul(probabilities, blocks(v)).transpose(1, 2)  # [count, width, heads, dim]
    return out.reshape(count * width, *q.shape[1:])[slot]


def no_mask(*args, **kwargs) -> None:
    """Packed attention takes the segments from cu_seqlens, no mask tensor."""
    return None


AttentionInterface.register(ATTENTION, packed_attention)
AttentionMaskInterface.register(ATTENTION, no_mask)


def read_first_tokens(module: nn.Module, args: tuple, kwargs: dict, output):
    """Forward hook on the encoder: its output becomes each example's first token, [B, 1,
    hidden], which the model's own head then reads as it reads position 0 of a padded batch."""
    output.last_hidden_state = output.last_hidden_state[0, kwargs["first_tokens"]][:, None]
    return output


def serves(config) -> bool:
    """Whether packed batches can feed a model of this config's type."""
    return config.model_type in ENCODERS


def use_packing(model: nn.Module) -> nn.Module:
    """The model, taking packed batches from now on (model_inputs): packed attention in every
    layer, its classification head fed each example's first token."""
    check_packable(model.config)
    encoder = model.get_submodule(ENCODERS[model.config.model_type][0])
    encoder.register_forward_hook(read_first_tokens, with_kwargs=True)
    model.set_attn_implementation(ATTENTION)
    return model
