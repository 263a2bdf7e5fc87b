"""image_pins.py: which of the image's pip pins the trial's install relaxes."""

from __future__ import annotations

from bert_glue.container import image_pins

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
    assert image_pins.is_protected("nvidia_nccl_cu13")
    assert not image_pins.is_protected("torchvision")
