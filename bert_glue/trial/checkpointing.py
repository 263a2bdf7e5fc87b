"""Checkpoints of the trial: where local ones are, which one --resume (or data.init_from) means,
its batch count, what it holds (read()), and which of a run's checkpoints stay
(checkpoint_storage.save_trial_best/latest).

A Determined PyTorchTrial checkpoint (state_dict.pth, trial_state.pkl, load_data.json, and
metadata.json, which Determined writes last) holds the weights, optimizer, LR scheduler, RNG
states and batch count, plus a copy of the working directory (code/, filtered by .detignore).
The trial adds the model's config and its tokenizer (MODEL_FILES, trial/callbacks.py's
PortableCheckpoints), so that the checkpoint alone rebuilds the model, wherever it is read.
An exact resume with torch 2.13 and the local Trainer also needs two mends of Determined 0.38.1:
determined_0_38/workarounds.py's loadable_rng_state() and starting_at().
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import pathlib
import pickle
import shutil
from collections.abc import Iterator

import appdirs
import torch

import constants
from bert_glue.trial.settings import Searcher, Settings
from constants import ConfigError

logger = logging.getLogger(__name__)

LOCAL_TRIAL_ID = 0  # the trial id Determined's local Trainer saves and expects
# A checkpoint's folder of the model's config.json and tokenizer files, as save_pretrained writes
# them: everything from_pretrained reads but the weights. Checkpoints before it lack it.
MODEL_FILES = "tokenizer_and_config"


def storage_dir() -> pathlib.Path:
    """Where local runs save checkpoints: Determined's default, $XDG_DATA_HOME/determined."""
    return pathlib.Path(appdirs.user_data_dir("determined"))


def find_checkpoint(name: str, task: constants.GlueTask) -> pathlib.Path:
    """--resume's argument, a checkpoint folder or the uuid of a local one, checked for `task`."""
    # Determined's restore_path insists on this folder, even for a checkpoint outside it.
    storage_dir().mkdir(parents=True, exist_ok=True)
    path = complete_checkpoint(name, f"--resume {name}")
    try:
        # The checkpoint's own settings, apart from the run's: it may be of another task.
        saved_task = Settings.of_checkpoint(path).task
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"--resume {name}: {path / 'load_data.json'} names no data.task ({e!r}); "
            "this is not a checkpoint of this trial"
        ) from None
    if saved_task.num_labels != task.num_labels:
        raise ConfigError(
            f"--resume {name}: the checkpoint's classifier has {saved_task.num_labels} outputs "
            f"(data.task {saved_task.name} in {path / 'load_data.json'}) but data.task "
            f"{task.name} needs {task.num_labels}; resume with data.task={saved_task.name}"
        )
    return path.resolve()


def complete_checkpoint(name: str, setting: str) -> pathlib.Path:
    """A checkpoint folder, or the uuid of one in local storage, that Determined finished saving.
    `setting` begins each error: what named it (--resume NAME, data.init_from: NAME)."""
    storage = storage_dir()
    path = pathlib.Path(name).expanduser()
    if not path.is_dir():
        path = storage / name
    if not path.is_dir():
        raise ConfigError(
            f"{setting}: no such checkpoint folder, nor uuid in {storage} (a cluster's checkpoint: "
            "download it with `det checkpoint download UUID` and give its folder)"
        )
    if not (path / "state_dict.pth").is_file():
        raise ConfigError(f"{setting}: {path} is not a PyTorchTrial checkpoint")
    if not (path / "metadata.json").is_file():
        raise ConfigError(
            f"{setting}: {path} is incomplete (Determined writes metadata.json last; the run "
            "stopped while saving it). Use the checkpoint before it."
        )
    return path


def batches_trained(checkpoint: pathlib.Path) -> int:
    """The batch a local Trainer continues from: what Determined itself restores.

    Determined keeps the checkpoint's batch count only when its trial id is the running trial's
    (0 for every local run); a cluster checkpoint starts a fresh count from its weights.
    """
    with open(checkpoint / "trial_state.pkl", "rb") as f:
        state = pickle.load(f)  # Determined's own small dict of counters; it unpickles it too
    return state["batches_trained"] if state["trial_id"] == LOCAL_TRIAL_ID else 0


