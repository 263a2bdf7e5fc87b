"""Control characters inside sentences are text: real GLUE training files hold them.

The rows below are the real ones (published CoLA and STS-B files, MD5 equal to GLUE's): CoLA's
train.tsv has backspaces (0x08) on lines 7130-7132, STS-B's train.tsv a 0x12 on line 2920
where an apostrophe was. Only a NUL byte marks a file as binary.
"""

from __future__ import annotations

import logging
import shutil

import pytest
from test_predict import last_checkpoint
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import constants
import data
import export
import model_def
from bert_glue.local import local_run
from bert_glue.results import finetuned, predictions
from bert_glue.trial import data_files

COLA_ROWS = [
    "sks13\t0\t*\tThis girl in the red coat will put \x08a picture of Bill it on your desk "
    "before tomorrow.",
    "sks13\t0\t*\tThis girl in the red coat will put a picture of Bill \x08on your desk there "
    "before tomorrow.",
    "sks13\t0\t*\tThis \x08girl in the red coat one will put a picture of Bill on your desk "
    "before tomorrow.",
]
STSB_ROW = (
    "2918\tmain-news\tMSRpar\t2012test\t0698\tnone\tnone\tTreasury\x12s long-range plan is to "
    "provide retail buyers of all Treasury securities the ability to manage their holdings "
    "online in a single account.\tThe Treasury said wants to give retail buyers of all Treasury "
    "securities the ability eventually to manage holdings online in a single account.\t4.400"
)
# The same sentences as test rows (index, then the columns the task's test split reads).
TEST_ROWS = {
    "CoLA": [f"{90 + i}\t{row.split(chr(9))[3]}" for i, row in enumerate(COLA_ROWS)],
    "STS-B": ["90\t" + "\t".join(STSB_ROW.split("\t")[1:-1])],
}
TRAIN_ROWS = {"CoLA": COLA_ROWS, "STS-B": [STSB_ROW]}


@pytest.fixture
def glue_with_control_bytes(glue_dir, tmp_path):
    """The few-row GLUE folder with the real rows added to CoLA's and STS-B's train and test."""
    folder = tmp_path / "glue"
    for name in TRAIN_ROWS:
        shutil.copytree(glue_dir / name, folder / name)
        for split, rows in (("train", TRAIN_ROWS[name]), ("test", TEST_ROWS[name])):
            with open(folder / name / f"{split}.tsv", "a", encoding="utf-8") as f:
                f.write("".join(row + "\n" for row in rows))
    return folder


@pytest.mark.parametrize("task_name", ["CoLA", "STS-B"])
def test_rows_with_control_bytes_train_predict_and_export(
    task_name, glue_with_control_bytes, local_config, tmp_path, caplog
):
    task = constants.TASKS[task_name]
    train = data.read_examples(task, task.train, glue_with_control_bytes)
    assert train.text_a[-1] == TRAIN_ROWS[task_name][-1].split("\t")[task.train.text_a]
    assert len(train.text_a) == 48 + len(TRAIN_ROWS[task_name])

    local_config["data"].update(task=task_name, data_dir=str(glue_with_control_bytes))
    with caplog.at_level(logging.WARNING, logger="data"):
        local_run.run_local(model_def.run, local_config)
    checkpoint = last_checkpoint(tmp_path / "xdg-data")

    trained = finetuned.load(checkpoint)
    (written,) = predictions.write_predictions(
        trained, glue_with_control_bytes, tmp_path / "out", 4
    )
    rows = written.read_text().splitlines()[1:]
    test_rows = len(TEST_ROWS[task_name])
    assert len(rows) == 12 + test_rows
    assert [r.split("\t")[0] for r in rows[-test_rows:]] == [str(90 + i) for i in range(test_rows)]

    out = tmp_path / "hf_model"
    export.main([str(checkpoint), str(out)])
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == task.num_labels

    # One line per file read, naming the file, the count and the first line.
    train_file = glue_with_control_bytes / task.train.path
    notes = {r.getMessage() for r in caplog.records if str(train_file) in r.getMessage()}
    first_line = 49 + (task_name == "STS-B")  # after the header and 48 synthetic rows
    byte = "0x08" if task_name == "CoLA" else "0x12"
    count = len(TRAIN_ROWS[task_name])
    assert notes == {
        f"{train_file}: {count} control character(s) read as text, "
        f"the first ({byte}) on line {first_line}"
    }


def test_bert_tokenizers_drop_control_characters(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    with_bytes = tokenizer("good \x08w1 w2\x12 bad\x7f", "w3\x01 w4")["input_ids"]
    assert with_bytes == tokenizer("good w1 w2 bad", "w3 w4")["input_ids"]


def test_own_data_keeps_control_characters_and_refuses_nul(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes(b"sentence\tlabel\nit\x12s fine\tpos\nbad \x08one\tneg\n")
    rows = list(data_files.read_rows(path, header=True, format="tsv"))
    assert rows == [(2, ["it\x12s fine", "pos"]), (3, ["bad \x08one", "neg"])]

    path.write_bytes(b"sentence\tlabel\nit\x12s fine\tpos\nbad \x00one\tneg\n")
    with pytest.raises(data.DataError, match=r"train.tsv:3: byte 0x00, which no text holds"):
        list(data_files.read_rows(path, header=True, format="tsv"))
