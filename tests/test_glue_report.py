"""glue_report.py: the table, the plot and the submission of a local run."""

from __future__ import annotations

import csv
import io
import pathlib
import statistics
import zipfile

import pytest
import yaml
from conftest import REPO, run_glue

import constants
import glue_report
from bert_glue.results import glue_results, glue_table, predictions, report
from bert_glue.trial import checkpointing


def test_nothing_to_report_names_the_trials() -> None:
    failed = glue_table.TrialResult("RTE seed 1", "RTE", 1, "ERROR", None, None)
    with pytest.raises(ValueError, match=r"nothing to report\n  RTE seed 1: ERROR"):
        report.write([failed], pathlib.Path("out"), "x")


def test_a_local_glue_run_of_every_task_gives_table_plot_and_submission(
    glue_config, glue_dir, tmp_path
) -> None:
    results = tmp_path / "results"
    assert run_glue(glue_config, results, "hyperparameters.seed=[1]") == 0
    rte_again = ("hyperparameters.task=[RTE]", "hyperparameters.seed=[2]")
    assert run_glue(glue_config, results, *rte_again) == 0
    out = tmp_path / "report"
    assert glue_report.main([str(results), "--output-dir", str(out), "--label", "tiny"]) == 0

    table = (out / "results.md").read_text()
    for task in constants.TASKS:
        assert f"| {task} |" in table
    assert "| RTE | acc | 2 |" in table and "(9 of 9 tasks)" in table
    assert "Submission: 11 of 11 files" in table
    assert (out / "results.png").stat().st_size > 10_000
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert {r["task"] for r in rows} == {*constants.TASKS, "GLUE average"}

    with zipfile.ZipFile(out / "submission" / "submission.zip") as archive:
        assert sorted(archive.namelist()) == sorted(predictions.SUBMISSION_FILES)
        for name in archive.namelist():
            task = constants.TASKS[predictions.SUBMISSION_FILES[name]]
            lines = archive.read(name).decode().splitlines()
            assert lines[0] == "index\tprediction"
            assert [line.split("\t")[0] for line in lines[1:]] == [str(i) for i in range(12)]
            predicted = [line.split("\t")[1] for line in lines[1:]]
            if task.is_regression:
                assert all(0.0 <= float(p) <= 5.0 for p in predicted)
            else:
                assert set(predicted) <= set(task.labels)


def test_a_local_grid_over_learning_rates_reports_the_better_one(
    glue_config, glue_dir, tmp_path
) -> None:
    results = tmp_path / "results"
    grid = ("hyperparameters.task=[WNLI]", "hyperparameters.seed=[1,2]")
    assert run_glue(glue_config, results, *grid, "hyperparameters.learning_rate=[3e-3,0.0]") == 0
    assert {p.name for p in results.iterdir()} == {
        f"task=WNLI_seed={seed}_learning_rate={lr}" for seed in (1, 2) for lr in (0.003, 0.0)
    }
    (wnli,), _ = glue_table.group_by_task(glue_results.local_results(results))
    (other,) = wnli.others
    assert {wnli.setting, other.setting} == {"learning_rate=0.003", "learning_rate=0.0"}
    assert len(wnli.trials) == len(other.trials) == 2
    assert statistics.fmean(wnli.values("score")) >= statistics.fmean(other.values("score"))
    out = tmp_path / "report"
    assert glue_report.main([str(results), "--output-dir", str(out), "--no-submission"]) == 0
    table = (out / "results.md").read_text()
    assert f"| WNLI | {wnli.setting} | acc | 2 |" in table
    assert "Settings tried" in table and "| WNLI | " in table.split("Settings tried")[1]


def test_missing_test_files_are_listed_with_the_reason(glue_config, glue_dir, tmp_path) -> None:
    results = tmp_path / "results"
    picked = ("hyperparameters.task=[WNLI]", "hyperparameters.seed=[1]")
    assert run_glue(glue_config, results, *picked) == 0
    empty = tmp_path / "no_test_files"
    empty.mkdir()
    out = tmp_path / "report"
    glue_report.main([str(results), "--output-dir", str(out)])  # the checkpoint's data_dir
    assert (
        "Submission: 1 of 11 files in submission/submission.zip."
        in (out / "results.md").read_text()
    )
    assert (out / "submission" / "WNLI.tsv").is_file()

    # Again without the test files: the earlier report's files do not pass for this one's.
    glue_report.main([str(results), "--output-dir", str(out), "--data-dir", str(empty)])
    table = (out / "results.md").read_text()
    assert "Submission: 0 of 11 files written." in table
    assert not (out / "submission" / "WNLI.tsv").exists()
    assert "- WNLI.tsv missing: test file(s) WNLI/test.tsv not found" in table
    assert "- MNLI-m.tsv missing: no completed MNLI trial" in table
    assert not (out / "submission" / "submission.zip").exists()


@pytest.fixture
def transfer_config(glue_config, tmp_path) -> pathlib.Path:
    """glue_transfer.yaml on the tiny model and synthetic data, as glue_config is glue.yaml."""
    tiny = yaml.safe_load(glue_config.read_text())
    config = yaml.safe_load((REPO / "glue_transfer.yaml").read_text())
    assert config["data"]["init_from"] is None  # set on the command line
    config["data"].update(tiny["data"])
    config["hyperparameters"].update(
        {key: tiny["hyperparameters"][key] for key in ("global_batch_size", "learning_rate")},
        num_train_epochs=1,
        max_seq_length=32,
    )
    path = tmp_path / "glue_transfer.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_the_transfer_recipe_reports_rows_from_mnli_beside_the_pre_trained_ones(
    glue_config, transfer_config, tmp_path, capsys
) -> None:
    """glue.yaml, then glue_transfer.yaml from its best MNLI checkpoint, then one report."""
    glue, transfer = tmp_path / "glue", tmp_path / "transfer"
    tasks = ("hyperparameters.task=[MNLI,RTE]", "hyperparameters.seed=[1]")
    assert run_glue(glue_config, glue, *tasks) == 0
    capsys.readouterr()
    assert glue_report.main([str(glue), "--best-checkpoint", "MNLI"]) == 0
    mnli = capsys.readouterr().out.strip()
    assert (pathlib.Path(mnli) / "state_dict.pth").is_file()
    assert pathlib.Path(mnli).parent == checkpointing.storage_dir()

    tasks = ("hyperparameters.task=[RTE]", "hyperparameters.seed=[1]")
    assert run_glue(transfer_config, transfer, *tasks, f"data.init_from={mnli}") == 0
    out = tmp_path / "report"
    sources = [str(glue), str(transfer), "--output-dir", str(out), "--no-submission"]
    assert glue_report.main(sources) == 0
    table = (out / "results.md").read_text()
    rows = [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| ")]
    assert rows[1:4] == ["| MNLI", "| RTE", "| RTE from MNLI"]
    assert "| **GLUE average** (2 of 9 tasks) |" in table
    assert "| **GLUE average**, RTE from MNLI (2 of 9 tasks) |" in table
