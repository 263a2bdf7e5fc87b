"""image_pins.py: which of the image's pip pins the trial's install relaxes, and when pip need not
start at all; startup-hook.sh, which runs it."""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import expconf
import pytest
import yaml
from conftest import REPO
from container_start.pip_recorder import PipRecorder, pip_recorder

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


def distribution(site: pathlib.Path, name: str, version: str, *requires: str) -> None:
    """An installed distribution's metadata, as pip leaves it in site-packages."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = [f"Name: {name}", f"Version: {version}", *(f"Requires-Dist: {r}" for r in requires)]
    (info / "METADATA").write_text("Metadata-Version: 2.1\n" + "\n".join(lines) + "\n")


@pytest.fixture
def site(tmp_path, monkeypatch) -> pathlib.Path:
    """A site folder first on sys.path: app 1.0 needs lib >= 2 and, with its extra "fast",
    speedup; lib 2.1 needs base < 3 and, on Python 2 only, oldlib."""
    site = tmp_path / "site"
    distribution(site, "app", "1.0", "lib>=2", 'speedup; extra == "fast"')
    distribution(site, "lib", "2.1", "base<3", 'oldlib; python_version < "3"')
    distribution(site, "base", "2.5")
    monkeypatch.syspath_prepend(str(site))
    return site


def test_nothing_is_unmet_when_requirements_and_their_dependencies_are_installed(site):
    assert image_pins.unmet(["app==1.0", "lib>=2"], []) == []


def test_unmet_names_a_missing_or_other_version_and_who_needs_it(site):
    assert image_pins.unmet(["app==1.1", "absent==1"], []) == [
        "absent==1 (requested) is not installed",
        "app==1.1 (requested): 1.0 is installed",
    ]


def test_unmet_follows_the_installed_metadata_to_dependencies(site):
    distribution(site, "top", "1", "app")
    (site / "base-2.5.dist-info").rename(site / "base-3.0.dist-info")
    (site / "base-3.0.dist-info" / "METADATA").write_text("Name: base\nVersion: 3.0\n")
    assert image_pins.unmet(["top"], []) == ["base<3 (lib 2.1): 3.0 is installed"]


def test_unmet_follows_an_extra_only_where_it_is_asked_for(site):
    assert image_pins.unmet(["app[fast]"], []) == ["speedup (app 1.0) is not installed"]


def test_a_constraint_counts_on_any_package_the_requirements_reach(site):
    assert image_pins.unmet(["app"], ["base==2.4", "unrelated==9"]) == [
        "base==2.4 (the image's pin): 2.5 is installed"
    ]
    assert image_pins.unmet(["app"], ["base>=2"]) == []


def test_what_the_check_cannot_judge_is_left_to_pip(site):
    url = "app @ https://example.org/app-1.0.tar.gz"
    assert image_pins.unmet([url], []) == [
        f"{url} (requested): a direct reference, which pip judges"
    ]
    assert image_pins.unmet(["app"], ['base==2.5; python_version < "4"']) == [
        "the image's pin 'base==2.5; python_version < \"4\"': this check reads version ranges only"
    ]


def test_requirement_lines_are_the_files_requirements_without_comments(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# about\nscipy==1.17.1  # pinned\n\nrequests>=2.28\n")
    assert image_pins.requirement_lines(path) == ["scipy==1.17.1", "requests>=2.28"]
    path.write_text("scipy\n--index-url https://example.org/simple\n")
    with pytest.raises(SystemExit) as exit:
        image_pins.requirement_lines(path)
    assert str(exit.value.code) == (
        f"error: {path}, line 2: '--index-url https://example.org/simple': image_pins reads "
        "requirements only; give pip options as PIP_* environment variables"
    )


def run_hook(tmp_path, requirements: str) -> tuple[subprocess.CompletedProcess, PipRecorder]:
    """startup-hook.sh in a copy of its files, on this machine's Python (which has everything
    requirements-image.txt names and the master's determined), with pip's stand-ins first."""
    shutil.copy(REPO / "startup-hook.sh", tmp_path)
    shutil.copytree(REPO / "bert_glue" / "container", tmp_path / "bert_glue" / "container")
    (tmp_path / "requirements-image.txt").write_text(requirements)
    recorder = pip_recorder(tmp_path / "pip-recorder")
    env = {
        "PATH": os.pathsep.join([str(recorder.bin), "/usr/bin", "/bin"]),
        "PYTHONPATH": str(recorder.package_root),
        "DET_PYTHON_EXECUTABLE": sys.executable,
        "IMAGE_PIP_CONSTRAINT": str(tmp_path / "no-pins.txt"),
    }
    done = subprocess.run(
        ["bash", "startup-hook.sh"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    return done, recorder


def test_the_hook_starts_no_pip_when_everything_is_installed(tmp_path):
    done, recorder = run_hook(tmp_path, (REPO / "requirements-image.txt").read_text())
    assert done.returncode == 0, done.stderr
    assert recorder.calls() == []
    assert done.stdout.startswith("image_pins: nothing to install: 9 requirements and their ")


def test_the_hook_runs_pip_when_a_requirement_is_missing(tmp_path):
    done, recorder = run_hook(tmp_path, "no-such-package-xyz==1\n")
    assert "image_pins: to install: no-such-package-xyz==1 (requested) is not installed" in (
        done.stdout
    )
    (call,) = recorder.calls()  # the dry run, which the stand-in fails
    requested = f"no-such-package-xyz==1 determined=={importlib.metadata.version('determined')}"
    assert call.startswith("python -m pip install --quiet --dry-run --report ")
    assert call.endswith(f" {requested}")
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: pip cannot install {requested} in this image"


def test_the_shared_pip_cache_in_the_docs_is_a_config_determined_accepts():
    """docs/cluster.md's bind mount and PIP_CACHE_DIR, in const.yaml, pass Determined 0.38.1's
    schemas, keep the configs' PIP_CONSTRAINT and point pip's cache at the mounted folder."""
    text = (REPO / "docs" / "cluster.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "PIP_CACHE_DIR" in b]
    config = {**yaml.safe_load((REPO / "const.yaml").read_text()), **yaml.safe_load(block)}
    assert expconf.sanity_errors(config) == []
    variables = dict(v.split("=", 1) for v in config["environment"]["environment_variables"])
    assert variables["PIP_CONSTRAINT"] == "/dev/null"
    (mount,) = config["bind_mounts"]
    assert variables["PIP_CACHE_DIR"] == mount["container_path"]
    assert not mount.get("read_only", False)
