"""Check data.model_name_or_path before anything is loaded, so a wrong model fails in seconds.

transformers is lenient where a fine-tuning run should not be: a folder without tokenizer files
gives a tokenizer of five special tokens (every word becomes [UNK]), a model of another type
loads whichever weights share names and initialises the rest, and sequences longer than the
position table only fail mid-training. Each is an error here that names the key and the fix.
"""

from __future__ import annotations

import pathlib

from transformers.utils import (
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
)

import constants
from constants import ConfigError, GlueTask

WEIGHT_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)
KEY = "data.model_name_or_path"


def check_pretrained(name: str, model_type: str, task: GlueTask, max_seq_length: int) -> None:
    config_class, _, tokenizer_class = constants.get_model_classes(model_type)
    folder = pathlib.Path(name).expanduser()
    if folder.is_dir():
        check_folder(folder, tokenizer_class)
    elif name.startswith(("/", ".", "~")):
        raise ConfigError(f"{KEY}: no folder {folder}")
    try:
        raw, _ = config_class.get_config_dict(name)
    except OSError as e:  # not on disk, and the Hub is unreachable or has no such model
        raise ConfigError(
            f"{KEY}: {name!r} is not a local folder, and the Hugging Face Hub could not provide "
            f"it ({str(e).splitlines()[0]}). A Hub name needs the network the first time (it is "
            "cached in HF_HOME after); without one, save the model with save_pretrained() on a "
            f"machine that has it and set {KEY} to that folder."
        ) from None
    if raw.get("model_type") not in (None, model_type):  # None: an old config; trust it
        raise ConfigError(
            f"hyperparameters.model_type: {name} is a {raw.get('model_type')!r} model, not "
            f"{model_type!r}; set model_type to match it"
        )
    config = config_class.from_dict(raw)
    check_positions(config, model_type, max_seq_length, name)
    check_head(config, task, name)


def check_folder(folder: pathlib.Path, tokenizer_class) -> None:
    """A save_pretrained() folder: config.json, weights and the tokenizer's files."""
    files = {p.name for p in folder.iterdir()}
    missing = []
    if "config.json" not in files:
        missing.append("config.json")
    if not files & set(WEIGHT_FILES):
        missing.append(f"weights ({' or '.join(WEIGHT_FILES)})")
    # A tokenizer loads from its one-file form (tokenizer.json) or from all its vocab files.
    names = dict(tokenizer_class.vocab_files_names)
    one_file = names.pop("tokenizer_file", None)
    if one_file not in files and not set(names.values()) <= files:
        options = [one_file] if one_file else []
        missing.append(f"tokenizer files ({' or '.join([*options, ' + '.join(names.values())])})")
    if missing:
        raise ConfigError(
            f"{KEY}: {folder} lacks {', '.join(missing)}. Save both the model and its tokenizer "
            "there with save_pretrained(), or point the key at a complete folder."
        )


def check_positions(config, model_type: str, max_seq_length: int, name: str) -> None:
    positions = config.max_position_embeddings
    if positions < 0:  # XLNet says -1: its relative positions have no table to run past
        return
    if model_type == "roberta":  # RoBERTa numbers positions from pad_token_id + 1
        positions -= config.pad_token_id + 1
    if max_seq_length > positions:
        raise ConfigError(
            f"hyperparameters.max_seq_length: {max_seq_length} is more than the {positions} "
            f"positions {name} was pre-trained with; use at most {positions}"
        )


def check_head(config, task: GlueTask, name: str) -> None:
    """A folder fine-tuned for classification must have as many labels as the task."""
    heads = [a for a in config.architectures or [] if a.endswith("ForSequenceClassification")]
    if heads and config.num_labels != task.num_labels:
        raise ConfigError(
            f"{KEY}: {name} is a classifier with {config.num_labels} labels (config.json "
            f"id2label) but {task.name} has {task.num_labels}; start from a model without a "
            f"classification head, or one fine-tuned for a task with {task.num_labels} labels"
        )
