"""How long a trial container takes to start, before and after a change of the startup hook, in
the container-start rehearsal (tests/container_start/rehearsal.py: Determined v0.38.1's own
task-setup.sh and entrypoint.sh in a stand-in for the configs' image, against a stand-in master).

    python bench/container_start_speed.py --before <git ref>

Each start runs the whole container start and then, as the entrypoint, the trial's first step
(`python3 -m bert_glue.container.versions`, which imports transformers); one start at a time:
  - the configs' image, the uploaded folder's hook as at --before: a first start and a restart
    (a fresh container of the same image), each with pip's cache inside the container;
  - the same with the hook as checked out and PIP_CACHE_DIR on a folder the two containers share
    (docs/cluster.md's bind mount): the restart finds the first start's downloads;
  - the Dockerfile's image (built on the stand-in), the hook as at --before and as checked out,
    and, as checked out, without the DET_SKIP_PIP_INSTALL the Dockerfile sets.
It prints each start's wall time and its parts, timed by a stand-in DET_PYTHON_EXECUTABLE that
logs every Python command the scripts run: Determined's task setup (its pip install of the
master's determined wheel), prep_container (the uploaded folder), the hook, and the launch of
the entrypoint. Needs PyPI, like the rehearsal; --json FILE also writes the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import yaml
from container_start.rehearsal import (
    Image,
    build_from_dockerfile,
    build_image,
    config_variables,
    container_layer,
    context_tgz,
    download_wheel,
    start_container,
    trial_config,
    wired,
)

HOOK_FILES = (
    "startup-hook.sh",
    "requirements-image.txt",
    "bert_glue/container/image_pins.py",
    "bert_glue/container/versions.py",
)
ENTRYPOINT = "python3 -m bert_glue.container.versions"
# Which Python command is which part of the start (first match).
PARTS = (
    ("task setup", "-m pip install -q --user"),
    ("task setup", "-c import determined"),
    ("prep_container", "-m determined.exec.prep_container"),
    ("hook", "-m bert_glue.container."),
    ("launch", "-m determined.exec.launch"),
)
TIMING_PYTHON = """#!/usr/bin/env bash
start=$EPOCHREALTIME
python3 "$@"
status=$?
echo "$start $EPOCHREALTIME $*" >> {log}
exit $status
"""


@dataclasses.dataclass
class Timing:
    name: str
    wall_s: float
    parts: dict[str, float]
    returncode: int


def hook_files_at(ref: str) -> dict[str, bytes]:
    """The uploaded folder's hook files as at a git ref."""
    show = ["git", "-C", str(REPO), "show"]
    return {path: subprocess.check_output([*show, f"{ref}:{path}"]) for path in HOOK_FILES}


def timed_start(
    name: str,
    layer: Image,
    root: pathlib.Path,
    wheel: pathlib.Path,
    variables: dict[str, str],
    context: bytes,
) -> Timing:
    config = yaml.safe_load((REPO / "const.yaml").read_text())
    config = trial_config({**config, "entrypoint": ENTRYPOINT}, root / "storage")
    log = root / "python-calls.log"
    python = root / "timing-python"
    python.write_text(TIMING_PYTHON.format(log=log))
    python.chmod(0o755)
    variables = {**config_variables(config), **variables, "DET_PYTHON_EXECUTABLE": str(python)}
    begin = time.perf_counter()
    start = start_container(layer, root, wheel, config, variables, context)
    wall = time.perf_counter() - begin
    if start.run.returncode != 0:
        print(start.output[-3000:], file=sys.stderr)
    parts = dict.fromkeys(dict(PARTS), 0.0)
    for line in log.read_text().splitlines():
        began, ended, command = line.split(" ", 2)
        part = next((part for part, text in PARTS if text in command), "other")
        parts[part] = parts.get(part, 0.0) + float(ended) - float(began)
    return Timing(name, wall, parts, start.run.returncode)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git ref of the hook to compare with")
    parser.add_argument("--json", type=pathlib.Path, help="also write the figures here")
    args = parser.parse_args()
    before, after = context_tgz(hook_files_at(args.before)), context_tgz()
    config = yaml.safe_load((REPO / "const.yaml").read_text())
    timings = []
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        image = build_image(work / "image", config["environment"]["image"])
        wheel = download_wheel(work)
        prebuilt, dockerfile_env = build_from_dockerfile(image, work / "prebuilt")
        shared_cache = {"PIP_CACHE_DIR": str(work / "shared-pip-cache")}
        starts = [
            ("image, hook before: first start", image, {}, before),
            ("image, hook after, shared pip cache: first start", image, shared_cache, after),
            ("image, hook before: restart", image, {}, before),
            ("image, hook after, shared pip cache: restart", image, shared_cache, after),
            ("Dockerfile's image, hook before", prebuilt, dockerfile_env, before),
            ("Dockerfile's image, hook after", prebuilt, dockerfile_env, after),
            ("Dockerfile's image, hook after, no DET_SKIP_PIP_INSTALL", prebuilt, {}, after),
        ]
        for number, (name, base, variables, context) in enumerate(starts):
            root = work / f"container-{number}"
            layer = wired(base, "none", root) if base is image else container_layer(base, root)
            timing = timed_start(name, layer, root, wheel, variables, context)
            timings.append(timing)
            parts = ", ".join(f"{part} {s:.1f} s" for part, s in timing.parts.items())
            status = "" if timing.returncode == 0 else f" (exit {timing.returncode})"
            print(f"{name}: {timing.wall_s:.1f} s{status} ({parts})", flush=True)
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(t) for t in timings], indent=2))
    return max(t.returncode for t in timings)


if __name__ == "__main__":
    sys.exit(main())
