"""A trial container's start, rehearsed: Determined v0.38.1's own scripts in a stand-in image.

Determined starts every trial container with entrypoint.sh, which sources task-setup.sh (it
pip-installs the master's determined wheel with --user), then runs prep_container (context
download, resources, proxy), sources the experiment's startup-hook.sh, rendezvouses and
execs determined.exec.launch, which runs the config's entrypoint, `python3 model_def.py`. These
tests run exactly that: the verbatim scripts of tests/determined_v0.38.1/ (their blob shas
checked) with only their hard-coded paths moved under a folder of the test (replacements that
are asserted), against tests/fake_master.py on loopback, the tiny model and synthetic MRPC.

The stand-in image is a Python "installation" of its own (this interpreter's standard library,
its own site-packages; not a venv, in which pip refuses --user) holding what the configs' image
ships, as image/pytorch-2.7.1-cuda12.6.yaml gives it: Python 3.11 (this machine's), numpy and
requests at the facts' versions. It has no pin file; each test also runs it with every package
it ships pinned, as NVIDIA's images pin theirs, wired through PIP_CONSTRAINT, through a pip.conf
(the installation's own, where the image has /etc/pip.conf), through both, or with an empty pin
file. Differences from the image, each unavoidable:
  - torch is PyPI's CPU build, torch==2.13.0 (this machine's local wheel), for the image's
    2.7.1+cu126 with its nvidia-* CUDA libraries (5 GB); PyPI's torchvision 0.22.1 and triton
    3.3.1 need that torch, so the stand-in has neither.
  - the master's wheel is PyPI's determined 0.38.1 (what a 0.38.1 master serves).
  - Determined's Python harness hard-codes /run/determined too: tests/container_start/
    sitecustomize.py compiles it with that path (and /tmp/tensorboard) moved, like the scripts.
  - the hook reads the image's pins from $IMAGE_PIP_CONSTRAINT instead of /etc/pip/constraint.txt.
  - each container is a hard-linked copy of the image (a fresh layer, as docker gives each
    container), so one test's installs never reach another's.
No step is skipped: the task setup's install, prep_container with --download_context_directory
--resources --proxy (docker-container: the proxy step returns at once) and --rendezvous, the hook
(a real pip install from PyPI), and the launch. These tests need PyPI; offline, deselect them with
-m "not network".
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile

import image_facts
import pytest
import yaml
from conftest import REPO, tiny_config
from determined.common import detignore
from fake_master import TOKEN, FakeMaster
from test_cluster import free_ports

pytestmark = pytest.mark.network

SCRIPTS = REPO / "tests" / "determined_v0.38.1"
SITECUSTOMIZE = REPO / "tests" / "container_start"
CONFIG = yaml.safe_load((REPO / "const.yaml").read_text())
FACTS = image_facts.for_image(CONFIG["environment"]["image"])
STAND_IN_TORCH = "torch==2.13.0"  # this machine's local CPU wheel (README: Tests)
STAND_IN_LEFT_OUT = ("torchvision", "triton")  # they need the image's torch 2.7.1
DETERMINED_WHEEL = "determined==0.38.1"
START_TIMEOUT_S = 900
NEVER_CHANGED = ("torch", "numpy")
# How the image's pins reach pip: as the chosen image ships (no pins), or with everything it ships
# pinned as NVIDIA pins its images' packages: through PIP_CONSTRAINT, a pip.conf, both, or an
# empty pin file.
WIRINGS = ("none", "env", "pip.conf", "both", "empty")


@dataclasses.dataclass(frozen=True)
class Prefix:
    """A Python installation: prefix/bin/python3 with prefix/lib/pythonX.Y."""

    path: pathlib.Path

    @property
    def site_packages(self) -> pathlib.Path:
        return (
            self.path
            / "lib"
            / f"python{sys.version_info.major}.{sys.version_info.minor}"
            / ("site-packages")
        )

    def env(self, **extra: str) -> dict[str, str]:
        """This machine's environment with python3 being this installation's."""
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env["PATH"] = os.pathsep.join([str(self.path / "bin"), env["PATH"]])
        env["PYTHONHOME"] = str(self.path)
        return {**env, **extra}

    def run(self, args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
        command = [str(self.path / "bin" / "python3"), *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, **kwargs)


def new_prefix(path: pathlib.Path) -> Prefix:
    """An empty installation on this interpreter: its standard library linked, no packages."""
    stdlib = pathlib.Path(sysconfig.get_path("stdlib"))
    prefix = Prefix(path)
    prefix.site_packages.mkdir(parents=True)
    for entry in stdlib.iterdir():
        # A Debian-style PEP 668 marker would make pip refuse; NVIDIA's image installs with pip.
        if entry.name not in ("site-packages", "dist-packages", "EXTERNALLY-MANAGED"):
            (prefix.site_packages.parent / entry.name).symlink_to(entry)
    (path / "bin").mkdir()
    (path / "bin" / "python3").symlink_to(os.path.realpath(sys._base_executable))
    return prefix


def checked(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


@dataclasses.dataclass(frozen=True)
class Image:
    prefix: Prefix
    constraints: pathlib.Path  # its /etc/pip/constraint.txt, absent where wiring is "none"
    pins: dict[str, str]  # canonical name -> the version the image ships
    wiring: str = "none"

    def env(self) -> dict[str, str]:
        """The image's own environment: PIP_CONSTRAINT where the wiring sets it."""
        wired = self.wiring in ("env", "both", "empty")
        return self.prefix.env(**({"PIP_CONSTRAINT": str(self.constraints)} if wired else {}))


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="session")
def image(tmp_path_factory) -> Image:
    """The stand-in for the configs' image (FACTS), built once for the session."""
    root = tmp_path_factory.mktemp("image")
    installed = FACTS["installed"]
    shipped = [f"{name}=={version}" for name, version in installed.items()]
    shipped = [line for line in shipped if not line.startswith(STAND_IN_LEFT_OUT)]
    prefix = new_prefix(root / "usr")
    env = prefix.env()
    checked(prefix.run(["-m", "ensurepip"], env))
    checked(prefix.run(["-m", "pip", "install", "--quiet", "--upgrade", "pip"], env))
    install = ["-m", "pip", "install", "--quiet", STAND_IN_TORCH, *shipped]
    checked(prefix.run(install, env, timeout=900))
    freeze = checked(prefix.run(["-m", "pip", "freeze", "--all"], env)).stdout.split()
    pins = {canonical(line.split("==")[0]): line.split("==")[1] for line in freeze}
    assert all(pins[line.split("==")[0]] == line.split("==")[1] for line in shipped)
    assert FACTS["pip_constraints"] == [], "the image pins packages: write them to its pin file"
    return Image(prefix, root / "etc" / "pip" / "constraint.txt", pins)


