"""Local checkpoints that stay small and resume exactly where they stopped.

A Determined PyTorchTrial checkpoint (state_dict.pth, trial_state.pkl, load_data.json, and
metadata.json, which Determined writes last) holds the weights, optimizer, LR scheduler, RNG
states and batch count, plus a copy of the working directory (code/, filtered by .detignore).
Two things stand between it and an exact resume with torch 2.13 and the local Trainer:
`loadable_rng_state()` and `starting_at()` fix them for the length of `Trainer.fit`.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import pickle
from collections.abc import Iterator

import appdirs
import numpy as np
import torch
from determined import pytorch

import constants
from bert_glue.trial import custom_task, trial_config
from constants import ConfigError

LOCAL_TRIAL_ID = 0  # the trial id Determined's local Trainer saves and expects


def storage_dir() -> pathlib.Path:
    """Where local runs save checkpoints: Determined's default, $XDG_DATA_HOME/determined."""
    return pathlib.Path(appdirs.user_data_dir("determined"))


def find_checkpoint(name: str, task: constants.GlueTask) -> pathlib.Path:
    """--resume's argument, a checkpoint folder or the uuid of a local one, checked for `task`."""
    storage = storage_dir()
    # Determined's restore_path insists on this folder, even for a checkpoint outside it.
    storage.mkdir(parents=True, exist_ok=True)
    path = pathlib.Path(name).expanduser()
    if not path.is_dir():
        path = storage / name
    if not path.is_dir():
        raise ConfigError(f"--resume {name}: no such checkpoint folder, nor uuid in {storage}")
    if not (path / "state_dict.pth").is_file():
        raise ConfigError(f"--resume {name}: {path} is not a PyTorchTrial checkpoint")
    if not (path / "metadata.json").is_file():
        raise ConfigError(
            f"--resume {name}: {path} is incomplete (Determined writes metadata.json last; the run "
            "stopped while saving it). Resume from the checkpoint before it."
        )
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


def batches_trained(checkpoint: pathlib.Path) -> int:
    """The batch a local Trainer continues from: what Determined itself restores.

    Determined keeps the checkpoint's batch count only when its trial id is the running trial's
    (0 for every local run); a cluster checkpoint starts a fresh count from its weights.
    """
    with open(checkpoint / "trial_state.pkl", "rb") as f:
        state = pickle.load(f)  # Determined's own small dict of counters; it unpickles it too
    return state["batches_trained"] if state["trial_id"] == LOCAL_TRIAL_ID else 0


@contextlib.contextmanager
def loadable_rng_state() -> Iterator[None]:
    """Let torch.load's weights_only mode (the default since torch 2.6) read Determined's RNG state.

    Determined's checkpoint loader calls torch.load without weights_only, and every checkpoint
    it saves holds np.random.get_state(): a uint32 numpy array, which weights_only refuses. This
    allows exactly the numpy globals that array needs, while loading, instead of turning
    weights_only off (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD), which would let a checkpoint run code.
    """
    key = np.random.get_state()[1]
    reconstruct = key.__reduce__()[0]  # numpy's array unpickler, wherever this numpy keeps it
    with torch.serialization.safe_globals([reconstruct, np.ndarray, np.dtype, type(key.dtype)]):
        yield


@contextlib.contextmanager
def starting_at(batches: int) -> Iterator[None]:
    """Start the data and batch numbering of Determined's local Trainer at `batches`.

    On a cluster the master passes the checkpoint's batch count to the Trainer, which skips
    that many batches of the (seeded, repeating) training data and numbers the next one with
    it. The local Trainer.fit always passes 0: it restores the weights, optimizer, scheduler and
    its batch count, then replays the data from the first batch of epoch 1 and numbers batches
    from 0 again. This passes the count locally the way the master does on a cluster.
    Determined 0.38 has no public way to pass it, so this wraps the one place it is taken, the
    (private) controller's constructor, for the length of fit; tests/test_resume.py fails if
    an upgrade moves it.
    """
    controller = pytorch._PyTorchTrialController
    init = controller.__init__

    def init_at(self, *args, **kwargs) -> None:
        init(self, *args, **{**kwargs, "steps_completed": batches})

    controller.__init__ = init_at
    try:
        yield
    finally:
        controller.__init__ = init


@contextlib.contextmanager
def in_directory(path: str | os.PathLike) -> Iterator[None]:
    """Run in `path`: Determined copies the working directory into every local checkpoint."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)
