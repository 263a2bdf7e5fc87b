"""Where Determined 0.38.1 falls short of what the trial needs, each mended as narrowly as can be.

Every piece names the behaviour it works around and when it can go. tests/test_resume.py,
tests/test_local_run.py and tests/test_bad_input.py fail if an upgrade moves what they patch.
The pieces: a stop at the Trainer's next boundary (stop_at_boundaries), which early stopping
takes, and adaptive ASHA's stop (SearcherStop), which also stops at the next batch; checkpoints'
RNG state that torch 2.13 loads (loadable_rng_state); an exact resume's batch count
(starting_at); TensorBoard's folder (write_tensorboard_to); per-batch hooks for a local run's
progress (with_batch_hooks); reducer errors raised as they are (reducer_errors_as_raised); and
whether this process is a cluster's trial (cluster_trial).
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple

import determined as det
import numpy as np
import torch
from determined import pytorch
from determined.common.api import authentication, bindings, certs

logger = logging.getLogger(__name__)


def cluster_trial() -> det.ClusterInfo | None:
    """The cluster's info when this process is a trial on a cluster, else None (a local run,
    or a notebook or command on a cluster). Determined 0.38.1 has no public predicate for it;
    pytorch.init() tells them apart by the task type, as here. Can go when one is public."""
    info = det.get_cluster_info()
    return info if info is not None and info.task_type == "TRIAL" else None


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


WATCHER = "run_recorder"  # the watcher's callback name, which local checkpoints have always held


def with_batch_hooks(trial_class: type[pytorch.PyTorchTrial], watcher) -> type:
    """trial_class, telling `watcher` of every batch (watcher.trained(samples), .evaluated())
    and adding it, a PyTorchCallback, to the trial's callbacks.

    Determined calls callbacks once per reporting period, and a progress bar moves per batch.
    Can go once PyTorchCallback has per-batch hooks.
    """

    class WatchedTrial(trial_class):
        def build_callbacks(self) -> dict[str, pytorch.PyTorchCallback]:
            return {**super().build_callbacks(), WATCHER: watcher}

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
# ASHA's stop, below, which also stops at the start of a batch) and bert_glue/trial/callbacks.py's
# EarlyStopping both stop this way.
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
# full length. The harness sends the report from a background thread (core/_metrics.py, _Shipper),
# so the decision can come a moment after the Trainer has gone on training. The master stores a
# validation only once it has decided on it (master/internal/api_trials.go, ReportTrialMetrics:
# TrialReportValidation, then AddTrialMetrics), and GetTrial reads the trial's state and its latest
# validation in one query (master/static/srv/proto_get_trials_plus.sql): an answer that holds the
# validation holds the decision on it.
#
# So once a validation has been reported (and the checkpoint the policy takes then), the chief asks
# the master for the trial's state. If the master has yet to take that validation in, a background
# thread asks again every CATCH_UP_S seconds until it has; otherwise it asks every POLL_INTERVAL_S
# seconds, and a master that fails to answer is asked again then. Every rank takes the chief's
# answer at the same point: at the end of the boundary (stop_at_boundaries, which early stopping
# shares), and at the start of each batch, where the trial calls before_batch(). A trial stopped at
# its rung trains no further batch if the master decided before the chief asked, else the batches
# of at most one CATCH_UP_S and a question to the master. It exits without the checkpoint
# Determined writes on a stop, since a stopped trial is never resumed; a validation that was the
# best has its checkpoint already.
#
# This goes once the master signals a searcher's stop as a preemption (0.38.1 does not). Off the
# cluster it does nothing.


POLL_INTERVAL_S = 10.0  # how often the thread asks the master; one small GET each time
CATCH_UP_S = 0.2  # how often it asks while the master has yet to decide on a validation
REQUEST_TIMEOUT_S = 5  # a master slower than this counts as unreachable until the next poll
STOPPED = "the searcher stopped the trial"
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


class TrialState(NamedTuple):
    """What the master's record of the trial says of its stop."""

    state: str  # trialv1State's value, as the REST API gives it
    latest_validation: int | None  # the batches at the latest validation it holds; None: none


class StateReader:
    """Asks the master for the trial's state; a failure of any kind is logged once per outage
    and read as "no stop" (the next question is the retry)."""

    def __init__(self, fetch: Callable[[], TrialState]) -> None:
        self.fetch = fetch
        self.stop_seen = threading.Event()
        self.latest_validation: int | None = None  # in the master's last answer
        self._lock = threading.Lock()  # the poller and the chief's question may overlap
        self._failing = False

    def ask(self) -> bool:
        with self._lock:
            try:
                trial = self.fetch()
            except Exception as e:  # any failure: an unreadable answer must not end training
                if not self._failing:
                    logger.warning(f"cannot read the trial's state from the master ({e}); retrying")
                self._failing = True
                return self.stop_seen.is_set()
            if self._failing:
                logger.info("the master answers again")
            self._failing = False
            self.latest_validation = trial.latest_validation
            if should_stop(trial.state) and not self.stop_seen.is_set():
                logger.info(f"the master has the trial {trial.state}: stopping")
                self.stop_seen.set()
            return self.stop_seen.is_set()

    def lags(self, batches: int) -> bool:
        """Whether the master answered the last question, with no stop and without the validation
        at `batches`: its decision on that validation is still to come."""
        latest = self.latest_validation
        return not (self._failing or self.stop_seen.is_set()) and (
            latest is None or latest < batches
        )


