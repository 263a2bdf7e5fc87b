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

pip itself takes seconds to start and to ask the index about every package, so it runs only when
it would have something to do: when the installed distributions leave a requirement, one of its
dependencies (followed through each distribution's metadata) or a kept pin of the image unmet.
Otherwise one line says that nothing was installed.

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
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from packaging.requirements import Requirement

DEFAULT_IMAGE_CONSTRAINTS = "/etc/pip/constraint.txt"
PROTECTED = re.compile(r"torch|torchvision|triton|numpy|nvidia-.*")
COMMENT = re.compile(r"(^|\s+)#.*$")  # pip's own rule for comments in requirements files


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(path: pathlib.Path) -> list[str]:
    """The requirements of a pip requirements file, without comments; options are refused: the
    check below reads the same lines that pip installs."""
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = COMMENT.sub("", line).strip()
        if text.startswith("-"):
            sys.exit(
                f"error: {path}, line {number}: {text!r}: image_pins reads requirements only; "
                "give pip options as PIP_* environment variables"
            )
        if text:
            lines.append(text)
    return lines


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


def kept_pins(pins: dict[str, str], relax: dict[str, str], protected: dict[str, str]) -> list[str]:
    """The constraints pip installs under: the image's pins less the relaxed ones, with the
    protected packages held at their installed versions."""
    kept = [line for name, line in pins.items() if name not in relax and not is_protected(name)]
    return kept + [f"{name}=={version}" for name, version in sorted(protected.items())]


def needed(requirement: Requirement, extras: Iterable[str]) -> bool:
    """Whether a requirement applies here, for a distribution asked for with these extras."""
    marker = requirement.marker
    return marker is None or any(marker.evaluate({"extra": extra}) for extra in ("", *extras))


def unmet(requirements: list[str], constraints: list[str]) -> list[str]:
    """What pip would have to install or change for these requirements under these constraints,
    judged from the installed distributions without running pip: each requirement, then each
    dependency that the installed distributions' metadata declares, in turn. Empty when all of
    them are installed at versions that meet every requirement and constraint on them."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
        from packaging.version import InvalidVersion
    except ImportError:  # the Dockerfile's base image may lack it; determined requires it
        return ["packaging is not installed to check the requirements"]
    limits = {}
    for line in constraints:
        try:
            constraint = Requirement(line)
        except InvalidRequirement:
            constraint = None
        if constraint is None or constraint.url or constraint.marker:
            return [f"the image's pin {line!r}: this check reads version ranges only"]
        limits[canonical(constraint.name)] = constraint
    problems = []
    seen = set()
    todo = [(line, "requested", ()) for line in requirements]
    while todo:
        line, wanted_by, parent_extras = todo.pop()
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            problems.append(f"{line!r} ({wanted_by}) is not a requirement this check reads")
            continue
        if not needed(requirement, parent_extras):
            continue
        name = canonical(requirement.name)
        version = installed_version(name)
        shown = str(requirement).split(";")[0].strip()  # without its marker, which held
        if version is None:
            problems.append(f"{shown} ({wanted_by}) is not installed")
            continue
        if requirement.url:
            problems.append(f"{shown} ({wanted_by}): a direct reference, which pip judges")
        pin = limits.get(name)
        for rule, text in (
            (requirement, f"{shown} ({wanted_by})"),
            (pin, f"{pin} (the image's pin)"),
        ):
            try:
                met = rule is None or rule.specifier.contains(version, prereleases=True)
            except InvalidVersion:
                met = False
            if not met:
                problems.append(f"{text}: {version} is installed")
        if (name, frozenset(requirement.extras)) not in seen:
            seen.add((name, frozenset(requirement.extras)))
            dependencies = importlib.metadata.requires(name) or []
            todo += [(dep, f"{name} {version}", requirement.extras) for dep in dependencies]
    return list(dict.fromkeys(problems))


def install(requirements: list[str], pins: dict[str, str]) -> int:
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
        kept = kept_pins(pins, relax, protected)
        return pip(requirements, write_constraints(kept, folder, "relaxed.txt")).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-r", dest="files", type=pathlib.Path, action="append", default=[], help="requirements file"
    )
    parser.add_argument("--keep", action="append", default=[], help="keep this installed package")
    parser.add_argument("requirements", nargs="*")
    parser.add_argument(
        "--image-constraints",
        type=pathlib.Path,
        default=pathlib.Path(os.environ.get("IMAGE_PIP_CONSTRAINT", DEFAULT_IMAGE_CONSTRAINTS)),
        help="the image's pins (default: $IMAGE_PIP_CONSTRAINT or /etc/pip/constraint.txt)",
    )
    args = parser.parse_args(argv)
    requirements = [line for path in args.files for line in requirement_lines(path)]
    requirements += args.requirements
    requirements += [
        f"{name}=={installed_version(name)}" for name in args.keep if installed_version(name)
    ]
    pins = read_pins(args.image_constraints) if args.image_constraints.is_file() else {}
    # Installed versions that differ from a pin relax it: only the pins they meet stay.
    relax = conflicting(pins, {}, {name: installed_version(name) for name in pins})
    problems = unmet(requirements, kept_pins(pins, relax, {}))
    if not problems:
        print(
            f"image_pins: nothing to install: {len(requirements)} requirements and their "
            "dependencies are met"
        )
        return 0
    for problem in problems:
        print(f"image_pins: to install: {problem}")
    return install(requirements, pins)


if __name__ == "__main__":
    sys.exit(main())
