"""What the trials of a GLUE experiment left: task, seed, final dev metrics and checkpoint.

Read from a local grid run's folder (local_grid.py writes one result.json per finished trial) or
from a Determined experiment on a cluster (experiment_results, through Determined's SDK).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import pathlib
from collections.abc import Callable, Iterator

from determined.common import api
from determined.experimental import client

import constants
from bert_glue.results.glue_table import COMPLETED, TrialResult
from bert_glue.trial import checkpointing, metrics
from bert_glue.trial.settings import Searcher, task_hyperparameters

# A local grid trial's folder holds this file once the trial has finished (local_grid.py).
RESULT = "result.json"


@dataclasses.dataclass(frozen=True)
class Recorded:
    """What a report needs of a trial that the master or a checkpoint recorded, read without
    checking the rest (the trial may be of an older version): the task it trained, its seed,
    whether it stopped early, its searcher and its model."""

    task: str
    seed: int | None
    early_stopping: bool
    searcher: Searcher
    model_name_or_path: str | None

    @classmethod
    def of(cls, config: dict, hparams: dict) -> Recorded:
        data = config.get("data") or {}
        task = str(hparams.get("task") or data.get("task"))
        task_values = task_hyperparameters(hparams.get("per_task") or {}, task)
        patience = {**hparams, **task_values}.get("early_stopping_patience")
        return cls(
            task=task,
            seed=hparams.get("seed"),
            early_stopping=patience is not None,
            searcher=Searcher.of(config),
            model_name_or_path=data.get("model_name_or_path"),
        )


def write_text(path: pathlib.Path, text: str) -> None:
    """Atomically: a reader never sees half a file, an interruption leaves the old one."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def reported_metrics(result: dict) -> dict:
    """A finished trial's metrics, as result.json records them; the last validation's in a
    result.json written before `reported` was."""
    return result["validations"][result.get("reported", -1)]


def trial_name(task: str, seed: int | None) -> str:
    return task if seed is None else f"{task} seed {seed}"


def local_results(folder: str | pathlib.Path) -> list[TrialResult]:
    """The finished trials of a local grid run: every <folder>/*/result.json."""
    results = []
    for path in sorted(pathlib.Path(folder).glob(f"*/{RESULT}")):
        record = json.loads(path.read_text())
        checkpoint = pathlib.Path(record["checkpoint"])
        data = record["identity"]["data"]
        results.append(
            TrialResult(
                name=trial_name(record["task"], record["seed"]),
                task=record["task"],
                seed=record["seed"],
                state=COMPLETED,
                metrics=reported_metrics(record),
                checkpoint=lambda _, checkpoint=checkpoint: checkpoint,
                checkpoint_ref=str(checkpoint),
                model=data.get("model_name_or_path"),
                settings={
                    **record["identity"]["hyperparameters"],
                    **{f"data.{key}": value for key, value in data.items()},
                },
                start=start_label(data.get("init_from"), local_source_task),
            )
        )
    return results


def experiment_results(experiment_id: int) -> list[TrialResult]:
    """The trials of the Determined experiment `experiment_id` (a GLUE grid such as glue.yaml's:
    every trial has the hyperparameters `task` and `seed`), read with Determined's Python SDK
    from the master that DET_MASTER names.

    It logs in as the SDK's client.Determined() does: as DET_USER with DET_PASS when both are
    set; else as the user `det user login` made active, with the token it cached (asking for the
    password on the terminal if that token has expired); else as "determined" with an empty
    password. A new token is cached for the next call.

    Each trial's `metrics` is the validation metrics.reported_validation picks (as the trial
    reported it: PyTorchTrial adds `batches` and `epochs`): its last, or with early stopping on
    its best, among those with a COMPLETED checkpoint saved at their step count (PyTorchTrial
    validates and checkpoints at the end of training, checkpoint_policy best at each new best);
    its `checkpoint` is that checkpoint, None when there is none. checkpoint(folder)
    puts it into folder with Checkpoint.download: copied from shared_fs or directory storage
    when this machine sees that path, else through the master; a folder that already holds a
    metadata.json is taken as already downloaded.

    No DET_MASTER, a master that does not answer, a refused login, an unknown experiment and a
    trial without `task` are each a ValueError of one line.
    """
    master = master_url()
    with sdk_errors(master):
        determined = client.Determined(master=master)
        experiment = find_experiment(determined, master, experiment_id)
        data = (experiment.config or {}).get("data", {})
        start = start_label(
            data.get("init_from"), functools.partial(cluster_source_task, determined)
        )
        return [
            trial_result(experiment_id, trial, experiment.config, start)
            for trial in experiment.list_trials()
        ]


