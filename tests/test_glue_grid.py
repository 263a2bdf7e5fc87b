"""glue.yaml: the grid of tasks x seeds, per-task hyperparameters, and its local run with resume."""

from __future__ import annotations

import functools
import itertools
import json
import pathlib

import numpy as np
import pytest
import yaml
from conftest import REPO, run_glue
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import constants
import model_def
from bert_glue.local import local_grid
from bert_glue.local.config import load_config, local_settings
from bert_glue.trial import metrics


def glue_yaml() -> dict:
    return yaml.safe_load((REPO / "glue.yaml").read_text())


def test_the_grid_trains_every_task_and_seed_once() -> None:
    trials = local_grid.grid_trials(glue_yaml())
    labels = [local_grid.label_of(local_settings(trial.config)) for trial in trials]
    assert len(labels) == 27
    assert sorted(labels) == sorted(itertools.product(constants.TASKS, [1, 2, 3]))
    assert len({trial.name for trial in trials}) == 27
    assert trials[0].name == "task=CoLA_seed=1"


def test_per_task_hyperparameters_apply_to_their_task_only() -> None:
    epochs = {}
    for trial in local_grid.grid_trials(glue_yaml()):
        trial_settings = local_settings(trial.config)
        epochs[trial_settings.data.task] = trial_settings.hparams.num_train_epochs
    assert epochs == {**dict.fromkeys(constants.TASKS, 3), "MRPC": 5, "WNLI": 5}


def test_list_overrides_pick_tasks_and_seeds() -> None:
    config = load_config(
        str(REPO / "glue.yaml"), ["hyperparameters.task=[MRPC, rte]", "hyperparameters.seed=[7]"]
    )
    labels = [local_grid.label_of(local_settings(t.config)) for t in local_grid.grid_trials(config)]
    assert labels == [("MRPC", 7), ("RTE", 7)]


def test_an_override_that_per_task_shadows_is_named(caplog) -> None:
    glue = str(REPO / "glue.yaml")
    load_config(glue, ["hyperparameters.num_train_epochs=1", "data.data_dir=d"])
    (record,) = caplog.records
    assert record.levelname == "WARNING" and record.getMessage().startswith(
        "hyperparameters.num_train_epochs: hyperparameters.per_task sets num_train_epochs for "
        "MRPC, WNLI, which train with that value instead"
    )
    caplog.clear()
    load_config(glue, ["hyperparameters.learning_rate=1e-4"])
    load_config(glue, ["hyperparameters.num_train_epochs=1", "hyperparameters.per_task={}"])
    assert caplog.records == []


@pytest.mark.parametrize(
    ("hparams", "data", "message"),
    [
        ({"task": "MRPC"}, {"task": "RTE"}, "data.task 'RTE' and hyperparameters.task 'MRPC'"),
        ({"per_task": {"MRCP": {}}}, {"task": "MRPC"}, "per_task: unknown GLUE task(s) MRCP"),
        (
            {"per_task": {"MRPC": {"learning_rte": 1}}},
            {"task": "mrpc"},
            "hyperparameters.per_task.MRPC: unknown key(s) learning_rte",
        ),
        ({"seed": "1"}, {"task": "MRPC"}, "hyperparameters.seed: '1' is not an integer >= 0"),
        (
            {"per_task": {"MRPC": {"seed": 1}}},
            {"task": "MRPC"},
            "hyperparameters.per_task.MRPC: unknown key(s) seed",
        ),
    ],
)
def test_bad_task_settings_name_the_key(hparams, data, message) -> None:
    base = {"global_batch_size": 8, "learning_rate": 1e-3, "num_train_epochs": 1}
    with pytest.raises(constants.ConfigError) as error:
        local_settings(
            {
                "hyperparameters": {**base, "model_type": "bert", **hparams},
                "data": {"model_name_or_path": "m", "data_dir": "d", **data},
            }
        )
    assert message in str(error.value)


def test_a_searched_int_is_refused_locally() -> None:
    config = glue_yaml()
    config["hyperparameters"]["seed"] = {"type": "int", "minval": 1, "maxval": 3}
    with pytest.raises(constants.ConfigError, match=r"hyperparameters.seed: a local grid takes"):
        local_grid.grid_trials(config)


# Ten MRPC/CoLA rows: 8 right; label 1 predicted 5 times, 4 of them rightly, of 5 ones.
LABELS = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
PREDICTED = [1, 1, 1, 1, 0, 1, 0, 0, 0, 0]


