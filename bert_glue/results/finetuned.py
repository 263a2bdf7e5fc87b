"""A fine-tuned model back from a checkpoint of the trial in model_def.py.

A checkpoint is a directory with Determined's state_dict.pth and load_data.json (the trial's
hyperparameters and experiment config). Local runs write them under
$XDG_DATA_HOME/determined (~/.local/share/determined/<uuid>); from a cluster, download one:

    det -m <master> checkpoint download <uuid> --output-dir ckpt
    # or in Python: determined.experimental.client.get_checkpoint("<uuid>").download("ckpt")

The model is rebuilt from the same task table and model config the trial used, so
predict.py and export.py need only this directory (and the pre-trained model's config and
tokenizer, read from data.model_name_or_path as in training). read() gives what the checkpoint
holds without building the model: the weights that data.init_from starts a run from.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import torch
from transformers import PreTrainedModel

import constants
from bert_glue.determined_0_38 import workarounds
from bert_glue.trial import custom_task, pretrained, trial_config


@dataclasses.dataclass
class Saved:
    """What a checkpoint holds of the trial: its settings, its task and the model's weights."""

    task: constants.GlueTask
    hparams: dict  # with the trial's defaults filled in
    data_config: dict
    weights: dict[str, torch.Tensor]  # the model's state_dict, on the CPU


@dataclasses.dataclass
class FineTuned:
    task: constants.GlueTask
    hparams: dict  # with the trial's defaults filled in
    data_config: dict
    model: PreTrainedModel  # in eval mode, on the CPU
    tokenizer: object


def read(path: str | os.PathLike) -> Saved:
    path = pathlib.Path(path)
    files = [path / "load_data.json", path / "state_dict.pth"]
    if not all(f.is_file() for f in files):
        raise FileNotFoundError(
            f"{path}: not a checkpoint of this trial (expected load_data.json and "
            "state_dict.pth); download a cluster checkpoint with `det checkpoint download UUID`"
        )
    load_data = json.loads(files[0].read_text())
    hparams, data_config = trial_config.settings(
        load_data["hparams"], load_data["experiment_config"]["data"]
    )
    # Determined pickles RNG states (numpy arrays) beside the weights, which weights_only
    # refuses: load only checkpoints you trust, as with any pickle.
    with workarounds.loadable_rng_state():
        state = torch.load(files[1], map_location="cpu")
    weights = state["models_state_dict"][0]
    torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(weights, "module.")  # DDP
    return Saved(task_of(data_config, state), hparams, data_config, weights)


def load(path: str | os.PathLike) -> FineTuned:
    saved = read(path)
    name = saved.data_config["model_name_or_path"]
    model_type = saved.hparams["model_type"]
    model_class = constants.get_model_classes(model_type).model
    # Built from the config alone: every weight comes from the checkpoint.
    config = pretrained.task_model_config(saved.task, model_type, name)
    model = model_class.from_config(config) if model_type == "auto" else model_class(config)
    model.load_state_dict(saved.weights)
    tokenizer = pretrained.tokenizer(model_type, name)
    return FineTuned(saved.task, saved.hparams, saved.data_config, model.eval(), tokenizer)


def export(checkpoint_dir: str | os.PathLike, output_dir: str | os.PathLike) -> None:
    """The checkpoint as a Hugging Face model folder: the model and its tokenizer."""
    trained = load(checkpoint_dir)
    trained.model.save_pretrained(output_dir)
    trained.tokenizer.save_pretrained(output_dir)


def task_of(data_config: dict, state: dict) -> constants.GlueTask:
    """The checkpoint's task; a custom one with the label names it was trained with, which need
    no training file (trial/callbacks.py's TaskLabels records them)."""
    if str(data_config["task"]).lower() != custom_task.NAME:
        return custom_task.task_from_config(data_config)
    return custom_task.task_from_config(data_config, state["callbacks"]["task_labels"]["labels"])
