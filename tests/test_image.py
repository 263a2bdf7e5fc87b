"""The container's install, resolved as pip would resolve it inside the image, without the image.

What a trial container installs: the master's determined wheel (Determined's task setup, before
the startup hook) and requirements-image.txt (startup-hook.sh, or the Dockerfile). pip resolves
them for the image's Python and platform under the image's pins (image/ngc-*.txt, which stand in
for /etc/pip/constraint.txt), reading the packages' metadata from PyPI.

These tests need PyPI (CI reaches it). Without it they fail and say so; offline, deselect them
with -m "not network".
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from conftest import REPO
from test_packaging import pins

pytestmark = pytest.mark.network

HOOK_REQUIREMENTS = REPO / "requirements-image.txt"
CHOSEN_IMAGE = REPO / "image" / "ngc-25.12.txt"
DETERMINED_DEFAULT_IMAGE = REPO / "image" / "ngc-24.03.txt"  # under determinedai/pytorch-ngc:0.38.1
# Ubuntu 22.04 and 24.04 have glibc 2.35 and 2.39: wheels for any manylinux up to 2.35 run on both.
PLATFORMS = ["manylinux2014_x86_64"] + [f"manylinux_2_{minor}_x86_64" for minor in range(17, 36)]


@pytest.fixture(scope="module", autouse=True)
def pypi() -> None:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=20).close()
    except (urllib.error.URLError, TimeoutError) as e:
        pytest.fail(f"PyPI is unreachable ({e}): tests/test_image.py resolves against it")


def image_facts(path: pathlib.Path) -> tuple[str, list[str]]:
    """The image's Python version and its pip constraints, from an image/ngc-*.txt file."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    python = [line for line in lines if line.startswith("python==")]
    assert len(python) == 1, f"{path}: needs exactly one python==X.Y line"
    return python[0].removeprefix("python=="), [line for line in lines if line != python[0]]


def task_setup_requirements() -> list[str]:
    """What Determined's task setup installs before the hook: the master's determined wheel."""
    return [f"determined{pins((REPO / 'requirements.txt').read_text())['determined']}"]


def resolve(python: str, constraints: list[str], tmp: pathlib.Path) -> tuple[int, str, dict]:
    """pip's dry-run install for that image: return code, output and its --report JSON."""
    constraint_file = tmp / "constraint.txt"
    constraint_file.write_text("".join(f"{line}\n" for line in constraints))
    report = tmp / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
    command += ["--only-binary=:all:", "--implementation", "cp", "--python-version", python]
    command += [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    command += ["--target", str(tmp / "target"), "--report", str(report), "--quiet"]
    command += ["-c", str(constraint_file), "-r", str(HOOK_REQUIREMENTS)]
    command += task_setup_requirements()
    # This machine's pip settings (its index, constraints, find-links) are not the image's.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    installs = json.loads(report.read_text()) if done.returncode == 0 else {"install": []}
    return done.returncode, done.stdout + done.stderr, installs


def installed(report: dict) -> dict[str, str]:
    return {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}


def test_the_hook_installs_in_the_chosen_image(tmp_path):
    python, constraints = image_facts(CHOSEN_IMAGE)
    code, output, report = resolve(python, constraints, tmp_path)
    assert code == 0, output[-3000:]
    versions = installed(report)
    for package, spec in pins(HOOK_REQUIREMENTS.read_text()).items():
        if spec.startswith("=="):
            assert versions[package] == spec[2:], package
    assert versions["determined"] == "0.38.1"
    assert "torch" not in versions  # nothing may replace NVIDIA's torch build with PyPI's


def test_the_hook_cannot_install_in_determineds_default_image(tmp_path):
    python, constraints = image_facts(DETERMINED_DEFAULT_IMAGE)
    assert python == "3.10"
    code, output, _ = resolve(python, constraints, tmp_path)
    assert code != 0
    assert "require a different python version" in output, output[-3000:]
    assert "No matching distribution found for transformers==5.24.0" in output


def test_a_pin_that_conflicts_with_the_image_fails_to_resolve(tmp_path):
    # transformers 5.24 needs tokenizers >= 0.23.1: an image pinning 0.22.1 cannot take the hook.
    python, constraints = image_facts(CHOSEN_IMAGE)
    code, output, _ = resolve(python, [*constraints, "tokenizers==0.22.1"], tmp_path)
    assert code != 0
    assert "ResolutionImpossible" in output, output[-3000:]
