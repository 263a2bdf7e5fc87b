"""Fast dropout: a random mask at a quarter of torch's random draws, for CPUs.

torch's CPU dropout draws one random number per element (bernoulli_); here each 64-bit random
word yields the keep-or-drop decision of four elements, 16 bits each. Same distribution (to
2**-16 in p), same global torch generator, so per-batch seeding and exact resume work as
before. What it is worth: docs/performance.md.

    use_fast_dropout(model)  # every nn.Dropout, and eager attention's dropout where it can
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import eager_mask

# Eager attention, its probabilities dropped out by drop().
FAST_DROPOUT_ATTENTION = "eager_fast_dropout"


def drop(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """x with each element zeroed with probability p (in steps of 2**-16), the rest scaled up
    so that the expectation stays x; x itself when not training."""
    if not training or p == 0.0:
        return x
    threshold = round(p * 2**16)  # of the 2**16 values of a 16-bit draw, these many drop
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device)
    draws = words.random_(-(2**63), None).view(torch.int16)[: x.numel()].view(x.shape)
    # A mask in x's dtype holding 0 or the scale, as torch's dropout makes it: one product.
    scaled_mask = (draws >= threshold - 2**15).to(x.dtype).mul_(2**16 / (2**16 - threshold))
    return x * scaled_mask


class FastDropout(nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop(x, self.p, self.training)


def eager_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **_):
    """transformers' eager attention (softmax(QK^T * scaling + mask) V) with fast dropout."""
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probabilities = drop(nn.functional.softmax(scores, dim=-1), dropout, module.training)
    output = torch.matmul(probabilities, value).transpose(1, 2).contiguous()
    return output, probabilities


AttentionInterface.register(FAST_DROPOUT_ATTENTION, eager_attention)
# The additive mask eager attention takes:
AttentionMaskInterface.register(FAST_DROPOUT_ATTENTION, eager_mask)


def use_fast_dropout(model: nn.Module) -> None:
    """Every nn.Dropout of the model becomes a FastDropout, and eager attention, in models that
    take it from transformers' attention interface (BERT, RoBERTa, DistilBERT), drops out its
    probabilities the same way."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is nn.Dropout:
                setattr(module, name, FastDropout(child.p))
    if model.config._attn_implementation == "eager" and model._supports_attention_backend:
        model.set_attn_implementation(FAST_DROPOUT_ATTENTION)
