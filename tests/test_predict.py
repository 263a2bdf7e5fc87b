"""Checkpoints back into models, and GLUE submission files from them, for every task."""

from __future__ import annotations

import json
import pathlib
import shutil
import zipfile

import numpy as np
import pytest
import torch
from conftest import CUE

import constants
import data
import model_def
import predict
from bert_glue.local import local_run
from bert_glue.results import finetuned, predictions


def last_checkpoint(data_home: pathlib.Path) -> pathlib.Path:
    """The newest checkpoint a local run wrote (most steps completed)."""
    dirs = (data_home / "determined").glob("*/metadata.json")
    return max(dirs, key=lambda p: json.loads(p.read_text())["steps_completed"]).parent


@pytest.fixture
def train(local_config, tmp_path):
    """Train on a task through the local Trainer; returns its final checkpoint's directory."""

    def run(task: str, epochs: int = 1) -> pathlib.Path:
        local_config["data"]["task"] = task
        local_config["hyperparameters"]["num_train_epochs"] = epochs
        local_run.run_local(model_def.run, local_config)
        return last_checkpoint(tmp_path / "xdg-data")

    return run


def read_tsv(path: pathlib.Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


def test_submission_file_names_are_the_leaderboards():
    assert sorted(predictions.SUBMISSION_FILES) == sorted(
        f"{name}.tsv"
        for name in (
            *("CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI-m", "MNLI-mm"),
            *("QNLI", "RTE", "WNLI", "AX"),
        )
    )


@pytest.mark.parametrize("task_name", list(constants.TASKS))
def test_every_task_writes_its_submission_files(task_name, train, glue_dir, tmp_path):
    task = constants.TASKS[task_name]
    trained = finetuned.load(train(task_name))
    assert trained.task is task

    written = predictions.write_predictions(trained, glue_dir, tmp_path / "out", batch_size=5)

    expected = {"MNLI": ["MNLI-m", "MNLI-mm", "AX"]}.get(task_name, [task_name])
    assert [p.name for p in written] == [f"{name}.tsv" for name in expected]
    for path, split in zip(written, task.test.values(), strict=True):
        header, *rows = read_tsv(path)
        assert header == ["index", "prediction"]
        index = data.read_examples(task, split, glue_dir).index
        assert [r[0] for r in rows] == index and len(rows) == 12  # every test row, in order
        values = [r[1] for r in rows]
        if task.is_regression:
            assert all(0.0 <= float(v) <= 5.0 and len(v.split(".")[1]) == 3 for v in values)
        else:
            assert set(values) <= set(task.labels)
    if task_name == "MNLI":  # the diagnostic set, in MNLI's label space
        assert {r[1] for r in read_tsv(tmp_path / "out" / "AX.tsv")[1:]} <= set(constants.NLI)


def test_predictions_are_the_trained_labels_in_file_order(train, glue_dir, tmp_path):
    """A model that learned the cue words labels the test rows by them: names and order right."""
    task = constants.TASKS["RTE"]
    trained = finetuned.load(train("RTE", epochs=10))
    (path,) = predictions.write_predictions(trained, glue_dir, tmp_path, batch_size=4)
    examples = data.read_examples(task, task.test["RTE"], glue_dir)
    cue_label = {word: task.labels[i] for i, word in CUE.items() if i < task.num_labels}
    expected = [cue_label[text.split()[0]] for text in examples.text_a]
    predicted = [row[1] for row in read_tsv(path)[1:]]
    assert len(set(expected)) == 2
    assert np.mean([p == e for p, e in zip(predicted, expected, strict=True)]) >= 0.9


def test_prediction_strings_clip_scores_and_name_labels():
    sts_b, mnli = constants.TASKS["STS-B"], constants.TASKS["MNLI"]
    scores = np.array([[-0.7], [2.3456], [6.1]], dtype=np.float32)
    assert predictions.prediction_strings(sts_b, scores) == ["0.000", "2.346", "5.000"]
    logits = np.array([[0.1, 0.9, 0.0], [0.0, 0.1, 2.0], [3.0, 0.0, 0.0]])
    expected = ["entailment", "neutral", "contradiction"]
    assert predictions.prediction_strings(mnli, logits) == expected


def test_missing_test_file_says_how_to_get_it(tmp_path):
    trained = finetuned.FineTuned(constants.TASKS["MNLI"], None, model=None, tokenizer=None)
    with pytest.raises(FileNotFoundError, match="diagnostic/diagnostic.tsv.*--tasks MNLI,diagn"):
        predictions.write_predictions(trained, tmp_path, tmp_path / "out", batch_size=8)


def test_zip_packs_every_submission_file_in_the_folder(tmp_path):
    for name in ("RTE.tsv", "AX.tsv", "notes.txt"):
        (tmp_path / name).write_text("index\tprediction\n0\tentailment\n")
    archive = predictions.zip_submission(tmp_path)
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["AX.tsv", "RTE.tsv"]
        assert z.read("RTE.tsv") == (tmp_path / "RTE.tsv").read_bytes()
    with pytest.raises(FileNotFoundError, match="none of the files CoLA.tsv"):
        predictions.zip_submission(tmp_path / "empty")


def test_command_line_writes_and_zips(train, glue_dir, tmp_path):
    ckpt = train("SST-2")
    out = tmp_path / "submission"
    assert predict.main([str(ckpt), "--output-dir", str(out), "--zip"]) == 0  # data_dir: ckpt's
    assert sorted(p.name for p in out.iterdir()) == ["SST-2.tsv", "submission.zip"]


def test_checkpoint_of_a_distributed_run_loads(train, tmp_path):
    """DDP checkpoints name every weight module.<name>; the prefix is stripped on load."""
    ckpt = train("WNLI")
    ddp = shutil.copytree(ckpt, tmp_path / "ddp")
    state = torch.load(ddp / "state_dict.pth", weights_only=False)
    plain = state["models_state_dict"][0]
    state["models_state_dict"][0] = {f"module.{k}": v for k, v in plain.items()}
    torch.save(state, ddp / "state_dict.pth")
    loaded = finetuned.load(ddp).model.state_dict()
    assert loaded.keys() == plain.keys()
    assert all(torch.equal(loaded[k], plain[k]) for k in plain)


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected load_data.json and state_dict.pth"):
        finetuned.load(tmp_path)
