"""Early stopping: the count of validations without improvement, the stop at a boundary that
the searcher's stop shares (workarounds.py), and local runs that stop on a plateau.

(tests/test_cluster.py stops a cluster trial on a plateau against the stand-in master.)
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
import types

import determined as det
import pytest
import yaml
from conftest import run_glue
from determined import pytorch
from test_local_run import printed_commands, run_printed, summary_of
from test_searcher_stop import FakeContext, FakeDistributed

import model_def
from bert_glue.determined_0_38 import workarounds
from bert_glue.results import glue_results
from bert_glue.trial import callbacks
from bert_glue.trial.settings import Settings

NAN = math.nan
STEPS_PER_EPOCH = 6  # 48 training rows in batches of 8 (local_config)


def stops(values: list[float], patience=2, min_delta=0.0, smaller_is_better=False) -> list[bool]:
    """Whether patience has run out after each validation (10 batches apart) of the values."""
    plateau = callbacks.Plateau(patience, min_delta, smaller_is_better)
    return [plateau.update(value, 10 * i) for i, value in enumerate(values, 1)]


def test_each_improvement_starts_the_count_again():
    assert stops([0.5, 0.6, 0.6, 0.7, 0.7, 0.7]) == [False] * 5 + [True]


def test_a_tie_is_no_improvement():
    assert stops([0.5, 0.5, 0.5]) == [False, False, True]
    assert stops([0.5, 0.5], patience=1) == [False, True]


@pytest.mark.parametrize(
    ("smaller_is_better", "values"),
    [(False, [0.5, 0.4, 0.3]), (True, [0.5, 0.6, 0.7])],
    ids=["larger-is-better", "smaller-is-better"],
)
def test_getting_worse_is_no_improvement_either_way(smaller_is_better, values):
    assert stops(values, smaller_is_better=smaller_is_better) == [False, False, True]
    better = list(reversed(values))
    assert stops(better, smaller_is_better=smaller_is_better) == [False, False, False]


def test_an_improvement_must_exceed_min_delta():
    assert stops([0.5, 0.55, 0.6], min_delta=0.05) == [False, False, False]  # 0.5 -> 0.6
    assert stops([0.5, 0.52, 0.54], min_delta=0.05) == [False, False, True]  # 0.54 - 0.5 too
    assert stops([0.5, 0.45, 0.3], min_delta=0.1, smaller_is_better=True) == [False] * 3


def test_nan_is_never_an_improvement():
    assert stops([NAN, NAN]) == [False, True]
    assert stops([0.5, NAN, 0.6, NAN, NAN]) == [False, False, False, False, True]
    assert stops([0.5, NAN], smaller_is_better=True) == [False, False]


def test_the_reason_names_metric_delta_patience_and_best():
    plateau = callbacks.Plateau(2, 0.0, smaller_is_better=False)
    for batch, value in [(20, 0.8), (40, 0.75), (60, 0.8)]:
        plateau.update(value, batch)
    assert plateau.reason("acc") == (
        "stopped early: acc did not improve by more than 0 in 2 validations (best 0.8 at batch 20)"
    )
    nothing = callbacks.Plateau(1, 0.001, smaller_is_better=True)
    nothing.update(NAN, 5)
    assert nothing.reason("validation_loss") == (
        "stopped early: validation_loss did not improve by more than 0.001 in 1 validation "
        "(none was a number)"
    )


class TrialContext(FakeContext):
    """A rank's trial context with a searcher that maximises acc."""

    def get_experiment_config(self) -> dict:
        return {"searcher": {"metric": "acc", "smaller_is_better": False}}


def settings_with(patience: int | None) -> Settings:
    """A trial's settings whose searcher maximises acc, with this early_stopping_patience."""
    hparams = {"global_batch_size": 8, "learning_rate": 1e-3, "num_train_epochs": 1}
    config = {
        "hyperparameters": {**hparams, "model_type": "bert", "early_stopping_patience": patience},
        "data": {"task": "MRPC", "model_name_or_path": "m", "data_dir": "d"},
        "searcher": TrialContext.get_experiment_config(None)["searcher"],
    }
    return Settings.of(config, config["hyperparameters"])


def callback_on(rank: int, chief_says=None, patience=1, total_batches=100):
    context = TrialContext(FakeDistributed(rank, chief_says))
    callback = callbacks.EarlyStopping(context, settings_with(patience), total_batches)
    callback.on_trial_startup(0, None)
    return callback


