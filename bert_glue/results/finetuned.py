"""A fine-tuned model back from a checkpoint of the trial in model_def.py.

A checkpoint is a directory with Determined's state_dict.pth and load_data.json (the trial's
hyperparameters and experiment config), and the model's config and tokenizer files in
tokenizer_and_config/ (trial/checkpointing.py's MODEL_FILES). Local runs write them under
$XDG_DATA_HOME/determined (~/.local/share/determined/<uuid>); from a cluster, download one:

    det -m <master> checkpoint download <uuid> --output-dir ckpt
    # or in Python: determined.experimental.client.get_checkpoint("<uuid>").download("ckpt")

The model is rebuilt from the same task table and model config the trial used, so predict.py
and export.py need only this directory. Checkpoints saved before they held the config and
tokenizer read them from the pre-trained model they were fine-tuned from: their
data.model_name_or_path, or where that is not at hand, the copy that --model names.
trial/checkpointing.py's read() gives what the checkpoint holds without building the model: the
weights data.init_from starts from.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

from transformers import PreTrainedModel

import constants
from bert_glue.trial import checkpointing, pretrained
from bert_glue.trial.settings import Settings
from constants import ConfigError


@dataclasses.dataclass
class FineTuned:
    task: constants.GlueTask
    settings: Settings
    model: PreTrainedModel  # in eval mode, on the CPU
    tokenizer: object


def load(path: str | os.PathLike, model_name_or_path: str | None = None) -> FineTuned:
    """The checkpoint's model and tokenizer. model_name_or_path: for a checkpoint without its
    config and tokenizer (an older one), the pre-trained model to read them from in place of
    the checkpoint's data.model_name_or_path."""
    saved = checkpointing.read(path)
    source = model_files(pathlib.Path(path), saved.settings, model_name_or_path)
    model_type = saved.settings.hparams.model_type
    classes = saved.settings.model_classes
    # Built from the config alone: every weight comes from the checkpoint.
    config = pretrained.task_model_config(saved.task, model_type, source)
    model = classes.model.from_config(config) if model_type == "auto" else classes.model(config)
    model.load_state_dict(saved.weights)
    tokenizer = classes.tokenizer.from_pretrained(source)
    return FineTuned(saved.task, saved.settings, model.eval(), tokenizer)


def model_files(
    checkpoint: pathlib.Path, settings: Settings, model_name_or_path: str | None
) -> str:
    """Where the model's config and tokenizer are read from: the checkpoint's own copy; for an
    older checkpoint, which has none, model_name_or_path or the checkpoint's
    data.model_name_or_path (a folder or a Hub name)."""
    own = checkpoint / checkpointing.MODEL_FILES
    if own.is_dir():
        if model_name_or_path is not None:
            raise ConfigError(
                f"--model {model_name_or_path}: {checkpoint} holds its model's config and "
                f"tokenizer ({own.name}/); leave --model out"
            )
        return str(own)
    name = model_name_or_path or settings.data.model_name_or_path
    given = f"--model {name}" if model_name_or_path else f"its {pretrained.MODEL_KEY} {name}"
    try:
        pretrained.config_dict(name, given)
    except ConfigError:
        raise ConfigError(
            f"{checkpoint} is an older checkpoint, without its model's config and tokenizer, "
            f"and {given} is neither a folder here nor a model the Hugging Face Hub could "
            "provide; pass --model PATH, a copy of the pre-trained model it was fine-tuned from "
            "(its folder, or its Hub name)"
        ) from None
    return name


def export(
    checkpoint_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    model_name_or_path: str | None = None,
) -> None:
    """The checkpoint as a Hugging Face model folder: the model and its tokenizer."""
    trained = load(checkpoint_dir, model_name_or_path)
    output_dir = pathlib.Path(output_dir)
    trained.model.save_pretrained(output_dir)
    trained.tokenizer.save_pretrained(output_dir)
    # safetensors 0.8.0 writes the weights through a temporary file created with mode 0600,
    # whatever the umask (safetensors issue #782, open): they get the mode that the files
    # saved beside them got. Not needed once safetensors creates its files under the umask.
    mode = (output_dir / "config.json").stat().st_mode & 0o777
    for weights in output_dir.glob("*.safetensors"):
        weights.chmod(mode)
