"""The GLUE table from trial results: per task its metrics over seeds, its best setting and
seed, beside run_glue's published figures; the GLUE average; as markdown, CSV and a plot."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import pathlib
import statistics
from collections.abc import Callable, Sequence

import constants

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
    # That checkpoint as data.init_from takes it: its uuid on a cluster, its folder locally.
    checkpoint_ref: str | None = None
    model: str | None = None  # data.model_name_or_path
    # What the trial trained with: its hyperparameters (task and seed too) and, for a local
    # trial, its data section's keys as "data.<key>" (a cluster experiment has one data section).
    settings: dict = dataclasses.field(default_factory=dict)
    # Where the trial started (data.init_from): "" for the pre-trained model, else the task of
    # the fine-tuned model it started from ("MNLI"), or that model's name.
    start: str = ""


# The metrics whose mean is a task's score on the leaderboard (MNLI: matched and mismatched).
LEADERBOARD_METRICS = {name: task.score for name, task in constants.TASKS.items()}
METRIC_NAMES = {
    "mcc": "MCC",
    "acc": "acc",
    "acc_mm": "acc mm",
    "f1": "F1",
    "pearson": "Pearson",
    "spearmanr": "Spearman",
}
# Dev-set results in Hugging Face's run_glue README (examples/pytorch/text-classification), in
# percent: bert-base-cased, batch 32, LR 2e-5, 3 epochs (MRPC and WNLI 5), glue.yaml's recipe.
RUN_GLUE_BERT_BASE = {
    "CoLA": {"mcc": 56.53},
    "SST-2": {"acc": 92.32},
    "MRPC": {"f1": 88.85, "acc": 84.07},
    "STS-B": {"pearson": 88.64, "spearmanr": 88.48},
    "QQP": {"acc": 90.71, "f1": 87.49},
    "MNLI": {"acc": 83.91, "acc_mm": 84.10},
    "QNLI": {"acc": 90.66},
    "RTE": {"acc": 65.70},
    "WNLI": {"acc": 56.34},
}
REFERENCE_LABEL = "bert-base-cased, run_glue README"
SEED_KEYS = ("task", "seed")  # a task's trials differing only in these are seeds of one setting
START_KEY = "data.init_from"  # a start of its own (TrialResult.start), not a setting


def task_score(task: str, metrics: dict[str, float]) -> float:
    names = LEADERBOARD_METRICS[task]
    return statistics.fmean(metrics[name] for name in names)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


class TaskResults:
    """The completed trials of one task and setting (one per seed) and their statistics."""

    def __init__(
        self, task: str, trials: list[TrialResult], setting: str = "", start: str = ""
    ) -> None:
        self.task = task
        self.trials = sorted(trials, key=lambda t: (t.seed is None, t.seed or 0))
        self.setting = setting
        self.start = start
        self.metrics = LEADERBOARD_METRICS[task]
        self.tried = [self]  # every setting of the task, in the order of their values

    def values(self, metric: str) -> list[float]:
        """Each seed's value of a metric, or of the task's score ("score")."""
        if metric == "score":
            return [task_score(self.task, t.metrics) for t in self.trials]
        return [t.metrics[metric] for t in self.trials]

    @property
    def row(self) -> str:
        """How the table names it: the task, and where it started unless pre-trained."""
        return f"{self.task} from {self.start}" if self.start else self.task

    @property
    def mean_score(self) -> float:
        return mean_std(self.values("score"))[0]

    @property
    def others(self) -> list[TaskResults]:
        return [s for s in self.tried if s is not self]

    @property
    def best(self) -> TrialResult:
        return max(self.trials, key=lambda t: task_score(self.task, t.metrics))

    def best_value(self, metric: str) -> float:
        best = self.best.metrics
        return task_score(self.task, best) if metric == "score" else best[metric]


def shown(value) -> str:
    """A setting's value as its label shows it: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def setting_labels(results: list[TrialResult]) -> list[str]:
    """Each trial's values of what differs between its task's trials from the same start besides
    the seed (a grid over learning rates too: "learning_rate=3e-05"); "" where only the seed
    does."""

    def value(trial: TrialResult, key: str) -> str:
        return shown(trial.settings.get(key))

    labels = {}
    for task, start in dict.fromkeys((r.task, r.start) for r in results):
        trials = [r for r in results if (r.task, r.start) == (task, start)]
        keys = dict.fromkeys(
            key for r in trials for key in r.settings if key not in (*SEED_KEYS, START_KEY)
        )
        varying = [key for key in keys if len({value(r, key) for r in trials}) > 1]
        for r in trials:
            labels[id(r)] = ", ".join(f"{key}={value(r, key)}" for key in varying)
    return [labels[id(r)] for r in results]


