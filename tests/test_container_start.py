"""A trial container's start, rehearsed (tests/container_start/rehearsal.py says how): Determined
v0.38.1's own scripts in a stand-in for the configs' image, with the tiny model and synthetic
MRPC, to a trial's validation. Each start is also run with everything the image ships pinned, as
NVIDIA's images pin theirs, wired through PIP_CONSTRAINT, a pip.conf, both, or an empty pin file;
and in the image the Dockerfile builds, where nothing may start pip. These tests need PyPI;
offline, deselect them with -m "not network".
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import os
import pathlib
import re
import tarfile

import image_facts
import pytest
import yaml
from conftest import REPO, tiny_config
from container_start.pip_recorder import PipRecorder, pip_recorder
from container_start.rehearsal import (
    SCRIPTS,
    SITECUSTOMIZE,
    Image,
    Start,
    build_from_dockerfile,
    build_image,
    checked,
    config_variables,
    container_layer,
    context_tgz,
    download_wheel,
    new_prefix,
    start_container,
    trial_config,
    wired,
)

pytestmark = pytest.mark.network

CONFIG = yaml.safe_load((REPO / "const.yaml").read_text())
NEVER_CHANGED = ("torch", "numpy")
# How the image's pins reach pip: as the chosen image ships (no pins), or with everything it ships
# pinned as NVIDIA pins its images' packages: through PIP_CONSTRAINT, a pip.conf, both, or an
# empty pin file.
WIRINGS = ("none", "env", "pip.conf", "both", "empty")


@pytest.fixture(scope="session")
def image(tmp_path_factory) -> Image:
    """The stand-in for the configs' image, built once for the session."""
    return build_image(tmp_path_factory.mktemp("image"), CONFIG["environment"]["image"])


def never_changed(image: Image, layer: Image, env: dict[str, str]) -> None:
    """torch and numpy in the container are the image's own files, and nothing shadows them."""
    probe = "import json, torch, numpy; print(json.dumps([torch.__file__, numpy.__file__]))"
    files = json.loads(checked(layer.prefix.run(["-c", probe], env)).stdout)
    for name, file in zip(NEVER_CHANGED, files, strict=True):
        path = pathlib.Path(file)
        assert path.is_relative_to(layer.prefix.site_packages), (name, path)
        original = image.prefix.site_packages / path.relative_to(layer.prefix.site_packages)
        assert path.stat().st_ino == original.stat().st_ino, f"pip replaced the image's {name}"
    versions = "import importlib.metadata as m; print(m.version('torch'), m.version('numpy'))"
    torch_version, numpy_version = checked(layer.prefix.run(["-c", versions], env)).stdout.split()
    assert torch_version == image.pins["torch"]
    assert numpy_version == image.pins["numpy"]


def git_blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def recorded_blob_shas() -> dict[str, str]:
    text = (SCRIPTS / "SOURCE.md").read_text()
    return dict(re.findall(r"\| `([\w.-]+\.sh)` \| `[^`]+` \| `([0-9a-f]{40})` \|", text))


def test_the_copies_of_determineds_scripts_are_verbatim():
    recorded = recorded_blob_shas()
    assert sorted(recorded) == ["entrypoint.sh", "task-setup.sh"]
    for name, sha in recorded.items():
        assert git_blob_sha((SCRIPTS / name).read_bytes()) == sha, f"{name} was edited"


def died_before_the_hook(start: Start) -> None:
    """The cluster's failure: under the image's pins the task setup cannot install the master's
    determined (requests < 2.32 against the image's 2.32.x); task-setup.sh is sourced before
    entrypoint.sh sets -e, so the container dies at prep_container, before startup-hook.sh."""
    assert start.run.returncode != 0
    conflict = "Cannot install determined==0.38.1 because these package versions have conflicting"
    assert conflict in start.output
    assert "determined.exec.prep_container" in start.output
    assert "No module named 'determined'" in start.output
    assert "startup-hook.sh" not in start.output  # set -x would trace the hook's test -f
    assert start.master.requests == []


