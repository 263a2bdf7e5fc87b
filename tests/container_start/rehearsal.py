"""A trial container's start, rehearsed: Determined v0.38.1's own scripts in a stand-in image.

Determined starts every trial container with entrypoint.sh, which sources task-setup.sh (it
pip-installs the master's determined wheel with --user), then runs prep_container (context
download, resources, proxy), sources the experiment's startup-hook.sh, rendezvouses and
execs determined.exec.launch, which runs the config's entrypoint, `python3 model_def.py`.
start_container() runs exactly that: the verbatim scripts of tests/determined_v0.38.1/ (their
blob shas checked by tests/test_container_start.py) with only their hard-coded paths moved under
a folder of the start (replacements that are asserted), against tests/fake_master.py on loopback.

The stand-in image is a Python "installation" of its own (this interpreter's standard library, its
own site-packages; not a venv, in which pip refuses --user) holding what the configs' image ships,
as image/pytorch-2.10.0-cuda12.8.yaml gives it: numpy and requests at the facts' versions, and the
PEP 668 marker (EXTERNALLY-MANAGED) where the facts say the image's Python has one, so pip refuses
every install there, --user included, unless PIP_BREAK_SYSTEM_PACKAGES is set. It has no pin file;
wired() pins every package it ships, as NVIDIA's images pin theirs, through PIP_CONSTRAINT, through
a pip.conf (the installation's own, where the image has /etc/pip.conf), through both, or with an
empty pin file. Differences from the image, each unavoidable:
  - Python is this machine's 3.11, for the image's 3.12.
  - torch is PyPI's CPU build, torch==2.13.0 (this machine's local wheel), for the image's
    2.10.0+cu128 with its nvidia-* CUDA libraries (5 GB); PyPI's torchvision 0.25.0, torchaudio
    2.10.0 and triton 3.6.0 need that torch, so the stand-in has none of them.
  - the master's wheel is PyPI's determined 0.38.1 (what a 0.38.1 master serves).
  - Determined's Python harness hard-codes /run/determined too: sitecustomize.py beside this file
    compiles it with that path (and /tmp/tensorboard) moved, like the scripts.
  - the hook reads the image's pins from $IMAGE_PIP_CONSTRAINT instead of /etc/pip/constraint.txt.
  - each container is a hard-linked copy of the image (a fresh layer, as docker gives each
    container), so one container's installs never reach another's, and a restart starts from
    the image again.
No step is skipped: the task setup's install, prep_container with --download_context_directory
--resources --proxy (docker-container: the proxy step returns at once) and --rendezvous, the hook
(a real pip install from PyPI), and the launch. Used by tests/test_container_start.py and
bench/container_start.py.
"""

from __future__ import annotations

import dataclasses
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
from conftest import REPO
from determined.common import detignore
from fake_master import TOKEN, FakeMaster
from test_cluster import free_ports

SCRIPTS = REPO / "tests" / "determined_v0.38.1"
SITECUSTOMIZE = pathlib.Path(__file__).resolve().parent
STAND_IN_TORCH = "torch==2.13.0"  # this machine's local CPU wheel (README: Tests)
STAND_IN_LEFT_OUT = ("torchvision", "torchaudio", "triton")  # they need the image's torch
DETERMINED_WHEEL = "determined==0.38.1"
START_TIMEOUT_S = 900


@dataclasses.dataclass(frozen=True)
class Prefix:
    """A Python installation: prefix/bin/python3 with prefix/lib/pythonX.Y."""

    path: pathlib.Path

    @property
    def site_packages(self) -> pathlib.Path:
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        return self.path / "lib" / version / "site-packages"

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


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


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


def build_image(root: pathlib.Path, image: str) -> Image:
    """The stand-in for an image whose facts image/*.yaml keeps, under root."""
    facts = image_facts.for_image(image)
    shipped = [f"{name}=={version}" for name, version in facts["installed"].items()]
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
    assert facts["pip_constraints"] == [], "the image pins packages: write them to its pin file"
    if facts["externally_managed"]:  # written once the image is built, as apt leaves it
        marker = "[externally-managed]\nError=installs go through apt (stand-in of the image)\n"
        (prefix.site_packages.parent / "EXTERNALLY-MANAGED").write_text(marker)
    return Image(prefix, root / "etc" / "pip" / "constraint.txt", pins)


def container_layer(image: Image, path: pathlib.Path) -> Image:
    """A container's copy of the image: hard links, so pip's changes stay in the copy; its
    etc/ beside it (the pin file's folder), with the image's pin file if it has one."""
    shutil.copytree(image.prefix.path, path / "usr", symlinks=True, copy_function=os.link)
    constraints = path / "etc" / "pip" / "constraint.txt"
    if image.constraints.is_file():
        constraints.parent.mkdir(parents=True)
        shutil.copy(image.constraints, constraints)
    return dataclasses.replace(image, prefix=Prefix(path / "usr"), constraints=constraints)