def settings_order(trial: TrialResult) -> tuple:
    """Sorts trials by their settings besides task and seed, numbers by value."""

    def order(value) -> tuple:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return (0, value)
        return (1, shown(value))

    return tuple(
        (key, order(value))
        for key, value in sorted(trial.settings.items())
        if key not in (*SEED_KEYS, START_KEY)
    )


def group_by_task(results: list[TrialResult]) -> tuple[list[TaskResults], list[TrialResult]]:
    """The completed trials by task, in GLUE's order, and by start: from the pre-trained model
    first, then from each fine-tuned one (data.init_from); and the trials that do not count.

    Where a task's trials from one start differ in more than the seed, they are grouped by
    setting and the setting with the best mean score over its seeds stands for them (as BERT's
    paper picks each task's learning rate on the dev set); all of them are in its `tried`.
    """
    results = sorted(results, key=settings_order)  # a task's settings in the order of their values
    labels = setting_labels(results)
    named = [
        dataclasses.replace(r, name=f"{r.name} ({label})") if label else r
        for r, label in zip(results, labels, strict=True)
    ]
    groups: dict[tuple[str, str, str], list[TrialResult]] = {}
    uncounted = []
    for r, label in zip(named, labels, strict=True):
        if r.state == COMPLETED and r.metrics:
            groups.setdefault((r.task, r.start, label), []).append(r)
        else:
            uncounted.append(r)
    rows = []
    for name in constants.TASKS:
        starts = sorted({start for task, start, _ in groups if task == name})
        for start in starts:
            settings = [
                TaskResults(name, trials, label, start)
                for (task, begun, label), trials in groups.items()
                if (task, begun) == (name, start)
            ]
            chosen = max(settings, key=lambda t: t.mean_score)
            chosen.tried = settings
            rows.append(chosen)
    return rows, uncounted


def one_per_task(rows: list[TaskResults], transferred: bool = False) -> list[TaskResults]:
    """Each task's row from the pre-trained model (if it has none, its first); with
    transferred, its row from a fine-tuned model wherever it has one."""
    chosen: dict[str, TaskResults] = {}
    for row in rows:
        if row.task not in chosen or (transferred and row.start):
            chosen[row.task] = row
    return list(chosen.values())


def glue_average(rows: list[TaskResults], transferred: bool = False) -> float:
    """The mean over tasks of each task's mean score (one row each, see one_per_task): the
    leaderboard's average, over these tasks."""
    return statistics.fmean(t.mean_score for t in one_per_task(rows, transferred))


def reference_average(tasks: list[TaskResults]) -> float:
    """The same average of RUN_GLUE_BERT_BASE over the same tasks, in percent."""
    tasks = one_per_task(tasks)
    return statistics.fmean(task_score(t.task, RUN_GLUE_BERT_BASE[t.task]) for t in tasks)


def percent(value: float) -> str:
    return f"{100 * value:.1f}"


