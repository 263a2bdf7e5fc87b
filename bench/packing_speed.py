"""Packed against padded training steps on this machine, interleaved so that other work on the
cores slows every variant alike: the measurement behind `packing: auto` on CPUs.

Variants, each a copy of the same model with the trial's CPU levers (bf16 autocast where the
CPU has native bf16, eager attention with fast dropout, fused AdamW):
  padded          batches padded to their longest pair (rounded to 8), length-grouped
  packed          packed batches (batching.py) of shuffled pairs, as packing: true batches them
  packed_grouped  packed batches of the length-grouped pairs (the padded variant's batches)
Rounds of `--block` steps of each variant in turn, after one warm-up round.

    python bench/packing_speed.py --data-dir ../shared/glue_data            # MiniLM, MRPC
    python bench/packing_speed.py --model <folder> --rounds 2 --block 2     # a quick look
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import pathlib
import sys
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import constants
import data
import train_speed
from bert_glue.trial import batching, device, fast_dropout

VARIANTS = ("padded", "packed", "packed_grouped")


def batch_streams(features: data.Features, tokenizer, batch_size: int, seed: int) -> dict:
    """Each variant's endless stream of collated batches."""
    dataset = data.GlueDataset(features)

    def grouped() -> batching.LengthGroupedBatchSampler:  # the same batches for each of its users
        return batching.LengthGroupedBatchSampler(dataset.lengths, batch_size, seed)

    shuffled = torch.utils.data.BatchSampler(
        torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)),
        batch_size,
        drop_last=False,
    )
    padded = batching.Collator(tokenizer, with_token_types=True, multiple_of=8, max_length=128)
    packed = batching.PackedCollator(True, position_offset=0, pad_id=tokenizer.pad_token_id)

    def stream(sampler, collate):
        for indices in itertools.chain.from_iterable(itertools.repeat(sampler)):
            yield collate([dataset[i] for i in indices])

    return {
        "padded": stream(grouped(), padded),
        "packed": stream(shuffled, packed),
        "packed_grouped": stream(grouped(), packed),
    }


def train_step(model, optimizer, batch: dict, autocast: torch.dtype | None) -> int:
    """One optimizer step; the batch's number of examples."""
    inputs = {k: v for k, v in batch.items() if k != "split"}
    if "cu_seqlens" in inputs:
        inputs = batching.model_inputs(inputs, max_seqlen=128)
    with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
        loss = model(**inputs).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return len(batch["labels"])


def measure(args) -> dict[str, float]:
    """samples/s of each variant over the timed rounds."""
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    task = constants.TASKS["MRPC"]
    features = data.load_features(task, task.train, args.data_dir, tokenizer, 128, args.cache)
    base = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=2, attn_implementation="eager"
    )
    fast_dropout.use_fast_dropout(base)
    models = {name: copy.deepcopy(base).train() for name in VARIANTS}
    for name in VARIANTS[1:]:
        batching.use_packing(models[name], "blockwise_attention")
    optimizers = {
        name: torch.optim.AdamW(model.parameters(), lr=2e-5, fused=True)
        for name, model in models.items()
    }
    streams = batch_streams(features, tokenizer, args.batch_size, seed=42)
    autocast = torch.bfloat16 if device.cpu_has_bf16() else None
    seconds, samples = dict.fromkeys(VARIANTS, 0.0), dict.fromkeys(VARIANTS, 0)
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for name in VARIANTS:
            start = time.perf_counter()
            count = sum(
                train_step(models[name], optimizers[name], next(streams[name]), autocast)
                for _ in range(args.block)
            )
            if round_:
                seconds[name] += time.perf_counter() - start
                samples[name] += count
    return {name: samples[name] / seconds[name] for name in VARIANTS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm", help="minilm or a model folder")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "glue_data"))
    parser.add_argument("--cache", help="feature cache folder (default: the trial's)")
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--block", type=int, default=5, help="steps of a variant per round")
    args = parser.parse_args()
    args.model = train_speed.model_path(args.model, None, pathlib.Path(), 0)
    args.data_dir = os.path.abspath(args.data_dir)
    speeds = measure(args)
    print(f"{train_speed.device_name()}, torch {torch.__version__}, batch {args.batch_size}")
    for name, speed in speeds.items():
        print(f"{name:<15} {speed:7.1f} samples/s  {speed / speeds['padded']:.2f}x padded")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
