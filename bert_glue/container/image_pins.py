"""Install requirements in the image without moving what the image's GPU stack is built from.

Whatever the image ships of torch, torchvision, triton, numpy and the nvidia-* CUDA libraries stays
at its installed version: those versions are read from the installed distributions, never from a
pin file, and an install that would change one stops before pip changes anything, with one line
naming the package and both versions.

Some images also pin every preinstalled package for pip (NVIDIA's PyTorch images since 25.03:
/etc/pip/constraint.txt, wired through PIP_CONSTRAINT, a pip.conf or both). What the trial needs
collides with some of those pins (the master's determined wheel needs requests < 2.32;
transformers 5.24 needs a newer huggingface-hub and tokenizers), so every pin is kept except those
that conflict: a pinned package that pip would have to change, or that is installed at another
version already (the task setup installed the master's determined and its requests with --user).
Each relaxed pin is printed on one line. pip runs with PIP_CONSTRAINT naming the file it must
apply, which overrides a pip.conf's constraint as well: an empty PIP_CONSTRAINT would not.

    python3 -m bert_glue.container.image_pins -r requirements-image.txt --keep determined [req ...]

startup-hook.sh and the Dockerfile run it.
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
PROTECTED = re.compile(r"torch|torchvision|triton|numpy|nvidia-.*")


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


def installed_protected() -> dict[str, str]:
    """The protected distributions installed here: canonical name -> installed version."""
    found = {}
    for dist in importlib.metadata.distributions():
        name = canonical(dist.metadata["Name"] or "")
        if is_protected(name):
            found.setdefault(name, dist.version)  # the first on sys.path is the one imported
    return found


def moved_protected(planned: dict[str, str], protected: dict[str, str]) -> dict[str, str]:
    """What the planned install would change of the protected packages: name -> "old -> new"."""
    return {
        name: f"{protected[name]} -> {version}"
        for name, version in planned.items()
        if name in protected and protected[name] != version
    }


def conflicting(
    pins: dict[str, str], planned: dict[str, str], installed: dict[str, str | None]
) -> dict[str, str]:
    """The pins to relax, each with why: the version pip plans for it, or the one installed,
    differs from the pin. Protected pins are never in it: the installed versions replace them."""
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
    """pip install under exactly these constraints, whatever the image's pip settings say."""
    env = {**os.environ, "PIP_CONSTRAINT": str(constraints)}
    command = [sys.executable, "-m", "pip", "install", "--quiet", *args]
    return subprocess.run(command, env=env, check=False)


def planned_installs(requirements: list[str], constraints: pathlib.Path) -> dict[str, str]:
    """What pip would install or change for these requirements: canonical name -> version."""
    with tempfile.TemporaryDirectory() as tmp:
        report = pathlib.Path(tmp, "report.json")
        done = pip(["--dry-run", "--report", str(report), *requirements], constraints)
        if done.returncode != 0:
            sys.exit(f"error: pip cannot install {' '.join(requirements)} in this image")
        installs = json.loads(report.read_text())["install"]
    return {canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}


def install(requirements: list[str], image_constraints: pathlib.Path) -> int:
    pins = read_pins(image_constraints) if image_constraints.is_file() else {}
    protected = installed_protected()
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        planned = planned_installs(requirements, write_constraints([], folder, "none.txt"))
        moved = moved_protected(planned, protected)
        if moved:
            changes = ", ".join(f"{name} {change}" for name, change in sorted(moved.items()))
            sys.exit(
                f"error: installing {' '.join(requirements)} would change the image's {changes}; "
                "nothing was installed: use an image whose versions the requirements accept"
            )
        relax = conflicting(pins, planned, {name: installed_version(name) for name in pins})
        for name, why in sorted(relax.items()):
            print(f"image_pins: relaxing the image's {pins[name]}: {why}")
        kept = [line for name, line in pins.items() if name not in relax and not is_protected(name)]
        kept += [f"{name}=={version}" for name, version in sorted(protected.items())]
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
