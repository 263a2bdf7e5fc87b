"""The weights a trial starts from: data.model_name_or_path's pre-trained model, checked before
anything loads, or, with data.init_from, another fine-tuned model's.

data.model_name_or_path is checked first, so that a wrong model fails in seconds. transformers
is lenient where a fine-tuning run should not be: a folder without tokenizer files gives a
tokenizer of five special tokens (every word becomes [UNK]), a model of another type loads
whichever weights share names and initialises the rest, and sequences longer than the position
table only fail mid-training. Each is an error here that names the key and the fix.

data.init_from fine-tunes starting from another fine-tuned model's weights.
data.model_name_or_path still names the architecture, the tokenizer and the feature cache's key;
data.init_from names only where the starting weights come from:

  * a Hugging Face sequence classifier: a Hub name, or a folder (such as export.py writes);
  * a checkpoint of this trial: its folder, or its uuid; in a local run a uuid is looked up in
    the local checkpoint storage (as --resume does), on a cluster it is downloaded through
    Determined's SDK, once per node, into a cache folder named by the uuid.

The model is built from model_name_or_path as without it, then takes every encoder weight from
the source, which must have them all in the same shapes. The source's classification head is
kept where it predicts the task's labels, compared by name (a regression for a regression);
otherwise the task's head stays the new one from_pretrained initialised, as in a run from the
pre-trained model with the same seed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import re
import tempfile

import appdirs
import torch
import transformers
from determined.common import api
from determined.experimental import client
from transformers import (
    CONFIG_MAPPING,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
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
from bert_glue.determined_0_38 import workarounds
from bert_glue.trial import checkpointing
from bert_glue.trial.settings import Settings
from constants import ConfigError, GlueTask

logger = logging.getLogger(__name__)

WEIGHT_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)
MODEL_KEY = "data.model_name_or_path"
INIT_KEY = "data.init_from"


def check_pretrained(name: str, model_type: str, task: GlueTask, max_seq_length: int) -> None:
    classes = constants.get_model_classes(model_type)
    folder = pathlib.Path(name).expanduser()
    if folder.is_dir():
        check_folder(
            folder, auto_tokenizer_class(folder) if model_type == "auto" else classes.tokenizer
        )
    elif name.startswith(("/", ".", "~")):
        raise ConfigError(f"{MODEL_KEY}: no folder {folder}")
    raw = config_dict(name, MODEL_KEY)
    if model_type != "auto" and raw.get("model_type") not in (None, model_type):  # None: old
        raise ConfigError(
            f"hyperparameters.model_type: {name} is a {raw.get('model_type')!r} model, not "
            f"{model_type!r}; set model_type to match it, or to auto"
        )
    config = auto_config(raw, name) if model_type == "auto" else classes.config.from_dict(raw)
    check_positions(config, max_seq_length, name)
    check_head(config, task, name)


def model_type(settings: Settings) -> str:
    """The model's type: hyperparameters.model_type, or for auto the one its config.json names."""
    if settings.hparams.model_type != "auto":
        return settings.hparams.model_type
    return str(config_dict(settings.data.model_name_or_path, MODEL_KEY).get("model_type"))


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
            f"{MODEL_KEY}: {name}'s config.json has model_type {raw.get('model_type')!r}, which "
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
            f"{MODEL_KEY}: {folder} names no tokenizer class this transformers has "
            "(tokenizer_config.json tokenizer_class, or config.json model_type); save its "
            "tokenizer there with save_pretrained()"
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
            f"{MODEL_KEY}: {folder} lacks {', '.join(missing)}. Save both the model and its "
            "tokenizer there with save_pretrained(), or point the key at a complete folder."
        )


def check_positions(config, max_seq_length: int, name: str) -> None:
    positions = getattr(config, "max_position_embeddings", -1)  # none: no table to run past
    if positions < 0:  # XLNet says -1: its relative positions have no table to run past
        return
    if config.model_type in constants.POSITIONS_AFTER_PAD:
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
            f"{MODEL_KEY}: {name} is a classifier with {config.num_labels} labels (config.json "
            f"id2label) but {task.name} has {task.num_labels}; start from a model without a "
            f"classification head, or one fine-tuned for a task with {task.num_labels} labels, "
            f"or set data.init_from to it and {MODEL_KEY} to the model it was fine-tuned from"
        )


def label_names(task: GlueTask) -> tuple[str, ...]:
    """The names of the classifier's outputs, as config.json's id2label (and export.py) gives
    them: the task's label names, or STS-B's one regression output."""
    return task.label_names or task.labels or ("score",)


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


# data.init_from: the weights of a fine-tuned model in place of the pre-trained ones.

# Determined names every checkpoint by a uuid4; a name that is neither one nor a folder is a
# Hub name.
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclasses.dataclass(frozen=True)
class Source:
    """What data.init_from names, found."""

    name: str  # as the config gives it
    location: str  # a checkpoint's folder, or what from_pretrained loads: a folder, a Hub name
    is_checkpoint: bool


@dataclasses.dataclass(frozen=True)
class Weights:
    """A source's weights and what its classification head predicts."""

    state: dict[str, torch.Tensor]  # keys as the source's model class names them
    head: tuple[str, ...] | None  # its outputs' names (id2label); () a regression; None: no head
    origin: str  # what the source is, for errors


