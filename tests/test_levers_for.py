"""`python model_def.py CONFIG --levers-for DEVICE`: the levers a config takes on a catalogued GPU
or CPU kind, in the config's image as image/ describes it, printed without that device and
before torch loads."""

from __future__ import annotations

import subprocess
import sys

import yaml
from conftest import REPO


def levers_for(*argv: str, cwd=REPO) -> subprocess.CompletedProcess:
    command = [sys.executable, "-X", "importtime", str(REPO / "model_def.py"), *argv]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def torch_loaded(done: subprocess.CompletedProcess) -> bool:
    return any(line.endswith("| torch") for line in done.stderr.splitlines())


def test_a_v100_takes_fp16_and_the_memory_efficient_kernel_in_the_configs_image():
    done = levers_for(str(REPO / "const.yaml"), "--levers-for", "v100")
    assert done.returncode == 0, done.stderr[-2000:]
    line, image = done.stdout.splitlines()
    assert line.startswith(
        "levers on V100 (compute capability 7.0), 1 process: precision fp16, packed attention "
        "with the memory-efficient kernel, sdpa attention, CUDA graphs, fused AdamW"
    )
    assert "packed attention with FlashAttention-2 needs compute capability 8.0" in line
    assert image == (
        "image pytorch/pytorch:2.10.0-cuda12.8-cudnn9-runtime: torch 2.10.0+cu128, no C "
        "compiler, kernels for sm_70 sm_75 sm_80 sm_86 sm_90 sm_100 sm_120"
    )
    assert not torch_loaded(done)


def test_processes_default_to_the_configs_slots_and_names_ignore_case():
    done = levers_for(str(REPO / "distributed.yaml"), "--levers-for", "H100")
    assert done.returncode == 0, done.stderr[-2000:]
    line = done.stdout.splitlines()[0]
    assert line.startswith("levers on H100 (compute capability 9.0), 8 processes: precision bf16")
    assert "FlashAttention-2" in line and "no CUDA graphs: several processes (DDP)" in line
    one = levers_for(str(REPO / "distributed.yaml"), "--levers-for", "h100", "--nproc", "1")
    assert ", 1 process: " in one.stdout and "CUDA graphs, fused AdamW" in one.stdout


def test_an_explicit_lever_the_image_cannot_run_is_one_error_line():
    """Overrides after the options too; the configs' image has no C compiler for Inductor."""
    done = levers_for(
        str(REPO / "const.yaml"), "--levers-for", "h100", "hyperparameters.torch_compile=true"
    )
    assert done.returncode == 1 and done.stdout == ""
    (error,) = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert error.startswith("error: hyperparameters.torch_compile: torch.compile (Inductor) needs")
    assert error.endswith(
        "set hyperparameters.torch_compile: false (on H100 in "
        "pytorch/pytorch:2.10.0-cuda12.8-cudnn9-runtime, as image/ describes it)"
    )


def test_a_gpu_the_images_torch_has_no_kernels_for_fails(tmp_path):
    config = yaml.safe_load((REPO / "const.yaml").read_text())
    config["environment"]["image"] = "pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime"
    (tmp_path / "old_image.yaml").write_text(yaml.safe_dump(config))
    done = levers_for(str(tmp_path / "old_image.yaml"), "--levers-for", "b200")
    assert done.returncode == 1
    assert done.stdout.splitlines()[-1] == (
        "error: pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime's torch has no kernels for B200 "
        "(sm_100)"
    )
