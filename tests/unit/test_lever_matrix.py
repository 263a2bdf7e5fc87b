"""The levers' auto on every GPU the configs name, in the image they name: nothing auto picks is
ruled out by levers.REQUIREMENTS, an explicit choice that is gets one error line, and what the
preflight turns off falls back to what runs."""

from __future__ import annotations

import dataclasses

import image_facts
import pytest
from conftest import REPO

import constants
from bert_glue.local.config import load_config
from bert_glue.trial import levers, settings

CONFIGS = sorted(REPO.glob("*.yaml"))


def one_value(value):
    """A searched hyperparameter's first value (grid) or its lower bound: any one will do."""
    if not isinstance(value, dict) or "type" not in value:
        return value
    if value["type"] == "log":  # minval is an exponent
        return value.get("base", 10) ** value["minval"]
    return value.get("val", value.get("vals", [value.get("minval")])[0])


def config_settings(path) -> tuple[settings.Settings, bool]:
    """A config's settings (a searched hyperparameter at one of its values) and its image's
    C compiler (image/)."""
    config = load_config(str(path), [])
    hparams = {name: one_value(v) for name, v in config["hyperparameters"].items()}
    image = image_facts.for_image(config["environment"]["image"])
    return settings.Settings.of(config, hparams), image["c_compiler"]


def mrpc_settings(**hparams) -> settings.Settings:
    """The settings of a trial of MRPC with these hyperparameters."""
    required = {"global_batch_size": 32, "learning_rate": 2e-5, "num_train_epochs": 3}
    data = {"task": "mrpc", "model_name_or_path": "m", "data_dir": "d"}
    config = {"hyperparameters": {**required, "model_type": "bert", **hparams}, "data": data}
    return settings.Settings.of(config, config["hyperparameters"])


def resolve(device: levers.Device, packable: bool = True, **hparams) -> levers.Levers:
    return levers.Levers.resolve(mrpc_settings(**hparams).hparams, device, packable)


@pytest.mark.parametrize("processes", [1, 8])
@pytest.mark.parametrize("gpu", list(levers.GPUS))
@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_auto_takes_only_what_the_gpu_and_the_image_run(path, gpu, processes):
    trial, compiler = config_settings(path)
    device = levers.catalogued(gpu, processes, compiler)
    chosen = levers.Levers.resolve(trial.hparams, device, packable=True)
    for feature in chosen.features():
        assert levers.unmet(feature, device, chosen.precision) is None, (gpu, feature)
    assert not compiler or not chosen.torch_compile  # the configs leave Inductor off
    if trial.hparams.packing == "auto":
        assert chosen.packing, "every GPU keeps packed batches"
    if levers.GPUS[gpu] < (8, 0):
        assert chosen.precision == "fp16" and chosen.packed_attention != "flash_attention"
    if processes == 1 and trial.hparams.cuda_graphs == "auto":
        assert chosen.cuda_graphs and "inductor" not in chosen.features()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_gpu_of_the_catalogue_has_kernels_in_the_configs_image(path):
    config = load_config(str(path), [])
    built_for = image_facts.for_image(config["environment"]["image"])["gpu_architectures"]
    missing = [g for g, c in levers.GPUS.items() if levers.arch(c) not in built_for]
    assert missing == [], f"{path.name}: its image's torch has no kernels for {missing}"


@pytest.mark.parametrize(("slots", "graphed"), [(1, True), (2, False), (8, False)])
def test_auto_cuda_graphs_only_on_one_gpu(slots, graphed):
    """Graphs of a DDP-wrapped model have never run on several GPUs: auto leaves them off."""
    device = levers.catalogued("h100", slots, compiler=False)
    assert resolve(device).cuda_graphs is graphed
    for choice in (True, False):
        assert resolve(device, cuda_graphs=choice).cuda_graphs is choice


