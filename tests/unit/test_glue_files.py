"""GLUE readers on the real files' quirks: columns, headers, quotes, scores, bad lines."""

from __future__ import annotations

import pathlib

import pytest
from conftest import SHARED_GLUE

import constants
import data

needs_shared = pytest.mark.skipif(not SHARED_GLUE.is_dir(), reason="needs ../shared/glue_data")

# (task, split key, file, examples) straight from the GLUE split sizes (shared/SOURCES.md).
REAL_COUNTS = [
    ("SST-2", "train", 67349),
    ("SST-2", "dev", 872),
    ("SST-2", "SST-2", 1821),
    ("MRPC", "train", 3668),
    ("MRPC", "dev", 408),
    ("MRPC", "MRPC", 1725),
    ("RTE", "train", 2490),
    ("RTE", "dev", 277),
    ("RTE", "RTE", 3000),
    ("WNLI", "train", 635),
    ("WNLI", "dev", 71),
    ("WNLI", "WNLI", 146),
    ("QNLI", "dev", 5463),
    ("QNLI", "QNLI", 5463),
    ("MNLI", "AX", 1104),
]


def split_of(task: constants.GlueTask, key: str) -> constants.Split:
    return {"train": task.train, "dev": task.dev.get("")}.get(key) or task.test[key]


@needs_shared
@pytest.mark.parametrize(("task_name", "key", "count"), REAL_COUNTS)
def test_real_files_parse_with_exact_counts(task_name, key, count):
    task = constants.TASKS[task_name]
    split = split_of(task, key)
    examples = data.read_examples(task, split, SHARED_GLUE)
    assert len(examples.text_a) == count
    assert all(examples.text_a) and (examples.text_b is None or all(examples.text_b))
    if split.label is None:
        assert examples.labels is None
        assert examples.index == [str(i) for i in range(count)]  # test files count from 0
    else:
        assert set(examples.labels.tolist()) == set(range(len(task.labels)))


@needs_shared
def test_real_mrpc_fields_land_in_the_right_columns():
    task = constants.TASKS["MRPC"]
    dev = data.read_examples(task, task.dev[""], SHARED_GLUE)
    assert dev.labels.sum() == 279  # 68.4% paraphrases in MRPC dev
    assert dev.text_a[0].startswith("He said the foodservice pie business")
    train = data.read_examples(task, task.train, SHARED_GLUE)
    # The row whose second sentence opens a quote that never closes must not swallow the next.
    assert not any("\n" in text for text in train.text_b)


def write(path: pathlib.Path, text: str, newline: str = "\n") -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


MRPC_TEXT = (
    "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    '1\t1\t2\tHe said "hello .\tHe said hi .\n'
    "0\t3\t4\tA cat .\tA dog .\n"
)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_bom_crlf_and_stray_quotes_just_work(tmp_path, newline):
    write(tmp_path / "MRPC/train.tsv", MRPC_TEXT, newline)
    examples = data.read_examples(constants.TASKS["MRPC"], constants.TASKS["MRPC"].train, tmp_path)
    assert examples.text_a == ['He said "hello .', "A cat ."]
    assert examples.text_b == ["He said hi .", "A dog ."]
    assert examples.labels.tolist() == [1, 0]


def test_cola_has_no_header_and_its_test_file_has_one(tmp_path):
    task = constants.TASKS["CoLA"]
    write(
        tmp_path / "CoLA/train.tsv", "gj04\t1\t\tOur friends won't buy this.\nck\t0\t*\tThe more ."
    )
    write(tmp_path / "CoLA/test.tsv", "index\tsentence\n0\tBill left .\n1\tLeft Bill .\n")
    train = data.read_examples(task, task.train, tmp_path)
    assert train.text_a == ["Our friends won't buy this.", "The more ."]
    assert train.labels.tolist() == [1, 0] and train.text_b is None
    test = data.read_examples(task, task.test["CoLA"], tmp_path)
    assert test.text_a == ["Bill left .", "Left Bill ."] and test.index == ["0", "1"]


def test_stsb_scores_are_floats_and_mnli_reads_its_columns(tmp_path):
    stsb = constants.TASKS["STS-B"]
    cols = "\t".join(f"c{i}" for i in range(7))
    write(tmp_path / "STS-B/train.tsv", f"{cols}\ts1\ts2\tscore\n{cols}\tA man .\tA guy .\t4.750\n")
    examples = data.read_examples(stsb, stsb.train, tmp_path)
    assert examples.labels.dtype.kind == "f" and examples.labels.tolist() == [4.75]
    assert (examples.text_a, examples.text_b) == (["A man ."], ["A guy ."])

    mnli = constants.TASKS["MNLI"]
    head = "\t".join(f"h{i}" for i in range(8))
    row = "\t".join(f"r{i}" for i in range(8))
    write(
        tmp_path / "MNLI/dev_mismatched.tsv",
        f"{head}\tsentence1\tsentence2\tl1\tgold\n{row}\tP .\tH .\tneutral\tcontradiction\n",
    )
    examples = data.read_examples(mnli, mnli.dev["_mm"], tmp_path)
    assert (examples.text_a, examples.text_b) == (["P ."], ["H ."])
    assert examples.labels.tolist() == [0]  # the gold label is the last column


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"train.tsv: the file is empty"),
        ("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n", r"train.tsv: no examples"),
        (MRPC_TEXT + "1\t5\t6\tonly four\n", r"train.tsv:4: expected 5 tab-separated columns"),
        (MRPC_TEXT + "2\t5\t6\ta\tb\n", r"train.tsv:4: label '2' is not one of MRPC's labels"),
    ],
)
def test_bad_files_name_the_file_and_line(tmp_path, text, message):
    write(tmp_path / "MRPC/train.tsv", text)
    with pytest.raises(data.DataError, match=message):
        data.read_examples(constants.TASKS["MRPC"], constants.TASKS["MRPC"].train, tmp_path)


def test_non_numeric_stsb_score_names_the_line(tmp_path):
    stsb = constants.TASKS["STS-B"]
    cols = "\t".join(f"c{i}" for i in range(7))
    write(tmp_path / "STS-B/dev.tsv", f"{cols}\ta\tb\ts\n{cols}\tx\ty\t4.0\n{cols}\tx\ty\tn/a\n")
    with pytest.raises(data.DataError, match=r"dev.tsv:3: score 'n/a' is not a number"):
        data.read_examples(stsb, stsb.dev[""], tmp_path)


def test_qqp_skips_its_malformed_rows(tmp_path):
    qqp = constants.TASKS["QQP"]
    text = "id\tqid1\tqid2\tq1\tq2\tis_duplicate\n1\t1\t2\tWhy ?\tHow ?\t0\n2\t3\t4\tbroken\n"
    write(tmp_path / "QQP/train.tsv", text + "3\t5\t6\tWho ?\tWhom ?\t1\n")
    examples = data.read_examples(qqp, qqp.train, tmp_path)
    assert examples.text_a == ["Why ?", "Who ?"] and examples.labels.tolist() == [0, 1]


def test_missing_data_without_download_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="RTE/train.tsv.*download_data: true"):
        data.prepare_data(constants.TASKS["RTE"], tmp_path, download=False)
