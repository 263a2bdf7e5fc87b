"""The container's install, resolved as pip would resolve it inside the image, without the image.

What a trial container installs, in two pip runs as the cluster does them: the master's
determined wheel (Determined's task setup, before the startup hook, under the PIP_CONSTRAINT the
configs set), then requirements-image.txt with the installed determined (startup-hook.sh through
image_pins.py, or the Dockerfile). pip resolves them for the image's Python and platform beside
what the image ships (image/*.yaml), reading the packages' metadata from PyPI. Which pins
image_pins.py relaxes depends on what is installed, which a dry run for another platform cannot
show: tests/test_container_start.py installs.

These tests need PyPI (CI reaches it). Without it they fail and say so; offline, deselect them
with -m "not network".
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import urllib.error
import urllib.request

import image_facts
import pytest
import yaml
from conftest import REPO
from test_packaging import pins

from bert_glue.container import image_pins

pytestmark = pytest.mark.network

HOOK_REQUIREMENTS = REPO / "requirements-image.txt"
CONFIG = yaml.safe_load((REPO / "const.yaml").read_text())
CHOSEN_IMAGE = image_facts.for_image(CONFIG["environment"]["image"])
DETERMINED_DEFAULT_IMAGE = image_facts.for_image("determinedai/pytorch-ngc:0.38.1")
HOOK_IMAGES = [f for f in image_facts.all_images() if f.image != DETERMINED_DEFAULT_IMAGE.image]
# Ubuntu 22.04 and 24.04 have glibc 2.35 and 2.39: wheels for any manylinux up to 2.35 run on both.
PLATFORMS = ["manylinux2014_x86_64"] + [f"manylinux_2_{minor}_x86_64" for minor in range(17, 36)]


@pytest.fixture(scope="module", autouse=True)
def pypi() -> None:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=20).close()
    except (urllib.error.URLError, TimeoutError) as e:
        pytest.fail(f"PyPI is unreachable ({e}): tests/test_image.py resolves against it")


def shipped(facts: image_facts.ImageFacts) -> list[str]:
    """What the image ships, as a pin file that listed all of it would pin it."""
    versions = {"torch": facts["torch"], **facts["installed"]}
    return [f"{name}=={version}" for name, version in versions.items()] + facts["pip_constraints"]


def task_setup_requirements() -> list[str]:
    """What Determined's task setup installs before the hook: the master's determined wheel."""
    return [f"determined{pins((REPO / 'requirements.txt').read_text())['determined']}"]


def hook_requirements() -> list[str]:
    """What startup-hook.sh asks pip for once the task setup has installed determined."""
    return ["-r", str(HOOK_REQUIREMENTS), *task_setup_requirements()]


def resolve(
    python: str, constraints: list[str], requirements: list[str], tmp: pathlib.Path
) -> tuple[int, str, dict]:
    """pip's dry-run install for that image: return code, output and its --report JSON."""
    constraint_file = tmp / "constraint.txt"
    constraint_file.write_text("".join(f"{line}\n" for line in constraints))
    report = tmp / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
    command += ["--only-binary=:all:", "--implementation", "cp", "--python-version", python]
    command += [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    command += ["--target", str(tmp / "target"), "--report", str(report), "--quiet"]
    command += ["-c", str(constraint_file), *requirements]
    # This machine's pip settings (its index, constraints, find-links) are not the image's.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    installs = json.loads(report.read_text()) if done.returncode == 0 else {"install": []}
    return done.returncode, done.stdout + done.stderr, installs


def installed(report: dict) -> dict[str, str]:
    return {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}


def test_the_task_setups_install_fails_where_the_image_pins_what_it_ships(tmp_path):
    """The master's determined needs requests < 2.32; the image ships 2.32.x. Pinned, as NVIDIA
    pins its images' packages, the install fails: the configs set PIP_CONSTRAINT=/dev/null."""
    constraints = shipped(CHOSEN_IMAGE)
    code, output, _ = resolve(
        CHOSEN_IMAGE["python"], constraints, task_setup_requirements(), tmp_path
    )
    assert code != 0
    assert "ResolutionImpossible" in output, output[-3000:]


def test_the_configs_pip_constraint_lets_the_task_setup_install_determined(tmp_path):
    assert "PIP_CONSTRAINT=/dev/null" in CONFIG["environment"]["environment_variables"]
    python = CHOSEN_IMAGE["python"]
    code, output, report = resolve(python, [], task_setup_requirements(), tmp_path)
    assert code == 0, output[-3000:]
    assert installed(report)["determined"] == "0.38.1"


@pytest.mark.parametrize("facts", HOOK_IMAGES, ids=lambda facts: facts.path.stem)
def test_the_hook_installs_beside_what_the_image_ships(facts, tmp_path):
    """Under the versions image_pins.py never changes: the image's torch, numpy, triton,
    torchvision (and the pins of its pin file, if it has one)."""
    kept = [
        line for line in shipped(facts) if image_pins.is_protected(re.split("[=<>!~ ]", line)[0])
    ]
    code, output, report = resolve(facts["python"], kept, hook_requirements(), tmp_path)
    assert code == 0, output[-3000:]
    versions = installed(report)
    for package, spec in pins(HOOK_REQUIREMENTS.read_text()).items():
        if spec.startswith("=="):
            assert versions[package] == spec[2:], package
    assert versions["determined"] == "0.38.1"
    assert "torch" not in versions  # nothing may replace the image's torch build with PyPI's
    if "numpy" in facts["installed"]:  # --ignore-installed lists numpy: the image's
        assert versions["numpy"] == facts["installed"]["numpy"]


def test_the_hook_cannot_install_in_determineds_default_image(tmp_path):
    python = DETERMINED_DEFAULT_IMAGE["python"]
    assert python == "3.10"
    code, output, _ = resolve(
        python, shipped(DETERMINED_DEFAULT_IMAGE), hook_requirements(), tmp_path
    )
    assert code != 0
    assert "require a different python version" in output, output[-3000:]
    assert "No matching distribution found for transformers==5.24.0" in output
