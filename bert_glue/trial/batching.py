"""How examples become batches: padded ones, padding-free (packed) ones, grouped by length,
and Determined's loader over them.

Padded batches (Collator) pad each batch to its longest example, rounded up. Packed batches
(PackedCollator) need no padding at all. A packed batch holds every example's tokens back to
back in one row ([1, T]), with position ids that restart at each example, its token types, the
examples' boundaries (`cu_seqlens`, int32, as FlashAttention takes them) and each example's
first token (`first_tokens`), where the classification heads read it. The attention registered
here never crosses an example. Its kernel is the levers' packed_attention (levers.py says what
each needs): FlashAttention-2 with variable lengths on GPUs from compute capability 8.0 in bf16
or fp16; the memory-efficient kernel with variable lengths on older GPUs (V100, T4); elsewhere
(CPUs) each example laid out in a padded block for the attention alone. The dense layers see
real tokens only, whichever kernel attends.

    collate = PackedCollator(with_token_types=True, position_offset=0)
    model = use_packing(model, "blockwise_attention")  # BERT, RoBERTa or DistilBERT
    outputs = model(**model_inputs(collate(items), max_seqlen=128))  # logits [B, labels], loss

With `bucket` set (for CUDA graphs), the row is padded to a declared size (bucket_sizes): the
padding is one more segment of its own, so it attends to itself only, and nothing reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from determined import pytorch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Sampler
from transformers import AttentionInterface, AttentionMaskInterface

from bert_glue.trial.levers import Levers
from bert_glue.trial.settings import Settings
from constants import PACKED_ENCODERS, POSITIONS_AFTER_PAD, ConfigError, feeds_token_types


class Collator:
    """Pads a batch to its longest example (or to a fixed length) on the tokenizer's side.

    multiple_of rounds the padded length up: fewer distinct shapes, each of which costs the
    kernel libraries a plan on its first use, and lengths that suit the matrix units.
    """

    def __init__(
        self,
        tokenizer,
        with_token_types: bool,
        pad_to: int | None = None,
        multiple_of: int = 1,
        max_length: int | None = None,
    ) -> None:
        self.pad_id = tokenizer.pad_token_id
        self.pad_type_id = tokenizer.pad_token_type_id
        self.side = tokenizer.padding_side
        self.with_token_types = with_token_types
        self.pad_to = pad_to
        self.multiple_of = multiple_of
        self.max_length = max_length

    def _width(self, rows: Sequence[torch.Tensor]) -> int:
        """pad_to, else the longest row rounded up to multiple_of (at most max_length)."""
        if self.pad_to:
            return self.pad_to
        width = -(-max(len(row) for row in rows) // self.multiple_of) * self.multiple_of
        return min(width, self.max_length or width)

    def _pad(self, rows: Sequence[torch.Tensor], value: int, width: int) -> torch.Tensor:
        padded = pad_sequence(rows, batch_first=True, padding_value=value, padding_side=self.side)
        extra = width - padded.shape[1]
        if extra > 0:
            padded = F.pad(padded, (extra, 0) if self.side == "left" else (0, extra), value=value)
        return padded.long()  # the cache stores narrow integer types

    def __call__(self, items: Sequence[tuple]) -> dict[str, torch.Tensor]:
        ids, types, labels, splits = zip(*items, strict=True)
        width = self._width(ids)
        input_ids = self._pad(ids, self.pad_id, width)
        lengths = torch.tensor([len(row) for row in ids])
        positions = torch.arange(input_ids.shape[1])
        if self.side == "left":
            positions = positions.flip(0)
        batch = {
            "input_ids": input_ids,
            "attention_mask": (positions < lengths[:, None]).long(),
            "labels": torch.stack(labels),
            "split": torch.tensor(splits),
        }
        if self.with_token_types:
            batch["token_type_ids"] = self._pad(types, self.pad_type_id, width)
        return batch


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffled batches of similar length, so dynamic padding wastes little.

    Each pass shuffles all indices, sorts windows of `batch_size * group_batches` examples by
    length, cuts them into batches and shuffles the batches. The generator is seeded, so the
    sequence of passes is the same on every run; Determined's DataLoader repeats, shards and
    skips (on resume) these batches like any other batch sampler's.
    """

    def __init__(
        self, lengths: torch.Tensor, batch_size: int, seed: int, group_batches: int = 50
    ) -> None:
        self.lengths = lengths
        self.batch_size = batch_size
        self.window = batch_size * group_batches
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.lengths), generator=self.generator)
        batches = []
        for start in range(0, len(order), self.window):
            window = order[start : start + self.window]
            window = window[torch.argsort(self.lengths[window], descending=True, stable=True)]
            batches += [w.tolist() for w in window.split(self.batch_size)]
        for b in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[b]