def wired(image: Image, wiring: str, path: pathlib.Path) -> Image:
    """A container's copy of the image, its pins wired as named."""
    layer = container_layer(image, path)
    layer.constraints.parent.mkdir(parents=True, exist_ok=True)
    lines = [] if wiring == "empty" else [f"{n}=={v}" for n, v in sorted(image.pins.items())]
    if wiring != "none":
        layer.constraints.write_text("".join(f"{line}\n" for line in lines))
    if wiring in ("pip.conf", "both"):
        # pip reads the installation's pip.conf as it reads /etc/pip.conf in the image.
        (layer.prefix.path / "pip.conf").write_text(f"[global]\nconstraint = {layer.constraints}\n")
    return dataclasses.replace(layer, wiring=wiring)


def container_layer(image: Image, path: pathlib.Path) -> Image:
    """A container's copy of the image: hard links, so pip's changes stay in the copy; its
    etc/ beside it (the pin file's folder)."""
    shutil.copytree(image.prefix.path, path / "usr", symlinks=True, copy_function=os.link)
    return dataclasses.replace(
        image, prefix=Prefix(path / "usr"), constraints=path / "etc" / "pip" / "constraint.txt"
    )


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


def moved(script: str, replacements: list[tuple[str, str]]) -> str:
    """A verbatim script with its hard-coded paths replaced; each must occur."""
    text = (SCRIPTS / script).read_text()
    for old, new in replacements:
        assert old in text, f"{script} no longer contains {old}"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def master_wheel(tmp_path_factory) -> pathlib.Path:
    """PyPI's determined 0.38.1 wheel: what a 0.38.1 master serves from /opt/determined/wheels."""
    folder = tmp_path_factory.mktemp("wheels")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary"]
    command += [":all:", "--dest", str(folder), DETERMINED_WHEEL]
    checked(subprocess.run(command, capture_output=True, text=True, timeout=300))
    (wheel,) = folder.glob("determined-*.whl")
    return wheel


