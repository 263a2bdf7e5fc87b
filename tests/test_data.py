"""Featurization, the feature cache and the collator."""

from __future__ import annotations

import json
import random

import pytest
import torch
from transformers import AutoTokenizer, XLMTokenizer

import constants
import data
from bert_glue.trial import batching


@pytest.fixture
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def assert_featurized_one_by_one(features, examples, tokenizer, max_seq_length: int) -> None:
    """features hold what the tokenizer's own call gives for each text or pair."""
    assert len(features) == len(examples.text_a)
    for i in range(len(features)):
        text_b = examples.text_b[i] if examples.text_b is not None else None
        one = tokenizer(
            examples.text_a[i],
            text_b,
            truncation=True,
            max_length=max_seq_length,
            return_token_type_ids=True,
        )
        span = slice(features.offsets[i], features.offsets[i + 1])
        assert features.input_ids[span].tolist() == one["input_ids"]
        assert features.token_type_ids[span].tolist() == one["token_type_ids"]
    assert features.lengths.max() == max_seq_length  # long texts were truncated


@pytest.mark.parametrize(
    ("task_name", "truncation_side"), [("MRPC", "right"), ("MRPC", "left"), ("SST-2", "right")]
)
def test_batched_featurization_equals_one_by_one(tokenizer, glue_dir, task_name, truncation_side):
    """The Rust tokenizer's batch call gives what the transformers call gives for each text."""
    task = constants.TASKS[task_name]
    examples = data.read_examples(task, task.train, glue_dir)
    tokenizer.truncation_side = truncation_side
    features = data.featurize(examples, tokenizer, max_seq_length=8)
    assert_featurized_one_by_one(features, examples, tokenizer, 8)
    assert features.labels.tolist() == examples.labels.tolist()


def test_python_tokenizers_featurize_through_their_call(tmp_path):
    """XLM has only a Python tokenizer (no Rust backend): the same ids through its call."""
    letters = "abcdef"
    vocab = ["<s>", "</s>", "<pad>", "<unk>", *(f"{c}</w>" for c in letters)]
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (tmp_path / "merges.txt").write_text("")
    tokenizer = XLMTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    assert getattr(tokenizer, "backend_tokenizer", None) is None
    rng = random.Random(0)
    texts = [" ".join(rng.choices(letters, k=rng.randint(1, 9))) for _ in range(40)]
    examples = data.Examples(texts[:20], texts[20:], None, [str(i) for i in range(20)])
    features = data.featurize(examples, tokenizer, max_seq_length=10)
    assert_featurized_one_by_one(features, examples, tokenizer, 10)
    assert features.labels is None


def test_feature_cache_is_reused_only_when_nothing_changed(
    tokenizer, glue_dir, tmp_path, monkeypatch
):
    built = []
    real = data.featurize
    monkeypatch.setattr(data, "featurize", lambda *args: built.append(args[2]) or real(*args))
    task, cache, glue = constants.TASKS["RTE"], tmp_path / "cache", tmp_path / "glue"
    original = (glue_dir / "RTE/train.tsv").read_text()
    (glue / "RTE").mkdir(parents=True)
    (glue / "RTE/train.tsv").write_text(original)

    def load(max_len=32):
        return data.load_features(task, task.train, glue, tokenizer, max_len, cache)

    first = load()
    assert torch.equal(load().input_ids, first.input_ids) and built == [32]
    load(max_len=16)
    assert built == [32, 16]  # another max length is another cache entry
    (glue / "RTE/train.tsv").write_text(original.replace("good", "bad", 1))
    changed = load()
    assert built == [32, 16, 32] and not torch.equal(changed.input_ids, first.input_ids)
    load()
    assert built == [32, 16, 32]


