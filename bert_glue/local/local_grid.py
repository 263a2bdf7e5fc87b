"""A grid search on this machine: the trials of a grid config, one after another.

On a cluster Determined's grid searcher trains every combination of the searched
hyperparameters' values (glue.yaml: every task x seed). Here the same config runs them in turn:
a categorical hyperparameter gives its `vals`, and a list given as an override
(`"hyperparameters.seed=[1,2]"`) replaces them, or makes a constant one searched.

Each trial has a folder under the results directory, named by its searched values
(`task=MRPC_seed=1`): progress.json keeps its validations and checkpoints as they happen, and
result.json is written when it ends. Run the same command again and finished trials are skipped,
an unfinished one continues from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pathlib
import shutil

from bert_glue.local import progress
from bert_glue.local.config import local_hparams, local_settings
from bert_glue.results import glue_results
from bert_glue.trial import checkpointing, metrics
from bert_glue.trial.settings import Settings
from constants import ConfigError

PROGRESS = "progress.json"
# Data keys that say where things are, not what is trained: a rerun may change them.
LOCATION_KEYS = ("data_dir", "download_data", "path_to_mrpc", "cache_dir")


def is_grid(config: dict) -> bool:
    return config.get("searcher", {}).get("name") == "grid"


@dataclasses.dataclass(frozen=True)
class GridTrial:
    name: str  # its folder's name
    config: dict  # the experiment config with this trial's hyperparameter values

    @property
    def identity(self) -> dict:
        """What makes a finished trial this one: its hyperparameters and what it trains on."""
        data = {k: v for k, v in self.config["data"].items() if k not in LOCATION_KEYS}
        # As it reads back from JSON, to compare with a recorded one.
        return json.loads(
            json.dumps({"hyperparameters": self.config["hyperparameters"], "data": data})
        )


def grid_values(key: str, value) -> list | None:
    """A searched hyperparameter's values in the grid; None for one that is not searched."""
    if isinstance(value, list):
        return value
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "categorical":
        return value["vals"]
    if kind in ("int", "double", "log"):
        raise ConfigError(
            f"{key}: a local grid takes categorical hyperparameters only, not {kind}; list its "
            f"values instead, e.g. the override {key}=[1,2,3]"
        )
    return None


def grid_trials(config: dict) -> list[GridTrial]:
    """Every combination of the searched hyperparameters' values, the last one varying fastest."""
    hparams = config["hyperparameters"]
    searched = {}
    for name, value in hparams.items():
        values = grid_values(f"hyperparameters.{name}", value)
        if values is not None:
            searched[name] = values
    trials = []
    for combination in itertools.product(*searched.values()):
        chosen = dict(zip(searched, combination, strict=True))
        trial = {**config, "hyperparameters": {**hparams, **chosen}}
        trial["hyperparameters"] = local_hparams(trial)
        name = "_".join(f"{key}={value}" for key, value in chosen.items()) or "trial"
        trials.append(GridTrial(name, trial))
    return trials


def label_of(settings: Settings) -> tuple[str, int | None]:
    """The trial's task (as constants.TASKS spells it) and seed."""
    return settings.task.name, settings.hparams.seed


def write_json(path: pathlib.Path, value) -> None:
    glue_results.write_text(path, json.dumps(value, indent=1))


class TrialFolder:
    """A trial's folder: what it has done so far, and its result once finished."""

    def __init__(self, results_dir: str | os.PathLike, trial: GridTrial) -> None:
        self.trial = trial
        self.path = pathlib.Path(results_dir) / trial.name
        self.result_file, self.progress_file = self.path / glue_results.RESULT, self.path / PROGRESS

    def _load(self, path: pathlib.Path) -> dict | None:
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        if record["identity"] != self.trial.identity:
            raise ConfigError(
                f"{path}: this trial was run with other settings ({record['identity']}); use "
                "another --results-dir, or delete the folder to train it again"
            )
        return record

    def result(self) -> dict | None:
        return self._load(self.result_file)

    def progress(self) -> dict:
        """Validations ([batches, metrics]) and checkpoint uuids so far, checkpoints complete."""
        record = self._load(self.progress_file) or {"validations": [], "checkpoints": []}
        storage = checkpointing.storage_dir()
        record["checkpoints"] = [
            uuid for uuid in record["checkpoints"] if (storage / uuid / "metadata.json").is_file()
        ]
        return record

    def resume_from(self) -> str | None:
        """The last complete checkpoint of an unfinished run, or None to start afresh."""
        checkpoints = self.progress()["checkpoints"]
        return checkpoints[-1] if checkpoints else None

    def save_progress(self, validations: list, checkpoints: list[str]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        record = {"identity": self.trial.identity, "validations": validations}
        write_json(self.progress_file, {**record, "checkpoints": checkpoints})

    def finish(self) -> dict:
        """Write result.json from the progress, keeping only the checkpoint of the validation
        the trial is reported at (metrics.reported_validation), else the last."""
        done = self.progress()
        storage = checkpointing.storage_dir()
        at = {checkpointing.batches_trained(storage / uuid): uuid for uuid in done["checkpoints"]}
        validations = [tuple(v) for v in done["validations"]]
        settings = local_settings(self.trial.config)
        task, seed = label_of(settings)
        reported = metrics.reported_validation(
            validations, set(at), settings.early_stopping, settings.searcher
        )
        kept = at.get(reported[0]) or done["checkpoints"][-1]
        for uuid in done["checkpoints"]:
            if uuid != kept:
                shutil.rmtree(storage / uuid, ignore_errors=True)
        write_json(self.progress_file, {**done, "checkpoints": [kept]})
        result = {
            "identity": self.trial.identity,
            "task": task,
            "seed": seed,
            "validations": [values for _, values in validations],
            "reported": validations.index(reported),
            "checkpoint": str(storage / kept),
        }
        write_json(self.result_file, result)
        return result


class GridRecorder(progress.RunRecorder):
    """A run's recorder that also keeps the trial's folder up to date."""

    def __init__(self, folder: TrialFolder, resumed_at: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.folder = folder
        before = folder.progress()
        # Validations after the checkpoint resumed from are done again.
        self.done = [v for v in before["validations"] if v[0] <= resumed_at]
        self.saved = before["checkpoints"]

    def on_validation_end(self, metrics: dict) -> None:
        super().on_validation_end(metrics)
        self.done.append([self.batches, {k: float(v) for k, v in metrics.items()}])
        self.folder.save_progress(self.done, self.saved)

    def on_checkpoint_upload_end(self, uuid: str) -> None:
        self.saved = [*self.saved, uuid]
        super().on_checkpoint_upload_end(uuid)  # which deletes those retention does not keep
        storage = checkpointing.storage_dir()
        self.saved = [uuid for uuid in self.saved if (storage / uuid).is_dir()]
        self.folder.save_progress(self.done, self.saved)

    def history(self) -> tuple[list[tuple[int, str]], list]:
        """The trial's checkpoints and validations since it started, before this run too."""
        storage = checkpointing.storage_dir()
        saved = [uuid for uuid in self.saved if (storage / uuid / "metadata.json").is_file()]
        return [(checkpointing.batches_trained(storage / uuid), uuid) for uuid in saved], self.done