def validate(callback: callbacks.EarlyStopping, batches: int, acc: float) -> None:
    """What the Trainer does on every rank: a training report, then a validation."""
    callback.on_training_workload_end({"loss": 0.1, "batches": batches}, [])
    callback.on_validation_end({"acc": acc})


def boundary_end(callback) -> bool:
    """The Trainer's question on every rank after each boundary."""
    return callback.context._core.preempt.should_preempt()


def test_every_rank_exits_at_the_validation_that_runs_out_of_patience():
    chief, worker = callback_on(0), callback_on(1, chief_says=None)
    for callback in (chief, worker):
        validate(callback, 10, 0.7)
        assert boundary_end(callback) is False
    reason = (
        "stopped early: acc did not improve by more than 0 in 1 validation (best 0.7 at batch 10)"
    )
    worker.context.distributed.chief_says = reason
    for callback in (chief, worker):
        validate(callback, 20, 0.7)
        with pytest.raises(pytorch._ShouldExit) as exit_:
            boundary_end(callback)
        # Locally a checkpoint where it stops: --resume from it knows the run is over.
        assert not exit_.value.skip_exit_checkpoint
    assert chief.reason == reason
    assert chief.context.distributed.broadcasts == [None, reason]
    assert worker.context.distributed.broadcasts == [None, reason]  # its own, ignored


def test_on_a_cluster_the_stop_writes_no_checkpoint(monkeypatch):
    monkeypatch.setattr(det, "get_cluster_info", lambda: types.SimpleNamespace(task_type="TRIAL"))
    chief = callback_on(0)
    validate(chief, 10, 0.7)
    validate(chief, 20, 0.7)
    with pytest.raises(pytorch._ShouldExit) as exit_:
        boundary_end(chief)
    assert exit_.value.skip_exit_checkpoint  # the best validation has its checkpoint


def test_a_resumed_run_that_had_run_out_of_patience_trains_no_further():
    stopped = callback_on(0, patience=2)
    for batches in (10, 20, 30):
        validate(stopped, batches, 0.7)
    state = stopped.state_dict()
    assert callback_on(0, patience=2).resumed_reason(state, 30) == stopped.reason
    assert callback_on(0, patience=3).resumed_reason(state, 30) is None  # more patience now
    assert callback_on(0, patience=None).resumed_reason({}, 30) is None


def test_the_workers_own_count_is_not_what_stops_it():
    worker = callback_on(1, chief_says=None)
    validate(worker, 10, 0.7)
    validate(worker, 20, 0.7)  # out of patience by its own count
    assert boundary_end(worker) is False  # the chief's answer is the one


def test_a_preemption_is_left_to_the_trainer():
    chief = callback_on(0)
    validate(chief, 10, 0.7)
    validate(chief, 20, 0.7)
    chief.context._core.preempt.preempted = True
    assert boundary_end(chief) is True  # the Trainer checkpoints and exits, to be resumed


def test_no_stop_at_the_last_batch_where_the_run_ends_anyway():
    chief = callback_on(0, total_batches=20)
    validate(chief, 10, 0.7)
    validate(chief, 20, 0.7)
    assert chief.reason is None and boundary_end(chief) is False


def test_off_it_neither_counts_nor_asks():
    chief = callback_on(0, patience=None)
    validate(chief, 10, 0.7)
    validate(chief, 20, 0.7)
    assert chief.plateau is None and boundary_end(chief) is False
    assert chief.context.distributed.broadcasts == [] and chief.state_dict() == {}


def test_a_resumed_trial_goes_on_counting():
    before = callback_on(0, patience=2)
    validate(before, 10, 0.7)
    validate(before, 20, 0.6)
    resumed = callback_on(0, patience=2)
    resumed.load_state_dict(before.state_dict())
    validate(resumed, 30, 0.7)
    assert resumed.reason is not None and "(best 0.7 at batch 10)" in resumed.reason


def test_stop_at_boundaries_takes_the_chiefs_reason_on_every_rank(caplog):
    asked = []
    worker = FakeContext(FakeDistributed(1, chief_says="done"))
    workarounds.stop_at_boundaries(worker, lambda: asked.append(1))
    logged = caplog.at_level(logging.INFO, logger=workarounds.__name__)
    with logged, pytest.raises(pytorch._ShouldExit):
        worker._core.preempt.should_preempt()
    assert asked == [1]  # asked on every rank, in step with the chief
    assert "done: exiting without training further" in caplog.text