def init_source(name: str | None) -> Source | None:
    """data.init_from checked before anything heavy loads; a uuid on a cluster is downloaded."""
    if name is None:
        return None
    folder = pathlib.Path(name).expanduser()
    if folder.is_dir():
        return _folder(name, folder)
    if name.startswith(("/", ".", "~")):
        raise ConfigError(f"{INIT_KEY}: no folder {folder}")
    if UUID.fullmatch(name):
        master = _cluster_master()
        return _checkpoint(name, str(_downloaded(name, master)) if master else name)
    config_dict(name, INIT_KEY)  # the Hub (or HF_HOME's cache) has it
    return Source(name, name, False)


def _folder(name: str, folder: pathlib.Path) -> Source:
    if (folder / "config.json").is_file():
        if not any((folder / weights).is_file() for weights in WEIGHT_FILES):
            raise ConfigError(f"{INIT_KEY}: {folder} lacks weights ({' or '.join(WEIGHT_FILES)})")
        return Source(name, str(folder.resolve()), False)
    if not (folder / "state_dict.pth").is_file():
        raise ConfigError(
            f"{INIT_KEY}: {folder} is neither a Hugging Face model folder (config.json) nor a "
            "checkpoint of this trial (state_dict.pth)"
        )
    return _checkpoint(name, name)


def _checkpoint(name: str, where: str) -> Source:
    """A checkpoint folder or a uuid in local storage, found as --resume finds it."""
    folder = checkpointing.complete_checkpoint(where, f"{INIT_KEY}: {name}")
    return Source(name, str(folder.resolve()), True)


def _cluster_master() -> str | None:
    """The master's URL when this runs as a trial on a cluster; None in a local run."""
    info = workarounds.cluster_trial()
    return info.master_url if info is not None else None


def download_cache() -> pathlib.Path:
    """Where a node keeps the checkpoints it downloaded, each in a folder named by its uuid."""
    return pathlib.Path(appdirs.user_cache_dir("bert_glue_checkpoints"))


def _downloaded(uuid: str, master: str) -> pathlib.Path:
    """The checkpoint, downloaded through the master's SDK unless this node has it already.
    Its folder appears only complete: it is downloaded beside it, then renamed into place."""
    folder = download_cache() / uuid
    if folder.is_dir():
        return folder
    try:
        checkpoint = client.Determined(master=master).get_checkpoint(uuid)
    except api.errors.NotFoundException:
        raise ConfigError(
            f"{INIT_KEY}: the Determined master at {master} has no checkpoint {uuid}"
        ) from None
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{uuid}.") as staging:
        downloaded = pathlib.Path(checkpoint.download(str(pathlib.Path(staging) / uuid)))
        try:
            downloaded.rename(folder)
        except OSError:
            if not folder.is_dir():  # not another process that was quicker
                raise
    return folder


def load_into(model: PreTrainedModel, source: Source, task: GlueTask) -> PreTrainedModel:
    """The model with the source's encoder weights, and its head where it predicts the task's
    labels; one log line says which head the model has, and why."""
    weights = _weights(source)
    own = model.state_dict()
    task_head = head_of(task)
    kept = weights.head == task_head
    encoder_prefix = f"{model.base_model_prefix}."
    taken = [key for key in own if kept or key.startswith(encoder_prefix)]
    _check_fit(model, own, weights, taken, source)
    model.load_state_dict({key: weights.state[key] for key in taken}, strict=False)
    if kept:
        head = f"kept its {task.name} head ({_outputs(task_head)})"
    elif weights.head is None:
        head = f"a new {task.name} head: it has no classification head"
    else:
        head = (
            f"a new {task.name} head: its labels ({_outputs(weights.head)}) are not "
            f"{task.name}'s ({_outputs(task_head)})"
        )
    logger.info(f"{INIT_KEY}: {source.name}: {head}")
    return model


def _weights(source: Source) -> Weights:
    if source.is_checkpoint:
        saved = checkpointing.read(source.location)
        origin = f"fine-tuned from {saved.settings.data.model_name_or_path}"
        return Weights(saved.weights, head_of(saved.task), origin)
    # A model without a head gets a new one here: it must not draw from the trial's seeded RNG.
    with torch.random.fork_rng(devices=[]):
        model = AutoModelForSequenceClassification.from_pretrained(source.location)
    config, head = model.config, None
    if is_classifier(config):
        regression = config.problem_type == "regression" or config.num_labels == 1
        head = () if regression else tuple(config.id2label[i] for i in range(config.num_labels))
    return Weights(model.state_dict(), head, f"a {config.model_type!r} model")


def head_of(task: GlueTask) -> tuple[str, ...]:
    """What the task's head predicts, named as its id2label names it; () for a regression."""
    return label_names(task) if task.labels else ()


def _check_fit(
    model: PreTrainedModel,
    own: dict[str, torch.Tensor],
    weights: Weights,
    taken: list[str],
    source: Source,
) -> None:
    """Every weight taken must be in the source, in the model's shape."""
    missing = [key for key in taken if key not in weights.state]
    reshaped = [
        key for key in taken if key in weights.state and weights.state[key].shape != own[key].shape
    ]
    if missing:
        differs = f"it lacks {len(missing)} of the {len(taken)} weights needed, {missing[0]} first"
    elif reshaped:
        key = reshaped[0]
        differs = (
            f"{len(reshaped)} weights differ in shape, {key} first: "
            f"{_shape(weights.state[key])} there, {_shape(own[key])} here"
        )
    else:
        return
    raise ConfigError(
        f"{INIT_KEY}: {source.name} ({weights.origin}) does not fit the "
        f"{model.config.model_type!r} model of data.model_name_or_path {model.name_or_path}: "
        f"{differs}; set data.model_name_or_path to the model it was fine-tuned from"
    )


def _outputs(head: tuple[str, ...]) -> str:
    return ", ".join(head) if head else "a regression score"


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(map(str, tensor.shape))
