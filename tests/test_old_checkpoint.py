"""A checkpoint written by an earlier layout of the project still resumes, predicts and exports.

tests/fixtures/checkpoint_d1e5d16/ holds two local checkpoints (after epochs 1 and 2) of a
2-epoch RTE run made with the project at commit d1e5d16, before the code moved into bert_glue/:
the tiny BERT of conftest.py (seed 0) on conftest's synthetic RTE files (the glue_dir fixture's),
batch 8, learning rate 3e-3, max_seq_length 32, fp32. Their code/ copies are left out. That run's
last validation loss was 0.6881065964698792, after 12 batches.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest
import yaml
from conftest import REPO
from transformers import AutoModelForSequenceClassification

import constants
import export
import model_def
import predict
from bert_glue.local import local_run
from bert_glue.results import finetuned, predictions

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "checkpoint_d1e5d16"
OLD_FINAL_LOSS = 0.6881065964698792


@pytest.fixture
def old_checkpoints(glue_dir, tmp_path) -> dict[str, pathlib.Path]:
    """The fixture's checkpoints, pointed at this machine's copy of the model and the data."""
    folders = {}
    for name in ("epoch1", "epoch2"):
        folder = shutil.copytree(FIXTURE / name, tmp_path / "old" / name)
        load_data = json.loads((folder / "load_data.json").read_text())
        load_data["experiment_config"]["data"].update(
            model_name_or_path=str(FIXTURE / "tiny-bert"),
            data_dir=str(glue_dir),
            cache_dir=str(tmp_path / "cache"),
        )
        (folder / "load_data.json").write_text(json.dumps(load_data))
        folders[name] = folder
    return folders


def test_an_old_checkpoint_resumes_to_the_old_runs_end(old_checkpoints, glue_dir, tmp_path):
    config = yaml.safe_load((REPO / "const.yaml").read_text())
    config["data"].update(
        task="RTE",
        model_name_or_path=str(FIXTURE / "tiny-bert"),
        data_dir=str(glue_dir),
        download_data=False,
        cache_dir=str(tmp_path / "cache"),
    )
    config["hyperparameters"].update(
        global_batch_size=8, learning_rate=3e-3, num_train_epochs=2, max_seq_length=32
    )
    config["hyperparameters"]["precision"] = "fp32"
    config["searcher"].update(metric="validation_loss", smaller_is_better=True)
    validations = local_run.run_local(model_def.run, config, resume=str(old_checkpoints["epoch1"]))
    assert [v["batches"] for v in validations] == [12]  # epoch 2 only
    assert validations[-1]["validation_loss"] == pytest.approx(OLD_FINAL_LOSS, rel=1e-6)


def test_an_old_checkpoint_predicts_and_exports(old_checkpoints, glue_dir, tmp_path):
    trained = finetuned.load(old_checkpoints["epoch2"])
    assert trained.task is constants.TASKS["RTE"]
    (written,) = predictions.write_predictions(trained, glue_dir, tmp_path / "out", 4)
    rows = written.read_text().splitlines()
    assert rows[0] == "index\tprediction" and len(rows) == 1 + 12
    assert {row.split("\t")[1] for row in rows[1:]} <= set(constants.ENTAILMENT)

    export.main([str(old_checkpoints["epoch2"]), str(tmp_path / "hf_model")])
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf_model")
    assert model.config.id2label == dict(enumerate(constants.ENTAILMENT))


@pytest.mark.parametrize("script", ["predict", "export"])
def test_an_old_checkpoint_without_its_model_says_how_to_point_at_a_copy(
    script, glue_dir, tmp_path
):
    """Its data.model_name_or_path names a folder of the machine it was trained on."""
    folder = shutil.copytree(FIXTURE / "epoch2", tmp_path / "epoch2")
    load_data = json.loads((folder / "load_data.json").read_text())
    load_data["experiment_config"]["data"].update(
        model_name_or_path=str(tmp_path / "gone"), data_dir=str(glue_dir)
    )
    (folder / "load_data.json").write_text(json.dumps(load_data))
    out = tmp_path / "out"
    main, flags = {"predict": (predict.main, ["--output-dir"]), "export": (export.main, [])}[script]

    with pytest.raises(SystemExit) as stop:
        main([str(folder), *flags, str(out)])
    assert str(stop.value) == (
        f"error: {folder} is an older checkpoint, without its model's config and tokenizer, "
        f"and its data.model_name_or_path {tmp_path / 'gone'} is neither a folder here nor a "
        "model the Hugging Face Hub could provide; pass --model PATH, a copy of the pre-trained "
        "model it was fine-tuned from (its folder, or its Hub name)"
    )
    assert not out.exists()

    assert main([str(folder), *flags, str(out), "--model", str(FIXTURE / "tiny-bert")]) == 0
    if script == "predict":
        assert len((out / "RTE.tsv").read_text().splitlines()) == 1 + 12
    else:
        model = AutoModelForSequenceClassification.from_pretrained(out)
        assert model.config.id2label == dict(enumerate(constants.ENTAILMENT))