# Each container start the tests below read: (wiring, the config's environment_variables).
VARIABLES = config_variables(CONFIG)
PIP_ALLOWED = {"PIP_BREAK_SYSTEM_PACKAGES": VARIABLES["PIP_BREAK_SYSTEM_PACKAGES"]}
STARTS = {
    "no variables": ("none", {}),
    "pinned, no PIP_CONSTRAINT": ("env", PIP_ALLOWED),
    "pip.conf, PIP_CONSTRAINT empty": ("pip.conf", {"PIP_CONSTRAINT": "", **PIP_ALLOWED}),
    **{wiring: (wiring, VARIABLES) for wiring in WIRINGS},
}


@pytest.fixture(scope="module")
def starts(image, master_wheel, tiny_model_dir, glue_dir, tmp_path_factory) -> dict[str, Start]:
    """Every start of STARTS, two at a time: each is one process at a time, mostly pip's."""

    roots = {name: tmp_path_factory.mktemp("container") for name in STARTS}

    def start(name: str) -> Start:
        wiring, variables = STARTS[name]
        root = roots[name]
        config = trial_config(tiny_config(tiny_model_dir, glue_dir), root / "storage")
        return start_container(wired(image, wiring, root), root, master_wheel, config, variables)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(STARTS, pool.map(start, STARTS), strict=True))


def test_without_the_configs_variables_the_images_python_refuses_the_task_setups_install(starts):
    """The image's Python is Ubuntu's (image/*.yaml: externally_managed): pip refuses the task
    setup's --user install of determined until PIP_BREAK_SYSTEM_PACKAGES is set."""
    start = starts["no variables"]
    assert image_facts.for_image(CONFIG["environment"]["image"])["externally_managed"]
    assert start.run.returncode != 0
    assert "externally-managed-environment" in start.output
    assert "No module named 'determined'" in start.output
    assert start.master.requests == []


def test_without_the_configs_pip_constraint_a_pinned_image_dies_before_the_hook(starts):
    died_before_the_hook(starts["pinned, no PIP_CONSTRAINT"])


def test_an_empty_pip_constraint_leaves_a_pip_conf_pin_in_force(starts):
    """pip drops an empty PIP_CONSTRAINT, so the pin file that a pip.conf names still applies."""
    died_before_the_hook(starts["pip.conf, PIP_CONSTRAINT empty"])


@pytest.mark.parametrize("wiring", WIRINGS)
def test_with_the_configs_variables_the_trial_starts_and_validates(wiring, starts, image):
    assert config_variables(CONFIG) == {
        "PIP_CONSTRAINT": "/dev/null",
        "PIP_BREAK_SYSTEM_PACKAGES": "1",
    }
    start = starts[wiring]
    assert start.run.returncode == 0, start.output[-5000:]
    assert start.master.unknown == []
    assert [m["stepsCompleted"] for m in start.master.metrics("validation")] == [6]
    relaxed = set(re.findall(r"image_pins: relaxing the image's ([\w.-]+)==", start.output))
    # The task setup put requests 2.31 in the user site: the image's pin on it must go.
    assert relaxed == ({"requests"} if wiring in ("env", "pip.conf", "both") else set())
    run_dir = start.root / "run" / "determined"
    user_site = list((run_dir / "pythonuserbase").glob("lib/*/site-*"))
    assert (user_site[0] / "determined").is_dir()  # the task setup's --user install
    assert (run_dir / "info" / "rendezvous.json").is_file()
    never_changed(image, start.layer, start.env)


@pytest.fixture(scope="module")
def master_wheel(tmp_path_factory) -> pathlib.Path:
    return download_wheel(tmp_path_factory.mktemp("wheels"))


@pytest.fixture(scope="module")
def prebuilt(image, tmp_path_factory) -> tuple[Image, dict[str, str]]:
    """The Dockerfile's image, built on the stand-in with what it ships pinned both ways (the
    container starts above run the same install without pins), and the ENV it sets."""
    return build_from_dockerfile(image, tmp_path_factory.mktemp("prebuilt"))


def test_the_dockerfiles_install_works_in_the_image(image, prebuilt):
    layer, _ = prebuilt
    env = layer.env()
    checked(layer.prefix.run(["-c", "import determined, transformers"], env))
    checked(layer.prefix.run([str(REPO / "bert_glue" / "container" / "versions.py")], env))
    never_changed(image, layer, env)


