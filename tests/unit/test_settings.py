"""The config as the trial reads it: overrides, YAML 1.2 numbers, checked hyperparameters (the
levers' auto: test_lever_matrix.py)."""

from __future__ import annotations

import pytest
from conftest import REPO

import constants
from bert_glue.local.config import load_config, local_hparams
from bert_glue.trial import settings


@pytest.fixture
def const_config() -> dict:
    return load_config(str(REPO / "const.yaml"), [])


def test_overrides_are_parsed_as_yaml_and_checked():
    const = str(REPO / "const.yaml")
    config = load_config(
        const, ["hyperparameters.learning_rate=3e-5", "data.task=RTE", "data.download_data=false"]
    )
    assert config["hyperparameters"]["learning_rate"] == 3e-5
    assert config["data"]["task"] == "RTE" and config["data"]["download_data"] is False
    for bad in ["hyperparameters.lr=1", "learning_rate=1", "searcher.name=grid", "data.task"]:
        with pytest.raises(ValueError, match="bad override"):
            load_config(const, [bad])


def test_exponents_read_as_numbers_as_determined_s_cli_reads_them(tmp_path):
    """ruamel.yaml (det experiment create) reads 2e-5 as a float; PyYAML alone, as a string."""
    config = tmp_path / "config.yaml"
    config.write_text("hyperparameters:\n  learning_rate: 2e-5\n  adam_epsilon: 1E-08\n")
    overrides = ["hyperparameters.weight_decay=[1e-2, 5e-3]", "data.task=1e5"]
    loaded = load_config(str(config), overrides)
    assert loaded["hyperparameters"] == {
        "learning_rate": 2e-5,
        "adam_epsilon": 1e-8,
        "weight_decay": [0.01, 0.005],
    }
    assert loaded["data"]["task"] == 1e5
    overrides = ["data.task=MRPC", "data.data_dir=2e-5x", "hyperparameters.seed=12"]
    loaded = load_config(str(config), overrides)
    assert loaded["data"] == {"task": "MRPC", "data_dir": "2e-5x"}
    assert loaded["hyperparameters"]["seed"] == 12


@pytest.mark.parametrize(
    ("hparams", "message"),
    [
        ({"learning_rate": "2e-5"}, "hyperparameters.learning_rate: '2e-5' is not a number >= 0"),
        (
            {"warmup_ratio": -0.1},
            "hyperparameters.warmup_ratio: -0.1 is not a share of the steps, 0 to 1",
        ),
        (
            {"warmup_ratio": 10},
            "hyperparameters.warmup_ratio: 10 is not a share of the steps, 0 to 1",
        ),
        ({"global_batch_size": 8.0}, "hyperparameters.global_batch_size: 8.0 is not an integer"),
        ({"num_train_epochs": True}, "hyperparameters.num_train_epochs: True is not an integer"),
        ({"max_seq_length": 0}, "hyperparameters.max_seq_length: 0 is not an integer >= 1"),
        (
            {"per_task": {"MRPC": {"num_train_epochs": "5"}}},
            "hyperparameters.per_task.MRPC.num_train_epochs: '5' is not an integer >= 1",
        ),
    ],
)
def test_hyperparameters_of_the_wrong_type_name_the_key(const_config, hparams, message):
    const_config["hyperparameters"].update(hparams)
    with pytest.raises(constants.ConfigError) as error:
        settings.Settings.of(const_config, const_config["hyperparameters"])
    assert message in str(error.value)


def test_searched_hyperparameter_needs_a_value_locally(const_config):
    const_config["hyperparameters"]["learning_rate"] = {
        "type": "log",
        "base": 10,
        "minval": -5,
        "maxval": -4,
    }
    with pytest.raises(ValueError, match="hyperparameters.learning_rate=<value>"):
        local_hparams(const_config)
    const_config["hyperparameters"]["learning_rate"] = {"type": "const", "val": 1e-4}
    assert local_hparams(const_config)["learning_rate"] == 1e-4


# "auto" builds whatever config.json names: tests/test_custom.py runs four encoders through it.


