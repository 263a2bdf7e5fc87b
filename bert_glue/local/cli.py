"""The local run's command line, apart from torch: `--help` and a mistake in the config or the
command line answer before torch loads; then main() hands the run to local_run.py."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

import yaml

from bert_glue.container import versions
from bert_glue.trial import settings


def check_before_torch(description: str, argv: list[str]) -> None:
    """Answer --help, or end a local run whose command line or config is wrong with its one
    error line, before the caller imports torch; then, here and on a cluster (DET_TASK_ID, which
    has neither), end with one line if the installed torch or transformers cannot run the trial
    (versions.py): with a torch it cannot use, transformers fails on its first model class, with
    an ImportError that names neither the versions nor the fix."""
    if not os.environ.get("DET_TASK_ID"):
        args = parse_args(argv, description)
        logging.disable(logging.WARNING)  # the run says its warnings once, with its logging set up
        try:
            checked_config(args)
        finally:
            logging.disable(logging.NOTSET)
    versions.require_supported()


def checked_config(args: argparse.Namespace) -> dict:
    """The config the command line names, checked (settings.checked_config), or exit with
    one error line that names the file or key."""
    try:
        return settings.checked_config(args.config, args.overrides, args.nproc)
    except (OSError, ValueError, yaml.YAMLError) as e:
        sys.exit(f"error: {e}")


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
        default=1,
        help="local processes, one slot each, trained together with torch.distributed (DDP)",
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
        "--results-dir",
        help="a grid search's trial folders (local_grid.py); default results/<experiment name>",
    )
    args = parser.parse_args(argv)
    if args.nproc < 1:
        parser.error(f"--nproc {args.nproc}: need at least 1 process")
    return args


def main(argv: list[str] | None, run: Callable, script: str, description: str) -> int:
    """`python SCRIPT [CONFIG] [section.key=value ...] [options]`: one local run of the config,
    each trial trained by run(context, latest_checkpoint, ...) (model_def.run)."""
    from bert_glue.local import local_run  # torch and the rest: only once a run starts

    args = parse_args(argv, description)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return local_run.main(args, checked_config(args), run, script, argv)