@pytest.fixture(scope="module")
def prebuilt_starts(prebuilt, master_wheel, tiny_model_dir, glue_dir, tmp_path_factory):
    """Two containers of the Dockerfile's image: as built, with stand-ins recording any call of
    pip; and without the DET_SKIP_PIP_INSTALL it sets, with the real pip."""
    built, dockerfile_env = prebuilt
    assert dockerfile_env == {"PIP_BREAK_SYSTEM_PACKAGES": "1", "DET_SKIP_PIP_INSTALL": "1"}

    def start(name: str) -> tuple[Start, PipRecorder | None]:
        root = tmp_path_factory.mktemp("container")
        layer = container_layer(built, root)
        config = trial_config(tiny_config(tiny_model_dir, glue_dir), root / "storage")
        variables, recorder = config_variables(CONFIG), None
        variables.update((k, v) for k, v in dockerfile_env.items() if k != "DET_SKIP_PIP_INSTALL")
        if name == "as built":
            recorder = pip_recorder(root / "pip-recorder")
            variables.update(
                dockerfile_env,
                PATH=os.pathsep.join([str(recorder.bin), layer.env()["PATH"]]),
                PYTHONPATH=os.pathsep.join([str(recorder.package_root), str(SITECUSTOMIZE)]),
            )
        return start_container(layer, root, master_wheel, config, variables), recorder

    names = ("as built", "no DET_SKIP_PIP_INSTALL")
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(names, pool.map(start, names), strict=True))


def test_the_dockerfiles_image_starts_the_trial_without_pip(prebuilt_starts):
    start, recorder = prebuilt_starts["as built"]
    assert start.run.returncode == 0, start.output[-5000:]
    assert [m["stepsCompleted"] for m in start.master.metrics("validation")] == [6]
    assert "image_pins: nothing to install: " in start.output
    assert recorder.calls() == []


def test_the_task_setup_installs_determined_again_unless_told_to_skip(prebuilt_starts):
    """The image has the master's determined 0.38.1 already; task-setup.sh installs the wheel
    all the same (into the user site, before the image's) unless DET_SKIP_PIP_INSTALL is set."""
    start, _ = prebuilt_starts["no DET_SKIP_PIP_INSTALL"]
    assert start.run.returncode == 0, start.output[-5000:]
    user_base = start.root / "run" / "determined" / "pythonuserbase"
    assert [p.name for p in user_base.glob("lib/*/site-packages/determined")] == ["determined"]
    assert "image_pins: nothing to install: " in start.output


def test_an_install_that_would_move_numpy_stops_and_changes_nothing(tmp_path):
    """With no pin on numpy (an empty pin file), pip would upgrade an image's numpy 1.26.0 for
    scipy 1.17.1; image_pins.py says so in one line instead, before anything is installed."""
    prefix = new_prefix(tmp_path / "usr")
    env = prefix.env()
    checked(prefix.run(["-m", "ensurepip"], env))
    checked(prefix.run(["-m", "pip", "install", "--quiet", "numpy==1.26.0"], env, timeout=300))
    empty = tmp_path / "constraint.txt"
    empty.write_text("")
    command = ["-m", "bert_glue.container.image_pins", "--image-constraints", str(empty)]
    env = {**env, "PYTHONPATH": str(REPO), "PIP_CONSTRAINT": str(empty)}
    run = prefix.run([*command, "scipy==1.17.1"], env, timeout=300)
    assert run.returncode == 1
    (line,) = run.stderr.strip().splitlines()
    assert re.fullmatch(
        r"error: installing scipy==1\.17\.1 would change the image's numpy "
        r"1\.26\.0 -> [\d.]+; nothing was installed: .*",
        line,
    ), run.stderr
    listed = checked(prefix.run(["-m", "pip", "list", "--format=freeze"], env)).stdout.split()
    assert "numpy==1.26.0" in listed
    assert not any(line.startswith("scipy==") for line in listed)


def test_the_uploaded_context_holds_the_hook_and_its_helper():
    with tarfile.open(fileobj=io.BytesIO(context_tgz())) as tar:
        names = tar.getnames()
    helpers = {"bert_glue/container/versions.py", "bert_glue/container/image_pins.py"}
    assert {"startup-hook.sh", "requirements-image.txt", "model_def.py", *helpers} <= set(names)
    assert not any(name.startswith("tests/") for name in names)
