"""A fine-tuned model back from a checkpoint of the trial in model_def.py.

A checkpoint is a directory with Determined's state_dict.pth and load_data.json (the trial's
hyperparameters and experiment config). Local runs write them under
$XDG_DATA_HOME/determined (~/.local/share/determined/<uuid>); from a cluster, download one:

    det -m <master> checkpoint download <uuid> --output-dir ckpt
    # or in Python: determined.experimental.client.get_checkpoint("<uuid>").download("ckpt")

The model is rebuilt from the same task table and model config the trial used, so
predict.py and export.py need only this directory (and the pre-trained model's config and
tokenizer, read from data.model_name_or_path as in training). trial/checkpointing.py's read() gives
what the checkpoint holds without building the model: the weights data.init_from starts from.
"""

from __future__ import annotations

import dataclasses
import os

from transformers import PreTrainedModel

import constants
from bert_glue.trial import checkpointing, pretrained
from bert_glue.trial.settings import Settings


@dataclasses.dataclass
class FineTuned:
    task: constants.GlueTask
    settings: Settings
    model: PreTrainedModel  # in eval mode, on the CPU
    tokenizer: object


def load(path: str | os.PathLike) -> FineTuned:
    saved = checkpointing.read(path)
    name = saved.settings.data.model_name_or_path
    model_type = saved.settings.hparams.model_type
    classes = saved.settings.model_classes
    # Built from the config alone: every weight comes from the checkpoint.
    config = pretrained.task_model_config(saved.task, model_type, name)
    model = classes.model.from_config(config) if model_type == "auto" else classes.model(config)
    model.load_state_dict(saved.weights)
    tokenizer = classes.tokenizer.from_pretrained(name)
    return FineTuned(saved.task, saved.settings, model.eval(), tokenizer)


def export(checkpoint_dir: str | os.PathLike, output_dir: str | os.PathLike) -> None:
    """The checkpoint as a Hugging Face model folder: the model and its tokenizer."""
    trained = load(checkpoint_dir)
    trained.model.save_pretrained(output_dir)
    trained.tokenizer.save_pretrained(output_dir)
