"""searcher_stop's decisions: which states stop a trial, the poller, the callback on each rank.

(tests/test_cluster.py runs it in real cluster trials against the stand-in master.)
"""

from __future__ import annotations

import logging
import socket

import determined as det
import pytest
from determined.common import api
from determined.common.api import bindings
from fake_master import TOKEN, FakeMaster

import searcher_stop

State = bindings.trialv1State


def test_only_the_states_the_master_does_not_signal_stop_the_trial():
    stopping = {state for state in State if searcher_stop.should_stop(state.value)}
    assert stopping == {State.STOPPING_COMPLETED, State.COMPLETED}
    assert not searcher_stop.should_stop("STATE_SOMETHING_NEW")


def poller_of(
    answers: list, interval_s: float = 0.0
) -> tuple[searcher_stop.TrialStatePoller, list]:
    """A poller whose master answers (or raises) each of `answers` in turn, then RUNNING."""
    asked = []

    def fetch() -> str:
        asked.append(len(asked))
        answer = answers[len(asked) - 1] if len(asked) <= len(answers) else "STATE_RUNNING"
        if isinstance(answer, Exception):
            raise answer
        return answer

    return searcher_stop.TrialStatePoller(fetch, interval_s), asked


def test_poller_outlasts_an_unreachable_master_and_stops_when_told(caplog):
    down = api.errors.MasterNotFoundException("connection refused")
    answers = [down, down, ValueError("not JSON"), "STATE_RUNNING", "STATE_STOPPING_COMPLETED"]
    poller, asked = poller_of(answers)
    with caplog.at_level(logging.INFO, logger="searcher_stop"):
        poller.start()
        poller.join(timeout=30)
    assert not poller.is_alive() and poller.stop_seen.is_set()
    assert len(asked) == 5  # it asked no more after the stop
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot read the trial's state" in m for m in messages) == 1  # once an outage
    assert messages[-2:] == [
        "the master answers again",
        "the master has the trial STATE_STOPPING_COMPLETED: stopping, with a checkpoint",
    ]


@pytest.mark.parametrize("state", ["STATE_ACTIVE", "STATE_PAUSED", "STATE_STOPPING_CANCELED"])
def test_poller_keeps_training_through_other_states_until_closed(state):
    poller, asked = poller_of([state] * 3, interval_s=0.001)
    poller.start()
    while len(asked) < 5:  # past the given answers
        poller.stop_seen.wait(0.01)
    poller.close()
    poller.join(timeout=30)
    assert not poller.is_alive() and not poller.stop_seen.is_set()


class FakeDistributed:
    """A rank of a 2-process trial whose chief's broadcast gave `chief_says`."""

    def __init__(self, rank: int, chief_says: bool | None = None) -> None:
        self.rank, self.chief_says, self.broadcasts = rank, chief_says, []

    def get_rank(self) -> int:
        return self.rank

    def get_size(self) -> int:
        return 2

    def broadcast(self, value: bool) -> bool:
        self.broadcasts.append(value)
        return value if self.rank == 0 else self.chief_says


class FakeContext:
    def __init__(self, distributed: FakeDistributed) -> None:
        self.distributed = distributed
        self.stop_requested = False

    def get_stop_requested(self) -> bool:
        return self.stop_requested

    def set_stop_requested(self, stop: bool) -> None:
        self.stop_requested = stop


@pytest.fixture
def on_cluster(monkeypatch) -> list[str]:
    """Cluster info as in a trial container, and a master whose answers the test appends."""
    info = det.ClusterInfo("http://127.0.0.1:1", "c", "a", [0, 1], "1.1", "1.1.1", TOKEN, "TRIAL")
    monkeypatch.setattr(det, "get_cluster_info", lambda: info)
    answers = ["STATE_RUNNING"]
    monkeypatch.setattr(searcher_stop, "trial_state_fetcher", lambda _: lambda: answers[-1])
    return answers


def callback_on(rank: int, chief_says: bool | None = None) -> searcher_stop.SearcherStop:
    callback = searcher_stop.SearcherStop(FakeContext(FakeDistributed(rank, chief_says)), 0.001)
    callback.on_trial_startup(0, None)
    return callback


def test_chief_stops_every_rank_at_the_same_boundary(on_cluster):
    chief, worker = callback_on(0), callback_on(1, chief_says=False)
    assert chief.poller is not None and worker.poller is None  # only the chief asks the master
    for callback in (chief, worker):
        callback.on_training_workload_end({}, {})
        assert not callback.context.get_stop_requested()
    on_cluster.append("STATE_STOPPING_COMPLETED")
    chief.poller.join(timeout=30)
    worker.context.distributed.chief_says = True
    for callback in (chief, worker):
        callback.on_training_workload_end({}, {})
        assert callback.context.get_stop_requested()
    assert chief.context.distributed.broadcasts == [False, True]  # once a boundary, each rank
    assert worker.context.distributed.broadcasts == [False, False]  # its own value is ignored
    chief.on_trial_shutdown()


def test_shutdown_ends_the_poller(on_cluster):
    chief = callback_on(0)
    chief.on_trial_shutdown()
    chief.poller.join(timeout=30)
    assert not chief.poller.is_alive() and not chief.poller.stop_seen.is_set()


def test_local_runs_neither_ask_nor_broadcast(monkeypatch):
    monkeypatch.setattr(det, "get_cluster_info", lambda: None)
    callback = callback_on(0)
    callback.on_training_workload_end({}, {})
    assert callback.poller is None and callback.context.distributed.broadcasts == []
    assert not callback.context.get_stop_requested()


def test_fetcher_reads_the_trials_state_with_the_task_session(monkeypatch):
    monkeypatch.setenv("DET_USER", "determined")
    monkeypatch.setenv("DET_SESSION_TOKEN", TOKEN)
    master = FakeMaster(smaller_is_better=False, metric="acc", trial_id=3)
    with master.serving() as url:
        info = det.ClusterInfo(url, "c", "a", [0], "3.1", "3.1.1", TOKEN, "TRIAL")
        info._trial_info = det.TrialInfo(3, 1, 0, {}, {}, 0, 1, False, None)
        fetch = searcher_stop.trial_state_fetcher(info)
        assert fetch() == "STATE_RUNNING"
        master.state = "STATE_STOPPING_COMPLETED"
        assert fetch() == "STATE_STOPPING_COMPLETED"
    assert [r.path for r in master.requests] == ["/api/v1/trials/3"] * 2
    with socket.socket() as closed:  # a port nothing listens on: the master is down
        closed.bind(("127.0.0.1", 0))
        info.master_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        with pytest.raises(searcher_stop.POLL_ERRORS):
            searcher_stop.trial_state_fetcher(info)()
