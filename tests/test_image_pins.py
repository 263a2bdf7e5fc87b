"""image_pins.py: which of the image's pip pins the trial's install relaxes."""

from __future__ import annotations

import importlib.metadata
import json
import pathlib
import subprocess

import pytest

from bert_glue.container import image_pins

pytestmark = pytest.mark.smoke

PINS = {
    "torch": "torch==2.10.0a0+b4e4ee81d3",
    "numpy": "numpy==2.3.5",
    "nvidia-cublas": "nvidia-cublas==13.1.0.3",
    "requests": "requests==2.32.5",
    "huggingface-hub": "huggingface-hub==0.36.0",
    "certifi": "certifi==2025.11.12",
    "pip": "pip>=25",
}


def test_read_pins_keys_lines_by_canonical_name(tmp_path):
    path = tmp_path / "constraint.txt"
    path.write_text("# NVIDIA\nHuggingFace_Hub==0.36.0  # hub\n\ntorch==2.10.0a0+b4e4ee81d3\n")
    assert image_pins.read_pins(path) == {
        "huggingface-hub": "HuggingFace_Hub==0.36.0",
        "torch": "torch==2.10.0a0+b4e4ee81d3",
    }


def test_pinned_version_reads_exact_pins_only():
    assert image_pins.pinned_version("torch==2.10.0a0+b4e4ee81d3") == "2.10.0a0+b4e4ee81d3"
    assert image_pins.pinned_version("pip>=25") is None


def test_a_pin_conflicts_where_pip_plans_another_version():
    planned = {"huggingface-hub": "1.31.0", "transformers": "5.24.0"}
    assert image_pins.conflicting(PINS, planned, installed={}) == {
        "huggingface-hub": "the trial needs 1.31.0"
    }


def test_a_pin_conflicts_where_another_version_is_installed_already():
    # The task setup's --user install of determined put requests 2.31 before the image's.
    installed = {"requests": "2.31.0", "certifi": "2025.11.12"}
    assert image_pins.conflicting(PINS, {}, installed) == {"requests": "2.31.0 is installed"}


def test_torch_numpy_and_cuda_libraries_are_never_relaxed():
    planned = {"torch": "2.13.0", "numpy": "2.4.6", "nvidia-cublas": "13.2.0"}
    assert image_pins.conflicting(PINS, planned, installed={"numpy": "1.26.4"}) == {}
    for name in ("nvidia_nccl_cu13", "torchvision", "triton", "NumPy"):
        assert image_pins.is_protected(name), name
    assert not image_pins.is_protected("torchaudio")


def test_a_planned_change_of_a_protected_package_is_named_with_both_versions():
    protected = {"numpy": "1.26.0", "torch": "2.7.1+cu126", "triton": "3.3.1"}
    planned = {"numpy": "2.4.6", "scipy": "1.17.1", "triton": "3.3.1"}
    assert image_pins.moved_protected(planned, protected) == {"numpy": "1.26.0 -> 2.4.6"}
    assert image_pins.moved_protected({"torchvision": "0.22.1"}, protected) == {}  # not installed


def test_the_installed_protected_versions_are_read_from_the_distributions():
    found = image_pins.installed_protected()
    assert found["torch"] == importlib.metadata.version("torch")
    assert found["numpy"] == importlib.metadata.version("numpy")
    assert all(image_pins.is_protected(name) for name in found)


def test_an_install_that_would_move_a_protected_package_exits_before_installing(
    monkeypatch, tmp_path
):
    calls = []

    def pip(args, constraints):
        calls.append(args)
        report = pathlib.Path(args[args.index("--report") + 1])
        installs = [{"metadata": {"name": "numpy", "version": "9.9.9"}}]
        report.write_text(json.dumps({"install": installs}))
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(image_pins, "pip", pip)
    empty = tmp_path / "constraint.txt"
    empty.write_text("")
    with pytest.raises(SystemExit) as exit:
        image_pins.install(["scipy==1.17.1"], empty)
    numpy = importlib.metadata.version("numpy")
    assert str(exit.value.code).startswith(
        f"error: installing scipy==1.17.1 would change the image's numpy {numpy} -> 9.9.9; "
    )
    assert len(calls) == 1 and "--dry-run" in calls[0]  # the install itself never ran
