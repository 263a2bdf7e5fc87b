"""Where Determined 0.38.1 falls short of what the trial needs, each mended as narrowly as can be.

Every piece names the behaviour it works around and when it can go. tests/test_resume.py,
tests/test_local_run.py and tests/test_bad_input.py fail if an upgrade moves what they patch.
(searcher_stop.py, beside this file, is the largest one: adaptive ASHA's stop.)
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator

import numpy as np
import torch
from determined import pytorch


@contextlib.contextmanager
def loadable_rng_state() -> Iterator[None]:
    """Let torch.load's weights_only mode (the default since torch 2.6) read Determined's RNG state.

    Determined's checkpoint loader calls torch.load without weights_only, and every checkpoint
    it saves holds np.random.get_state(): a uint32 numpy array, which weights_only refuses. This
    allows exactly the numpy globals that array needs, while loading, instead of turning
    weights_only off (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD), which would let a checkpoint run code.
    Can go once Determined's loader reads its own checkpoints under weights_only.
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
    from 0 again. This passes the count locally the way the master does on a cluster, by
    wrapping the one place it is taken, the (private) controller's constructor, for the length
    of fit. Can go once local Trainer.fit continues a checkpoint's batch count itself.
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


def write_tensorboard_to(context: pytorch.PyTorchTrialContext, folder: pathlib.Path) -> None:
    """TensorBoard events of a local run into `folder`.

    In local mode Determined gives its SummaryWriter a relative folder, and fit() runs in
    another working directory (the one its checkpoints copy), so the events land there. This
    sets the writer get_tensorboard_writer() returns, a private attribute. Can go once local
    mode takes a TensorBoard folder.
    """
    from torch.utils.tensorboard import SummaryWriter

    context._tbd_writer = SummaryWriter(folder)


def with_batch_hooks(trial_class: type[pytorch.PyTorchTrial], watcher) -> type:
    """trial_class, telling `watcher` of every batch (watcher.trained(samples), .evaluated())
    and adding it, a PyTorchCallback, to the trial's callbacks.

    Determined calls callbacks once per reporting period, and a progress bar moves per batch.
    Can go once PyTorchCallback has per-batch hooks.
    """

    class WatchedTrial(trial_class):
        def build_callbacks(self) -> dict[str, pytorch.PyTorchCallback]:
            # The name local checkpoints have always recorded it under.
            return {**super().build_callbacks(), "run_recorder": watcher}

        def train_batch(self, batch, epoch_idx: int, batch_idx: int):
            metrics = super().train_batch(batch, epoch_idx, batch_idx)
            watcher.trained(self.get_batch_length(batch) * self.context.distributed.get_size())
            return metrics

        def evaluate_batch(self, batch, batch_idx: int):
            metrics = super().evaluate_batch(batch, batch_idx)
            watcher.evaluated()
            return metrics

    WatchedTrial.__name__ = WatchedTrial.__qualname__ = trial_class.__name__
    return WatchedTrial


@contextlib.contextmanager
def reducer_errors_as_raised(*kinds: type[Exception]) -> Iterator[None]:
    """Errors of these kinds that a metric reducer raises come out as they were raised.

    Determined wraps whatever a reducer raises in a ValueError of its own, whose message is the
    per-slot values; the trial's own errors say the fix in one line. Can go once Determined
    lets a reducer's exception through.
    """
    try:
        yield
    except ValueError as e:
        if isinstance(e.__cause__, kinds):
            raise e.__cause__ from None
        raise
