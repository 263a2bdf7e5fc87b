"""searcher_stop's decisions: which states stop a trial, the reader and poller, each rank's exit.

(tests/test_cluster.py runs it in real cluster trials against the stand-in master.)
"""

from __future__ import annotations

import logging
import socket
import types

import determined as det
import pytest
import requests
from determined import pytorch
from determined.common import api
from determined.common.api import bindings
from fake_master import TOKEN, FakeMaster

from bert_glue.determined_0_38 import workarounds

State = bindings.trialv1State


def test_only_the_states_the_master_does_not_signal_stop_the_trial():
    stopping = {state for state in State if workarounds.should_stop(state.value)}
    assert stopping == {State.STOPPING_COMPLETED, State.COMPLETED}
    assert not workarounds.should_stop("STATE_SOMETHING_NEW")


def reader_of(answers: list) -> tuple[workarounds.StateReader, list]:
    """A reader whose master answers (or raises) each of `answers` in turn, then RUNNING."""
    asked = []

    def fetch() -> str:
        asked.append(len(asked))
        answer = answers[len(asked) - 1] if len(asked) <= len(answers) else "STATE_RUNNING"
        if isinstance(answer, Exception):
            raise answer
        return answer

    return workarounds.StateReader(fetch), asked


def test_reader_outlasts_any_failure_and_stops_when_told(caplog):
    down = api.errors.MasterNotFoundException("connection refused")
    tls = requests.exceptions.SSLError("certificate verify failed")
    answers = [down, tls, ValueError("not JSON"), "STATE_RUNNING", "STATE_STOPPING_COMPLETED"]
    reader, asked = reader_of(answers)
    with caplog.at_level(logging.INFO, logger=workarounds.__name__):
        assert [reader.ask() for _ in answers] == [False] * 4 + [True]
    assert reader.stop_seen.is_set() and reader.ask()  # a stop, once seen, stays
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot read the trial's state" in m for m in messages) == 1  # once an outage
    assert messages[-2:] == [
        "the master answers again",
        "the master has the trial STATE_STOPPING_COMPLETED: stopping",
    ]


def test_poller_asks_after_each_interval_and_ends_at_a_stop():
    reader, asked = reader_of(["STATE_RUNNING", RuntimeError("any"), "STATE_STOPPING_COMPLETED"])
    poller = workarounds.TrialStatePoller(reader, interval_s=0.001)
    poller.start()
    poller.join(timeout=30)
    assert not poller.is_alive() and reader.stop_seen.is_set() and len(asked) == 3


@pytest.mark.parametrize("state", ["STATE_ACTIVE", "STATE_PAUSED", "STATE_STOPPING_CANCELED"])
def test_poller_keeps_training_through_other_states_until_closed(state):
    reader, asked = reader_of([state] * 3)
    poller = workarounds.TrialStatePoller(reader, interval_s=0.001)
    poller.start()
    while len(asked) < 5:  # past the given answers
        reader.stop_seen.wait(0.01)
    poller.close()
    poller.join(timeout=30)
    assert not poller.is_alive() and not reader.stop_seen.is_set()


def test_poller_waits_an_interval_before_its_first_question():
    reader, asked = reader_of([])
    poller = workarounds.TrialStatePoller(reader, interval_s=60)
    poller.start()
    poller.close()
    poller.join(timeout=30)
    assert asked == []


class FakeDistributed:
    """A rank of a 2-process trial whose chief's broadcast gave `chief_says`."""

    def __init__(self, rank: int, chief_says: str | None = None) -> None:
        self.rank, self.chief_says, self.broadcasts = rank, chief_says, []

    def get_rank(self) -> int:
        return self.rank

    def get_size(self) -> int:
        return 2

    def broadcast(self, value: str | None) -> str | None:
        self.broadcasts.append(value)
        return value if self.rank == 0 else self.chief_says


class FakePreempt:
    def __init__(self) -> None:
        self.preempted = False

    def should_preempt(self) -> bool:
        return self.preempted


class FakeContext:
    def __init__(self, distributed: FakeDistributed) -> None:
        self.distributed = distributed
        self._core = types.SimpleNamespace(preempt=FakePreempt())


