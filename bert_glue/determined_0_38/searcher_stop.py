"""Ends a trial on a cluster once the searcher has stopped it (adaptive ASHA's early stopping).

Determined 0.38.1's master decides while it handles a validation report, and then only marks the
trial STOPPING_COMPLETED: it sends the allocation no signal (master/internal/trial.go:
PatchSearcherState, transition), so should_preempt() stays false and the trial would train its
full length. Here, after each validation has been reported (and the checkpoint the policy takes
after it), the chief asks the master for the trial's state, and every rank takes its answer at
the same point: a trial stopped at its rung trains no further batch. It exits without the
checkpoint Determined writes on a stop, since a stopped trial is never resumed; a validation
that was the best has its checkpoint already. A background thread also asks every
POLL_INTERVAL_S seconds, in case the answer after a validation was lost; its answer is taken at
the next boundary (reporting, validation or checkpoint).

Every rank takes the answer at the end of each boundary, where the Trainer asks whether to
preempt (boundary_stop.py, which early stopping shares). This goes once the master signals a
searcher's stop as a preemption (0.38.1 does not). Off the cluster it does nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import determined as det
from determined import pytorch
from determined.common.api import authentication, bindings, certs

from bert_glue.determined_0_38 import boundary_stop

logger = logging.getLogger(__name__)

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
        boundary_stop.stop_at_boundaries(self.context, self._reason_to_stop)

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
