"""The GLUE table: the average as the leaderboard computes it, seeds, settings, markdown and CSV."""

from __future__ import annotations

import csv
import dataclasses
import io

import pytest

from bert_glue.results import glue_table
from bert_glue.results.glue_table import TrialResult


def trial(
    task: str, seed: int, state: str = glue_table.COMPLETED, lr: float = 2e-5, **metrics
) -> TrialResult:
    settings = {"task": task, "seed": seed, "learning_rate": lr, "per_task": {"MRPC": {}}}
    name = f"{task} seed {seed}"
    return TrialResult(name, task, seed, state, metrics or None, checkpoint=None, settings=settings)


HAND_MADE = [
    trial("CoLA", 1, mcc=0.50, acc=0.8),
    trial("CoLA", 2, mcc=0.60, acc=0.8),
    trial("MRPC", 1, f1=0.90, acc=0.80),
    trial("MRPC", 2, f1=0.88, acc=0.86),
    trial("MNLI", 1, acc=0.84, acc_mm=0.82),
    trial("STS-B", 1, pearson=0.90, spearmanr=0.86),
    trial("RTE", 1, state="ERROR"),
]


def test_glue_average_as_the_leaderboard_computes_it() -> None:
    tasks, uncounted = glue_table.group_by_task(HAND_MADE)
    assert [t.task for t in tasks] == ["CoLA", "MRPC", "STS-B", "MNLI"]  # GLUE's order
    assert [r.name for r in uncounted] == ["RTE seed 1"]
    # CoLA (0.50 + 0.60) / 2 = 0.55; MRPC seeds 0.85 and 0.87 -> 0.86; STS-B 0.88; MNLI 0.83.
    assert glue_table.glue_average(tasks) == pytest.approx((0.55 + 0.86 + 0.88 + 0.83) / 4)
    mrpc = tasks[1]
    assert mrpc.best.seed == 2 and mrpc.values("score") == pytest.approx([0.85, 0.87])
    # The published numbers over the same four tasks: 56.53, 86.46, 88.56, 84.005.
    assert glue_table.reference_average(tasks) == pytest.approx(
        (56.53 + (88.85 + 84.07) / 2 + (88.64 + 88.48) / 2 + (83.91 + 84.10) / 2) / 4
    )


def test_markdown_and_csv_tables() -> None:
    tasks, _ = glue_table.group_by_task(HAND_MADE)
    table = glue_table.markdown_table(tasks, "tiny")
    assert "| CoLA | MCC | 2 | 55.0 ± 7.1 | 60.0 (seed 2) | 56.5 |" in table
    assert (
        "| MRPC | F1 / acc | 2 | 89.0 ± 1.4 / 83.0 ± 4.2 | 88.0 / 86.0 (seed 2) | 88.8 / 84.1 |"
        in table
    )
    assert "| MNLI | acc / acc mm | 1 | 84.0 ± 0.0 / 82.0 ± 0.0 |" in table
    assert "| **GLUE average** (4 of 9 tasks) | score | | **78.0** |" in table
    rows = list(csv.DictReader(io.StringIO(glue_table.csv_text(tasks))))
    score = next(r for r in rows if r["task"] == "MRPC" and r["metric"] == "score")
    assert float(score["mean"]) == pytest.approx(0.86) and score["best_seed"] == "2"
    assert float(rows[-1]["mean"]) == pytest.approx(0.78)


# A grid over learning rates too: MRPC's best mean is at 2e-5 though its best seed is at 3e-5;
# CoLA was trained at one learning rate only.
SWEEP = [
    trial("CoLA", 1, lr=5e-5, mcc=0.50),
    trial("CoLA", 2, lr=5e-5, mcc=0.60),
    trial("MRPC", 1, f1=0.90, acc=0.80),
    trial("MRPC", 2, f1=0.88, acc=0.86),
    trial("MRPC", 1, lr=3e-5, f1=0.95, acc=0.85),
    trial("MRPC", 2, lr=3e-5, f1=0.80, acc=0.80),
    trial("RTE", 1, acc=0.60),
    trial("RTE", 1, lr=3e-5, acc=0.70),
    trial("RTE", 2, lr=3e-5, state="ERROR"),
]


