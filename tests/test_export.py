"""A trained checkpoint -> a Hugging Face folder that Auto* classes and pipelines load."""

from __future__ import annotations

import pytest
import torch
from test_predict import last_checkpoint
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

import constants
import data
import export
import model_def
import predict
from bert_glue.local import local_run


@pytest.mark.parametrize("task_name", ["MRPC", "STS-B"])  # named labels, a regression
def test_export_round_trip(task_name, local_config, glue_dir, tmp_path, monkeypatch):
    trials = []
    original_init = model_def.BertPyTorch.__init__

    def keep(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        trials.append(self)

    monkeypatch.setattr(model_def.BertPyTorch, "__init__", keep)
    local_config["data"]["task"] = task_name
    local_run.run_local(model_def.run, local_config)
    (trial,) = trials  # its model now holds the final weights, those of the last checkpoint
    task = constants.TASKS[task_name]

    out = tmp_path / "hf_model"
    export.main([str(last_checkpoint(tmp_path / "xdg-data")), str(out)])
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)

    names = task.label_names or task.labels or ("score",)
    assert model.config.id2label == dict(enumerate(names))
    assert model.config.label2id == {name: i for i, name in enumerate(names)}
    if task_name == "MRPC":  # the GLUE dataset card's names, not the files' "0" and "1"
        assert model.config.id2label == {0: "not_equivalent", 1: "equivalent"}
    examples = data.read_examples(task, task.dev[""], glue_dir)
    text_a, text_b = examples.text_a[:6], examples.text_b[:6]
    inputs = tokenizer(text_a, text_b, padding=True, return_tensors="pt")
    with torch.inference_mode():
        exported = model(**inputs).logits
        trained = trial.model.eval()(**inputs).logits
    torch.testing.assert_close(exported, trained)

    classify = pipeline("text-classification", model=str(out))
    result = classify({"text": text_a[0], "text_pair": text_b[0]})
    if task.is_regression:  # the raw score, no sigmoid
        assert result["label"] == "score"
        assert result["score"] == pytest.approx(exported[0, 0].item(), abs=1e-5)
    else:
        probabilities = exported[0].softmax(-1)
        assert result["label"] == names[probabilities.argmax()]
        assert result["score"] == pytest.approx(probabilities.max().item(), abs=1e-5)


@pytest.mark.parametrize(
    "main, flags", [(export.main, []), (predict.main, ["--output-dir"])], ids=["export", "predict"]
)
def test_a_folder_that_is_no_checkpoint_is_one_error_line(main, flags, tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "model"), *flags, str(tmp_path / "out")])
    assert str(stop.value) == (
        f"error: {tmp_path / 'model'}: not a checkpoint of this trial (expected load_data.json "
        "and state_dict.pth); download a cluster checkpoint with `det checkpoint download UUID`"
    )
    assert not (tmp_path / "out").exists()
