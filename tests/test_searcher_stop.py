"""SearcherStop's decisions: which states stop a trial, the reader and poller (catching up with a
master yet to decide on a validation), each rank's exit at a boundary or a batch, and the race
with a stand-in master that decides a moment after the chief asked.

(tests/test_cluster.py and tests/test_searcher_stop_race.py run it in real cluster trials against
the stand-in master.)
"""

from __future__ import annotations

import logging
import socket
import threading
import time
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


def answer(state: str = "STATE_RUNNING", latest_validation: int | None = None):
    return workarounds.TrialState(state, latest_validation)


def reader_of(answers: list) -> tuple[workarounds.StateReader, list]:
    """A reader whose master answers (or raises) each of `answers` in turn, then RUNNING with no
    validation."""
    asked = []

    def fetch() -> workarounds.TrialState:
        asked.append(len(asked))
        given = answers[len(asked) - 1] if len(asked) <= len(answers) else answer()
        if isinstance(given, Exception):
            raise given
        return given

    return workarounds.StateReader(fetch), asked


def test_reader_outlasts_any_failure_and_stops_when_told(caplog):
    down = api.errors.MasterNotFoundException("connection refused")
    tls = requests.exceptions.SSLError("certificate verify failed")
    answers = [down, tls, ValueError("not JSON"), answer(), answer("STATE_STOPPING_COMPLETED")]
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


def test_reader_tells_whether_the_master_has_decided_on_a_validation():
    down = api.errors.MasterNotFoundException("connection refused")
    reader, _ = reader_of([answer(), answer(latest_validation=6), down, answer()])
    reader.ask()  # no validation held yet
    assert reader.lags(0) and reader.lags(6)
    reader.ask()
    assert not reader.lags(6) and reader.lags(12)
    reader.ask()  # no answer: a master that fails is not asked sooner
    assert not reader.lags(12)
    reader.ask()
    assert reader.lags(12)
    reader.stop_seen.set()  # nothing left to decide
    assert not reader.lags(12)


def test_poller_asks_after_each_interval_and_ends_at_a_stop():
    reader, asked = reader_of([answer(), RuntimeError("any"), answer("STATE_STOPPING_COMPLETED")])
    poller = workarounds.TrialStatePoller(reader, interval_s=0.001)
    poller.start()
    poller.join(timeout=30)
    assert not poller.is_alive() and reader.stop_seen.is_set() and len(asked) == 3


@pytest.mark.parametrize("state", ["STATE_ACTIVE", "STATE_PAUSED", "STATE_STOPPING_CANCELED"])
def test_poller_keeps_training_through_other_states_until_closed(state):
    reader, asked = reader_of([answer(state)] * 3)
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


def test_poller_catches_up_until_the_master_holds_the_validation():
    """Asked to catch up on the validation at batch 6, the poller asks every catch_up_s while
    the master's record lacks it, then only every interval_s (an hour here)."""
    reader, asked = reader_of([answer(), answer(latest_validation=0), answer(latest_validation=6)])
    poller = workarounds.TrialStatePoller(reader, interval_s=3600, catch_up_s=0.001)
    poller.start()
    poller.catch_up(6)
    while len(asked) < 3:
        reader.stop_seen.wait(0.01)
    time.sleep(0.1)  # a hundred catch-up intervals, in which one still catching up asks
    poller.close()
    poller.join(timeout=30)
    assert not poller.is_alive() and len(asked) == 3


class FakeDistributed:
    """A rank of a 2-process trial whose chief's broadcast gave `chief_says`; or, for a worker
    given its `chief` (the chief's FakeDistributed, called first at each step), what the chief
    broadcast at the same step."""

    def __init__(self, rank: int, chief_says=None, chief: FakeDistributed | None = None) -> None:
        self.rank, self.chief_says, self.chief, self.broadcasts = rank, chief_says, chief, []

    def get_rank(self) -> int:
        return self.rank

    def get_size(self) -> int:
        return 2

    def broadcast(self, value):
        self.broadcasts.append(value)
        if self.rank == 0:
            return value
        if self.chief is not None:
            return self.chief.broadcasts[len(self.broadcasts) - 1]
        return self.chief_says


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
def on_cluster(monkeypatch) -> list[workarounds.TrialState]:
    """Cluster info as in a trial container, and a master whose answers the test sets: each
    question gives (or raises) the last entry again, one more entry per question."""
    info = det.ClusterInfo("http://127.0.0.1:1", "c", "a", [0, 1], "1.1", "1.1.1", TOKEN, "TRIAL")
    monkeypatch.setattr(det, "get_cluster_info", lambda: info)
    answers = [answer()]

    def fetcher(_):
        def fetch() -> workarounds.TrialState:
            answers.append(answers[-1])
            if isinstance(answers[-1], Exception):
                raise answers[-1]
            return answers[-1]

        return fetch

    monkeypatch.setattr(workarounds, "trial_state_fetcher", fetcher)
    return answers