def position_offset(config) -> int:
    """The position id of each example's first token in this model."""
    return config.pad_token_id + 1 if config.model_type in POSITIONS_AFTER_PAD else 0


def check_packable(config) -> None:
    if config.model_type not in PACKED_ENCODERS:
        raise ConfigError(
            f"hyperparameters.packing: the model is {config.model_type!r}; packed batches serve "
            f"{', '.join(PACKED_ENCODERS)} only; set packing: false (or auto) for this model"
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


def packed(kernel: Callable) -> Callable:
    """transformers' attention function for packed rows, around a kernel that attends within
    each segment: query, key, value [1, heads, T, dim] in, [1, T, heads, dim] out."""

    def attention(
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
        scaling = query.size(-1) ** -0.5 if scaling is None else scaling
        q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # [T, heads, dim]
        return kernel(module, q, k, v, cu_seq_lens_q, max_length_q, dropout, scaling)[None], None

    return attention


def flash_attention(module, q, k, v, cu_seqlens, max_seqlen, dropout, scaling) -> torch.Tensor:
    """FlashAttention-2 with variable lengths (torch's aten kernel, dropout included): CUDA
    GPUs from compute capability 8.0, in bf16 or fp16 (levers.REQUIREMENTS)."""
    return torch.ops.aten._flash_attention_forward(
        q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, dropout, False, False,
        scale=scaling,
    )[0]  # fmt: skip


def memory_efficient_attention(
    module, q, k, v, cu_seqlens, max_seqlen, dropout, scaling
) -> torch.Tensor:
    """The memory-efficient kernel (torch's cutlass kernel, the one SDPA takes on V100 and T4)
    with variable lengths, dropout included: CUDA GPUs from compute capability 5.0, bf16 from
    8.0. Its backward needs the log-sum-exp, computed only when a gradient will be taken."""
    return torch.ops.aten._efficient_attention_forward(
        q[None], k[None], v[None], None, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, dropout,
        0, q.requires_grad, scale=scaling,
    )[0][0]  # fmt: skip


def blockwise_attention(
    module: nn.Module,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    dropout: float,
    scaling: float,
) -> torch.Tensor:
    """Eager attention with each segment in a block of its own, padded to the longest: the
    arithmetic of the padded model, its attention dropout (the module's own) included. Any
    device, any precision: the CPUs' kernel, and the fallback of the others."""
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


# levers.PACKED_KERNELS' features -> the attention implementation each registers.
KERNELS = {
    "flash_attention": flash_attention,
    "memory_efficient_attention": memory_efficient_attention,
    "blockwise_attention": blockwise_attention,
}
for _feature, _kernel in KERNELS.items():
    AttentionInterface.register(f"packed_{_feature}", packed(_kernel))
    AttentionMaskInterface.register(f"packed_{_feature}", no_mask)


def read_first_tokens(module: nn.Module, args: tuple, kwargs: dict, output):
    """Forward hook on the encoder: its output becomes each example's first token, [B, 1,
    hidden], which the model's own head then reads as it reads position 0 of a padded batch."""
    output.last_hidden_state = output.last_hidden_state[0, kwargs["first_tokens"]][:, None]
    return output


def use_packing(model: nn.Module, kernel: str) -> nn.Module:
    """The model, taking packed batches from now on (model_inputs): packed attention with the
    kernel (a KERNELS name) in every layer, its classification head fed each example's first
    token."""
    check_packable(model.config)
    encoder = model.get_submodule(PACKED_ENCODERS[model.config.model_type])
    encoder.register_forward_hook(read_first_tokens, with_kwargs=True)
    model.set_attn_implementation(f"packed_{kernel}")
    return model


def collator(settings: Settings, levers: Levers, tokenizer, model: nn.Module):
    """Packed batches, their length bucketed for CUDA graphs; or padded batches."""
    hp = settings.hparams
    token_types = feeds_token_types(hp.model_type, tokenizer, model)
    if levers.packing:
        return PackedCollator(
            token_types,
            position_offset=position_offset(model.config),
            pad_id=tokenizer.pad_token_id,
            bucket=hp.max_seq_length if levers.cuda_graphs else None,
        )
    return Collator(
        tokenizer,
        with_token_types=token_types,
        pad_to=hp.max_seq_length if hp.pad_to_max_length else None,
        multiple_of=hp.pad_to_multiple_of,
        max_length=hp.max_seq_length,
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
