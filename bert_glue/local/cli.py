"""The local run's command line, apart from torch: `--help` and a mistake in the config or the
command line answer before torch loads; then main() hands the run to local_run.py."""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys
from collections.abc import Callable

import yaml

from bert_glue.container import versions
from bert_glue.local.config import checked_config, load_config, local_settings
from bert_glue.trial import levers

IMAGE_FACTS = pathlib.Path(__file__).resolve().parents[2] / "image"


def check_before_torch(description: str, argv: list[str]) -> None:
    """Answer --help, or end a local run whose command line or config is wrong with its one
    error line, before the caller imports torch; then, here and on a cluster (DET_TASK_ID, which
    has neither), end with one line if the installed torch or transformers cannot run the trial
    (versions.py): with a torch it cannot use, transformers fails on its first model class, with
    an ImportError that names neither the versions nor the fix."""
    if not os.environ.get("DET_TASK_ID"):
        args = parse_args(argv, description)
        if args.levers_for:
            sys.exit(print_levers_for(args))
        logging.disable(logging.WARNING)  # the run says its warnings once, with its logging set up
        try:
            config_or_exit(args)
        finally:
            logging.disable(logging.NOTSET)
    versions.require_supported()


def config_or_exit(args: argparse.Namespace) -> dict:
    """The config the command line names, checked (config.checked_config), or exit with
    one error line that names the file or key."""
    try:
        return checked_config(args.config, args.overrides, args.nproc)
    except (OSError, ValueError, yaml.YAMLError) as e:
        sys.exit(f"error: {e}")


def print_levers_for(args: argparse.Namespace) -> int:
    """--levers-for: the levers the config's trial takes on a GPU (or CPU kind) of the catalogue,
    in the config's image as image/ describes it, without that device; 1 if the image's torch has
    no kernels for the GPU. Processes: --nproc, else the config's resources.slots_per_trial."""
    try:
        config = load_config(args.config, args.overrides)
        processes = args.nproc or (config.get("resources") or {}).get("slots_per_trial", 1)
        trial = local_settings(config, processes)
    except (OSError, ValueError, yaml.YAMLError) as e:
        sys.exit(f"error: {e}")
    image = (config.get("environment") or {}).get("image")
    if isinstance(image, dict):  # environment.image: {cpu: ..., cuda: ...}
        image = image.get("cpu" if args.levers_for in levers.CPUS else "cuda")
    facts = image_facts(image)
    compiler = bool(facts and facts["c_compiler"]["value"])
    device = levers.catalogued(args.levers_for, processes, compiler)
    model_type = trial.hparams.model_type
    if model_type == "auto":  # the type config.json names, where the model is a folder here
        config_json = pathlib.Path(trial.data.model_name_or_path) / "config.json"
        model_type = json.loads(config_json.read_text()).get("model_type", model_type)
    try:
        chosen = levers.Levers.resolve(trial.hparams, device, levers.packable(model_type))
    except ValueError as e:  # an explicit lever the device or the image cannot run
        sys.exit(f"error: {e} (on {device.name} in {image}, as image/ describes it)")
    print(chosen.line(device))
    if facts is None:
        print(f"image {image}: no facts file in image/; a C compiler assumed absent")
        return 0
    print(
        f"image {image}: torch {facts['torch']['value']}, "
        f"{'a' if compiler else 'no'} C compiler, kernels for "
        f"{' '.join(facts['gpu_architectures']['value'])}"
    )
    needed = levers.arch(device.capability) if device.cuda else None
    if needed and needed not in facts["gpu_architectures"]["value"]:
        print(f"error: {image}'s torch has no kernels for {device.name} ({needed})")
        return 1
    return 0


def image_facts(image: str | None) -> dict | None:
    """What image/ records of a container image (its facts files, each naming its image)."""
    for path in sorted(IMAGE_FACTS.glob("*.yaml")):
        facts = yaml.safe_load(path.read_text())
        if facts["image"] == image:
            return facts
    return None


def parse_args(argv: list[str] | None, description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # the relaunch forwards the command line less --nproc, as typed
    )
    parser.add_argument("config", nargs="?", default="const.yaml", help="experiment config YAML")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. data.task=RTE")
    parser.add_argument(
        "--nproc",
        type=int,
        help="local processes, one slot each, trained together with torch.distributed (DDP); "
        "default 1, or with --levers-for the config's resources.slots_per_trial",
    )
    parser.add_argument("--resume", help="a checkpoint folder or uuid to continue training from")
    parser.add_argument("--metrics-out", help="write every validation's metrics to this JSON file")
    parser.add_argument(
        "--plot", help="draw the training loss and validation metrics into this PNG file"
    )
    parser.add_argument(
        "--no-tensorboard", action="store_true", help="write no TensorBoard event files"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show Determined's own log lines too"
    )
    parser.add_argument(
        "--levers-for",
        type=str.lower,
        choices=[*levers.GPUS, *levers.CPUS],
        metavar="DEVICE",
        help="print the levers the config takes on this GPU or CPU kind, in the config's image, "
        f"and exit: one of {', '.join([*levers.GPUS, *levers.CPUS])}",
    )
    parser.add_argument(
        "--results-dir",
        help="a grid search's trial folders (local_grid.py); default results/<experiment name>",
    )
    args = parser.parse_intermixed_args(argv)  # section.key=value after the options too
    if args.nproc is not None and args.nproc < 1:
        parser.error(f"--nproc {args.nproc}: need at least 1 process")
    if args.nproc is None and not args.levers_for:
        args.nproc = 1
    return args


def main(argv: list[str] | None, run: Callable, script: str, description: str) -> int:
    """`python SCRIPT [CONFIG] [section.key=value ...] [options]`: one local run of the config,
    each trial trained by run(context, latest_checkpoint, ...) (model_def.run)."""
    from bert_glue.local import local_run  # torch and the rest: only once a run starts

    args = parse_args(argv, description)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return local_run.main(args, config_or_exit(args), run, script, argv)
