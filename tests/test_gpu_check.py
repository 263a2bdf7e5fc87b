"""bench/gpu_check.py's dry run: every step at tiny size on the CPU, figures as numbers."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from conftest import REPO


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
    assert list(steps) == ["install", "cuda_tests", "throughput", "mrpc_job", "profile"]
    assert {name: (s["status"], s["error"]) for name, s in steps.items()} == {
        name: ("ok", None) for name in steps
    }
    install = steps["install"]["figures"]
    assert install["determined"] == "0.38.1" and number(install["bf16_matmul_tflops"])
    tests = steps["cuda_tests"]["figures"]
    assert tests["skipped"] == len(tests["tests"]) >= 10  # no GPU here: every CUDA case skips
    throughput = steps["throughput"]["figures"]
    for name in ("original_b24", "trial_b24", "trial_b32"):
        figures = throughput[name]
        keys = ("samples_per_s", "real_tokens_per_s", "peak_mib", "train_s", "total_s")
        assert all(number(figures[k]) and figures[k] > 0 for k in keys), name
        assert figures["steps"] >= 4 and figures["mfu"] is None  # a CPU has no bf16 peak
    assert throughput["original_b24"]["real_share"] < throughput["trial_b24"]["real_share"]
    assert number(throughput["trial_b32_vs_original"])
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
