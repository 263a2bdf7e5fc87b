"""versions.py: the trial refuses a torch or transformers it cannot use, as transformers judges it
(startup-hook.sh runs the same check; tests/test_image_pins.py runs the hook)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO
from transformers.utils import import_utils

from bert_glue.container import versions

# Versions as NVIDIA's containers and PyPI spell them.
TORCH_VERSIONS = [
    "2.3.0a0+40ec155e58",  # NGC 24.03, under Determined 0.38.1's default image
    "2.5.1",
    "2.6.0a0+ecf3bae40a",  # a pre-release of 2.6: older than 2.6.0
    "2.6.0",
    "2.7.1+cu126",  # pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime, for GPUs before Volta
    "2.10.0a0+b4e4ee81d3",  # NGC 25.12, NVIDIA's image
    "2.10.0+cu128",  # pytorch/pytorch:2.10.0-cuda12.8-cudnn9-runtime, the configs' image
    "2.13.0",
    "N/A",  # what transformers reads when torch has no version metadata
]


def never_asked() -> bool:
    raise AssertionError("transformers' verdict is asked only when both versions pass")


@pytest.mark.parametrize("torch_version", TORCH_VERSIONS)
def test_torch_floor_is_transformers_own(torch_version, monkeypatch):
    monkeypatch.setattr(
        import_utils, "_is_package_available", lambda *a, **k: (True, torch_version)
    )
    transformers_accepts = import_utils.is_torch_available.__wrapped__()  # past its lru_cache
    assert versions.at_least(torch_version, versions.MIN_TORCH) == transformers_accepts


def test_a_pre_release_torch_is_refused_with_the_versions_and_the_fix():
    message = versions.problem("2.6.0a0+xyz", "5.24.0", never_asked)
    assert message.startswith("torch 2.6.0a0+xyz, transformers 5.24.0: ")
    assert "torch >= 2.6.0" in message
    assert "environment.image" in message and "requirements.txt" in message


def test_an_old_or_missing_transformers_is_refused():
    assert "transformers >= 5.24.0" in versions.problem(
        "2.10.0a0+b4e4ee81d3", "5.23.0", never_asked
    )
    assert versions.problem("2.13.0", None, never_asked).startswith(
        "torch 2.13.0, transformers missing: the trial needs transformers >= 5.24.0"
    )
    assert "torch missing" in versions.problem(None, "5.24.0", never_asked)


def test_torch_turned_off_by_transformers_is_refused():
    message = versions.problem("2.13.0", "5.24.0", lambda: False)
    assert "is_torch_available() is False" in message


def test_the_pinned_stack_and_the_images_pass():
    assert versions.problem("2.13.0", "5.24.0", lambda: True) == ""
    assert versions.problem("2.7.1+cu126", "5.24.0", lambda: True) == ""
    assert versions.problem("2.10.0a0+b4e4ee81d3", "5.24.0", lambda: True) == ""
    assert versions.problem("2.13.0", "5.24.0", versions.transformers_sees_torch) == ""


def test_min_transformers_is_the_image_pin():
    pin = "transformers==" + str(versions.MIN_TRANSFORMERS)
    assert pin in (REPO / "requirements-image.txt").read_text().split()


@pytest.mark.parametrize("script", ["model_def.py", "bert_glue/container/versions.py"])
def test_scripts_exit_with_one_line_under_a_torch_transformers_turns_off(script):
    """`python model_def.py` ends with one error line before transformers' ImportError from the
    first model class the trial imports; the hook's `python -m bert_glue.container.versions`
    likewise."""
    argv = [script, "const.yaml"] if script == "model_def.py" else [script]
    fake = (
        "import importlib.metadata as m, runpy, sys; real = m.version; "
        "m.version = lambda n: '2.5.0a0+abc' if n == 'torch' else real(n); "
        "sys.path.insert(0, '.'); "
        f"sys.argv = {argv!r}; runpy.run_path({script!r}, run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", fake], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.startswith("error: torch 2.5.0a0+abc, transformers ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