def test_a_misspelt_override_names_the_nearest_key_and_the_choices():
    with pytest.raises(constants.ConfigError) as error:
        load_config(str(REPO / "const.yaml"), ["hyperparameters.learnig_rate=1e-5"])
    message = str(error.value)
    assert message.startswith(
        "bad override 'hyperparameters.learnig_rate=1e-5': hyperparameters has no key "
        "'learnig_rate'; did you mean hyperparameters.learning_rate? the keys are "
        "global_batch_size, learning_rate,"
    )


def test_nested_keys_can_be_overridden(tmp_path):
    config = load_config(
        str(REPO / "custom.yaml"),
        ["data.custom.labels=[no, yes]", "hyperparameters.per_task.MRPC.num_train_epochs=4"],
    )
    assert config["data"]["custom"]["labels"] == ["no", "yes"]
    assert config["data"]["custom"]["train"]  # the rest of the block stays
    assert config["hyperparameters"]["per_task"] == {"MRPC": {"num_train_epochs": 4}}
    with pytest.raises(constants.ConfigError, match="data.task is not a mapping"):
        load_config(str(REPO / "custom.yaml"), ["data.task.name=RTE"])


def mrpc_settings(**hparams) -> settings.Settings:
    """The settings of a trial of MRPC with these hyperparameters."""
    required = {"global_batch_size": 32, "learning_rate": 2e-5, "num_train_epochs": 3}
    data = {"task": "mrpc", "model_name_or_path": "m", "data_dir": "d"}
    config = {"hyperparameters": {**required, "model_type": "bert", **hparams}, "data": data}
    return settings.Settings.of(config, config["hyperparameters"])


def test_glue_tasks_with_coded_labels_name_them_as_the_dataset_card_does():
    named = {name: task.label_names for name, task in constants.TASKS.items() if task.label_names}
    assert named == {
        "CoLA": ("unacceptable", "acceptable"),
        "SST-2": ("negative", "positive"),
        "MRPC": ("not_equivalent", "equivalent"),
        "QQP": ("not_duplicate", "duplicate"),
        "WNLI": ("not_entailment", "entailment"),
    }
    for task in constants.TASKS.values():  # one name per label, where the files use codes
        assert len(task.label_names) in (0, len(task.labels))
        assert not task.label_names or set(task.labels) == {"0", "1"}


@pytest.mark.parametrize(
    ("hparams", "stops_early"),
    [
        ({"early_stopping_patience": 2}, True),
        ({"early_stopping_patience": None}, False),
        ({"per_task": {"MRPC": {"early_stopping_patience": 2}}}, True),
        ({"per_task": {"RTE": {"early_stopping_patience": 2}}}, False),
        (
            {"early_stopping_patience": 2, "per_task": {"MRPC": {"early_stopping_patience": None}}},
            False,
        ),
    ],
)
def test_early_stopping_is_the_tasks_own_setting(hparams, stops_early):
    assert mrpc_settings(**hparams).early_stopping is stops_early  # data.task's any case


def test_per_task_sets_the_tasks_global_batch_size():
    per_task = mrpc_settings(per_task={"MRPC": {"global_batch_size": 16}})
    assert per_task.hparams.global_batch_size == 16
    other_task = mrpc_settings(per_task={"RTE": {"global_batch_size": 16}})
    assert other_task.hparams.global_batch_size == 32


@pytest.mark.parametrize(
    ("hparams", "key"),
    [
        (
            {"per_task": {"MRPC": {"global_batch_size": 9}}},
            "hyperparameters.per_task.MRPC.global_batch_size: 9",
        ),
        (
            {"global_batch_size": 9, "per_task": {"MRPC": {"learning_rate": 1e-5}}},
            "hyperparameters.global_batch_size: 9",
        ),
        (
            {"global_batch_size": 9, "per_task": {"RTE": {"global_batch_size": 8}}},
            "hyperparameters.global_batch_size: 9",
        ),
    ],
)
def test_a_batch_that_does_not_split_names_the_key_that_sets_it(hparams, key):
    trial = mrpc_settings(**hparams)
    with pytest.raises(constants.ConfigError, match=f"^{key} examples do not split evenly"):
        trial.check_batch_split(2)
    trial.check_batch_split(3)  # 9 per step: 3 per slot