@pytest.fixture
def on_cluster(monkeypatch) -> list[str]:
    """Cluster info as in a trial container, and a master whose answers the test appends."""
    info = det.ClusterInfo("http://127.0.0.1:1", "c", "a", [0, 1], "1.1", "1.1.1", TOKEN, "TRIAL")
    monkeypatch.setattr(det, "get_cluster_info", lambda: info)
    answers = ["STATE_RUNNING"]

    def fetcher(_):
        def fetch() -> str:
            answers.append(answers[-1])  # one more entry per question
            return answers[-1]

        return fetch

    monkeypatch.setattr(workarounds, "trial_state_fetcher", fetcher)
    return answers


def callback_on(rank: int, chief_says: str | None = None) -> workarounds.SearcherStop:
    callback = workarounds.SearcherStop(FakeContext(FakeDistributed(rank, chief_says)), 3600)
    callback.on_trial_startup(0, None)
    return callback


def boundary_end(callback: workarounds.SearcherStop) -> bool:
    """What the Trainer does on every rank after each boundary."""
    return callback.context._core.preempt.should_preempt()


def test_the_chief_asks_after_a_validation_and_every_rank_exits_there(on_cluster):
    chief, worker = callback_on(0), callback_on(1)
    assert chief.poller is not None and worker.poller is None  # only the chief asks the master
    for callback in (chief, worker):
        assert boundary_end(callback) is False  # no validation yet: nothing asked
    assert len(on_cluster) == 1
    for callback in (chief, worker):
        callback.on_validation_end({})
        assert boundary_end(callback) is False  # asked once, still running
    assert len(on_cluster) == 2
    on_cluster[-1] = "STATE_STOPPING_COMPLETED"  # the master decided on the next validation
    stopped = "the searcher stopped the trial"
    worker.context.distributed.chief_says = stopped
    for callback in (chief, worker):
        callback.on_validation_end({})
        with pytest.raises(pytorch._ShouldExit) as exit_:
            boundary_end(callback)
        assert exit_.value.skip_exit_checkpoint  # a stopped trial is never resumed
    assert chief.context.distributed.broadcasts == [None, None, stopped]  # each boundary
    assert worker.context.distributed.broadcasts == [None, None, None]  # its own is ignored
    chief.on_trial_shutdown()


def test_the_pollers_stop_is_taken_at_the_next_boundary(on_cluster):
    chief = callback_on(0)
    chief.reader.stop_seen.set()  # as the poller sets it between boundaries
    with pytest.raises(pytorch._ShouldExit):
        boundary_end(chief)
    assert len(on_cluster) == 1  # no question of its own: not after a validation
    chief.on_trial_shutdown()


def test_a_preemption_is_left_to_the_trainer(on_cluster):
    chief = callback_on(0)
    chief.context._core.preempt.preempted = True
    chief.on_validation_end({})
    assert boundary_end(chief) is True  # the Trainer checkpoints and exits, to be resumed
    chief.on_trial_shutdown()


def test_shutdown_ends_the_poller(on_cluster):
    chief = callback_on(0)
    chief.on_trial_shutdown()
    chief.poller.join(timeout=30)
    assert not chief.poller.is_alive() and not chief.reader.stop_seen.is_set()


def test_local_runs_neither_ask_nor_broadcast(monkeypatch):
    monkeypatch.setattr(det, "get_cluster_info", lambda: None)
    callback = callback_on(0)
    callback.on_validation_end({})
    assert boundary_end(callback) is False
    assert callback.poller is None and callback.context.distributed.broadcasts == []


def test_fetcher_reads_the_trials_state_with_the_task_session(monkeypatch):
    monkeypatch.setenv("DET_USER", "determined")
    monkeypatch.setenv("DET_SESSION_TOKEN", TOKEN)
    master = FakeMaster(smaller_is_better=False, metric="acc", trial_id=3)
    with master.serving() as url:
        info = det.ClusterInfo(url, "c", "a", [0], "3.1", "3.1.1", TOKEN, "TRIAL")
        info._trial_info = det.TrialInfo(3, 1, 0, {}, {}, 0, 1, False, None)
        fetch = workarounds.trial_state_fetcher(info)
        assert fetch() == "STATE_RUNNING"
        master.state = "STATE_STOPPING_COMPLETED"
        assert fetch() == "STATE_STOPPING_COMPLETED"
    assert [r.path for r in master.requests] == ["/api/v1/trials/3"] * 2
    with socket.socket() as closed:  # a port nothing listens on: the master is down
        closed.bind(("127.0.0.1", 0))
        info.master_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        reader = workarounds.StateReader(workarounds.trial_state_fetcher(info))
        assert reader.ask() is False
