"""A local run's config file: the YAML read as Determined's CLI reads it, the command line's
`section.key=value` overrides applied, its `const` hyperparameters unwrapped, and what can be
known before torch loads checked (checked_config). A cluster's trial reads none of this: its
master hands it the config and the hyperparameter values.

    config = load_config("const.yaml", ["hyperparameters.learning_rate=3e-5"])
    settings = local_settings(config)
"""

from __future__ import annotations

import difflib
import logging
import re

import yaml

from bert_glue.trial import custom_task
from bert_glue.trial.settings import (
    OPTIONAL_DATA,
    OPTIONAL_HPARAMS,
    REQUIRED_DATA,
    REQUIRED_HPARAMS,
    Settings,
)
from constants import ConfigError, get_task

logger = logging.getLogger(__name__)

# The sections and keys a local run's overrides may change.
OVERRIDABLE = {
    "hyperparameters": (*REQUIRED_HPARAMS, *OPTIONAL_HPARAMS),
    "data": (*REQUIRED_DATA, *OPTIONAL_DATA),
    "reproducibility": ("experiment_seed",),
    "searcher": ("metric", "smaller_is_better"),  # e.g. for data.task=STS-B, which has no acc
    "checkpoint_storage": ("save_trial_best", "save_trial_latest"),  # the checkpoints kept
}


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading scalars as YAML 1.2 does (and so Determined's CLI, whose
    ruamel.yaml reads the config a cluster trains on): 3e-5 is a number (YAML 1.1 wants
    3.0e-5), and only true and false are booleans (YAML 1.1 also reads labels such as yes, no,
    on and off as booleans)."""


BOOL = "tag:yaml.org,2002:bool"
ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(
    BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def checked_config(path: str, overrides: list[str], slots: int) -> dict:
    """A local run's config, its settings checked as the trial will check them, and a GLUE
    task's data present or to be downloaded, or own data's section and files: what can be
    known before torch loads."""
    config = load_config(path, overrides)
    if config.get("searcher", {}).get("name") == "grid":  # each trial's settings are its own
        return config
    data = local_settings(config, slots).data
    custom = custom_task.checked(data.task, data.custom)
    if custom is None:
        problem = get_task(data.task).missing(data.data_dir, data.download_data)
    else:
        problem = custom.missing(data.data_dir)
    if problem:
        raise FileNotFoundError(problem)
    return config


def local_settings(config: dict, slots: int | None = None) -> Settings:
    """The settings of a local run of the config: its own hyperparameter values (local_hparams),
    checked as the trial checks them; with slots, the batch's split across them too."""
    return Settings.of(config, local_hparams(config), slots)


def load_config(path: str, overrides: list[str]) -> dict:
    """The YAML config with `section.key=value` overrides applied (values parsed as YAML)."""
    with open(path) as f:
        config = yaml.load(f, ConfigLoader)
    for override in overrides:
        apply_override(config, override)
    warn_shadowed(config, [o.partition("=")[0] for o in overrides])
    return config


def apply_override(config: dict, override: str) -> None:
    """One `section.key=value`; a key may go deeper (data.custom.labels=[no,yes])."""
    key, sep, value = override.partition("=")
    section, _, path = key.partition(".")
    names = path.split(".")
    if not sep or not path:
        raise ConfigError(f"bad override {override!r}: expected section.key=value")
    if section not in OVERRIDABLE:
        raise ConfigError(
            f"bad override {override!r}: the section is one of {', '.join(OVERRIDABLE)}"
        )
    if names[0] not in OVERRIDABLE[section]:
        near = difflib.get_close_matches(names[0], OVERRIDABLE[section], n=1)
        hint = f"did you mean {section}.{near[0]}? " if near else ""
        raise ConfigError(
            f"bad override {override!r}: {section} has no key {names[0]!r}; {hint}"
            f"the keys are {', '.join(OVERRIDABLE[section])}"
        )
    target = config.setdefault(section, {})
    for depth, name in enumerate(names[:-1], 1):
        if target.get(name) is None:
            target[name] = {}
        target = target[name]
        if not isinstance(target, dict):
            inner = ".".join([section, *names[:depth]])
            raise ConfigError(f"bad override {override!r}: {inner} is not a mapping")
    target[names[-1]] = yaml.load(value, ConfigLoader)


def warn_shadowed(config: dict, keys: list[str]) -> None:
    """Say when an override is not what some tasks train with: per_task wins over it."""
    per_task = config.get("hyperparameters", {}).get("per_task")
    if not isinstance(per_task, dict):
        return
    for key in keys:
        section, _, name = key.partition(".")
        tasks = [t for t, values in per_task.items() if isinstance(values, dict) and name in values]
        if section == "hyperparameters" and tasks:
            logger.warning(
                f"{key}: hyperparameters.per_task sets {name} for {', '.join(tasks)}, which "
                f"train with that value instead; override hyperparameters.per_task to change it"
            )


def local_hparams(config: dict) -> dict:
    """Hyperparameter values for a local run: constants as they are, `const` ones unwrapped."""
    return {
        name: const_value(f"hyperparameters.{name}", value)
        for name, value in config["hyperparameters"].items()
    }


def const_value(key: str, value):
    """A hyperparameter's one value; nested hyperparameters (a mapping with no type) likewise."""
    if not isinstance(value, dict):
        return value
    if "type" not in value:
        return {name: const_value(f"{key}.{name}", v) for name, v in value.items()}
    if value["type"] != "const":
        raise ConfigError(
            f"{key} is searched ({value['type']}); a local run needs one value: add the "
            f"override {key}=<value>"
        )
    return value["val"]
