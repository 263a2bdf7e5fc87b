"""Where Determined 0.38.1 falls short of what the trial needs, each mended as narrowly as can be.

Every piece names the behaviour it works around and when it can go. tests/test_resume.py,
tests/test_local_run.py and tests/test_bad_input.py fail if an upgrade moves what they patch.
The pieces: a stop at the Trainer's next boundary (stop_at_boundaries), which adaptive ASHA's
stop (SearcherStop) and early stopping take; checkpoints' RNG state that torch 2.13 loads
(loadable_rng_state); an exact resume's batch count (starting_at); TensorBoard's folder
(write_tensorboard_to); per-batch hooks for a local run's progress (with_batch_hooks); and
reducer errors raised as they are (reducer_errors_as_raised).
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import threading
from collections.abc import Callable, Iterator

import determined as det
import numpy as np
import torch
from determined import pytorch
from determined.common.api import authentication, bindings, certs

logger = logging.getLogger(__name__)


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


# Ends a trial at the Trainer's next boundary, on every rank, without an exit checkpoint.
#
# Determined 0.38.1's Trainer calls PreemptContext.should_preempt() on every rank after each
# boundary (reporting, validation, checkpoint). stop_at_boundaries() adds a question to that call:
# once the chief has a reason to stop, every rank logs it and raises the Trainer's _ShouldExit
# there, and fit() returns as it does at max_length. Unless asked for one (a local early stop,
# which --resume then reads), it skips the checkpoint that a preemption or
# context.set_stop_requested() writes on the way out: a trial stopped this way is done, never
# resumed, and its best validation has its checkpoint already (checkpoint_policy best). The
# process exits 0, which the master records as COMPLETED (docs/search.md). SearcherStop (adaptive
# ASHA's stop, below) and bert_glue/trial/callbacks.py's EarlyStopping both stop this way.
#
# Can go once the Trainer takes a stop request that skips the exit checkpoint.


def stop_at_boundaries(
    context: pytorch.PyTorchTrialContext,
    reason_to_stop: Callable[[], str | None],
    exit_checkpoint: bool = False,
) -> None:
    """From now on, at the end of each boundary, every rank exits there if reason_to_stop()
    gives a reason on the chief. It is called on every rank, in step; the chief's answer is the
    one taken. With exit_checkpoint the Trainer checkpoints where it stops, as on a preemption."""
    preempt = context._core.preempt
    should_preempt = preempt.should_preempt

    def should_preempt_or_stop() -> bool:
        if should_preempt():  # the Trainer's own: it checkpoints and exits, to be resumed
            return True
        reason = reason_to_stop()
        if context.distributed.get_size() > 1:
            reason = context.distributed.broadcast(reason)
        if reason is not None:
            logger.info(f"{reason}: exiting without training further")
            raise pytorch._ShouldExit(skip_exit_checkpoint=not exit_checkpoint)
        return False

    preempt.should_preempt = should_preempt_or_stop


# Ends a trial on a cluster once the searcher has stopped it (adaptive ASHA's early stopping).
#
# Determined 0.38.1's master decides while it handles a validation report, and then only marks the
# trial STOPPING_COMPLETED: it sends the allocation no signal (master/internal/trial.go:
# PatchSearcherState, transition), so should_preempt() stays false and the trial would train its
# full length. Here, after each validation has been reported (and the checkpoint the policy takes
# after it), the chief asks the master for the trial's state, and every rank takes its answer at
# the same point: a trial stopped at its rung trains no further batch. It exits without the
# checkpoint Determined writes on a stop, since a stopped trial is never resumed; a validation
# that was the best has its checkpoint already. A background thread also asks every
# POLL_INTERVAL_S seconds, in case the answer after a validation was lost; its answer is taken at
# the next boundary (reporting, validation or checkpoint).
#
# Every rank takes the answer at the end of each boundary, where the Trainer asks whether to
# preempt (stop_at_boundaries, which early stopping shares). This goes once the master signals a
# searcher's stop as a preemption (0.38.1 does not). Off the cluster it does nothing.


POLL_INTERVAL_S = 10.0  # how often the thread asks the master; one small GET each time
REQUEST_TIMEOUT_S = 5  # a master slower than this counts as unreachable until the next poll
# The states in which the master wants the trial to finish without telling it so. The others
# come with a signal: STOPPING_CANCELED and PAUSED terminate the allocation (the Trainer sees a
# preemption and checkpoints), STOPPING_KILLED and STOPPING_ERROR kill it.
STOP_STATES = frozenset(
    state.value
    for state in (bindings.trialv1State.STOPPING_COMPLETED, bindings.trialv1State.COMPLETED)
)


def should_stop(state: str) -> bool:
    """Whether a trial in this state (trialv1State's value, as the REST API gives it) should end."""
    return state in STOP_STATES


class StateReader:
    """Asks the master for the trial's state; a failure of any kind is logged once per outage
    and read as "no stop" (the next question is the retry)."""

    def __init__(self, fetch_state: Callable[[], str]) -> None:
        self.fetch_state = fetch_state
        self.stop_seen = threading.Event()
        self._lock = threading.Lock()  # the poller and the chief's question may overlap
        self._failing = False

    def ask(self) -> bool:
        with self._lock:
            try:
                state = self.fetch_state()
            except Exception as e:  # any failure: an unreadable answer must not end training
                if not self._failing:
                    logger.warning(f"cannot read the trial's state from the master ({e}); retrying")
                self._failing = True
                return self.stop_seen.is_set()
            if self._failing:
                logger.info("the master answers again")
            self._failing = False
            if should_stop(state) and not self.stop_seen.is_set():
                logger.info(f"the master has the trial {state}: stopping")
                self.stop_seen.set()
            return self.stop_seen.is_set()


class TrialStatePoller(threading.Thread):
    """Asks every interval_s seconds (the first time after one interval) until stop or close()."""

    def __init__(self, reader: StateReader, interval_s: float = POLL_INTERVAL_S) -> None:
        super().__init__(name="searcher-stop-poller", daemon=True)
        self.reader = reader
        self.interval_s = interval_s
        self._closing = threading.Event()

    def run(self) -> None:
        while not self._closing.wait(self.interval_s):
            if self.reader.ask():
                return

    def close(self) -> None:
        self._closing.set()


def trial_state_fetcher(info: det.ClusterInfo) -> Callable[[], str]:
    """A function that returns the trial's state, asked of the master with the task's session."""
    session = authentication.login_from_task(info.master_url, certs.default_load(info.master_url))
    session = session.with_retry(0)  # no backoff: the next question is the retry
    path = f"api/v1/trials/{info.trial.trial_id}"

    def fetch() -> str:
        return session.get(path, timeout=REQUEST_TIMEOUT_S).json()["trial"]["state"]

    return fetch


class SearcherStop(pytorch.PyTorchCallback):
    """Ends the trial on every rank at the same boundary once the master has it
    STOPPING_COMPLETED (see the module docstring)."""

    def __init__(
        self, context: pytorch.PyTorchTrialContext, interval_s: float = POLL_INTERVAL_S
    ) -> None:
        self.context = context
        self.interval_s = interval_s
        self.reader: StateReader | None = None  # the chief's
        self.poller: TrialStatePoller | None = None
        self.validated = False

    def on_trial_startup(self, first_batch_idx: int, checkpoint_uuid: str | None) -> None:
        info = det.get_cluster_info()
        if info is None or info.task_type != "TRIAL":  # alike on every rank
            return
        if self.context.distributed.get_rank() == 0:
            self.reader = StateReader(trial_state_fetcher(info))
            self.poller = TrialStatePoller(self.reader, self.interval_s)
            self.poller.start()
        stop_at_boundaries(self.context, self._reason_to_stop)

    def on_validation_end(self, metrics: dict) -> None:
        self.validated = True  # reported to the master right after this, before the boundary ends

    def _reason_to_stop(self) -> str | None:
        """At the end of a boundary, on every rank (the chief's answer is taken): whether the
        master has stopped the trial."""
        stop = False
        if self.reader is not None:
            stop = self.reader.ask() if self.validated else self.reader.stop_seen.is_set()
        self.validated = False
        return "the searcher stopped the trial" if stop else None

    def on_trial_shutdown(self) -> None:
        if self.poller is not None:
            self.poller.close()
