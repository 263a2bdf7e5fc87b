"""The training benchmark counts what each variant trains on (the tiny model; nothing timed)."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO
from transformers import AutoTokenizer

import constants
import data
import train_speed  # bench/ is on pytest's pythonpath


@pytest.fixture
def overrides(tiny_model_dir, glue_dir, tmp_path, monkeypatch) -> list[str]:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return [
        f"data.model_name_or_path={tiny_model_dir}",
        f"data.data_dir={glue_dir}",
        "data.download_data=false",
        "hyperparameters.max_seq_length=32",
        "hyperparameters.global_batch_size=8",
        "hyperparameters.num_train_epochs=2",
    ]


@pytest.fixture(scope="module")
def mrpc_lengths(tiny_model_dir, glue_dir) -> int:
    """Tokens of all 48 synthetic MRPC training pairs, truncated to 32."""
    task = constants.TASKS["MRPC"]
    examples = data.read_examples(task, task.train, glue_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return data.featurize(examples, tokenizer, 32).lengths


PACKED = "project:hyperparameters.packing=true"


@pytest.mark.parametrize("variant", ["project", PACKED, "original", "hf_padded", "hf_dynamic"])
def test_every_variant_counts_what_it_trains(variant, overrides, mrpc_lengths):
    result = train_speed.run_variant(variant, str(REPO / "const.yaml"), overrides, None)
    m = result.meter
    assert (m.steps, m.samples) == (12, 96)  # 2 epochs of 48 pairs in batches of 8
    assert m.real_tokens == 2 * mrpc_lengths.sum()
    assert m.squared_lengths == 2 * (mrpc_lengths**2).sum()
    if variant in ("original", "hf_padded"):
        assert m.padded_tokens == 96 * 32
    elif variant == PACKED:
        assert m.padded_tokens == m.real_tokens  # no padding at all
    else:
        assert m.real_tokens <= m.padded_tokens < 96 * 32
    assert 0 < m.train_s < m.end_of_training - m.start <= result.total_s
    assert {"acc", "f1"} <= set(result.final)
    assert m.non_embedding_params > 0 and (m.layers, m.hidden) == (2, 32)


def test_max_steps_stops_early_without_dev_metrics(overrides, capsys):
    results = [
        train_speed.run_variant(v, str(REPO / "const.yaml"), overrides, 2)
        for v in ("project", "hf_dynamic")
    ]
    assert results[0].meter.steps < 12 and results[1].meter.steps == 2
    assert results[0].final == results[1].final == {}
    train_speed.report(results, "CPU", max_steps=2)
    out = capsys.readouterr().out
    assert "project vs hf_dynamic:" in out and "faster to the end" not in out


def test_unknown_variant_lists_the_choices(overrides):
    with pytest.raises(ValueError, match="unknown variant 'hf'.*hf_padded"):
        train_speed.run_variant("hf", str(REPO / "const.yaml"), overrides, None)


def test_packing_speed_times_every_variant(tiny_model_dir, glue_dir, tmp_path):
    """bench/packing_speed.py: each variant trains and is timed (figures only, no threshold)."""
    import argparse

    import packing_speed

    args = argparse.Namespace(
        model=str(tiny_model_dir), data_dir=str(glue_dir), cache=str(tmp_path), batch_size=8,
        rounds=1, block=2,
    )  # fmt: skip
    speeds = packing_speed.measure(args)
    assert list(speeds) == list(packing_speed.VARIANTS)
    assert all(speed > 0 for speed in speeds.values())
    streams = packing_speed.batch_streams(
        data.load_features(
            constants.TASKS["MRPC"], constants.TASKS["MRPC"].train, glue_dir,
            AutoTokenizer.from_pretrained(tiny_model_dir), 128, tmp_path,
        ),
        AutoTokenizer.from_pretrained(tiny_model_dir), 8, seed=42,
    )  # fmt: skip
    padded, packed, grouped = (next(streams[name]) for name in packing_speed.VARIANTS)
    assert "attention_mask" in padded and "cu_seqlens" in packed and "cu_seqlens" in grouped
    # packed_grouped packs the padded variant's (length-grouped) batch: the same examples.
    assert torch.equal(padded["labels"], grouped["labels"])
    assert grouped["input_ids"].numel() == padded["attention_mask"].sum()