def context_tgz() -> bytes:
    """The project folder as `det experiment create ... .` uploads it (.detignore applied)."""
    ignore = detignore.make_shutil_ignore(REPO)
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for folder, dirs, files in os.walk(REPO):
            dirs[:] = sorted(set(dirs) - set(ignore(folder, dirs)))
            for name in sorted(set(files) - set(ignore(folder, files))):
                path = pathlib.Path(folder, name)
                tar.add(path, arcname=str(path.relative_to(REPO)))
    return data.getvalue()


def trial_config(local_config: dict, storage: pathlib.Path) -> dict:
    """const.yaml on the tiny model (local_config), one epoch, as the master expands it."""
    config = {**local_config, "checkpoint_storage": {"type": "directory"}}
    config["checkpoint_storage"]["container_path"] = str(storage)
    config["hyperparameters"] = {**config["hyperparameters"], "num_train_epochs": 1}
    return config


def config_variables(config: dict) -> dict[str, str]:
    """The config's environment.environment_variables, which override the image's."""
    pairs = config["environment"].get("environment_variables", [])
    return dict(pair.split("=", 1) for pair in pairs)


def master_env(root: pathlib.Path, url: str, config: dict) -> dict[str, str]:
    """What Determined 0.38.1's master sets in a one-slot docker-container trial container
    (master/pkg/tasks/task.go EnvVars and the trial's DET_* variables)."""
    run_dir = root / "run" / "determined"
    ports = free_ports(3)
    return {
        "DET_MASTER": url,
        "DET_CLUSTER_ID": "fake-cluster",
        "DET_AGENT_ID": "fake-agent",
        "DET_SLOT_IDS": "[0]",
        "DET_TASK_ID": "1.1",
        "DET_ALLOCATION_ID": "1.1.1",
        "DET_RESOURCES_ID": "fake-resources",
        "DET_RESOURCES_TYPE": "docker-container",
        "DET_CONTAINER_ID": "fake-container",
        "DET_SESSION_TOKEN": TOKEN,
        "DET_TASK_TYPE": "TRIAL",
        "DET_USER": "determined",
        "DET_USE_TLS": "false",
        "DET_RUN_DIR": str(run_dir),
        "DET_WORKDIR": str(run_dir / "workdir"),
        "PYTHONUSERBASE": str(run_dir / "pythonuserbase"),
        "DET_TRIAL_ID": "1",
        "DET_EXPERIMENT_ID": "1",
        "DET_TRIAL_SEED": "7",
        "DET_TRIAL_RUN_ID": "1",
        "DET_STEPS_COMPLETED": "0",
        "DET_HPARAMS": json.dumps(config["hyperparameters"]),
        "DET_EXPERIMENT_CONFIG": json.dumps(config),
        "C10D_PORT": str(ports[0]),
        "INTER_TRAIN_PROCESS_COMM_PORT_1": str(ports[1]),
        "INTER_TRAIN_PROCESS_COMM_PORT_2": str(ports[2]),
    }


def lay_out_container(root: pathlib.Path, wheel: pathlib.Path) -> pathlib.Path:
    """The master's files in the container, under root; returns entrypoint.sh."""
    run_dir, wheels = root / "run" / "determined", root / "opt" / "determined" / "wheels"
    for folder in ("workdir", "info", "pythonuserbase"):  # task.go's workDirArchive makes these
        (run_dir / folder).mkdir(parents=True)
    wheels.mkdir(parents=True)
    shutil.copy(wheel, wheels)
    task_setup = moved(
        "task-setup.sh",
        [("/run/determined/", f"{run_dir}/"), ("/opt/determined/wheels/", f"{wheels}/")],
    )
    entrypoint = moved(
        "entrypoint.sh", [("/run/determined/task-setup.sh", f"{run_dir}/task-setup.sh")]
    )
    assert "/run/determined" not in task_setup.replace(str(run_dir), "")
    (run_dir / "task-setup.sh").write_text(task_setup)
    (run_dir / "entrypoint.sh").write_text(entrypoint)
    return run_dir / "entrypoint.sh"