def test_a_grid_over_more_than_seeds_reports_each_task_s_best_setting() -> None:
    tasks, uncounted = glue_table.group_by_task(SWEEP)
    assert [(t.task, t.setting) for t in tasks] == [
        ("CoLA", ""),
        ("MRPC", "learning_rate=2e-05"),
        ("RTE", "learning_rate=3e-05"),
    ]
    assert [[o.setting for o in t.others] for t in tasks] == [
        [],
        ["learning_rate=3e-05"],
        ["learning_rate=2e-05"],
    ]
    assert [r.name for r in uncounted] == ["RTE seed 2 (learning_rate=3e-05)"]
    assert glue_table.glue_average(tasks) == pytest.approx((0.55 + 0.86 + 0.70) / 3)

    table = glue_table.markdown_table(tasks, "tiny")
    assert (
        "| MRPC | learning_rate=2e-05 | F1 / acc | 2 | 89.0 ± 1.4 / 83.0 ± 4.2 "
        "| 88.0 / 86.0 (seed 2) | 88.8 / 84.1 |" in table
    )
    assert "| CoLA |  | MCC | 2 | 55.0 ± 7.1 |" in table
    assert "| **GLUE average** (3 of 9 tasks) | | score | | **70.3** |" in table
    settings = glue_table.settings_table(tasks)
    assert settings.startswith("| Task | learning_rate=2e-05 | learning_rate=3e-05 |\n")
    assert "CoLA" not in settings
    assert "| MRPC | **86.0 ± 1.4 (2)** | 85.0 ± 7.1 (2) |" in settings
    assert "| RTE | 60.0 ± 0.0 (1) | **70.0 ± 0.0 (1)** |" in settings

    rows = list(csv.DictReader(io.StringIO(glue_table.csv_text(tasks))))
    scores = [(r["task"], r["setting"], r["reported"]) for r in rows if r["metric"] == "score"]
    assert scores == [
        ("CoLA", "", "1"),
        ("MRPC", "learning_rate=2e-05", "1"),
        ("MRPC", "learning_rate=3e-05", "0"),
        ("RTE", "learning_rate=2e-05", "0"),  # a task's settings in the order of their values
        ("RTE", "learning_rate=3e-05", "1"),
        ("GLUE average", "", "1"),
    ]
    best = next(r for r in rows if r["setting"] == "learning_rate=3e-05" and r["metric"] == "f1")
    assert best["best_seed"] == "1" and float(best["best"]) == pytest.approx(0.95)


def test_hyperparameters_equal_in_every_trial_are_no_setting() -> None:
    tasks, _ = glue_table.group_by_task(HAND_MADE)  # all at 2e-5, the same per_task
    assert {t.setting for t in tasks} == {""} and not any(t.others for t in tasks)
    assert "Setting" not in glue_table.markdown_table(tasks, "tiny")


def test_settings_are_listed_by_value() -> None:
    sweep = [trial("RTE", 1, lr=lr, acc=0.6) for lr in (1e-4, 2e-5, 5e-5)]
    (rte,), _ = glue_table.group_by_task(sweep)
    assert [s.setting for s in rte.tried] == [
        "learning_rate=2e-05",
        "learning_rate=5e-05",
        "learning_rate=0.0001",
    ]


def test_a_capped_training_set_is_a_setting_of_its_own() -> None:
    capped, full = trial("SST-2", 1, acc=0.8), trial("SST-2", 1, acc=0.9)
    capped.settings["data.max_train_samples"] = 1000
    assert glue_table.setting_labels([capped, full, trial("RTE", 1, acc=0.6)]) == [
        "data.max_train_samples=1000",
        "data.max_train_samples=null",
        "",
    ]


def test_trials_started_from_mnli_are_rows_of_their_own_beside_the_pre_trained_ones() -> None:
    def from_mnli(result: TrialResult) -> TrialResult:
        # glue_transfer.yaml's per_task differs from glue.yaml's: no setting within a start
        settings = {**result.settings, "per_task": {}}
        return dataclasses.replace(result, start="MNLI", settings=settings)

    results = [
        trial("MNLI", 1, acc=0.84, acc_mm=0.82),
        trial("RTE", 1, acc=0.60),
        trial("RTE", 2, acc=0.64),
        from_mnli(trial("RTE", 1, acc=0.70)),
        from_mnli(trial("RTE", 2, acc=0.74)),
        from_mnli(trial("STS-B", 1, pearson=0.80, spearmanr=0.80)),  # no pre-trained STS-B row
    ]
    results[3].settings["data.init_from"] = "/ckpt/mnli"  # the start is no setting
    rows, _ = glue_table.group_by_task(results)
    assert [(r.row, r.setting) for r in rows] == [
        ("STS-B from MNLI", ""),
        ("MNLI", ""),
        ("RTE", ""),
        ("RTE from MNLI", ""),
    ]
    # Once per task: MNLI 0.83, RTE 0.62 or from MNLI 0.72, STS-B 0.80 (its only row).
    assert glue_table.glue_average(rows) == pytest.approx((0.83 + 0.62 + 0.80) / 3)
    assert glue_table.glue_average(rows, transferred=True) == pytest.approx(
        (0.83 + 0.72 + 0.80) / 3
    )
    table = glue_table.markdown_table(rows, "tiny")
    assert "| RTE | acc | 2 | 62.0 ± 2.8 | 64.0 (seed 2) | 65.7 |" in table
    assert "| RTE from MNLI | acc | 2 | 72.0 ± 2.8 | 74.0 (seed 2) | 65.7 |" in table
    assert "| **GLUE average**, STS-B from MNLI (3 of 9 tasks) | score | | **75.0** |" in table
    assert (
        "| **GLUE average**, STS-B from MNLI, RTE from MNLI (3 of 9 tasks) | score | | **78.3** |"
        in table
    )
    csv_rows = list(csv.DictReader(io.StringIO(glue_table.csv_text(rows))))
    rte = [(r["start"], r["mean"]) for r in csv_rows if r["task"] == "RTE" and r["metric"] == "acc"]
    assert [(start, float(mean)) for start, mean in rte] == [("", 0.62), ("MNLI", 0.72)]