@contextlib.contextmanager
def in_directory(path: str | os.PathLike) -> Iterator[None]:
    """Run in `path`: Determined copies the working directory into every local checkpoint."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def callback_state(checkpoint: pathlib.Path, name: str) -> dict:
    """What the trial's callback `name` saved in the checkpoint; {} if it saved nothing. The
    weights stay on disk (memory-mapped), unread."""
    # Not at import: glue_report.py's tables and tests/unit use this module without determined.
    from bert_glue.determined_0_38 import workarounds

    with workarounds.loadable_rng_state():
        state = torch.load(checkpoint / "state_dict.pth", mmap=True, map_location="cpu")
    return state.get("callbacks", {}).get(name, {})


@dataclasses.dataclass(frozen=True)
class Retention:
    """Which of a local run's checkpoints stay: the `best` ones by searcher.metric and the
    `latest` ones, as checkpoint_storage.save_trial_best and save_trial_latest tell the master
    to keep a trial's. The last one always stays: --resume continues from it."""

    best: int
    latest: int
    metric: str
    smaller_is_better: bool

    @classmethod
    def of(cls, config: dict) -> Retention:
        """From the experiment config, with Determined 0.38.1's defaults (1 and 1)."""
        storage = config.get("checkpoint_storage") or {}
        counts = {}
        for key in ("save_trial_best", "save_trial_latest"):
            count = storage.get(key)
            if count is None:
                count = 1
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ConfigError(
                    f"checkpoint_storage.{key}: expected a whole number >= 0, got {count!r}"
                )
            counts[key] = count
        searcher = Searcher.of(config)
        return cls(
            counts["save_trial_best"],
            max(counts["save_trial_latest"], 1),
            searcher.metric,
            searcher.smaller_is_better,
        )

    def kept(self, checkpoints: list[tuple[int, str]], validations: list[tuple[int, dict]]) -> set:
        """The uuids to keep of checkpoints ((batches, uuid), oldest first), given the run's
        validations ((batches, metrics)): a checkpoint's metric is the validation's at its batch."""
        kept = {uuid for _, uuid in checkpoints[-self.latest :]}
        value = {batches: m.get(self.metric, math.nan) for batches, m in validations}
        scored = [
            (value[batches], uuid)
            for batches, uuid in checkpoints
            if math.isfinite(value.get(batches, math.nan))
        ]
        # Stable: the earliest of equal values first, as metrics.best_validation picks.
        scored.sort(key=lambda v: v[0], reverse=not self.smaller_is_better)
        return kept | {uuid for _, uuid in scored[: self.best]}


def prune(
    checkpoints: list[tuple[int, str]], validations: list[tuple[int, dict]], retention: Retention
) -> list[str]:
    """Delete from local storage the checkpoints (a run's own: (batches, uuid), oldest first)
    that retention does not keep; returns the uuids deleted. Each folder is renamed away first,
    so that an interruption never leaves a part of one where a checkpoint is looked for."""
    storage = storage_dir()
    kept = retention.kept(checkpoints, validations)
    deleted = []
    for _, uuid in checkpoints:
        if uuid in kept or not (storage / uuid).is_dir():
            continue
        doomed = storage / f".{uuid}.deleted"
        os.replace(storage / uuid, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        deleted.append(uuid)
    if deleted:
        logger.info(f"deleted checkpoint(s) {', '.join(deleted)} (checkpoint_storage.save_trial_*)")
    return deleted


@dataclasses.dataclass
class Saved:
    """What a checkpoint holds of the trial: its settings, its task and the model's weights."""

    task: constants.GlueTask
    settings: Settings
    weights: dict[str, torch.Tensor]  # the model's state_dict, on the CPU


def read(path: str | os.PathLike) -> Saved:
    """What the checkpoint at path holds, read on the CPU."""
    from bert_glue.determined_0_38 import workarounds  # not at import: see callback_state

    path = pathlib.Path(path)
    files = [path / "load_data.json", path / "state_dict.pth"]
    if not all(f.is_file() for f in files):
        raise FileNotFoundError(
            f"{path}: not a checkpoint of this trial (expected load_data.json and "
            "state_dict.pth); download a cluster checkpoint with `det checkpoint download UUID`"
        )
    # Determined pickles RNG states (numpy arrays) beside the weights, which weights_only
    # refuses: load only checkpoints you trust, as with any pickle.
    with workarounds.loadable_rng_state():
        state = torch.load(files[1], map_location="cpu")
    weights = state["models_state_dict"][0]
    torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(weights, "module.")  # DDP
    # Own data's task with the label names it was trained with, which need no training file
    # (trial/callbacks.py's TaskLabels records them).
    labels = state.get("callbacks", {}).get("task_labels", {}).get("labels")
    settings = Settings.of_checkpoint(path, labels)
    return Saved(settings.task, settings, weights)