def run_locally(local_config, tmp_path, capsys, **hparams) -> tuple[list[dict], list[int], str]:
    """A CLI run of MRPC at learning rate 0, maximising acc: every validation gives the same.
    Returns its validations, the batches of its checkpoints on disk, and the summary."""
    local_config["hyperparameters"].update(learning_rate=0.0, **hparams)
    local_config["searcher"].update(metric="acc", smaller_is_better=False)
    config, metrics = tmp_path / "config.yaml", tmp_path / "metrics.json"
    config.write_text(yaml.safe_dump(local_config))
    assert model_def.main([str(config), "--no-tensorboard", "--metrics-out", str(metrics)]) == 0
    folders = pathlib.Path(tmp_path, "xdg-data", "determined").glob("*/metadata.json")
    checkpoints = sorted(json.loads(p.read_text())["steps_completed"] for p in folders)
    stderr = capsys.readouterr().err
    return json.loads(metrics.read_text()), checkpoints, stderr[stderr.index("Run summary") :]


def test_a_plateau_stops_a_local_run_after_patience_validations(local_config, tmp_path, capsys):
    validations, checkpoints, summary = run_locally(
        local_config, tmp_path, capsys, num_train_epochs=4, early_stopping_patience=2
    )
    assert [v["batches"] for v in validations] == [6, 12, 18]  # of 24
    assert len({v["acc"] for v in validations}) == 1
    # The best validation's checkpoint, and one where it stopped (12's deleted: not kept).
    assert checkpoints == [6, 18]
    best = validations[0]["acc"]
    reason = (
        f"stopped early: acc did not improve by more than 0 in 2 validations "
        f"(best {best:.4g} at batch 6)"
    )
    assert f"\n  {reason}\n" in summary
    commands = printed_commands(summary)
    assert commands["predict"][2] == commands["export"][2]  # the best checkpoint's
    assert (
        json.loads(pathlib.Path(commands["export"][2], "metadata.json").read_text())[
            "steps_completed"
        ]
        == 6
    )
    # Resumed, it trains nothing and says why; what it prints works again.
    assert run_printed(commands["resume"]) == 0
    stderr = capsys.readouterr().err
    assert "saved checkpoint" not in stderr and "validation after" not in stderr
    assert f"\n  {reason}\n" in summary_of(stderr)
    assert printed_commands(summary_of(stderr))["resume"] == commands["resume"]
    assert run_printed(commands["export"]) == 0


def test_a_local_grid_reports_a_stopped_trial_at_its_best_validation(glue_config, tmp_path):
    config = yaml.safe_load(glue_config.read_text())
    config["hyperparameters"]["learning_rate"] = 0.0
    config["hyperparameters"]["per_task"]["MRPC"] = {
        "num_train_epochs": 4,
        "early_stopping_patience": 2,
    }
    glue_config.write_text(yaml.safe_dump(config, sort_keys=False))
    results = tmp_path / "results"
    assert (
        run_glue(glue_config, results, "hyperparameters.task=[MRPC]", "hyperparameters.seed=[1]")
        == 0
    )
    folder = results / "task=MRPC_seed=1"
    progress = json.loads((folder / "progress.json").read_text())
    result = json.loads((folder / "result.json").read_text())
    assert len(result["validations"]) == 3  # of 4 epochs, each as good as the first
    assert result["reported"] == 0  # the first of equals: the best, not the last
    kept = pathlib.Path(result["checkpoint"])
    first_epoch = progress["validations"][0][0]
    assert json.loads((kept / "metadata.json").read_text())["steps_completed"] == first_epoch
    assert progress["checkpoints"] == [kept.name]  # the second epoch's is deleted
    (trial,) = glue_results.local_results(results)
    assert trial.metrics == result["validations"][0] and trial.checkpoint_ref == str(kept)


@pytest.mark.parametrize(
    ("epochs", "patience"), [(4, None), (3, 2)], ids=["off", "patience-out-at-the-end"]
)
def test_a_run_that_is_not_stopped_trains_its_length(
    epochs, patience, local_config, tmp_path, capsys
):
    validations, checkpoints, summary = run_locally(
        local_config,
        tmp_path,
        capsys,
        num_train_epochs=epochs,
        early_stopping_patience=patience,
    )
    every_epoch = [STEPS_PER_EPOCH * epoch for epoch in range(1, epochs + 1)]
    assert [v["batches"] for v in validations] == every_epoch
    assert checkpoints == [STEPS_PER_EPOCH, every_epoch[-1]]  # the best (first of equals), last
    assert "stopped early" not in summary
