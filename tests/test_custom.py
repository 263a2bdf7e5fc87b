"""Your own data (data.task: custom) and any encoder (model_type: auto), end to end.

Tiny random DeBERTa-v2, ELECTRA, ALBERT and ModernBERT models (tokenizers made here) and CSV,
TSV and JSON Lines files with named columns train through the local Trainer, validate, predict
and export; every kind of bad custom file fails with one line naming the file and line.
"""

from __future__ import annotations

import csv
import json
import pathlib
import random
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import CUE, REPO, WORDS
from test_bad_input import write_config
from test_predict import last_checkpoint, read_tsv
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AlbertConfig,
    AlbertModel,
    AlbertTokenizer,
    AutoModelForSequenceClassification,
    BertTokenizer,
    DebertaV2Config,
    DebertaV2Model,
    DebertaV2Tokenizer,
    ElectraConfig,
    ElectraModel,
    ModernBertConfig,
    ModernBertModel,
)

import constants
import export
import model_def
import predict
from bert_glue.local import local_run
from bert_glue.local.config import load_config, local_settings
from bert_glue.results import finetuned, predictions
from bert_glue.trial import custom_task

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
NAMES = {2: ["neg", "pos"], 3: ["neg", "pos", "mid"]}  # label id i is cued by CUE[i]


def unigram_tokenizer(tokenizer_class):
    """A sentencepiece-style (Unigram, Metaspace) fast tokenizer trained on the test words."""
    backend = Tokenizer(models.Unigram())
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=80, special_tokens=SPECIAL, unk_token="[UNK]")
    backend.train_from_iterator([" ".join(WORDS)] * 20, trainer)
    names = ("pad", "unk", "cls", "sep", "mask")
    tokens = {f"{name}_token": token for name, token in zip(names, SPECIAL, strict=True)}
    return tokenizer_class(tokenizer_object=backend, bos_token="[CLS]", eos_token="[SEP]", **tokens)


def wordpiece_tokenizer(folder: pathlib.Path) -> BertTokenizer:
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join([*SPECIAL, *WORDS]) + "\n")
    return BertTokenizer(str(vocab), do_lower_case=True)


def tiny_deberta(folder):
    tokenizer = unigram_tokenizer(DebertaV2Tokenizer)
    config = DebertaV2Config(
        vocab_size=len(tokenizer), max_position_embeddings=64, relative_attention=True,
        pos_att_type=["p2c", "c2p"], position_buckets=16, pad_token_id=0, **TINY,
    )  # fmt: skip
    return tokenizer, DebertaV2Model(config)


def tiny_albert(folder):
    tokenizer = unigram_tokenizer(AlbertTokenizer)
    config = AlbertConfig(
        vocab_size=len(tokenizer), embedding_size=16, max_position_embeddings=64, **TINY
    )
    return tokenizer, AlbertModel(config)


def tiny_electra(folder):
    tokenizer = wordpiece_tokenizer(folder)
    config = ElectraConfig(
        vocab_size=len(tokenizer), embedding_size=16, max_position_embeddings=64, **TINY
    )
    return tokenizer, ElectraModel(config)


def tiny_modernbert(folder):
    tokenizer = wordpiece_tokenizer(folder)
    config = ModernBertConfig(
        vocab_size=len(tokenizer), max_position_embeddings=64, pad_token_id=0, cls_token_id=2,
        sep_token_id=3, bos_token_id=2, eos_token_id=3, global_attn_every_n_layers=1,
        local_attention=16, **TINY,
    )  # fmt: skip
    return tokenizer, ModernBertModel(config)


# model -> (builder, whether batches should carry token_type_ids)
MODELS = {
    "deberta-v2": (tiny_deberta, False),  # type_vocab_size 0
    "albert": (tiny_albert, False),  # transformers 5.24's AlbertTokenizer makes none
    "electra": (tiny_electra, True),
    "modernbert": (tiny_modernbert, False),  # its forward takes no token_type_ids
}