def master_url() -> str:
    if not os.environ.get("DET_MASTER"):
        raise ValueError(
            "DET_MASTER is not set: export DET_MASTER=<address of the Determined master>, "
            "e.g. http://127.0.0.1:8080"
        )
    return api.canonicalize_master_url(os.environ["DET_MASTER"])


@contextlib.contextmanager
def sdk_errors(master: str) -> Iterator[None]:
    """Turns the SDK's errors about reaching and logging in to the master into one line each."""
    try:
        yield
    except api.errors.MasterNotFoundException:
        raise ValueError(
            f"no Determined master answers at {master} (DET_MASTER): is it up, and is that "
            "its address?"
        ) from None
    except api.errors.UnauthenticatedException:
        raise ValueError(
            f"the Determined master at {master} did not accept the login: set DET_USER and "
            "DET_PASS, or run `det user login <user>`"
        ) from None


def find_experiment(
    determined: client.Determined, master: str, experiment_id: int
) -> client.Experiment:
    try:
        return determined.get_experiment(experiment_id)
    except api.errors.NotFoundException:
        raise ValueError(
            f"experiment {experiment_id} not found on the Determined master at {master}"
        ) from None


def trial_result(
    experiment_id: int, trial: client.Trial, config: dict, start: str = ""
) -> TrialResult:
    if "task" not in trial.hparams:
        raise ValueError(
            f"experiment {experiment_id} trial {trial.id} has no hyperparameter 'task': that "
            "experiment is not a GLUE grid (glue.yaml searches over task and seed)"
        )
    recorded = Recorded.of(config, trial.hparams)
    task, seed = recorded.task, recorded.seed
    validations = sorted(
        (v.steps_completed, dict(v.metrics)) for v in trial.iter_metrics("validation")
    )
    checkpoints = {
        c.metadata.get("steps_completed"): c
        for c in trial.list_checkpoints()
        if c.state == client.CheckpointState.COMPLETED
    }
    reported = metrics.reported_validation(
        validations, set(checkpoints), recorded.early_stopping, recorded.searcher
    )
    checkpoint = reported and checkpoints.get(reported[0])
    return TrialResult(
        name=trial_name(task, seed),
        task=task,
        seed=seed,
        state=trial.state.name,
        metrics=reported and reported[1],
        checkpoint=checkpoint and functools.partial(download, checkpoint),
        checkpoint_ref=checkpoint and checkpoint.uuid,
        model=recorded.model_name_or_path,
        settings=dict(trial.hparams),
        start=start,
    )


def download(checkpoint: client.Checkpoint, folder: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(checkpoint.download(str(folder)))


def start_label(init_from: str | None, source_task: Callable[[str], str | None]) -> str:
    """What the table calls a trial's start, data.init_from: "" for the pre-trained model; else
    the task its source was fine-tuned on ("MNLI"), or the source as given."""
    if not init_from:
        return ""
    return source_task(init_from) or init_from


def local_source_task(init_from: str) -> str | None:
    """The task of a checkpoint (a folder, or a uuid in the local checkpoint storage) or of a
    model folder export.py wrote (its config.json's finetuning_task)."""
    folder = pathlib.Path(init_from)
    if not folder.is_dir():
        folder = checkpointing.storage_dir() / init_from
    if (folder / "load_data.json").is_file():
        saved = json.loads((folder / "load_data.json").read_text())
        return trained_task(saved["hparams"], saved["experiment_config"])
    if (folder / "config.json").is_file():
        finetuned_on = json.loads((folder / "config.json").read_text()).get("finetuning_task")
        try:
            return constants.get_task(finetuned_on).name
        except constants.ConfigError:  # a task of the user's own
            return finetuned_on
    return None


def cluster_source_task(determined: client.Determined, init_from: str) -> str | None:
    """The task of the checkpoint whose uuid init_from is, as the master knows it."""
    try:
        training = determined.get_checkpoint(init_from).training
    except api.errors.APIException:  # no checkpoint's uuid: a Hub name
        return None
    return training and trained_task(training.hparams, training.experiment_config)


def trained_task(hparams: dict, experiment_config: dict) -> str:
    """The task a trial trained: hyperparameters.task (a GLUE grid), else data.task."""
    return Recorded.of(experiment_config, hparams).task
