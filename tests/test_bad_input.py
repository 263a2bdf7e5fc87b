"""Every mistake in the model, the config or the data ends early in one line that says the fix."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, built_trial
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

import constants
import model_def
from bert_glue.local import local_run
from bert_glue.trial import pretrained


def model_folder(tiny_model_dir: pathlib.Path, tmp_path: pathlib.Path, *drop: str) -> str:
    """A copy of the tiny model folder without the files named in `drop`."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    for name in drop:
        (folder / name).unlink()
    return str(folder)


def classifier_folder(tiny_model_dir: pathlib.Path, tmp_path: pathlib.Path) -> str:
    """The tiny model saved after fine-tuning for a three-label task (as an MNLI model is)."""
    folder = model_folder(tiny_model_dir, tmp_path)
    BertForSequenceClassification.from_pretrained(folder, num_labels=3).save_pretrained(folder)
    return folder


def empty_folder(tmp_path: pathlib.Path) -> str:
    (tmp_path / "empty").mkdir()
    return str(tmp_path / "empty")


UNKNOWN_UUID = "0b5e3c2a-1f4d-4e6b-9a8c-7d2e1f0a9b8c"
MODEL_CASES = {
    "no-weights": (
        lambda m, t: {"data.model_name_or_path": model_folder(m, t, "model.safetensors")},
        r"model_name_or_path: .*/model lacks weights \(model.safetensors or ",
    ),
    "no-tokenizer": (
        lambda m, t: {"data.model_name_or_path": model_folder(m, t, "vocab.txt", "tokenizer.json")},
        r"lacks tokenizer files \(tokenizer.json or vocab.txt\)",
    ),
    "no-folder": (
        lambda m, t: {"data.model_name_or_path": str(t / "bert-bse")},
        r"model_name_or_path: no folder .*/bert-bse",
    ),
    "another-model-type": (
        lambda m, t: {"hyperparameters.model_type": "roberta"},
        r"model_type: .* is a 'bert' model, not 'roberta'",
    ),
    "head-with-other-label-count": (
        lambda m, t: {"data.model_name_or_path": classifier_folder(m, t)},
        r"is a classifier with 3 labels \(config.json id2label\) but MRPC has 2",
    ),
    "init-from-no-folder": (
        lambda m, t: {"data.init_from": str(t / "mnli-model")},
        r"^data.init_from: no folder .*/mnli-model$",
    ),
    "init-from-unknown-uuid": (
        lambda m, t: {"data.init_from": UNKNOWN_UUID},
        rf"^data.init_from: {UNKNOWN_UUID}: no such checkpoint folder, nor uuid in .*determined "
        r"\(a cluster's checkpoint: download it with `det checkpoint download UUID`",
    ),
    "init-from-neither-model-nor-checkpoint": (
        lambda m, t: {"data.init_from": empty_folder(t)},
        r"^data.init_from: .*/empty is neither a Hugging Face model folder \(config.json\) nor "
        r"a checkpoint of this trial \(state_dict.pth\)$",
    ),
    "max-seq-length-past-positions": (
        lambda m, t: {"hyperparameters.max_seq_length": 65},
        r"max_seq_length: 65 is more than the 64 positions .* use at most 64",
    ),
    "precision": (
        lambda m, t: {"hyperparameters.precision": "fp8"},
        r"precision: 'fp8' is not one of auto, fp32, bf16, fp16",
    ),
}


