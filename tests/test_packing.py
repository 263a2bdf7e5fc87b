"""Packed (padding-free) batches compute what padded batches compute, and train and resume alike.

CPU cases run everywhere; the CUDA ones (varlen FlashAttention, CUDA graphs) are in
tests/test_cuda.py, marked `cuda`.
"""

from __future__ import annotations

import pytest
import torch
from conftest import built_trial
from test_resume import assert_resumes_bitwise, configure, crash_after_first_checkpoint
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    ElectraConfig,
    ElectraModel,
    RobertaConfig,
    RobertaForSequenceClassification,
    XLNetConfig,
)

import constants
import model_def
from bert_glue.local import local_run
from bert_glue.trial import batching, fast_dropout

MAX_LENGTH = 32
VOCAB = 40
# Batches of (length, pair split) examples: one example; a maximum-length example among short
# ones; pairs of every kind (the second segment's token type is 1).
BATCHES_OF_LENGTHS = {
    "one example": [(9, None)],
    "max length": [(3, None), (MAX_LENGTH, None), (2, None), (17, None)],
    "pairs": [(12, 5), (MAX_LENGTH, 20), (7, 3), (25, 1), (4, 2)],
}


def tiny_model(model_type: str) -> torch.nn.Module:
    """A 2-layer classifier of the model type, randomly initialised, without dropout (whose
    masks depend on the layout)."""
    torch.manual_seed(0)
    shape = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if model_type == "bert":
        config = BertConfig(**shape, **no_dropout, intermediate_size=64, max_position_embeddings=64)
        return BertForSequenceClassification(config)
    if model_type == "roberta":  # positions from pad_token_id + 1, as RoBERTa's checkpoints
        config = RobertaConfig(
            **shape, **no_dropout, intermediate_size=64, max_position_embeddings=66, pad_token_id=1
        )
        return RobertaForSequenceClassification(config)
    config = DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64
    )
    config.dropout = config.attention_dropout = config.seq_classif_dropout = 0.0
    return DistilBertForSequenceClassification(config)


def examples(lengths: list[tuple[int, int | None]], seed: int = 0) -> list[tuple]:
    """GlueDataset items: random token ids (int32, as cached), token types, labels."""
    generator = torch.Generator().manual_seed(seed)
    items = []
    for i, (length, second) in enumerate(lengths):
        ids = torch.randint(5, VOCAB, (length,), generator=generator, dtype=torch.int32)
        types = torch.zeros(length, dtype=torch.int8)
        if second is not None:
            types[length - second :] = 1
        items.append((ids, types, torch.tensor(i % 2), 0))
    return items