def callback_on(rank: int, catch_up_s: float = 3600) -> workarounds.SearcherStop:
    """A rank's callback whose poller asks only when a test makes it catch up."""
    context = FakeContext(FakeDistributed(rank))
    callback = workarounds.SearcherStop(context, interval_s=3600, catch_up_s=catch_up_s)
    callback.on_trial_startup(0, None)
    return callback


def chief_and_worker() -> tuple[workarounds.SearcherStop, workarounds.SearcherStop]:
    """The callbacks of a 2-process trial's ranks; the worker hears the chief's broadcasts."""
    chief = callback_on(0)
    worker = callback_on(1)
    worker.context.distributed.chief = chief.context.distributed
    return chief, worker


def boundary_end(callback: workarounds.SearcherStop) -> bool:
    """What the Trainer does on every rank after each boundary."""
    return callback.context._core.preempt.should_preempt()


def train(callbacks: list[workarounds.SearcherStop], batches: range) -> None:
    """The start of these batches on every rank, in step, as the trial's train_batch() does."""
    for batch_idx in batches:
        for callback in callbacks:
            callback.before_batch(batch_idx)


def test_the_chief_asks_after_a_validation_and_every_rank_exits_there(on_cluster):
    """The master decides on each validation before the chief asks: the trial goes on after
    the first, and every rank exits at the boundary of the second."""
    chief, worker = chief_and_worker()
    assert chief.poller is not None and worker.poller is None  # only the chief asks the master
    train([chief, worker], range(6))
    assert len(on_cluster) == 1  # no question yet
    on_cluster[-1] = answer(latest_validation=6)
    for callback in (chief, worker):
        callback.on_validation_end({})
        assert boundary_end(callback) is False
    assert len(on_cluster) == 2 and not chief.reader.lags(6)  # decided: nothing to catch up on
    train([chief, worker], range(6, 12))
    on_cluster[-1] = answer("STATE_STOPPING_COMPLETED", latest_validation=12)
    for callback in (chief, worker):
        callback.on_validation_end({})
        with pytest.raises(pytorch._ShouldExit) as exit_:
            boundary_end(callback)
        assert exit_.value.skip_exit_checkpoint  # a stopped trial is never resumed
    assert len(on_cluster) == 3
    epoch = [False] * 6  # one a batch
    said = epoch + [None] + epoch + [workarounds.STOPPED]
    assert chief.context.distributed.broadcasts == said
    assert worker.context.distributed.broadcasts == epoch + [None] + epoch + [None]  # ignored
    chief.on_trial_shutdown()


def test_every_rank_exits_at_the_first_batch_after_the_chief_learns_of_the_stop(on_cluster, caplog):
    chief, worker = chief_and_worker()
    train([chief, worker], range(8))
    chief.reader.stop_seen.set()  # as the poller sets it, between two batches
    with caplog.at_level(logging.INFO, logger=workarounds.__name__):
        for callback in (chief, worker):
            with pytest.raises(pytorch._ShouldExit) as exit_:
                callback.before_batch(8)
            assert exit_.value.skip_exit_checkpoint
    assert chief.context.distributed.broadcasts == [False] * 8 + [True]
    assert worker.context.distributed.broadcasts == [False] * 9  # its own, ignored
    exit_log = "the searcher stopped the trial: exiting after 8 batches, without training further"
    assert [r.getMessage() for r in caplog.records] == [exit_log] * 2
    assert len(on_cluster) == 1  # a batch asks the master nothing
    chief.on_trial_shutdown()


def test_a_validation_the_master_has_yet_to_decide_on_is_caught_up_with(on_cluster):
    """The master has not taken the validation in when the chief asks (its latest validation is
    the one before): the poller asks every catch_up_s until it has, and the next batch exits."""
    on_cluster[-1] = answer(latest_validation=0)
    chief = callback_on(0, catch_up_s=0.001)
    train([chief], range(6))
    chief.on_validation_end({})
    assert boundary_end(chief) is False  # undecided: training goes on
    on_cluster[-1] = answer("STATE_STOPPING_COMPLETED", latest_validation=6)  # decided
    assert chief.reader.stop_seen.wait(timeout=30)  # the poller's own interval is an hour
    with pytest.raises(pytorch._ShouldExit):
        chief.before_batch(6)
    chief.on_trial_shutdown()


