"""Ends a trial on a cluster once the searcher has stopped it (adaptive ASHA's early stopping).

Determined 0.38.1's master only marks such a trial STOPPING_COMPLETED: it sends the allocation
no signal (master/internal/trial.go: PatchSearcherState, transition), so should_preempt() stays
false and the trial would train its full length. Here the chief asks the master for the trial's
state every POLL_INTERVAL_S seconds, from a background thread; at the end of each training
workload (a reporting, validation or checkpoint boundary, the only points where Determined's
Trainer acts on a stop) every rank takes the chief's answer and, if it says stop, requests the
stop. The Trainer then checkpoints and returns from fit(): the process exits cleanly.

Off the cluster (local runs) it does nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import determined as det
from determined import pytorch
from determined.common import api
from determined.common.api import authentication, bindings, certs

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 10.0  # how often the chief asks the master; one small GET each time
REQUEST_TIMEOUT_S = 5  # a master slower than this counts as unreachable until the next poll
# The states in which the master wants the trial to finish without telling it so. The others
# come with a signal: STOPPING_CANCELED and PAUSED terminate the allocation (the Trainer sees a
# preemption and checkpoints), STOPPING_KILLED and STOPPING_ERROR kill it.
STOP_STATES = frozenset(
    state.value
    for state in (bindings.trialv1State.STOPPING_COMPLETED, bindings.trialv1State.COMPLETED)
)
# What a failed poll raises: the master unreachable or slow, an error status, a garbled answer.
POLL_ERRORS = (
    api.errors.BadRequestException,
    api.errors.BadResponseException,
    KeyError,
    ValueError,
)


def should_stop(state: str) -> bool:
    """Whether a trial in this state (trialv1State's value, as the REST API gives it) should end."""
    return state in STOP_STATES


class TrialStatePoller(threading.Thread):
    """Asks for the trial's state every interval_s seconds until it says stop, or close()."""

    def __init__(self, fetch_state: Callable[[], str], interval_s: float = POLL_INTERVAL_S) -> None:
        super().__init__(name="searcher-stop-poller", daemon=True)
        self.fetch_state = fetch_state
        self.interval_s = interval_s
        self.stop_seen = threading.Event()
        self._closing = threading.Event()

    def run(self) -> None:
        failing = False
        while not self._closing.is_set():
            try:
                state = self.fetch_state()
            except POLL_ERRORS as e:
                if not failing:  # once per outage, not every interval
                    logger.warning(f"cannot read the trial's state from the master ({e}); retrying")
                failing = True
            else:
                if failing:
                    logger.info("the master answers again")
                failing = False
                if should_stop(state):
                    logger.info(f"the master has the trial {state}: stopping, with a checkpoint")
                    self.stop_seen.set()
                    return
            self._closing.wait(self.interval_s)

    def close(self) -> None:
        self._closing.set()


def trial_state_fetcher(info: det.ClusterInfo) -> Callable[[], str]:
    """A function that returns the trial's state, asked of the master with the task's session."""
    session = authentication.login_from_task(info.master_url, certs.default_load(info.master_url))
    session = session.with_retry(0)  # no backoff in the thread: the next poll is the retry
    path = f"api/v1/trials/{info.trial.trial_id}"

    def fetch() -> str:
        return session.get(path, timeout=REQUEST_TIMEOUT_S).json()["trial"]["state"]

    return fetch


class SearcherStop(pytorch.PyTorchCallback):
    """Requests the trial's stop on every rank at the same boundary, once the master has it
    STOPPING_COMPLETED (see the module docstring)."""

    def __init__(
        self, context: pytorch.PyTorchTrialContext, interval_s: float = POLL_INTERVAL_S
    ) -> None:
        self.context = context
        self.interval_s = interval_s
        self.on_cluster = False
        self.poller: TrialStatePoller | None = None

    def on_trial_startup(self, first_batch_idx: int, checkpoint_uuid: str | None) -> None:
        info = det.get_cluster_info()
        self.on_cluster = info is not None and info.task_type == "TRIAL"  # alike on every rank
        if self.on_cluster and self.context.distributed.get_rank() == 0:
            self.poller = TrialStatePoller(trial_state_fetcher(info), self.interval_s)
            self.poller.start()

    def on_training_workload_end(self, avg_metrics: dict, batch_metrics: dict) -> None:
        if not self.on_cluster:
            return
        stop = self.poller is not None and self.poller.stop_seen.is_set()
        if self.context.distributed.get_size() > 1:
            # Every rank reaches this point at the same batch; the chief's answer is the one.
            stop = self.context.distributed.broadcast(stop)
        if stop and not self.context.get_stop_requested():
            self.context.set_stop_requested(True)

    def on_trial_shutdown(self) -> None:
        if self.poller is not None:
            self.poller.close()