def markdown_table(tasks: list[TaskResults], label: str) -> str:
    searched = any(t.setting for t in tasks)
    setting = "Setting | " if searched else ""
    rows = [
        f"| Task | {setting}Metric | Seeds | {label}: mean ± std | best seed | {REFERENCE_LABEL} |",
        "|---|---|---|---|---|---|" + ("---|" if searched else ""),
    ]
    for t in tasks:
        spread = [
            "{} ± {}".format(*map(percent, mean_std(t.values(metric)))) for metric in t.metrics
        ]
        published = [f"{RUN_GLUE_BERT_BASE[t.task][metric]:.1f}" for metric in t.metrics]
        rows.append(
            f"| {t.row} | {f'{t.setting} | ' if searched else ''}"
            f"{' / '.join(METRIC_NAMES[m] for m in t.metrics)} | {len(t.trials)} "
            f"| {' / '.join(spread)} "
            f"| {' / '.join(percent(t.best_value(m)) for m in t.metrics)} (seed {t.best.seed}) "
            f"| {' / '.join(published)} |"
        )
    with_transfer = one_per_task(tasks, transferred=True) != one_per_task(tasks)
    for transferred in (False, True)[: 1 + with_transfer]:
        counted = one_per_task(tasks, transferred)
        started = ", ".join(t.row for t in counted if t.start)
        best_average = statistics.fmean(t.best_value("score") for t in counted)
        rows.append(
            f"| **GLUE average**{f', {started}' if started else ''} "
            f"({len(counted)} of {len(constants.TASKS)} tasks) | "
            f"{'| ' if searched else ''}score | "
            f"| **{percent(glue_average(tasks, transferred))}** "
            f"| {percent(best_average)} | {reference_average(tasks):.1f} |"
        )
    return "\n".join(rows) + "\n"


def settings_table(tasks: list[TaskResults]) -> str:
    """Every setting's task score (mean ± std over its seeds) for the tasks that tried several,
    the one reported in bold."""
    tasks = [t for t in tasks if t.others]
    labels = list(dict.fromkeys(s.setting for t in tasks for s in t.tried))
    rows = [f"| Task | {' | '.join(labels)} |", "|---|" + "---|" * len(labels)]
    for t in tasks:
        cells = dict.fromkeys(labels, "")
        for s in t.tried:
            mean, std = mean_std(s.values("score"))
            cell = f"{percent(mean)} ± {percent(std)} ({len(s.trials)})"
            cells[s.setting] = f"**{cell}**" if s is t else cell
        rows.append(f"| {t.row} | {' | '.join(cells.values())} |")
    return "\n".join(rows) + "\n"


def csv_text(tasks: list[TaskResults]) -> str:
    """One row per task, setting and metric; `reported` marks each task's chosen setting."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["task", "start", "setting", "metric", "seeds", "mean", "std", "min", "max", "best_seed"]
        + ["best", "reported"]
    )
    for t in tasks:
        for s in t.tried:
            for metric in (*s.metrics, "score"):
                values = s.values(metric)
                mean, std = mean_std(values)
                writer.writerow(
                    [s.task, s.start, s.setting, metric, len(values), mean, std, min(values)]
                    + [max(values)]
                    + [s.best.seed, s.best_value(metric), int(s is t)]
                )
    writer.writerow(["GLUE average", "", "", "score", "", glue_average(tasks)] + [""] * 5 + [1])
    if any(t.start for t in tasks):
        transferred = glue_average(tasks, transferred=True)
        writer.writerow(
            ["GLUE average", "transferred", "", "score", "", transferred] + [""] * 5 + [0]
        )
    return out.getvalue()


def plot(tasks: list[TaskResults], label: str, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(max(7.0, 1.1 * len(tasks) + 3), 4.5))
    x = range(len(tasks))
    means, stds = zip(*(mean_std(t.values("score")) for t in tasks), strict=True)
    axes.bar(
        x,
        [100 * m for m in means],
        yerr=[100 * s for s in stds],
        capsize=4,
        alpha=0.6,
        label=f"{label}: mean ± std",
    )
    for i, t in enumerate(tasks):
        scores = t.values("score")
        axes.plot(
            [i] * len(scores), [100 * s for s in scores], "k.", label="seeds" if i == 0 else None
        )
    reference = [task_score(t.task, RUN_GLUE_BERT_BASE[t.task]) for t in tasks]
    axes.plot(x, reference, "r_", markersize=24, mew=2, label=REFERENCE_LABEL)
    names = [f"{t.row}\n{t.setting}" if t.setting else t.row for t in tasks]
    axes.set_xticks(list(x), names, fontsize="small" if any(t.setting for t in tasks) else None)
    axes.set_ylabel("task score, dev set (%)")
    counted = len(one_per_task(tasks))
    axes.set_title(f"{label}: GLUE dev average {percent(glue_average(tasks))} ({counted} tasks)")
    axes.set_ylim(0, 100)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize="small")
    figure.tight_layout()
    partial = path.with_name(f".{path.name}.partial")
    figure.savefig(partial, format="png", dpi=100)
    plt.close(figure)
    os.replace(partial, path)