@dataclasses.dataclass
class Start:
    run: subprocess.CompletedProcess
    master: FakeMaster
    layer: Image
    env: dict[str, str]
    root: pathlib.Path

    @property
    def output(self) -> str:
        return self.run.stdout + self.run.stderr


def start_container(
    layer: Image, root: pathlib.Path, wheel: pathlib.Path, config: dict, variables: dict[str, str]
) -> Start:
    """One trial container from the image's start to the trial's end, in a layer made under root
    (wired()); variables: the config's environment_variables (applied over the image's
    environment, as Docker does)."""
    entrypoint = lay_out_container(root, wheel)
    master = FakeMaster(smaller_is_better=True, metric="validation_loss", context_tgz=context_tgz())
    with master.serving() as url:
        env = {**layer.env(), **master_env(root, url, config), **variables}
        env.update(
            FAKE_RUN_ROOT=str(root),
            PYTHONPATH=str(SITECUSTOMIZE),
            IMAGE_PIP_CONSTRAINT=str(layer.constraints),
            NO_PROXY="127.0.0.1,localhost",
            HF_HUB_OFFLINE="1",
            XDG_CACHE_HOME=str(root / "cache"),
            OMP_NUM_THREADS="1",
            PIP_NO_COMPILE="1",  # pip's bytecode for every installed file: time, nothing tested
        )
        run = subprocess.run(
            ["bash", str(entrypoint)],
            cwd=root / "run" / "determined" / "workdir",
            env=env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
        )
    return Start(run, master, layer, env, root)


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
STARTS = {
    "pinned, no variables": ("env", {}),
    "pip.conf, PIP_CONSTRAINT empty": ("pip.conf", {"PIP_CONSTRAINT": ""}),
    **{wiring: (wiring, config_variables(CONFIG)) for wiring in WIRINGS},
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


def test_without_the_configs_variables_a_pinned_image_dies_before_the_hook(starts):
    died_before_the_hook(starts["pinned, no variables"])


def test_an_empty_pip_constraint_leaves_a_pip_conf_pin_in_force(starts):
    """pip drops an empty PIP_CONSTRAINT, so the pin file that a pip.conf names still applies."""
    died_before_the_hook(starts["pip.conf, PIP_CONSTRAINT empty"])


@pytest.mark.parametrize("wiring", WIRINGS)
def test_with_the_configs_variables_the_trial_starts_and_validates(wiring, starts, image):
    assert config_variables(CONFIG) == {"PIP_CONSTRAINT": "/dev/null"}
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


def dockerfile_steps(dockerfile: str, root: pathlib.Path) -> list[str]:
    """The Dockerfile's COPY steps done under root and its RUN commands, with the image paths it
    copies to moved under root."""
    commands, moves = [], []
    for line in dockerfile.replace("\\\n", " ").splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction == "COPY":
            *sources, destination = shlex.split(rest)
            target = root / destination.lstrip("/")
            folder = target if destination.endswith("/") else target.parent
            folder.mkdir(parents=True, exist_ok=True)
            for source in sources:
                shutil.copy(REPO / source, target)
            moves.append((destination, str(target) + ("/" if destination.endswith("/") else "")))
        elif instruction == "RUN":
            commands.append(rest)
    for destination, target in moves:
        commands = [c.replace(destination, target) for c in commands]
    return commands


def test_the_dockerfiles_install_works_in_the_image(image, tmp_path):
    """The Dockerfile's RUN steps in a copy of the image, with what it ships pinned both ways (the
    container starts above run the same install without pins); image_pins.py reads the pins from
    $IMAGE_PIP_CONSTRAINT here (/etc/pip/constraint.txt in the build)."""
    commands = dockerfile_steps((REPO / "Dockerfile").read_text(), tmp_path / "build")
    assert any("image_pins.py" in c for c in commands)
    layer = wired(image, "both", tmp_path)
    env = {**layer.env(), "IMAGE_PIP_CONSTRAINT": str(layer.constraints), "PIP_NO_COMPILE": "1"}
    for command in commands:
        run = subprocess.run(
            ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=900
        )
        assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    checked(layer.prefix.run(["-c", "import determined, transformers"], env))
    versions = str(REPO / "bert_glue" / "container" / "versions.py")
    checked(layer.prefix.run([versions], env))
    checked(layer.prefix.run([versions, "--unmet", str(REPO / "requirements-image.txt")], env))
    never_changed(image, layer, env)


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