class Tokenizer:
    """What batching.Collator reads of a tokenizer."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id, self.pad_token_type_id, self.padding_side = pad_token_id, 0, "right"


def logits_loss_grads(model, inputs: dict) -> tuple:
    model.zero_grad()
    out = model(**inputs)
    out.loss.backward()
    return out.logits, out.loss, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("bucket", [None, 16], ids=["exact", "bucketed"])
@pytest.mark.parametrize("batch", list(BATCHES_OF_LENGTHS))
@pytest.mark.parametrize("model_type", list(constants.PACKED_ENCODERS))
def test_packed_logits_loss_and_gradients_equal_padded(model_type, batch, bucket):
    model = tiny_model(model_type)
    token_types = model_type == "bert"
    items = examples(BATCHES_OF_LENGTHS[batch])
    padded = batching.Collator(Tokenizer(model.config.pad_token_id), token_types)(items)
    del padded["split"]
    expected = logits_loss_grads(model, padded)

    batching.use_packing(model, "blockwise_attention")
    collate = batching.PackedCollator(
        token_types, batching.position_offset(model.config), model.config.pad_token_id, bucket
    )
    packed = collate(items)
    assert packed["input_ids"].shape[0] == 1
    logits, loss, grads = logits_loss_grads(model, batching.model_inputs(packed, MAX_LENGTH))
    assert logits.shape == (len(items), 2)
    torch.testing.assert_close(logits, expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, expected[1], atol=1e-6, rtol=1e-5)
    for a, b in zip(grads, expected[2], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    assert any(g.abs().sum() > 0 for g in grads[:3])  # the embeddings did get gradients


@pytest.mark.parametrize("model_type, offset", [("bert", 0), ("roberta", 2), ("distilbert", 0)])
def test_positions_restart_and_token_types_are_kept_per_example(model_type, offset):
    model = tiny_model(model_type)
    assert batching.position_offset(model.config) == offset
    items = examples([(3, 1), (5, 2)])
    packed = batching.PackedCollator(True, offset, pad_id=0)(items)
    assert packed["input_ids"][0].tolist() == items[0][0].tolist() + items[1][0].tolist()
    assert packed["position_ids"][0].tolist() == [p + offset for p in [0, 1, 2, 0, 1, 2, 3, 4]]
    assert packed["token_type_ids"][0].tolist() == [0, 0, 1, 0, 0, 0, 1, 1]
    assert packed["cu_seqlens"].tolist() == [0, 3, 8]
    assert packed["cu_seqlens"].dtype == torch.int32  # FlashAttention's type
    assert packed["first_tokens"].tolist() == [0, 3]
    assert packed["labels"].tolist() == [0, 1]
    assert packed["cu_seqlens"].diff()[:2].tolist() == [3, 5]

    bucketed = batching.PackedCollator(True, offset, pad_id=7, bucket=4)(items)
    assert bucketed["input_ids"][0].tolist()[8:] == [7] * 4  # 8 real tokens + 1 -> 12
    assert bucketed["cu_seqlens"].tolist() == [0, 3, 8, 12]  # the padding: a segment of its own
    assert bucketed["position_ids"][0].tolist()[8:] == [0, 1, 2, 3]
    assert bucketed["token_type_ids"][0].tolist()[8:] == [0] * 4
    assert bucketed["first_tokens"].tolist() == [0, 3]
    assert bucketed["cu_seqlens"].diff()[:2].tolist() == [3, 5]


def test_bucketing_yields_only_the_declared_shapes():
    """Every packed row is one of bucket_sizes, with 1 to `step` padding tokens (a padding
    segment no longer than max_seqlen), for batches of any lengths and the short last one."""
    batch, step = 24, MAX_LENGTH
    declared = batching.bucket_sizes(batch, MAX_LENGTH, step)
    assert declared == tuple(range(32, 24 * 32 + 32 + 1, 32))  # 25 sizes: 32 ... 800
    collate = batching.PackedCollator(False, 0, bucket=step)
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for size in [batch] * 200 + [batch - 17, 1]:
        lengths = torch.randint(2, MAX_LENGTH + 1, (size,), generator=generator).tolist()
        packed = collate(examples([(n, None) for n in lengths]))
        width = packed["input_ids"].shape[1]
        padding = width - sum(lengths)
        assert width in declared and 1 <= padding <= step
        assert packed["cu_seqlens"][-2] == sum(lengths) and len(packed["cu_seqlens"]) == size + 2
        seen.add(width)
    full = collate(examples([(MAX_LENGTH, None)] * batch))  # the largest batch: the last bucket
    assert full["input_ids"].shape[1] == declared[-1]
    assert len(seen) > 5


@pytest.mark.parametrize("config", [XLNetConfig(), ElectraConfig()], ids=["xlnet", "electra"])
def test_packing_names_the_models_it_cannot_serve(config):
    with pytest.raises(
        constants.ConfigError, match=rf"packing: the model is '{config.model_type}'"
    ):
        batching.check_packable(config)


def test_packing_keeps_the_fast_dropout_of_attention(tiny_model_dir):
    """On CPUs packed attention drops out its probabilities with the layer's own dropout
    module: fast dropout's where that is on, at the model's rate."""
    model = BertForSequenceClassification.from_pretrained(
        tiny_model_dir, attn_implementation="eager"
    )
    fast_dropout.use_fast_dropout(model)
    batching.use_packing(model, "blockwise_attention")
    attention = model.bert.encoder.layer[0].attention.self
    assert model.config._attn_implementation == "packed_blockwise_attention"
    assert type(attention.dropout) is fast_dropout.FastDropout
    assert attention.dropout.p == model.config.attention_probs_dropout_prob == 0.1
    items = examples([(20, 8), (11, 4)])
    inputs = batching.model_inputs(batching.PackedCollator(True, 0)(items), MAX_LENGTH)
    model.train()
    torch.manual_seed(1)
    first = model(**inputs).logits
    torch.manual_seed(1)
    assert torch.equal(model(**inputs).logits, first)  # seeded: resumable
    assert not torch.equal(model(**inputs).logits, first)  # and dropped out anew each step
    model.eval()
    assert torch.equal(model(**inputs).logits, model(**inputs).logits)


def test_auto_levers_on_cpus_pad_by_length(local_config):
    """auto on a CPU: padded, length-grouped batches (packing measured no faster there), no
    CUDA graphs; packing: true packs and drops the length grouping it does not need."""
    with local_run.local_context(local_config) as context:
        trial = built_trial(context)
    levers = trial.levers
    assert (levers.packing, levers.cuda_graphs, levers.group_by_length) == (False, False, True)
    assert isinstance(trial.collate, batching.Collator)
    local_config["hyperparameters"]["packing"] = True
    with local_run.local_context(local_config) as context:
        trial = built_trial(context)
    assert (trial.levers.packing, trial.levers.group_by_length) == (True, False)
    assert trial.collate.bucket is None  # no CUDA graphs: exact rows
    assert trial.model.config._attn_implementation == "packed_blockwise_attention"
    batch = next(iter(trial.build_training_data_loader().get_data_loader()))
    assert batch["input_ids"].shape[0] == 1 and trial.get_batch_length(batch) == 8


def test_cuda_graphs_on_a_cpu_is_a_config_error(local_config):
    local_config["hyperparameters"]["cuda_graphs"] = True
    with (
        local_run.local_context(local_config) as context,
        pytest.raises(
            constants.ConfigError, match="hyperparameters.cuda_graphs: .*needs a CUDA GPU"
        ),
    ):
        built_trial(context)


def test_packing_a_model_it_cannot_serve(local_config, tiny_model_dir, tmp_path):
    """packing: true with an ELECTRA (model_type auto) is an error naming it; auto pads."""
    path = tmp_path / "tiny-electra"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = ElectraConfig(
        vocab_size=len(tokenizer), embedding_size=16, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    ElectraModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    local_config["data"]["model_name_or_path"] = str(path)
    local_config["hyperparameters"].update(packing=True, model_type="auto")
    with (
        local_run.local_context(local_config) as context,
        pytest.raises(constants.ConfigError, match="'electra'; packed batches serve bert, roberta"),
    ):
        built_trial(context)
    local_config["hyperparameters"]["packing"] = "auto"
    with local_run.local_context(local_config) as context:
        assert not built_trial(context).levers.packing


@pytest.fixture
def no_dropout_model_dir(tiny_model_dir, tmp_path):
    path = tmp_path / "tiny-bert-no-dropout"
    config = BertConfig.from_pretrained(tiny_model_dir)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    BertModel.from_pretrained(tiny_model_dir, config=config).save_pretrained(path)  # no head
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


@pytest.mark.parametrize("task", ["MRPC", "STS-B"])  # classification, regression
def test_packed_trial_trains_like_padded(local_config, no_dropout_model_dir, task):
    """The whole trial, packed or padded: the same run, to rounding (fp32, no dropout)."""
    local_config["data"].update(model_name_or_path=str(no_dropout_model_dir), task=task)
    local_config["hyperparameters"].update(precision="fp32", group_by_length=False)
    runs = []
    for packed in (False, True):
        local_config["hyperparameters"]["packing"] = packed
        runs.append(local_run.run_local(model_def.run, local_config))
    assert len(runs[0]) == len(runs[1]) == 2
    for padded, packed in zip(*runs, strict=True):
        assert padded.keys() == packed.keys()
        assert packed["validation_loss"] == pytest.approx(padded["validation_loss"], rel=1e-5)
        for name in padded:  # Pearson near 0 after 12 steps: absolute agreement
            assert packed[name] == pytest.approx(padded[name], abs=1e-3), name


def test_packed_run_resumes_bitwise(local_config, tmp_path, monkeypatch):
    """With packing on (and the tiny model's dropout), a run that crashed after its first
    checkpoint resumes exactly where the uninterrupted run goes."""
    config_file = configure(local_config, tmp_path, packing=True)
    first = crash_after_first_checkpoint(config_file, tmp_path / "crashed", monkeypatch)
    assert_resumes_bitwise(config_file, first, tmp_path, monkeypatch)