@pytest.mark.parametrize(
    ("device", "precision", "kernel", "attention", "workers"),
    [
        (levers.catalogued("cpu-avx2", 1, True), "fp32", None, "eager", 0),
        (levers.catalogued("cpu-amx", 1, True), "bf16", None, "eager", 0),
        (levers.catalogued("a100", 1, False), "bf16", "flash_attention", None, 2),
        (levers.catalogued("v100", 8, False), "fp16", "memory_efficient_attention", None, 2),
        (levers.catalogued("t4", 1, False), "fp16", "memory_efficient_attention", None, 2),
    ],
    ids=["cpu", "cpu-bf16", "a100", "v100x8", "t4"],
)
def test_auto_levers_for_each_device(device, precision, kernel, attention, workers):
    resolved = resolve(device)
    assert (resolved.precision, resolved.packed_attention) == (precision, kernel)
    assert (resolved.attn_implementation, resolved.dataloader_workers) == (attention, workers)
    assert resolved.fast_dropout is (device.kind == "cpu")
    assert resolved.group_by_length is (kernel is None)  # a packed batch has no padding to save
    assert resolve(device, packable=False).packing is False


def test_packing_chosen_on_a_cpu_attends_in_blocks_and_bf16_on_a_v100_skips_cutlass_bf16():
    assert resolve(levers.catalogued("cpu-avx2", 1, True), packing=True).packed_attention == (
        "blockwise_attention"
    )
    v100 = levers.catalogued("v100", 1, False)
    assert resolve(v100, precision="bf16").packed_attention == "blockwise_attention"
    assert resolve(v100, precision="fp32", packing=True).packed_attention == (
        "memory_efficient_attention"
    )


def test_a_choice_the_device_cannot_run_is_one_error_naming_the_key_and_the_fix():
    cpu = levers.catalogued("cpu-amx", 1, compiler=False)
    with pytest.raises(constants.ConfigError, match=r"^hyperparameters.precision: fp16 autocast"):
        resolve(cpu, precision="fp16")
    with pytest.raises(constants.ConfigError, match=r"^hyperparameters.cuda_graphs: CUDA graphs"):
        resolve(cpu, cuda_graphs=True)
    with pytest.raises(
        constants.ConfigError,
        match=r"^hyperparameters.torch_compile: .* needs a host C\+\+ compiler .*; set "
        r"hyperparameters.torch_compile: false$",
    ):
        resolve(cpu, torch_compile=True)
    h100 = levers.catalogued("h100", 1, compiler=False)
    with pytest.raises(constants.ConfigError, match=r"needs a host C compiler \(CC, gcc, clang\)"):
        resolve(h100, torch_compile=True)
    assert resolve(dataclasses.replace(h100, compiler=True), torch_compile=True).torch_compile


def test_the_host_compiler_is_found_as_triton_and_inductor_look_for_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    assert not levers.has_compiler("cuda") and not levers.has_compiler("cpu")
    for name in ("clang", "g++"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    assert levers.has_compiler("cuda") and levers.has_compiler("cpu")
    monkeypatch.setenv("CC", "/nonexistent/cc")  # Triton takes CC as it is, found or not
    assert not levers.has_compiler("cuda")


def test_what_fails_falls_back_to_what_runs():
    h100 = resolve(levers.catalogued("h100", 1, compiler=True), torch_compile=True)
    assert h100.features() == ["bf16", "flash_attention", "inductor", "fused_adamw"]
    efficient = h100.without("flash_attention")
    assert efficient.packed_attention == "memory_efficient_attention"
    blocks = efficient.without("memory_efficient_attention")
    assert blocks.packed_attention == "blockwise_attention" and not blocks.group_by_length
    padded = blocks.without("blockwise_attention")
    assert not padded.packing and padded.group_by_length
    fp32 = h100.without("bf16")  # FlashAttention has no fp32: the next kernel takes over
    assert (fp32.precision, fp32.packed_attention) == ("fp32", "memory_efficient_attention")
    eager = h100.without("inductor")
    assert not eager.torch_compile and eager.cuda_graphs
    assert "cuda_graphs" in eager.features()  # the cudagraphs backend, probed on its own
    assert not h100.without("fused_adamw").fused_adamw


def test_the_levers_line_says_what_was_chosen_and_why():
    v100 = levers.catalogued("v100", 1, compiler=False)
    line = resolve(v100).line(v100)
    assert line.startswith("levers on V100 (compute capability 7.0), 1 process: precision fp16")
    assert "packed attention with the memory-efficient kernel" in line
    assert "FlashAttention-2 needs compute capability 8.0, this GPU has 7.0" in line
    assert "bf16 tensor cores need compute capability 8.0" in line
    cpu = levers.catalogued("cpu-avx2", 1, compiler=True)
    assert "precision fp32: this CPU has no native bf16" in resolve(cpu).line(cpu)
