"""A checkpoint holds what predict.py and export.py need: they run from another folder once the
pre-trained model that data.model_name_or_path names is gone, as on a machine where a cluster's
checkpoint was downloaded. They show progress and write files as the rest of the project does."""

from __future__ import annotations

import io
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO, tiny_config
from test_predict import last_checkpoint
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

import constants
import model_def
import predict
from bert_glue.local import local_run, progress
from bert_glue.results import predictions
from bert_glue.trial import checkpointing

TEXTS = ["good w1 w2 w3", "bad w4 w5"]


@pytest.fixture(scope="module")
def moved(tiny_model_dir, glue_dir, tmp_path_factory) -> dict[str, pathlib.Path]:
    """An RTE run fine-tuned from a copy of the tiny model, which is deleted after it: its last
    checkpoint, and a folder that is neither the run's nor the project's to run commands in."""
    folder = tmp_path_factory.mktemp("moved")
    copy = shutil.copytree(tiny_model_dir, folder / "pretrained")
    config = tiny_config(copy, glue_dir)
    config["data"]["task"] = "RTE"
    config["hyperparameters"]["num_train_epochs"] = 1
    (folder / "run").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_DATA_HOME", str(folder / "xdg-data"))
        patch.setenv("XDG_CACHE_HOME", str(folder / "xdg-cache"))
        patch.chdir(folder / "run")
        local_run.run_local(model_def.run, config)
    shutil.rmtree(copy)
    (folder / "elsewhere").mkdir()
    return {"checkpoint": last_checkpoint(folder / "xdg-data"), "cwd": folder / "elsewhere"}


def run_script(script: str, *args: str, cwd: pathlib.Path, umask: int = 0o022):
    """One of the project's command lines in a process of its own, its output not a terminal."""
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        umask=umask,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_checkpoint_holds_the_model_config_and_tokenizer(moved, tiny_model_dir):
    checkpoint = moved["checkpoint"]
    own = checkpoint / checkpointing.MODEL_FILES
    assert [p.name for p in checkpoint.iterdir() if p.name.startswith(".")] == []  # no staging
    config = AutoConfig.from_pretrained(own)
    assert config.id2label == dict(enumerate(constants.ENTAILMENT))
    assert config.hidden_size == 32 and config.num_hidden_layers == 2  # the tiny model's
    assert AutoTokenizer.from_pretrained(own)(TEXTS) == AutoTokenizer.from_pretrained(
        tiny_model_dir
    )(TEXTS)


def test_predict_needs_only_the_checkpoint(moved, tiny_model_dir, tmp_path):
    # What the checkpoint predicts when the pre-trained model's own files are read instead.
    older = shutil.copytree(
        moved["checkpoint"],
        tmp_path / "older",
        ignore=shutil.ignore_patterns(checkpointing.MODEL_FILES),
    )
    (expected,) = predictions.predict(
        older, tmp_path, batch_size=4, model_name_or_path=str(tiny_model_dir)
    )

    done = run_script(
        "predict.py",
        str(moved["checkpoint"]),
        "--output-dir",
        "out",
        "--batch-size",
        "4",
        cwd=moved["cwd"],
    )

    assert done.returncode == 0, done.stderr
    assert (moved["cwd"] / "out" / "RTE.tsv").read_text() == expected.read_text()
    # 12 test rows in batches of 4: after the last, one line (one every 20 batches before).
    lines = re.findall(
        r"^predict RTE (\d+)/(\d+) \((\d+)%\) ([\d.]+) batch/s eta 0m00s$", done.stderr, re.M
    )
    assert [line[:3] for line in lines] == [("3", "3", "100")]
    assert "\r" not in done.stderr


def test_export_needs_only_the_checkpoint_and_keeps_the_umask(moved, tiny_model_dir):
    checkpoint = moved["checkpoint"]
    done = run_script("export.py", str(checkpoint), "hf_model", cwd=moved["cwd"], umask=0o027)

    assert done.returncode == 0, done.stderr
    assert "Writing model shards" not in done.stderr and "\r" not in done.stderr  # no bar
    out = moved["cwd"] / "hf_model"
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in out.iterdir()}
    assert "model.safetensors" in modes
    assert modes == dict.fromkeys(modes, oct(0o640))
    model = AutoModelForSequenceClassification.from_pretrained(out)
    weights = checkpointing.read(checkpoint).weights
    assert all(torch.equal(model.state_dict()[k], weights[k]) for k in weights)
    assert AutoTokenizer.from_pretrained(out)(TEXTS) == AutoTokenizer.from_pretrained(
        tiny_model_dir
    )(TEXTS)


def test_model_is_refused_for_a_checkpoint_that_holds_its_own(moved, tmp_path):
    checkpoint = moved["checkpoint"]
    with pytest.raises(SystemExit) as stop:
        predict.main([str(checkpoint), "--output-dir", str(tmp_path / "out"), "--model", "bert"])
    assert str(stop.value) == (
        f"error: --model bert: {checkpoint} holds its model's config and tokenizer "
        "(tokenizer_and_config/); leave --model out"
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_track_prints_a_line_every_few_batches_where_no_terminal(monkeypatch):
    monkeypatch.setattr(progress, "LINE_EVERY", 2)
    stream = io.StringIO()
    assert list(progress.track(iter("abcde"), "predict X", 5, stream)) == list("abcde")
    lines = re.findall(
        r"^predict X (\d)/5 \((\d+)%\) [\d.]+ batch/s eta \d+m\d\ds$", stream.getvalue(), re.M
    )
    assert lines == [("2", "40"), ("4", "80"), ("5", "100")]
    assert stream.getvalue().count("\n") == 3


def test_track_draws_a_bar_on_a_terminal():
    stream = Terminal()
    assert list(progress.track(iter("abcde"), "predict X", 5, stream)) == list("abcde")
    shown = stream.getvalue()
    # tqdm redraws at most every 0.1 s: its first frame, then the line it clears at the end.
    assert shown.startswith("\rpredict X:   0%|") and "0/5" in shown
    assert shown.endswith("\r") and "\n" not in shown  # no lines