def test_a_validation_at_batch_0_is_asked_about_at_the_first_batch(on_cluster):
    """No boundary follows the validation at batch 0 (perform_initial_validation)."""
    on_cluster[-1] = answer("STATE_STOPPING_COMPLETED", latest_validation=0)
    chief = callback_on(0)
    chief.on_validation_end({})
    with pytest.raises(pytorch._ShouldExit):
        chief.before_batch(0)
    assert len(on_cluster) == 2
    chief.on_trial_shutdown()


def test_a_master_that_does_not_answer_is_asked_again_at_the_pollers_interval(on_cluster):
    on_cluster[-1] = RuntimeError("master restarting")
    chief = callback_on(0, catch_up_s=0.001)
    chief.on_validation_end({})
    assert boundary_end(chief) is False
    on_cluster[-1] = answer("STATE_STOPPING_COMPLETED", latest_validation=0)
    time.sleep(0.1)  # a hundred catch-up intervals, in which one catching up asks
    assert len(on_cluster) == 2 and not chief.reader.stop_seen.is_set()
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
    train([callback], range(3))
    callback.on_validation_end({})
    assert boundary_end(callback) is False
    assert callback.poller is None and callback.context.distributed.broadcasts == []


def cluster_info(monkeypatch, url: str, trial_id: int = 1) -> det.ClusterInfo:
    """The cluster info and task session of trial `trial_id`'s container, its master at url."""
    monkeypatch.setenv("DET_USER", "determined")
    monkeypatch.setenv("DET_SESSION_TOKEN", TOKEN)
    info = det.ClusterInfo(url, "c", "a", [0], f"{trial_id}.1", f"{trial_id}.1.1", TOKEN, "TRIAL")
    info._trial_info = det.TrialInfo(trial_id, 1, 0, {}, {}, 0, 1, False, None)
    return info


def report_validation(url: str, batches: int, trial_id: int = 1) -> None:
    """A validation report, as the harness's metrics thread sends it."""
    metrics = {"avgMetrics": {"acc": 0.5, "batches": batches}}
    body = {"trialId": trial_id, "trialRunId": 1, "stepsCompleted": batches, "metrics": metrics}
    requests.post(
        f"{url}/api/v1/trials/{trial_id}/metrics",
        json={"metrics": body, "group": "validation"},
        headers={"Grpc-Metadata-x-allocation-token": f"Bearer {TOKEN}"},
        timeout=30,
    ).raise_for_status()


def test_fetcher_reads_the_trials_state_with_the_task_session(monkeypatch):
    master = FakeMaster(smaller_is_better=False, metric="acc", trial_id=3)
    with master.serving() as url:
        info = cluster_info(monkeypatch, url, trial_id=3)
        fetch = workarounds.trial_state_fetcher(info)
        assert fetch() == ("STATE_RUNNING", None)
        report_validation(url, 6, trial_id=3)
        master.state = "STATE_STOPPING_COMPLETED"
        assert fetch() == ("STATE_STOPPING_COMPLETED", 6)
    assert [r.path for r in master.requests if r.method == "GET"] == ["/api/v1/trials/3"] * 2
    with socket.socket() as closed:  # a port nothing listens on: the master is down
        closed.bind(("127.0.0.1", 0))
        info.master_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        reader = workarounds.StateReader(workarounds.trial_state_fetcher(info))
        assert reader.ask() is False


def test_a_stop_the_master_decides_after_the_chiefs_question_ends_the_trial_a_batch_later(
    monkeypatch,
):
    """The stand-in master takes 0.3 s to decide on the validation report, which comes from
    another thread as the harness's do. The chief's question at the boundary finds it undecided;
    the poller asks every 0.05 s until it has decided, and the next batch exits, long before the
    poller's interval (an hour here) or the next boundary."""
    master = FakeMaster(
        smaller_is_better=False, metric="acc", stop_after_validations=1, decision_delay_s=0.3
    )
    with master.serving() as url:
        monkeypatch.setattr(det, "get_cluster_info", lambda: cluster_info(monkeypatch, url))
        chief = workarounds.SearcherStop(
            FakeContext(FakeDistributed(0)), interval_s=3600, catch_up_s=0.05
        )
        chief.on_trial_startup(0, None)
        train([chief], range(6))
        chief.on_validation_end({})
        shipper = threading.Thread(target=report_validation, args=(url, 6))
        shipper.start()
        assert boundary_end(chief) is False  # the master has yet to decide
        assert chief.reader.stop_seen.wait(timeout=30)
        with pytest.raises(pytorch._ShouldExit):
            chief.before_batch(6)
        shipper.join(timeout=30)
        chief.on_trial_shutdown()
    states = [r.answer["trial"]["state"] for r in master.trial_gets()]
    assert len(states) >= 2 and states[-1] == "STATE_STOPPING_COMPLETED"
    assert set(states[:-1]) == {"STATE_RUNNING"}  # asked until the master had decided
    assert master.stop_answered_at == 6
