"""fast_dropout: torch's dropout distribution from fewer random draws, swapped into models."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import (
    AutoTokenizer,
    BertForSequenceClassification,
    XLNetConfig,
    XLNetForSequenceClassification,
)

import constants
import data
from bert_glue.trial import batching, fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_drops_at_rate_p_and_keeps_the_expectation(p):
    torch.manual_seed(0)
    out = fast_dropout.drop(torch.ones(1000, 2000), p)
    dropped = out == 0
    # 2M draws: the rate's standard deviation is below 3.6e-4; the step of p is 2**-16.
    assert dropped.float().mean().item() == pytest.approx(p, abs=2e-3)
    kept = out[~dropped]
    threshold = round(p * 2**16)
    assert torch.all(kept == 2**16 / (2**16 - threshold))
    assert out.mean().item() == pytest.approx(1.0, abs=4e-3)
    # Each 64-bit word decides four elements: every one of the four 16-bit slices drops at p.
    for slot in range(4):
        rate = dropped.flatten()[slot::4].float().mean().item()
        assert rate == pytest.approx(p, abs=4e-3), slot


def test_not_training_or_p_zero_is_the_identity():
    x = torch.randn(3, 5)
    assert fast_dropout.drop(x, 0.1, training=False) is x
    assert fast_dropout.drop(x, 0.0) is x


def test_masks_follow_the_global_seed_and_keep_the_dtype():
    x = torch.randn(4, 7, 9).bfloat16()
    masks = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        out = fast_dropout.drop(x, 0.1)
        assert out.dtype == torch.bfloat16 and out.shape == x.shape
        masks.append(out == 0)
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])


def test_gradient_is_the_scaled_mask():
    torch.manual_seed(0)
    x = torch.randn(64, 33, requires_grad=True)
    out = fast_dropout.drop(x, 0.2)
    out.sum().backward()
    scale = 2**16 / (2**16 - round(0.2 * 2**16))
    expected = (out != 0).float() * scale
    torch.testing.assert_close(x.grad, expected)
    torch.testing.assert_close(out, x.detach() * expected)


@pytest.fixture
def batch(tiny_model_dir, glue_dir) -> dict[str, torch.Tensor]:
    task = constants.TASKS["MRPC"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    features = data.featurize(data.read_examples(task, task.train, glue_dir), tokenizer, 32)
    dataset = data.GlueDataset(features)
    collated = batching.Collator(tokenizer, with_token_types=True)([dataset[i] for i in range(16)])
    return {k: v for k, v in collated.items() if k != "split"}


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_a_bert_model_computes_the_same_without_dropout(tiny_model_dir, batch, attention):
    torch.manual_seed(0)
    plain = BertForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=2, attn_implementation=attention
    )
    fast = BertForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=2, attn_implementation=attention
    )
    fast.load_state_dict(plain.state_dict())
    dropouts = sum(type(m) is nn.Dropout for m in plain.modules())
    fast_dropout.use_fast_dropout(fast)

    assert sum(type(m) is fast_dropout.FastDropout for m in fast.modules()) == dropouts > 0
    assert not any(type(m) is nn.Dropout for m in fast.modules())
    # Eager attention drops out its probabilities through drop() too; SDPA keeps its own.
    expected = fast_dropout.FAST_DROPOUT_ATTENTION if attention == "eager" else attention
    assert fast.config._attn_implementation == expected
    assert fast.state_dict().keys() == plain.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(fast.eval()(**batch).logits, plain.eval()(**batch).logits)


def test_attention_dropout_is_applied_in_training(tiny_model_dir, batch):
    """With only the attention probabilities dropped out, training mode changes the logits,
    the same way for the same seed."""
    model = BertForSequenceClassification.from_pretrained(
        tiny_model_dir,
        num_labels=2,
        attn_implementation="eager",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.5,
    )
    fast_dropout.use_fast_dropout(model)
    with torch.no_grad():
        evaluated = model.eval()(**batch).logits
        model.train()
        runs = []
        for seed in (3, 3):
            torch.manual_seed(seed)
            runs.append(model(**batch).logits)
    assert not torch.allclose(runs[0], evaluated)
    assert torch.equal(runs[0], runs[1])


def test_models_without_the_attention_interface_get_fast_module_dropout():
    config = XLNetConfig(vocab_size=40, d_model=16, n_layer=1, n_head=2, d_inner=32)
    model = XLNetForSequenceClassification(config)
    fast_dropout.use_fast_dropout(model)
    assert any(type(m) is fast_dropout.FastDropout for m in model.modules())
    assert not any(type(m) is nn.Dropout for m in model.modules())
    assert model.config._attn_implementation != fast_dropout.FAST_DROPOUT_ATTENTION