def test_cache_key_covers_the_tokenizer(tokenizer, tiny_model_dir, tmp_path):
    vocab = (tiny_model_dir / "vocab.txt").read_text().split("\n")
    (tmp_path / "vocab.txt").write_text("\n".join(vocab[:-3]) + "\n")
    from transformers import BertTokenizer

    before = data.tokenizer_fingerprint(tokenizer)
    tokenizer(["a b c"], truncation=True, max_length=2)  # per-call settings are not identity
    assert data.tokenizer_fingerprint(tokenizer) == before
    smaller = BertTokenizer(str(tmp_path / "vocab.txt"))
    assert data.tokenizer_fingerprint(smaller) != data.tokenizer_fingerprint(tokenizer)
    uncased = BertTokenizer(str(tiny_model_dir / "vocab.txt"), do_lower_case=False)
    assert data.tokenizer_fingerprint(uncased) != data.tokenizer_fingerprint(tokenizer)


def test_damaged_cache_is_rebuilt(tokenizer, glue_dir, tmp_path):
    task = constants.TASKS["WNLI"]
    good = data.load_features(task, task.train, glue_dir, tokenizer, 32, tmp_path)
    (cache_file,) = tmp_path.glob("*.pt")
    cache_file.write_bytes(cache_file.read_bytes()[:100])
    rebuilt = data.load_features(task, task.train, glue_dir, tokenizer, 32, tmp_path)
    assert torch.equal(rebuilt.input_ids, good.input_ids)
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


@pytest.mark.parametrize("side", ["right", "left"])
def test_collator_pads_to_the_longest_or_to_a_fixed_width(tokenizer, side):
    tokenizer.padding_side = side
    items = [
        (
            torch.tensor([2, 7, 3], dtype=torch.int32),
            torch.tensor([0, 0, 0], dtype=torch.int8),
            torch.tensor(1),
            0,
        ),
        (
            torch.tensor([2, 8, 9, 3, 5], dtype=torch.int32),
            torch.tensor([0, 0, 0, 1, 1], dtype=torch.int8),
            torch.tensor(0),
            1,
        ),
    ]
    batch = batching.Collator(tokenizer, with_token_types=True)(items)
    assert batch["input_ids"].shape == (2, 5)
    assert batch["attention_mask"].sum(1).tolist() == [3, 5]
    first = [2, 7, 3, 0, 0] if side == "right" else [0, 0, 2, 7, 3]
    assert batch["input_ids"][0].tolist() == first
    assert batch["token_type_ids"][1].tolist() == [0, 0, 0, 1, 1]
    assert batch["labels"].tolist() == [1, 0] and batch["split"].tolist() == [0, 1]
    fixed = batching.Collator(tokenizer, with_token_types=False, pad_to=8)(items)
    assert fixed["input_ids"].shape == (2, 8) and "token_type_ids" not in fixed
    rounded = batching.Collator(tokenizer, with_token_types=True, multiple_of=4)(items)
    assert rounded["input_ids"].shape == (2, 8)
    assert rounded["attention_mask"].sum(1).tolist() == [3, 5]
    types = rounded["token_type_ids"][1].tolist()
    assert (types[:5] if side == "right" else types[3:]) == [0, 0, 0, 1, 1]
    capped = batching.Collator(tokenizer, with_token_types=False, multiple_of=4, max_length=6)(
        items
    )
    assert capped["input_ids"].shape == (2, 6)  # never past max_seq_length


def test_max_train_samples_keeps_a_fixed_subset_in_order(tokenizer, glue_dir):
    task = constants.TASKS["RTE"]
    features = data.load_features(task, task.train, glue_dir, tokenizer, 32)
    rows = [data.GlueDataset(features)[i] for i in range(len(features))]
    subset = data.sample(features, 10)
    assert len(subset) == 10 and data.sample(features, 10).input_ids.equal(subset.input_ids)
    # Each kept example whole (tokens, types, label), in the file's order.
    kept = []
    for ids, types, label, _ in (data.GlueDataset(subset)[i] for i in range(10)):
        matches = [i for i, row in enumerate(rows) if row[0].equal(ids) and row[2] == label]
        assert matches and rows[matches[0]][1].equal(types)
        kept.append(matches[0])
    assert kept == sorted(kept) and len(set(kept)) == 10
    assert data.sample(features, None) is features and data.sample(features, 10**6) is features
    with pytest.raises(constants.ConfigError, match="data.max_train_samples: 0 is not a positive"):
        data.sample(features, 0)