@pytest.mark.parametrize(
    ("task", "labels", "predicted", "splits", "score"),
    [
        ("MRPC", LABELS, PREDICTED, [0] * 10, 0.8),  # acc 0.8, F1 0.8
        ("CoLA", LABELS, PREDICTED, [0] * 10, 0.6),  # MCC (4 * 4 - 1 * 1) / sqrt(5 ** 4)
        ("STS-B", [0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 3.0, 2.0], [0] * 4, 0.8),  # both 1 - 12 / 60
        # (matched 3/4 + mismatched 1/2) / 2, as the leaderboard scores MNLI
        ("MNLI", [0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 0, 0], [0, 0, 0, 0, 1, 1], 0.625),
        ("RTE", [0, 1, 1, 0], [0, 1, 0, 0], [0] * 4, 0.75),
    ],
)
def test_glue_score_is_the_tasks_score(task, labels, predicted, splits, score) -> None:
    glue_task = constants.TASKS[task]
    if glue_task.is_regression:
        logits = np.array(predicted, dtype=np.float32)[:, None]
    else:
        logits = np.eye(glue_task.num_labels, dtype=np.float32)[predicted]
    results = metrics.compute_split_metrics(glue_task, np.array(splits), logits, np.array(labels))
    assert results["glue_score"] == pytest.approx(score)


class Interrupted(Exception):
    pass


class StopsInRTE(model_def.BertPyTorch):
    """Interrupted after RTE's first epoch (6 batches of 8 of 48 examples) was checkpointed."""

    def train_batch(self, batch, epoch_idx: int, batch_idx: int):
        if self.task.name == "RTE" and batch_idx == 8:
            raise Interrupted
        return super().train_batch(batch, epoch_idx, batch_idx)


def test_a_local_grid_continues_where_it_stopped(glue_config, tmp_path, capsys) -> None:
    results = tmp_path / "results"
    picked = ("hyperparameters.task=[MRPC,RTE]", "hyperparameters.seed=[1]")
    config = yaml.safe_load(glue_config.read_text())
    config["hyperparameters"]["per_task"]["RTE"] = {"num_train_epochs": 2}
    glue_config.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(Interrupted):
        run_glue(
            glue_config,
            results,
            *picked,
            run=functools.partial(model_def.run, trial_class=StopsInRTE),
        )
    mrpc = results / "task=MRPC_seed=1" / "result.json"
    finished_at = mrpc.stat().st_mtime_ns
    rte = results / "task=RTE_seed=1"
    assert not (rte / "result.json").exists()
    assert len(json.loads((rte / "progress.json").read_text())["checkpoints"]) == 1
    capsys.readouterr()

    assert run_glue(glue_config, results, *picked) == 0
    err = capsys.readouterr().err
    assert "[1/2] task=MRPC_seed=1: finished before, skipped" in err
    assert "[2/2] task=RTE_seed=1: continuing from" in err
    assert mrpc.stat().st_mtime_ns == finished_at
    resumed = json.loads((rte / "result.json").read_text())

    # The same trial never interrupted: the same metrics after each of its two epochs.
    assert run_glue(glue_config, tmp_path / "again", "hyperparameters.task=[RTE]", picked[1]) == 0
    fresh = json.loads((tmp_path / "again" / "task=RTE_seed=1" / "result.json").read_text())
    assert len(resumed["validations"]) == 2
    assert resumed["validations"] == fresh["validations"]
    # Only the last checkpoint is kept, and it is the one the result names.
    assert json.loads((rte / "progress.json").read_text())["checkpoints"] == [
        pathlib.Path(resumed["checkpoint"]).name
    ]
    assert (pathlib.Path(resumed["checkpoint"]) / "metadata.json").is_file()


def test_a_changed_setting_is_not_taken_for_a_finished_trial(glue_config, tmp_path) -> None:
    results = tmp_path / "results"
    picked = ("hyperparameters.task=[WNLI]", "hyperparameters.seed=[1]")
    assert run_glue(glue_config, results, *picked) == 0
    with pytest.raises(SystemExit) as error:
        run_glue(glue_config, results, *picked, "hyperparameters.learning_rate=1e-4")
    assert "task=WNLI_seed=1/result.json: this trial was run with other settings" in str(
        error.value
    )


def test_each_trial_keeps_its_tensorboard_events_in_its_folder(
    glue_config, tmp_path, monkeypatch
) -> None:
    """`tensorboard --logdir <results dir>` shows one run per trial, named as its folder; a
    relative results folder is where the command was run, not where the trial trains."""
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    picked = ("hyperparameters.task=[WNLI]", "hyperparameters.seed=[1,2]")
    assert run_glue(glue_config, pathlib.Path("results"), *picked, tensorboard=True) == 0
    for seed in (1, 2):
        assert (results / f"task=WNLI_seed={seed}" / "result.json").is_file()
        accumulator = EventAccumulator(str(results / f"task=WNLI_seed={seed}"))
        accumulator.Reload()
        assert [e.step for e in accumulator.Scalars("Determined/val_glue_score")] == [6, 12]
    assert not (tmp_path / "runs").exists()
