"""What Determined uploads and installs: one list of what the image lacks, pinned as
requirements.txt pins it, installed by startup-hook.sh and the Dockerfile in the configs' image."""

from __future__ import annotations

import re

import image_facts
import pathspec
import pytest
import yaml
from conftest import REPO

from bert_glue.container import versions

pytestmark = pytest.mark.smoke

IMAGE_REQUIREMENTS = REPO / "requirements-image.txt"
CONFIGS = sorted(REPO.glob("*.yaml"))
CONTAINER_MODULES = ("bert_glue/container/versions.py", "bert_glue/container/image_pins.py")


def pins(text: str) -> dict[str, str]:
    return dict(re.findall(r"^\s*\"?([A-Za-z0-9_.-]+)([=><]=[^\s\"\\]+)", text, flags=re.M))


def dockerfile_base() -> str:
    return re.search(r"^ARG BASE_IMAGE=(\S+)$", (REPO / "Dockerfile").read_text(), flags=re.M)[1]


def test_image_requirements_are_pinned_as_requirements_txt_pins_them():
    image = pins(IMAGE_REQUIREMENTS.read_text())
    requirements = pins((REPO / "requirements.txt").read_text())
    assert {"transformers", "tokenizers", "scikit-learn", "scipy"} <= set(image)
    for package, spec in image.items():
        assert requirements.get(package) == spec, f"{package}: image {spec}, requirements.txt"


def test_startup_hook_installs_the_image_requirements_and_nothing_else():
    hook = (REPO / "startup-hook.sh").read_text()
    assert "-m bert_glue.container.image_pins -r requirements-image.txt --keep determined\n" in hook
    assert '"$python" -m bert_glue.container.versions\n' in hook
    assert pins(hook) == {}


def test_dockerfile_installs_the_image_requirements_and_the_masters_determined():
    dockerfile = (REPO / "Dockerfile").read_text()
    determined = pins((REPO / "requirements.txt").read_text())["determined"]
    assert f"image_pins.py -r /tmp/requirements-image.txt determined{determined}\n" in dockerfile
    assert "!bert_glue/container/image_pins.py" in (REPO / ".dockerignore").read_text().split()
    assert "ENV DET_SKIP_PIP_INSTALL=1" in dockerfile


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_configs_lift_the_images_pip_pins_for_the_task_setup(path):
    # Determined's task setup installs the master's determined (requests < 2.32) before the hook.
    # An empty value would leave a pip.conf's pin file in force (tests/test_container_start.py).
    variables = yaml.safe_load(path.read_text())["environment"]["environment_variables"]
    assert "PIP_CONSTRAINT=/dev/null" in variables


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_configs_run_in_the_dockerfiles_base_image(path):
    assert yaml.safe_load(path.read_text())["environment"]["image"] == dockerfile_base()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_each_configs_image_runs_the_trial_from_v100_to_blackwell(path):
    """The facts kept for the image (image/*.yaml): code for Volta (7.0) to Blackwell (10.0), a
    driver branch clusters have, Python >= 3.11 and a torch transformers 5 accepts."""
    facts = image_facts.for_image(yaml.safe_load(path.read_text())["environment"]["image"])
    assert {"sm_70", "sm_75", "sm_80", "sm_90", "sm_100"} <= set(facts["gpu_architectures"])
    assert facts["driver_minimum"] <= 535  # NVIDIA's R535 datacenter branch and newer
    assert tuple(map(int, facts["python"].split("."))) >= (3, 11)
    assert versions.at_least(facts["torch"], versions.MIN_TORCH)
    for name in ("python", "torch", "gpu_architectures", "driver_minimum"):
        assert facts.facts[name].source and not facts.facts[name].assumed, name


def test_every_image_fact_names_its_source_or_why_it_is_assumed():
    images = image_facts.all_images()
    assert {facts.image for facts in images} >= {
        dockerfile_base(),
        "nvcr.io/nvidia/pytorch:25.12-py3",
    }
    blackwell = {facts.image for facts in images if "sm_100" in facts["gpu_architectures"]}
    assert blackwell == {dockerfile_base(), "nvcr.io/nvidia/pytorch:25.12-py3"}


def test_detignore_keeps_tests_caches_and_environments_out():
    ignored = (REPO / ".detignore").read_text().split()
    for pattern in ("tests/", "bench/", ".venv/", "__pycache__/", "glue_data/", "*.pt"):
        assert pattern in ignored
    # What the run summary's predict and export commands write into the project by default.
    assert {"/submission/", "/hf_model/"} <= set(ignored)


def test_detignore_uploads_what_the_startup_hook_runs():
    spec = pathspec.PathSpec.from_lines("gitwildmatch", (REPO / ".detignore").read_text().split())
    for name in ("startup-hook.sh", "requirements-image.txt", *CONTAINER_MODULES):
        assert not spec.match_file(name), name
