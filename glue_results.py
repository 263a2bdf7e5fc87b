"""What the trials of a GLUE experiment left: task, seed, final dev metrics and checkpoint.

Read from a local grid run's folder (local_grid.py writes one result.json per finished trial) or
from a Determined experiment on a cluster (experiment_results, through Determined's SDK).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable

COMPLETED = "COMPLETED"


@dataclasses.dataclass(frozen=True)
class TrialResult:
    name: str  # how the report names the trial, e.g. "MRPC seed 1" or "trial 12"
    task: str  # a GLUE task name, as constants.TASKS spells it
    seed: int | None  # hyperparameters.seed; None if the config has none
    state: str  # COMPLETED, or the reason the trial does not count (e.g. "ERROR")
    metrics: dict[str, float] | None  # the trial's last validation; None if it has none
    # Puts the checkpoint of that validation into the given folder (or finds it) and returns
    # the checkpoint's directory; None if the trial saved none.
    checkpoint: Callable[[pathlib.Path], pathlib.Path] | None
    model: str | None = None  # data.model_name_or_path


def trial_name(task: str, seed: int | None) -> str:
    return task if seed is None else f"{task} seed {seed}"


def local_results(folder: str | pathlib.Path) -> list[TrialResult]:
    """The finished trials of a local grid run: every <folder>/*/result.json."""
    results = []
    for path in sorted(pathlib.Path(folder).glob("*/result.json")):
        record = json.loads(path.read_text())
        checkpoint = pathlib.Path(record["checkpoint"])
        data = record["identity"]["data"]
        results.append(
            TrialResult(
                name=trial_name(record["task"], record["seed"]),
                task=record["task"],
                seed=record["seed"],
                state=COMPLETED,
                metrics=record["validations"][-1],
                checkpoint=lambda _, checkpoint=checkpoint: checkpoint,
                model=data.get("model_name_or_path"),
            )
        )
    return results
