"""The local run's command line, apart from torch: `--help` and a mistake in the config or the
command line answer before torch loads."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import yaml

from bert_glue.trial import trial_config


def check_before_torch(description: str, argv: list[str]) -> None:
    """Answer --help, or end a local run whose command line or config is wrong with its one
    error line, before the caller imports torch. A cluster trial (DET_TASK_ID) has neither."""
    if os.environ.get("DET_TASK_ID"):
        return
    args = parse_args(argv, description)
    logging.disable(logging.WARNING)  # the run says its warnings once, with its logging set up
    try:
        checked_config(args)
    finally:
        logging.disable(logging.NOTSET)


def checked_config(args: argparse.Namespace) -> dict:
    """The config the command line names, checked (trial_config.checked_config), or exit with
    one error line that names the file or key."""
    try:
        return trial_config.checked_config(args.config, args.overrides, args.nproc)
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
