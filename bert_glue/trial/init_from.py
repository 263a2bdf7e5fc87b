"""`data.init_from`: fine-tune starting from another fine-tuned model's weights.

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
import logging
import pathlib
import re
import tempfile

import appdirs
import determined as det
import torch
from determined.common import api
from determined.experimental import client
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from bert_glue.trial import checkpointing, pretrained
from constants import ConfigError, GlueTask

logger = logging.getLogger(__name__)

KEY = "data.init_from"
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


def find(name: str | None) -> Source | None:
    """data.init_from checked before anything heavy loads; a uuid on a cluster is downloaded."""
    if name is None:
        return None
    folder = pathlib.Path(name).expanduser()
    if folder.is_dir():
        return _folder(name, folder)
    if name.startswith(("/", ".", "~")):
        raise ConfigError(f"{KEY}: no folder {folder}")
    if UUID.fullmatch(name):
        master = _cluster_master()
        return _checkpoint(name, str(_downloaded(name, master)) if master else name)
    pretrained.config_dict(name, KEY)  # the Hub (or HF_HOME's cache) has it
    return Source(name, name, False)


def _folder(name: str, folder: pathlib.Path) -> Source:
    if (folder / "config.json").is_file():
        if not any((folder / weights).is_file() for weights in pretrained.WEIGHT_FILES):
            raise ConfigError(
                f"{KEY}: {folder} lacks weights ({' or '.join(pretrained.WEIGHT_FILES)})"
            )
        return Source(name, str(folder.resolve()), False)
    if not (folder / "state_dict.pth").is_file():
        raise ConfigError(
            f"{KEY}: {folder} is neither a Hugging Face model folder (config.json) nor a "
            "checkpoint of this trial (state_dict.pth)"
        )
    return _checkpoint(name, name)


def _checkpoint(name: str, where: str) -> Source:
    """A checkpoint folder or a uuid in local storage, found as --resume finds it."""
    folder = checkpointing.complete_checkpoint(where, f"{KEY}: {name}")
    return Source(name, str(folder.resolve()), True)


def _cluster_master() -> str | None:
    """The master's URL when this runs as a trial on a cluster; None in a local run."""
    info = det.get_cluster_info()
    return info.master_url if info is not None and info.task_type == "TRIAL" else None


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
            f"{KEY}: the Determined master at {master} has no checkpoint {uuid}"
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
    logger.info(f"{KEY}: {source.name}: {head}")
    return model


def _weights(source: Source) -> Weights:
    if source.is_checkpoint:
        saved = checkpointing.read(source.location)
        origin = f"fine-tuned from {saved.data_config['model_name_or_path']}"
        return Weights(saved.weights, head_of(saved.task), origin)
    # A model without a head gets a new one here: it must not draw from the trial's seeded RNG.
    with torch.random.fork_rng(devices=[]):
        model = AutoModelForSequenceClassification.from_pretrained(source.location)
    config, head = model.config, None
    if pretrained.is_classifier(config):
        regression = config.problem_type == "regression" or config.num_labels == 1
        head = () if regression else tuple(config.id2label[i] for i in range(config.num_labels))
    return Weights(model.state_dict(), head, f"a {config.model_type!r} model")


def head_of(task: GlueTask) -> tuple[str, ...]:
    """What the task's head predicts, named as its id2label names it; () for a regression."""
    return pretrained.label_names(task) if task.labels else ()


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
        f"{KEY}: {source.name} ({weights.origin}) does not fit the {model.config.model_type!r} "
        f"model of data.model_name_or_path {model.name_or_path}: {differs}; set "
        "data.model_name_or_path to the model it was fine-tuned from"
    )


def _outputs(head: tuple[str, ...]) -> str:
    return ", ".join(head) if head else "a regression score"


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(map(str, tensor.shape))