class TrialStatePoller(threading.Thread):
    """Asks every interval_s seconds (the first time after one interval), and every catch_up_s
    while the master lags behind the validation named by catch_up(), until a stop or close()."""

    def __init__(
        self,
        reader: StateReader,
        interval_s: float = POLL_INTERVAL_S,
        catch_up_s: float = CATCH_UP_S,
    ) -> None:
        super().__init__(name="searcher-stop-poller", daemon=True)
        self.reader = reader
        self.interval_s = interval_s
        self.catch_up_s = catch_up_s
        self._awaited: int | None = None  # the batches at the validation awaited
        self._woken = threading.Event()
        self._closed = False

    def catch_up(self, batches: int) -> None:
        """Ask every catch_up_s until the master holds the validation at `batches`."""
        self._awaited = batches
        self._woken.set()

    def run(self) -> None:
        while not self._closed:
            awaited = self._awaited
            catching_up = awaited is not None and self.reader.lags(awaited)
            if self._woken.wait(self.catch_up_s if catching_up else self.interval_s):
                self._woken.clear()  # catch_up() or close(): the next turn takes what it changed
            elif self.reader.ask():
                return

    def close(self) -> None:
        self._closed = True
        self._woken.set()


def trial_state_fetcher(info: det.ClusterInfo) -> Callable[[], TrialState]:
    """A function that returns the trial's state, asked of the master with the task's session."""
    session = authentication.login_from_task(info.master_url, certs.default_load(info.master_url))
    session = session.with_retry(0)  # no backoff: the next question is the retry
    path = f"api/v1/trials/{info.trial.trial_id}"

    def fetch() -> TrialState:
        trial = session.get(path, timeout=REQUEST_TIMEOUT_S).json()["trial"]
        latest = trial.get("latestValidation")  # null until the master holds a validation
        return TrialState(trial["state"], None if latest is None else latest["totalBatches"])

    return fetch


class SearcherStop(pytorch.PyTorchCallback):
    """Ends the trial on every rank at the same point once the master has it STOPPING_COMPLETED
    (see above). The trial calls before_batch() first thing in each train_batch()."""

    def __init__(
        self,
        context: pytorch.PyTorchTrialContext,
        interval_s: float = POLL_INTERVAL_S,
        catch_up_s: float = CATCH_UP_S,
    ) -> None:
        self.context = context
        self.interval_s = interval_s
        self.catch_up_s = catch_up_s
        self.on_cluster = False  # alike on every rank
        self.reader: StateReader | None = None  # the chief's
        self.poller: TrialStatePoller | None = None
        self.batches = 0  # trained by the end of the current batch: what a validation reports
        self.validated_at: int | None = None  # the batches at a validation not yet asked about

    def on_trial_startup(self, first_batch_idx: int, checkpoint_uuid: str | None) -> None:
        info = cluster_trial()
        if info is None:  # alike on every rank
            return
        self.on_cluster = True
        self.batches = first_batch_idx
        if self.context.distributed.get_rank() == 0:
            self.reader = StateReader(trial_state_fetcher(info))
            self.poller = TrialStatePoller(self.reader, self.interval_s, self.catch_up_s)
            self.poller.start()
        stop_at_boundaries(self.context, self._reason_to_stop)

    def on_validation_end(self, metrics: dict) -> None:
        self.validated_at = self.batches  # reported to the master right after this

    def before_batch(self, batch_idx: int) -> None:
        """First thing in each train_batch(), on every rank: once the chief knows that the
        searcher stopped the trial, every rank exits here, before this batch."""
        if not self.on_cluster:
            return
        stop = self._stopped()
        if self.context.distributed.get_size() > 1:
            stop = self.context.distributed.broadcast(stop)
        if stop:
            logger.info(f"{STOPPED}: exiting after {batch_idx} batches, without training further")
            raise pytorch._ShouldExit(skip_exit_checkpoint=True)
        self.batches = batch_idx + 1

    def _reason_to_stop(self) -> str | None:
        """At the end of a boundary, on every rank (the chief's answer is taken)."""
        return STOPPED if self._stopped() else None

    def _stopped(self) -> bool:
        """On the chief, whether the master has stopped the trial: asked right after a validation
        (at the boundary, or at the next batch where no boundary follows, as after the one at
        batch 0), with the poller set to ask until the master has decided on it; else what the
        poller last heard. Elsewhere False."""
        if self.reader is None:
            return False
        if self.validated_at is not None:
            if not self.reader.ask() and self.reader.lags(self.validated_at):
                self.poller.catch_up(self.validated_at)
            self.validated_at = None
        return self.reader.stop_seen.is_set()

    def on_trial_shutdown(self) -> None:
        if self.poller is not None:
            self.poller.close()