def wired(image: Image, wiring: str, path: pathlib.Path) -> Image:
    """A container's copy of the unpinned image, its pins wired as named."""
    layer = container_layer(image, path)
    layer.constraints.parent.mkdir(parents=True, exist_ok=True)
    lines = [] if wiring == "empty" else [f"{n}=={v}" for n, v in sorted(image.pins.items())]
    if wiring != "none":
        layer.constraints.write_text("".join(f"{line}\n" for line in lines))
    if wiring in ("pip.conf", "both"):
        # pip reads the installation's pip.conf as it reads /etc/pip.conf in the image.
        (layer.prefix.path / "pip.conf").write_text(f"[global]\nconstraint = {layer.constraints}\n")
    return dataclasses.replace(layer, wiring=wiring)


def dockerfile_steps(
    dockerfile: str, root: pathlib.Path
) -> tuple[list[tuple[str, dict[str, str]]], dict[str, str]]:
    """The Dockerfile's COPY steps done under root, its RUN commands with the image paths it
    copies to moved under root, each with the ENV settings made before it, and all its ENV
    settings."""
    commands, moves, variables = [], [], {}
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
            commands.append((rest, dict(variables)))
        elif instruction == "ENV":
            name, _, value = rest.partition("=")
            variables[name] = value
    for destination, target in moves:
        commands = [(c.replace(destination, target), env) for c, env in commands]
    return commands, variables


def build_from_dockerfile(image: Image, path: pathlib.Path) -> tuple[Image, dict[str, str]]:
    """The Dockerfile's image built on a copy of this one (its pins wired both ways), and the
    environment the Dockerfile sets; image_pins.py reads the pins from $IMAGE_PIP_CONSTRAINT here
    (/etc/pip/constraint.txt in the build)."""
    commands, variables = dockerfile_steps((REPO / "Dockerfile").read_text(), path / "build")
    assert any("image_pins.py" in c for c, _ in commands)
    layer = wired(image, "both", path)
    env = {**layer.env(), "IMAGE_PIP_CONSTRAINT": str(layer.constraints), "PIP_NO_COMPILE": "1"}
    for command, set_before in commands:
        run = subprocess.run(
            ["bash", "-c", command],
            env={**env, **set_before},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    return layer, variables


def download_wheel(folder: pathlib.Path) -> pathlib.Path:
    """PyPI's determined 0.38.1 wheel: what a 0.38.1 master serves from /opt/determined/wheels."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary"]
    command += [":all:", "--dest", str(folder), DETERMINED_WHEEL]
    checked(subprocess.run(command, capture_output=True, text=True, timeout=300))
    (wheel,) = folder.glob("determined-*.whl")
    return wheel


def moved(script: str, replacements: list[tuple[str, str]]) -> str:
    """A verbatim script with its hard-coded paths replaced; each must occur."""
    text = (SCRIPTS / script).read_text()
    for old, new in replacements:
        assert old in text, f"{script} no longer contains {old}"
        text = text.replace(old, new)
    return text


def context_tgz(replaced: dict[str, bytes] | None = None) -> bytes:
    """The project folder as `det experiment create ... .` uploads it (.detignore applied), with
    the files that `replaced` names (relative paths) holding its contents instead."""
    replaced = replaced or {}
    ignore = detignore.make_shutil_ignore(REPO)
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for folder, dirs, files in os.walk(REPO):
            dirs[:] = sorted(set(dirs) - set(ignore(folder, dirs)))
            for name in sorted(set(files) - set(ignore(folder, files))):
                path = pathlib.Path(folder, name)
                arcname = str(path.relative_to(REPO))
                if arcname in replaced:
                    info = tar.gettarinfo(path, arcname)
                    info.size = len(replaced[arcname])
                    tar.addfile(info, io.BytesIO(replaced[arcname]))
                else:
                    tar.add(path, arcname=arcname)
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
    layer: Image,
    root: pathlib.Path,
    wheel: pathlib.Path,
    config: dict,
    variables: dict[str, str],
    context: bytes | None = None,
) -> Start:
    """One trial container from the image's start to the trial's end, in a layer made under root
    (wired() or container_layer()); variables: the image's ENV and the config's
    environment_variables, applied over the image's environment as Docker does; context: the
    uploaded folder (context_tgz())."""
    entrypoint = lay_out_container(root, wheel)
    master = FakeMaster(
        smaller_is_better=True, metric="validation_loss", context_tgz=context or context_tgz()
    )
    with master.serving() as url:
        env = {**layer.env(), **master_env(root, url, config)}
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
        env.update(variables)
        run = subprocess.run(
            ["bash", str(entrypoint)],
            cwd=root / "run" / "determined" / "workdir",
            env=env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
        )
    return Start(run, master, layer, env, root)
