"""Install requirements under the image's pip pins, relaxed only where they conflict.

Since 25.03 NVIDIA's PyTorch images pin every preinstalled package in /etc/pip/constraint.txt
and set PIP_CONSTRAINT to it. What the trial needs collides with some of those pins (the master's
determined wheel needs requests < 2.32; transformers 5.24 needs a newer huggingface-hub, tokenizers
and safetensors), so pip cannot install it under all of them. This script keeps every pin except
those that conflict: a pinned package that pip would have to change, or that is already at another
version (the task setup installed the master's determined and its requests with --user). torch,
the nvidia-* CUDA libraries and numpy are never relaxed: where they conflict, pip fails.

    python3 -m bert_glue.container.image_pins -r requirements-image.txt --keep determined [req ...]

startup-hook.sh and the Dockerfile run it; each relaxed pin is printed on one line.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

DEFAULT_IMAGE_CONSTRAINTS = "/etc/pip/constraint.txt"
PROTECTED = re.compile(r"torch|numpy|nvidia-.*")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: pathlib.Path) -> dict[str, str]:
    """Each constraint line of a pip constraints file, by its package's canonical name."""
    pins = {}
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", text)
        if match:
            pins[canonical(match.group())] = text
    return pins


def pinned_version(line: str) -> str | None:
    """The version of a "name==version" line (with any "+local" part), else None."""
    match = re.fullmatch(r"[^=<>!~ ]+\s*===?\s*([^\s;,]+)", line)
    return match.group(1) if match else None


def is_protected(name: str) -> bool:
    return PROTECTED.fullmatch(canonical(name)) is not None


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def conflicting(
    pins: dict[str, str], planned: dict[str, str], installed: dict[str, str | None]
) -> dict[str, str]:
    """The pins to relax, each with why: the version pip plans for it, or the one installed,
    differs from the pin. Protected pins are never in it."""
    relax = {}
    for name, line in pins.items():
        version = pinned_version(line)
        if version is None or is_protected(name):
            continue
        if name in planned and planned[name] != version:
            relax[name] = f"the trial needs {planned[name]}"
        elif installed.get(name) not in (None, version):
            relax[name] = f"{installed[name]} is installed"
    return relax


def write_constraints(lines: list[str], folder: pathlib.Path, name: str) -> pathlib.Path:
    path = folder / name
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def pip(args: list[str], constraints: pathlib.Path) -> subprocess.CompletedProcess:
    """pip install under exactly these constraints (PIP_CONSTRAINT, as NVIDIA sets it)."""
    env = {**os.environ, "PIP_CONSTRAINT": str(constraints)}
    command = [sys.executable, "-m", "pip", "install", "--quiet", *args]
    return subprocess.run(command, env=env, check=False)


def planned_installs(requirements: list[str], constraints: pathlib.Path) -> dict[str, str]:
    """What pip would install or change for these requirements: canonical name -> version."""
    with tempfile.TemporaryDirectory() as tmp:
        report = pathlib.Path(tmp, "report.json")
        done = pip(["--dry-run", "--report", str(report), *requirements], constraints)
        if done.returncode != 0:
            sys.exit(f"error: pip cannot install {' '.join(requirements)} under {constraints}")
        installs = json.loads(report.read_text())["install"]
    return {canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}


def install(requirements: list[str], image_constraints: pathlib.Path) -> int:
    pins = read_pins(image_constraints) if image_constraints.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        protected = [line for name, line in pins.items() if is_protected(name)]
        planned = planned_installs(requirements, write_constraints(protected, folder, "p.txt"))
        installed = {name: installed_version(name) for name in pins}
        relax = conflicting(pins, planned, installed)
        for name, why in sorted(relax.items()):
            print(f"image_pins: relaxing the image's {pins[name]}: {why}")
        kept = [line for name, line in pins.items() if name not in relax]
        return pip(requirements, write_constraints(kept, folder, "relaxed.txt")).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", dest="files", action="append", default=[], help="requirements file")
    parser.add_argument("--keep", action="append", default=[], help="keep this installed package")
    parser.add_argument("requirements", nargs="*")
    parser.add_argument(
        "--image-constraints",
        type=pathlib.Path,
        default=pathlib.Path(os.environ.get("IMAGE_PIP_CONSTRAINT", DEFAULT_IMAGE_CONSTRAINTS)),
        help="the image's pins (default: $IMAGE_PIP_CONSTRAINT or /etc/pip/constraint.txt)",
    )
    args = parser.parse_args(argv)
    kept = [f"{name}=={installed_version(name)}" for name in args.keep if installed_version(name)]
    requirements = [arg for f in args.files for arg in ("-r", f)] + args.requirements + kept
    return install(requirements, args.image_constraints)


if __name__ == "__main__":
    sys.exit(main())