CLASSIFIERS = {
    "deberta-v2": "DebertaV2ForSequenceClassification",
    "albert": "AlbertForSequenceClassification",
    "electra": "ElectraForSequenceClassification",
    "modernbert": "ModernBertForSequenceClassification",
}


def rows(n: int, num_labels: int, seed: int) -> list[dict]:
    """Pairs with the label's cue word in the premise; regression (num_labels 0): 0, 2.5, 5."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = rng.randrange(max(num_labels, 3) if num_labels != 2 else 2)
        filler = " ".join(rng.choice(WORDS[:40]) for _ in range(rng.randrange(2, 8)))
        out.append(
            {
                "id": str(i),
                "premise": f'{CUE[label]} {filler}, "quoted"',
                "hypothesis": " ".join(rng.choice(WORDS[:40]) for _ in range(3)),
                "gold": NAMES[num_labels][label] if num_labels else label * 2.5,
            }
        )
    return out


def write_rows(path: pathlib.Path, records: list[dict]) -> None:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        return
    delimiter = "," if path.suffix == ".csv" else "\t"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(records[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(records)


def custom_files(folder: pathlib.Path, suffix: str, num_labels: int) -> dict:
    """train/dev/test files in folder and the data.custom section that reads them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", 48, 1), ("dev", 20, 2), ("test", 12, 3)):
        write_rows(folder / f"{name}{suffix}", rows(n, num_labels, seed))
    return {
        "train": f"train{suffix}",
        "validation": f"dev{suffix}",
        "test": f"test{suffix}",
        "text_a": "premise",
        "text_b": "hypothesis",
        "label": "gold",
    }


@pytest.fixture
def custom_config(local_config, tmp_path):
    """local_config as a custom task on files of a given format and label count."""

    def make(suffix: str = ".csv", num_labels: int = 2, **custom) -> dict:
        spec = custom_files(tmp_path / "own", suffix, num_labels)
        local_config["data"].update(task="custom", data_dir=str(tmp_path / "own"))
        local_config["data"]["custom"] = {**spec, **custom}
        return local_config

    return make


CASES = {  # format, label count, data.custom settings, metrics reported, label names
    "csv-2-inferred": (".csv", 2, {"metrics": ["acc", "f1", "mcc"]}, ["acc", "f1", "mcc"]),
    "tsv-3-declared": (".tsv", 3, {"labels": NAMES[3], "metrics": ["acc", "f1"]}, ["acc", "f1"]),
    "jsonl-regression": (".jsonl", 0, {"labels": "regression"}, ["pearson", "spearmanr", "corr"]),
}
LABELS = {"csv-2-inferred": ("neg", "pos"), "tsv-3-declared": tuple(NAMES[3])}  # sorted if inferred


@pytest.mark.parametrize("case", list(CASES))
def test_custom_task_trains_validates_and_predicts(case, custom_config, tmp_path):
    suffix, num_labels, settings, names = CASES[case]
    config = custom_config(suffix, num_labels, **settings)
    config["searcher"].update(metric=names[0], smaller_is_better=False)
    config["hyperparameters"].update(
        num_train_epochs=10,  # 60 steps
        # Regression learns the cue-word scores at 5e-3 (Pearson 0.81-0.97 over seeds 1-4 and 42;
        # it wandered between -0.8 and 0.5 at 1e-4..3e-3).
        learning_rate=3e-3 if num_labels else 5e-3,
        precision="fp32",  # bf16 rounds the tiny model's close scores to one value (Pearson nan)
    )
    validations = local_run.run_local(model_def.run, config)
    assert len(validations) == 10
    assert set(validations[-1]) - {"batches", "epochs"} == {"validation_loss", "glue_score", *names}
    # The cue word decides the label: the tiny model learns it, well above chance (1/labels).
    # Regression: a Pearson well above 0, which chance gives.
    bar = 1.6 / num_labels if num_labels else 0.5
    assert validations[-1][names[0]] > bar

    trained = finetuned.load(last_checkpoint(tmp_path / "xdg-data"))
    assert trained.task.labels == LABELS.get(case, ())
    (path,) = predictions.write_predictions(
        trained, config["data"]["data_dir"], tmp_path / "out", 8
    )
    table = read_tsv(path)
    assert path.name == "predictions.tsv" and table[0] == ["index", "prediction"]
    first = 1 if suffix == ".jsonl" else 2  # the line each row is on, after a header
    assert [row[0] for row in table[1:]] == [str(line) for line in range(first, first + 12)]
    truth = [row["gold"] for row in rows(12, num_labels, seed=3)]
    if num_labels:
        right = sum(row[1] == label for row, label in zip(table[1:], truth, strict=True))
        assert right >= 12 * min(bar, 0.6)
    else:  # scores, unclipped (the tiny model's vary in the 4th digit: no ordering to check)
        scores = [float(row[1]) for row in table[1:]]
        assert len(scores) == 12 and np.isfinite(scores).all()


