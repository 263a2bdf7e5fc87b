"""Local checkpoints: where they are, which one --resume (or data.init_from) means, and its
batch count.

A Determined PyTorchTrial checkpoint (state_dict.pth, trial_state.pkl, load_data.json, and
metadata.json, which Determined writes last) holds the weights, optimizer, LR scheduler, RNG
states and batch count, plus a copy of the working directory (code/, filtered by .detignore).
An exact resume with torch 2.13 and the local Trainer also needs two mends of Determined 0.38.1:
determined_0_38/workarounds.py's loadable_rng_state() and starting_at().
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import pickle
from collections.abc import Iterator

import appdirs

import constants
from bert_glue.trial import custom_task, trial_config
from constants import ConfigError

LOCAL_TRIAL_ID = 0  # the trial id Determined's local Trainer saves and expects


def storage_dir() -> pathlib.Path:
    """Where local runs save checkpoints: Determined's default, $XDG_DATA_HOME/determined."""
    return pathlib.Path(appdirs.user_data_dir("determined"))


def find_checkpoint(name: str, task: constants.GlueTask) -> pathlib.Path:
    """--resume's argument, a checkpoint folder or the uuid of a local one, checked for `task`."""
    # Determined's restore_path insists on this folder, even for a checkpoint outside it.
    storage_dir().mkdir(parents=True, exist_ok=True)
    path = complete_checkpoint(name, f"--resume {name}")
    try:
        saved = json.loads((path / "load_data.json").read_text())
        _, saved_data = trial_config.settings(saved["hparams"], saved["experiment_config"]["data"])
        saved_task = custom_task.task_from_config(saved_data)
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