def apply(config: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        section, name = key.split(".")
        config[section][name] = value
    return config


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_bad_model_settings_fail_before_any_data_work(case, local_config, tiny_model_dir, tmp_path):
    overrides, message = MODEL_CASES[case]
    apply(local_config, overrides(tiny_model_dir, tmp_path))
    with pytest.raises(constants.ConfigError, match=message):
        local_run.run_local(model_def.run, local_config)
    assert not (tmp_path / "xdg-cache").exists()  # nothing was tokenized or cached


def test_batch_that_does_not_split_over_the_slots(local_config, monkeypatch):
    local_config["hyperparameters"]["global_batch_size"] = 9
    with local_run.local_context(local_config) as context:
        monkeypatch.setattr(context.distributed, "get_size", lambda: 2)
        with pytest.raises(
            constants.ConfigError,
            match="global_batch_size: 9 examples do not split evenly across 2",
        ):
            built_trial(context)


def write_config(config: dict, tmp_path: pathlib.Path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"data.task": "MRPCC"}, "error: data.task: unknown GLUE task 'MRPCC'; choose one of"),
        ({"data.data_dri": "x"}, "error: data: unknown key(s) data_dri; known:"),
        ({"hyperparameters.learnig_rate": 1}, "error: hyperparameters: unknown key(s) learnig"),
        ({"data.data_dir": "EMPTY"}, "error: GLUE MRPC data not found in"),
        ({"data.data_dir": "BAD_TSV"}, "error: BAD_TSV/MRPC/dev.tsv:22: expected 5 tab-separated"),
        ({"data.init_from": 5}, "error: data.init_from: 5 names no model or checkpoint; give"),
    ],
    ids=["task", "data-key", "hparam-key", "no-data", "bad-tsv", "init-from-value"],
)
def test_cli_reports_user_errors_in_one_line(edit, message, local_config, glue_dir, tmp_path):
    bad = tmp_path / "bad_glue"
    shutil.copytree(glue_dir / "MRPC", bad / "MRPC")
    with open(bad / "MRPC/dev.tsv", "a") as f:
        f.write("1\tonly\tthree\n")  # line 22, after the header and 20 rows
    paths = {"EMPTY": str(tmp_path / "empty"), "BAD_TSV": str(bad)}
    edit = {key: paths.get(value, value) for key, value in edit.items()}
    message = message.replace("BAD_TSV", str(bad))
    with pytest.raises(SystemExit) as exit_:
        model_def.main([write_config(apply(local_config, edit), tmp_path)])
    assert str(exit_.value.code).startswith(message)
    assert "\n" not in str(exit_.value.code)