BAD_DATA = {  # file (in train.csv's place), its text, the error
    "missing-column": (
        "train.csv",
        "premise,hypo,gold\na,b,pos\n",
        r"train.csv:1: no column 'hypothesis' \(data.custom.text_b\) in the header; "
        r"the columns are 'premise', 'hypo'",
    ),
    "jsonl-missing-key": (
        "train.jsonl",
        '{"premise": "a", "hypothesis": "b", "gold": "pos"}\n{"premise": "a", "gold": "neg"}\n',
        r"train.jsonl:2: no key 'hypothesis' \(data.custom.text_b\); "
        r"the keys are 'premise', 'gold'",
    ),
    "undeclared-label": (
        "train.csv",
        "premise,hypothesis,gold\na,b,pos\nc,d,maybe\n",
        r"train.csv:3: label 'maybe' is not one of custom's labels \('neg', 'pos'\)",
    ),
    "empty-text": (
        "train.csv",
        'premise,hypothesis,gold\na,b,pos\n" ",d,neg\n',
        r"train.csv:3: the text in 'premise' is empty",
    ),
    "non-numeric-score": (
        "train.csv",
        "premise,hypothesis,gold\na,b,1.5\nc,d,high\n",
        r"train.csv:3: score 'high' is not a number",
    ),
    "nan-score": (
        "train.csv",
        "premise,hypothesis,gold\na,b,1.5\nc,d,nan\n",
        r"train.csv:3: score 'nan' is not a finite number",
    ),
    "not-utf8": (
        "train.csv",
        "premise,hypothesis,gold\na,b,pos\nc,d\xe9,neg\n".encode("latin-1"),
        r"train.csv:3: not UTF-8 text \(byte 0xe9\); save the file as UTF-8",
    ),
    "binary": (
        "train.csv",
        b"premise,hypothesis,gold\na,b,pos\nc,\x00d,neg\n",
        r"train.csv:3: byte 0x00, which no text holds",
    ),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_custom_data_fails_in_one_line(case, custom_config, tmp_path):
    name, text, message = BAD_DATA[case]
    labels = "regression" if "score" in case else ["neg", "pos"]
    config = custom_config(".csv", 2, labels=labels, train=name)
    if labels == "regression":
        config["searcher"].update(metric="pearson", smaller_is_better=False)
        config["data"]["custom"]["validation"] = name  # the dev file's labels are names
    if name.endswith(".jsonl"):
        config["data"]["custom"].update(validation=name, test=None)
    path = tmp_path / "own" / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(SystemExit) as exit_:
        model_def.main([write_config(config, tmp_path), "--no-tensorboard"])
    assert str(exit_.value.code).startswith("error: ") and "\n" not in str(exit_.value.code)
    assert re.search(message, str(exit_.value.code))
    assert not (tmp_path / "xdg-data").exists()  # nothing was trained


@pytest.mark.parametrize("text", [b"\x00\x01binary", "caf\xe9".encode("latin-1")])
def test_glue_reader_refuses_binary_and_non_utf8_files(text, local_config, glue_dir, tmp_path):
    bad = tmp_path / "glue"
    (bad / "RTE").mkdir(parents=True)
    for split in ("train", "dev"):
        (bad / "RTE" / f"{split}.tsv").write_bytes((glue_dir / "RTE" / f"{split}.tsv").read_bytes())
    with open(bad / "RTE" / "dev.tsv", "ab") as f:
        f.write(b"99\t" + text + b"\tb\tentailment\n")  # line 22
    local_config["data"].update(task="RTE", data_dir=str(bad))
    with pytest.raises(SystemExit) as exit_:
        model_def.main([write_config(local_config, tmp_path), "--no-tensorboard"])
    line = rf"error: {bad}/RTE/dev.tsv:22: (byte 0x00,|not UTF-8) .*"
    assert re.fullmatch(line, exit_.value.code)


def test_custom_settings_are_checked(tmp_path):
    spec = {"train": "t.csv", "validation": "d.csv", "text_a": "s", "label": "y"}

    def task(**custom):
        return custom_task.task_from_config("custom", {**spec, **custom}, tmp_path)

    assert task(labels=["b", "a"]).labels == ("b", "a")
    assert task(labels="regression", metrics=["pearson"]).metrics == ("pearson",)
    # Unset, the metrics follow from the labels; the score is the mean of those not derived.
    classifier, regressor = task(labels=["a", "b"]), task(labels="regression")
    assert (classifier.metrics, classifier.score) == (("acc", "f1"), ("acc", "f1"))
    assert regressor.metrics == ("pearson", "spearmanr", "corr")
    assert regressor.score == ("pearson", "spearmanr")
    chosen = task(labels=["a", "b"], metrics=["mcc", "acc_and_f1", "acc", "f1"])
    assert chosen.score == ("mcc", "acc", "f1")
    for custom, message in [
        ({"labels": ["a"]}, "labels: \\['a'\\]; give infer, regression or a list of two"),
        ({"labels": ["a", "a"]}, "names a label twice"),
        ({"metrics": ["pearson"], "labels": ["a", "b"]}, "not a classification metric"),
        ({"metrics": ["acc_and_f1"], "labels": ["a", "b"]}, "acc_and_f1 needs acc and f1 too"),
        ({"train": "t.txt", "labels": ["a", "b"]}, "format: 't.txt' is no format"),
        ({"colour": 1}, "data.custom: unknown key\\(s\\) colour"),
        ({"labels": "infer"}, "data.custom.train t.csv, data.custom.validation d.csv not found"),
    ]:
        with pytest.raises((constants.ConfigError, FileNotFoundError), match=message):
            task(**custom)
    with pytest.raises(constants.ConfigError, match="data.custom: read only with data.task"):
        custom_task.task_from_config("RTE", spec, tmp_path)


@pytest.mark.parametrize("model", list(MODELS))
def test_any_encoder_trains_predicts_and_exports(model, custom_config, tmp_path, monkeypatch):
    folder = tmp_path / model
    folder.mkdir()
    torch.manual_seed(0)
    tokenizer, encoder = MODELS[model][0](folder)
    encoder.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    config = custom_config(".tsv", 3, labels=NAMES[3])
    config["data"]["model_name_or_path"] = str(folder)
    config["hyperparameters"].update(model_type="auto", num_train_epochs=1)
    validation, batches = run_spying(config, monkeypatch)
    assert len(batches) == 6 and 0.0 <= validation["acc"] <= 1.0
    assert all(("token_type_ids" in b) == MODELS[model][1] for b in batches)

    checkpoint = last_checkpoint(tmp_path / "xdg-data")
    (path,) = predictions.write_predictions(
        finetuned.load(checkpoint), tmp_path / "own", tmp_path, 4
    )
    assert {row[1] for row in read_tsv(path)[1:]} <= set(NAMES[3])
    export.main([str(checkpoint), str(tmp_path / "hf")])
    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf")
    assert type(exported).__name__ == CLASSIFIERS[model]
    assert exported.config.id2label == dict(enumerate(NAMES[3]))


def test_a_missing_file_is_named_alone(custom_config, tmp_path):
    config = custom_config(".csv", 2, validation="valid.csv")  # train.csv is there
    with pytest.raises(SystemExit) as exit_:
        model_def.main([write_config(config, tmp_path), "--no-tensorboard"])
    assert exit_.value.code == (
        f"error: data.custom.validation valid.csv not found in data.data_dir {tmp_path / 'own'}, "
        "which holds dev.csv, test.csv, train.csv; set data.custom.validation to your files' "
        "paths relative to it"
    )


def early_answer(argv: list[str], cwd: pathlib.Path) -> tuple[str, bool]:
    """What `python model_def.py ARGV` ends with when the config is wrong, and whether torch had
    loaded by then."""
    probe = (
        "import runpy, sys\n"
        f"sys.argv, sys.path[0] = ['model_def.py', *{argv!r}], {str(REPO)!r}\n"
        f"try:\n    runpy.run_path({str(REPO / 'model_def.py')!r}, run_name='__main__')\n"
        "except SystemExit as e:\n    print(e.code)\n    print('torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.stderr == "", done.stderr[-2000:]  # one line, nothing else
    *_, error, torch_loaded = done.stdout.strip().splitlines()
    return error, torch_loaded == "True"


@pytest.mark.parametrize(
    ("files", "overrides", "message"),
    [
        (
            ("train.csv", "dev.csv"),
            ["data.custom.labels=[0, 1]"],
            "error: data.custom.labels: [0, 1]; give infer, regression or a list of two or more "
            "label names (quote names YAML reads as numbers or booleans: ['0', '1'])",
        ),
        (
            ("train.tsv", "dev.tsv"),
            [],
            "error: data.custom.train train.csv, data.custom.validation dev.csv not found in "
            "data.data_dir own, which holds dev.tsv, train.tsv; set data.custom.train and "
            "data.custom.validation to your files' paths relative to it",
        ),
    ],
    ids=["labels as numbers", "tsv files, csv names"],
)
def test_own_data_mistakes_answer_before_torch_loads(files, overrides, message, tmp_path):
    """custom.yaml as docs/own-data.md runs it, its data_dir relative to the folder run in."""
    (tmp_path / "own").mkdir()
    for name in files:
        (tmp_path / "own" / name).write_text("text,label\na,x\n")
    argv = [str(REPO / "custom.yaml"), "data.data_dir=own", *overrides]
    assert early_answer(argv, tmp_path) == (message, False)


def test_the_summary_prints_predict_only_with_test_files(custom_config, tmp_path):
    def has_test_files(config: dict) -> bool:
        task = local_settings(config).task
        return local_run.has_test_files(task, config["data"]["data_dir"])

    config = custom_config(".csv", 2)
    assert has_test_files(config)
    (tmp_path / "own" / "test.csv").unlink()
    assert not has_test_files(config)  # named, but not there
    config["data"]["custom"]["test"] = None
    assert not has_test_files(config)


def own_files(folder: pathlib.Path, columns: dict, num_labels: int, test: bool = True) -> None:
    """train/dev(/test).csv of rows(); `columns` maps each column written to a field of rows()."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", 48, 1), ("dev", 20, 2), ("test", 12, 3))[: 3 if test else 2]:
        records = [{c: r[field] for c, field in columns.items()} for r in rows(n, num_labels, seed)]
        write_rows(folder / f"{name}.csv", records)


def from_custom_yaml(local_config: dict, data_dir: pathlib.Path, *overrides: str) -> dict:
    """custom.yaml as shipped with the user's overrides, on the tiny model and sized for CPUs."""
    config = load_config(str(REPO / "custom.yaml"), list(overrides))
    config["data"].update(
        data_dir=str(data_dir), model_name_or_path=local_config["data"]["model_name_or_path"]
    )
    config["hyperparameters"].update(
        global_batch_size=8, num_train_epochs=1, max_seq_length=32, precision="fp32"
    )
    return config


def run_spying(config: dict, monkeypatch) -> tuple[dict, list[dict]]:
    """The run's last validation, and the batches it trained on."""
    batches = []
    original = model_def.BertPyTorch.train_batch

    def spy(self, batch, epoch_idx, batch_idx):
        batches.append(batch)
        return original(self, batch, epoch_idx, batch_idx)

    monkeypatch.setattr(model_def.BertPyTorch, "train_batch", spy)
    return local_run.run_local(model_def.run, config)[-1], batches


def test_single_texts_train_from_custom_yaml(local_config, tmp_path, monkeypatch):
    own_files(tmp_path / "own", {"sentence": "premise", "label": "gold"}, 2)
    overrides = ("data.custom.text_a=sentence", "data.custom.labels=[neg, pos]")
    config = from_custom_yaml(local_config, tmp_path / "own", *overrides)
    validation, batches = run_spying(config, monkeypatch)

    assert set(validation) - {"batches", "epochs"} == {"validation_loss", "acc", "f1", "glue_score"}
    assert validation["glue_score"] == pytest.approx((validation["acc"] + validation["f1"]) / 2)
    # No second segment: custom.yaml's text_b is unset, not a column this file lacks.
    assert batches and all(not b["token_type_ids"].any() for b in batches)


def test_a_regression_pair_trains_from_custom_yaml(local_config, tmp_path, monkeypatch):
    own_files(tmp_path / "own", {"s1": "premise", "s2": "hypothesis", "score": "gold"}, 0)
    overrides = [f"data.custom.{key}" for key in ("text_a=s1", "text_b=s2", "label=score")]
    overrides.append("data.custom.labels=regression")
    config = from_custom_yaml(local_config, tmp_path / "own", *overrides)
    validation, batches = run_spying(config, monkeypatch)

    names = {"validation_loss", "pearson", "spearmanr", "corr", "glue_score"}
    assert set(validation) - {"batches", "epochs"} == names
    mean = (validation["pearson"] + validation["spearmanr"]) / 2
    assert validation["glue_score"] == pytest.approx(mean)
    assert all(b["token_type_ids"].any() for b in batches)  # s2 is each pair's second segment


def test_a_named_second_column_the_file_lacks_is_one_error(local_config, tmp_path):
    own_files(tmp_path / "own", {"sentence": "premise", "label": "gold"}, 2)
    overrides = (
        "data.custom.text_a=sentence",
        "data.custom.text_b=context",
        "data.custom.labels=[neg, pos]",
    )
    config = from_custom_yaml(local_config, tmp_path / "own", *overrides)
    with pytest.raises(SystemExit) as exit_:
        model_def.main([write_config(config, tmp_path), "--no-tensorboard"])
    assert exit_.value.code == (
        f"error: {tmp_path / 'own' / 'train.csv'}:1: no column 'context' (data.custom.text_b) "
        "in the header; the columns are 'sentence', 'label'"
    )


def test_an_absent_test_file_is_one_warning_and_predict_says_so(
    local_config, tmp_path, monkeypatch, caplog
):
    own_files(tmp_path / "own", {"sentence": "premise", "label": "gold"}, 2, test=False)
    overrides = ("data.custom.text_a=sentence", "data.custom.labels=[neg, pos]")
    config = from_custom_yaml(local_config, tmp_path / "own", *overrides)
    assert config["data"]["custom"]["test"] == "test.csv"  # as custom.yaml names it
    local_run.run_local(model_def.run, config)

    warned = [r.getMessage() for r in caplog.records if "data.custom.test" in r.getMessage()]
    assert warned == [
        f"data.custom.test: test.csv not found in data.data_dir {tmp_path / 'own'}: this run "
        "trains and validates, but predict.py will have no test file; put it there or remove "
        "data.custom.test"
    ]
    checkpoint = last_checkpoint(tmp_path / "xdg-data")
    with pytest.raises(SystemExit) as exit_:
        predict.main([str(checkpoint), "--output-dir", str(tmp_path / "out")])
    assert exit_.value.code == (
        f"error: no test file to predict: data.custom.test test.csv is not in {tmp_path / 'own'}; "
        "put it there, or pass --data-dir the folder that holds it"
    )
    assert not (tmp_path / "out").exists()
