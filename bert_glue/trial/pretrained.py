"""Check data.model_name_or_path before anything is loaded, so a wrong model fails in seconds.

transformers is lenient where a fine-tuning run should not be: a folder without tokenizer files
gives a tokenizer of five special tokens (every word becomes [UNK]), a model of another type
loads whichever weights share names and initialises the rest, and sequences longer than the
position table only fail mid-training. Each is an error here that names the key and the fix.
"""

from __future__ import annotations

import json
import pathlib

import transformers
from transformers import CONFIG_MAPPING, PretrainedConfig
from transformers.models.auto.tokenization_auto import (
    TOKENIZER_MAPPING_NAMES,
    tokenizer_class_from_name,
)
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
# Model types whose position ids start after pad_token_id (RoBERTa's embeddings).
POSITIONS_AFTER_PAD = ("roberta", "xlm-roberta", "camembert")


def check_pretrained(name: str, model_type: str, task: GlueTask, max_seq_length: int) -> None:
    classes = constants.get_model_classes(model_type)
    folder = pathlib.Path(name).expanduser()
    if folder.is_dir():
        check_folder(
            folder, auto_tokenizer_class(folder) if model_type == "auto" else classes.tokenizer
        )
    elif name.startswith(("/", ".", "~")):
        raise ConfigError(f"{KEY}: no folder {folder}")
    raw = config_dict(name, KEY)
    if model_type != "auto" and raw.get("model_type") not in (None, model_type):  # None: old
        raise ConfigError(
            f"hyperparameters.model_type: {name} is a {raw.get('model_type')!r} model, not "
            f"{model_type!r}; set model_type to match it, or to auto"
        )
    config = auto_config(raw, name) if model_type == "auto" else classes.config.from_dict(raw)
    check_positions(config, max_seq_length, name)
    check_head(config, task, name)


def config_dict(name: str, key: str) -> dict:
    """config.json of a model folder or Hub name; one that cannot be had is an error naming key."""
    try:
        raw, _ = PretrainedConfig.get_config_dict(name)
    except OSError as e:  # not on disk, and the Hub is unreachable or has no such model
        raise ConfigError(
            f"{key}: {name!r} is not a local folder, and the Hugging Face Hub could not provide "
            f"it ({str(e).splitlines()[0]}). A Hub name needs the network the first time (it is "
            "cached in HF_HOME after); without one, save the model with save_pretrained() on a "
            f"machine that has it and set {key} to that folder."
        ) from None
    return raw


def auto_config(raw: dict, name: str) -> PretrainedConfig:
    """The config class config.json's model_type names, as AutoConfig picks it."""
    if raw.get("model_type") not in CONFIG_MAPPING:
        raise ConfigError(
            f"{KEY}: {name}'s config.json has model_type {raw.get('model_type')!r}, which "
            f"transformers {transformers.__version__} does not know; model_type: auto needs one "
            "it does"
        )
    return CONFIG_MAPPING[raw["model_type"]].from_dict(raw)


def auto_tokenizer_class(folder: pathlib.Path) -> type:
    """The tokenizer class AutoTokenizer loads from the folder: tokenizer_config.json's
    tokenizer_class, else the one of config.json's model_type."""
    settings = folder / "tokenizer_config.json"
    name = json.loads(settings.read_text()).get("tokenizer_class") if settings.is_file() else None
    if name is None and (folder / "config.json").is_file():
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        name = TOKENIZER_MAPPING_NAMES.get(model_type)
    tokenizer_class = tokenizer_class_from_name(name) if name else None
    if tokenizer_class is None:
        raise ConfigError(
            f"{KEY}: {folder} names no tokenizer class this transformers has (tokenizer_config."
            "json tokenizer_class, or config.json model_type); save its tokenizer there with "
            "save_pretrained()"
        )
    return tokenizer_class


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


def check_positions(config, max_seq_length: int, name: str) -> None:
    positions = getattr(config, "max_position_embeddings", -1)  # none: no table to run past
    if positions < 0:  # XLNet says -1: its relative positions have no table to run past
        return
    if config.model_type in POSITIONS_AFTER_PAD:  # they number positions from pad_token_id + 1
        positions -= config.pad_token_id + 1
    if max_seq_length > positions:
        raise ConfigError(
            f"hyperparameters.max_seq_length: {max_seq_length} is more than the {positions} "
            f"positions {name} was pre-trained with; use at most {positions}"
        )


def is_classifier(config: PretrainedConfig) -> bool:
    """Whether config.json says its weights are those of a fine-tuned sequence classifier."""
    return any(a.endswith("ForSequenceClassification") for a in config.architectures or [])


def check_head(config, task: GlueTask, name: str) -> None:
    """A folder fine-tuned for classification must have as many labels as the task: its head
    loads with the model. data.init_from takes a classifier of any other task instead."""
    if is_classifier(config) and config.num_labels != task.num_labels:
        raise ConfigError(
            f"{KEY}: {name} is a classifier with {config.num_labels} labels (config.json "
            f"id2label) but {task.name} has {task.num_labels}; start from a model without a "
            f"classification head, or one fine-tuned for a task with {task.num_labels} labels, "
            f"or set data.init_from to it and {KEY} to the model it was fine-tuned from"
        )


def label_names(task: GlueTask) -> tuple[str, ...]:
    """The names of the classifier's outputs, as config.json's id2label (and export.py) gives
    them: the task's label names, or STS-B's one regression output."""
    return task.label_names or task.labels or ("score",)


def checked_model_config(task: GlueTask, hp: dict, model_name_or_path: str):
    """The task's model config, once check_pretrained has found nothing wrong."""
    check_pretrained(model_name_or_path, hp["model_type"], task, hp["max_seq_length"])
    return task_model_config(task, hp["model_type"], model_name_or_path)


def tokenizer(model_type: str, model_name_or_path: str):
    return constants.get_model_classes(model_type).tokenizer.from_pretrained(model_name_or_path)


def task_model_config(task: GlueTask, model_type: str, model_name_or_path: str):
    """The pre-trained model's config with the task's head: its label names, or regression."""
    config_class = constants.get_model_classes(model_type).config
    names = label_names(task)
    return config_class.from_pretrained(
        model_name_or_path,
        finetuning_task=task.name.lower(),
        id2label=dict(enumerate(names)),
        label2id={label: i for i, label in enumerate(names)},
        problem_type="regression" if task.is_regression else "single_label_classification",
    )
