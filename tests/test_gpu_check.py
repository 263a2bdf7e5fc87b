"""bench/gpu_check.py's dry run: every step at tiny size on the CPU, figures as numbers."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from conftest import REPO
from transformers import AutoTokenizer

import gpu_check
from bert_glue.trial import device


def dry_run(tiny_model_dir, data_dir, results, *steps: str) -> dict:
    command = [sys.executable, "bench/gpu_check.py", "--dry-run", "--model", str(tiny_model_dir)]
    command += ["--data-dir", str(data_dir), "--results", str(results)]
    command += ["hyperparameters.max_seq_length=32", *(["--steps", *steps] if steps else [])]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    return json.loads((results / "gpu_check.json").read_text())


def number(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def test_dry_run_records_every_steps_figures(tiny_model_dir, glue_dir, tmp_path):
    results = dry_run(tiny_model_dir, glue_dir, tmp_path / "all")
    steps = results["steps"]
    assert list(steps) == [
        "install", "levers", "cuda_tests", "throughput", "glue_projection", "mrpc_job", "profile"
    ]  # fmt: skip
    assert {name: (s["status"], s["error"]) for name, s in steps.items()} == {
        name: ("ok", None) for name in steps
    }
    install = steps["install"]["figures"]
    assert install["determined"] == "0.38.1" and number(install["bf16_matmul_tflops"])
    tests = steps["cuda_tests"]["figures"]
    assert tests["skipped"] == len(tests["tests"]) >= 10  # no GPU here: every CUDA case skips
    lever_figures = steps["levers"]["figures"]
    assert lever_figures["const.yaml"]["line"].startswith("levers on CPU (")
    assert "8 processes" in lever_figures["distributed.yaml"]["line"]
    preflight = lever_figures["preflight"]
    assert list(preflight) == list(device.PROBES)
    for feature in ("bf16", "blockwise_attention", "fused_adamw", "cuda_graphs"):
        assert preflight[feature]["verdict"] == "ok", feature  # a CPU runs these
    for feature in ("flash_attention", "memory_efficient_attention"):
        assert preflight[feature]["verdict"] != "ok", feature  # CUDA only
    assert lever_figures["preflight_without_compiler"]["cuda_graphs"]["verdict"] == "ok"
    throughput = steps["throughput"]["figures"]
    for name in ("original_b24", "trial_b24", "trial_b32", "padded_b24", "v100_path_b24"):
        figures = throughput[name]
        keys = ("samples_per_s", "real_tokens_per_s", "peak_mib", "train_s", "total_s")
        assert all(number(figures[k]) and figures[k] > 0 for k in keys), name
        assert figures["steps"] >= 4 and figures["mfu"] is None  # a CPU has no bf16 peak
    assert throughput["original_b24"]["real_share"] < throughput["trial_b24"]["real_share"]
    assert number(throughput["trial_b32_vs_original"])
    projection = steps["glue_projection"]["figures"]
    assert projection["inputs"]["batch"] == 8 and projection["inputs"]["epochs"] == 3
    tasks = {k: v for k, v in projection.items() if k in gpu_check.GLUE_TRAIN_PAIRS}
    assert list(tasks) == list(gpu_check.GLUE_TRAIN_PAIRS)
    for name, task in tasks.items():
        assert task["pairs"] == gpu_check.GLUE_TRAIN_PAIRS[name]
        assert task["lengths_from"].endswith(".tsv") and 3 <= task["mean_tokens"] <= 32, name
        assert number(task["samples_per_s"]) and task["samples_per_s"] > 0
    projected = sum(3 * t["pairs"] / t["samples_per_s"] for t in tasks.values())
    assert projection["projected_glue_3_epochs_s"] == pytest.approx(projected)
    job = steps["mrpc_job"]["figures"]
    for name in ("trial", "hf_dynamic"):
        assert 0 <= job[name]["dev_acc"] <= 1 and number(job[name]["process_wall_s"])
    assert number(job["trial_vs_hf_dynamic_wall"])
    assert "not measured" in results["profile_reason"]  # the CPU's MFU is None
    assert "Self CPU" in steps["profile"]["figures"]["table"]


def test_a_failing_step_is_recorded_and_the_next_still_runs(tiny_model_dir, tmp_path):
    empty = tmp_path / "no_glue_data"
    empty.mkdir()
    results = dry_run(tiny_model_dir, empty, tmp_path / "failing", "throughput", "profile")
    throughput, profile = results["steps"]["throughput"], results["steps"]["profile"]
    assert throughput["status"] == "failed" and "MRPC" in throughput["error"]
    assert profile["status"] == "ok" and profile["figures"]["steps"] == 3
    assert json.loads((tmp_path / "failing" / "gpu_check.json").read_text()) == results


def test_task_lengths_come_from_the_files_else_an_assumed_shape(tiny_model_dir, glue_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    (tmp_path / "glue").mkdir()
    (tmp_path / "glue" / "RTE").symlink_to(glue_dir / "RTE")  # RTE only, with its train file
    (tmp_path / "glue" / "QNLI").mkdir()  # QNLI's dev file only
    (tmp_path / "glue" / "QNLI" / "dev.tsv").symlink_to(glue_dir / "QNLI" / "dev.tsv")
    lengths = gpu_check.task_lengths(str(tmp_path / "glue"), tokenizer, 32)
    assert list(lengths) == list(gpu_check.GLUE_TRAIN_PAIRS)
    assert lengths["RTE"]["source"] == "RTE/train.tsv" and sum(lengths["RTE"]["histogram"]) == 48
    assert lengths["QNLI"]["source"] == "QNLI/dev.tsv" and sum(lengths["QNLI"]["histogram"]) == 20
    mnli = lengths["MNLI"]
    assert mnli["source"] == "assumed 39 +- 15" and sum(mnli["histogram"]) == 10000
    assert len(mnli["histogram"]) == 33 and mnli["histogram"][:3] == [0, 0, 0]
    mean = sum(n * c for n, c in enumerate(mnli["histogram"])) / 10000
    assert 28 < mean < 32  # 39 +- 15, clipped to max_length 32