def test_hub_name_without_network_says_so(local_config, tmp_path):
    local_config["data"]["model_name_or_path"] = "bert-base-uncased"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    run = subprocess.run(
        [sys.executable, str(REPO / "model_def.py"), write_config(local_config, tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: data.model_name_or_path: 'bert-base-uncased' is not a local")
    assert "needs the network" in last and "save_pretrained" in last
    assert "Traceback" not in run.stderr


def test_position_limits_of_other_model_types():
    from transformers import RobertaConfig, XLNetConfig

    roberta = RobertaConfig(max_position_embeddings=66, pad_token_id=1)  # positions from 2
    pretrained.check_positions(roberta, 64, "r")
    with pytest.raises(constants.ConfigError, match="65 is more than the 64 positions r"):
        pretrained.check_positions(roberta, 65, "r")
    pretrained.check_positions(XLNetConfig(), 4096, "x")  # relative positions: no limit


def test_searcher_metric_the_task_does_not_report(local_config, tmp_path):
    """Checked when the trial is built, on a cluster as in a local run: one line, the choices."""
    local_config["data"]["task"] = "STS-B"
    local_config["searcher"].update(metric="acc", smaller_is_better=False)
    with pytest.raises(SystemExit) as exit_:
        model_def.main([write_config(local_config, tmp_path)])
    assert str(exit_.value.code) == (
        "error: searcher.metric: 'acc' is not a metric the trial reports for STS-B; "
        "choose one of validation_loss, pearson, spearmanr, corr, glue_score"
    )


def cli_error(config: dict, tmp_path: pathlib.Path) -> str:
    """What `python model_def.py CONFIG` exits with, when it stops on an error."""
    with pytest.raises(SystemExit) as exit_:
        model_def.main([write_config(config, tmp_path), "--no-tensorboard"])
    return str(exit_.value.code)


def diverging_stsb(glue_dir: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    """STS-B whose training scores are 1e30: finite, but their squared error is not in fp32."""
    folder = tmp_path / "diverging"
    shutil.copytree(glue_dir / "STS-B", folder / "STS-B")
    train = folder / "STS-B" / "train.tsv"
    header, *rows = train.read_text().splitlines()
    train.write_text("".join(f"{line}\n" for line in [header, *(r[:-5] + "1e30" for r in rows)]))
    return folder


def test_a_diverged_run_stops_at_the_batch_in_one_line(local_config, glue_dir, tmp_path):
    local_config["data"].update(task="STS-B", data_dir=str(diverging_stsb(glue_dir, tmp_path)))
    local_config["hyperparameters"].update(precision="fp32", warmup_ratio=0.0)
    assert cli_error(local_config, tmp_path) == (
        "error: the training loss is inf at batch 1 (learning rate 0.003, precision fp32): "
        "training diverged; lower hyperparameters.learning_rate, or train in bf16 or fp32"
    )
    assert not (tmp_path / "xdg-data").exists()  # no checkpoint of a diverged model


BAD_LEVERS = {
    "precision": ("fp8", "'fp8' is not one of auto, fp32, bf16, fp16"),
    "group_by_length": ("false", "'false' is not one of auto, true, false"),
    "fused_adamw": (1, "1 is not one of auto, true, false"),
    "fast_dropout": ("yes", "'yes' is not one of auto, true, false"),
    "packing": ("false", "'false' is not one of auto, true, false"),
    "cuda_graphs": ("on", "'on' is not one of auto, true, false"),
    "torch_compile": ("auto", "'auto' is not one of true, false"),
    "pad_to_max_length": ("no", "'no' is not one of true, false"),
    "dataloader_workers": (-1, "-1 is not auto or a count >= 0"),
    "attn_implementation": (3, "3 is not auto or an attention name"),
    "model_type": ("bart", "unknown model type 'bart'; choose one of auto, bert"),
    "early_stopping_patience": (0, "0 is not an integer >= 1 (validations without improvement) or"),
    "early_stopping_min_delta": ("0.01", "'0.01' is not a number >= 0"),
}
DEVICE_LEVERS = {  # values that only this device (a CPU) refuses
    "precision": (
        "fp16",
        "fp16 autocast with a loss scaler needs a CUDA GPU; set hyperparameters.precision: bf16 "
        "or fp32",
    ),
    "cuda_graphs": (
        True,
        "CUDA graphs (torch.compile's cudagraphs backend, no Inductor) needs a CUDA GPU; set "
        "hyperparameters.cuda_graphs: false",
    ),
}


@pytest.mark.parametrize(
    ("lever", "value", "message"),
    [(lever, *case) for lever, case in BAD_LEVERS.items()]
    + [(lever, *case) for lever, case in DEVICE_LEVERS.items()],
    ids=[*BAD_LEVERS, *(f"{lever}-on-a-cpu" for lever in DEVICE_LEVERS)],
)
def test_every_lever_refuses_a_bad_value_in_one_line(lever, value, message, local_config, tmp_path):
    local_config["hyperparameters"][lever] = value
    error = cli_error(local_config, tmp_path)
    assert error.startswith(f"error: hyperparameters.{lever}: {message}") and "\n" not in error
    assert not (tmp_path / "xdg-cache").exists()  # before any data was featurized


def test_a_searcher_of_another_length_is_one_line(local_config, tmp_path):
    local_config["searcher"].update(time_metric="batches", max_time=100)
    assert cli_error(local_config, tmp_path) == (
        "error: searcher: time_metric 'batches' and max_time 100 must be 'epochs' and 2, the "
        "run's length (hyperparameters.num_train_epochs)"
    )


def test_a_data_mistake_ends_the_run_before_the_model_loads(local_config, tmp_path, monkeypatch):
    def loaded(*args):
        raise AssertionError("the model's weights loaded before the data was read")

    monkeypatch.setattr(model_def.BertPyTorch, "_pretrained", loaded)
    local_config["data"]["data_dir"] = str(tmp_path / "empty")
    assert cli_error(local_config, tmp_path).startswith("error: GLUE MRPC data not found in")


def other_classifiers(tmp_path: pathlib.Path) -> dict[str, str]:
    """Sequence classifiers that the tiny BERT cannot start from: another architecture, and a
    BERT of another width."""
    shape = {"num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    models = {
        "roberta": RobertaForSequenceClassification(
            RobertaConfig(vocab_size=50, hidden_size=32, max_position_embeddings=66, **shape)
        ),
        "wider-bert": BertForSequenceClassification(
            BertConfig(vocab_size=50, hidden_size=48, max_position_embeddings=64, **shape)
        ),
    }
    for name, model in models.items():
        model.save_pretrained(tmp_path / name)
    return {name: str(tmp_path / name) for name in models}


@pytest.mark.parametrize(
    ("source", "differs"),
    [
        ("roberta", "it lacks 39 of the 39 weights needed, bert.embeddings.word_embeddings.weight"),
        ("wider-bert", "in shape, bert.embeddings.word_embeddings.weight first: 50x48 there"),
    ],
)
def test_init_from_a_model_that_does_not_fit_is_one_line(
    source, differs, local_config, tiny_model_dir, tmp_path
):
    folder = other_classifiers(tmp_path)[source]
    local_config["data"]["init_from"] = folder
    error = cli_error(local_config, tmp_path)
    assert error.startswith(f"error: data.init_from: {folder} (a ") and "\n" not in error
    assert differs in error
    assert f"does not fit the 'bert' model of data.model_name_or_path {tiny_model_dir}" in error
