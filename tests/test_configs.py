"""Every experiment config agrees with the trial: metric, hyperparameters, run length.

(tests/test_expconf.py checks the same files against Determined's schema.)
"""

from __future__ import annotations

import itertools
import pathlib

import pytest
import yaml
from conftest import REPO
from determined import pytorch

import model_def
from bert_glue.local import local_run
from bert_glue.trial import metrics, settings

CONFIGS = sorted(REPO.glob("*.yaml"))
SEARCHED = ["global_batch_size", "learning_rate", "warmup_ratio", "weight_decay"]


def load(path: pathlib.Path) -> dict:
    return yaml.safe_load(path.read_text())


def hparam_values(spec) -> list:
    """The values a hyperparameter can take at the ends of its range (all, if categorical)."""
    if not isinstance(spec, dict) or "type" not in spec:  # a constant, or nested constants
        return [spec]
    kind = spec["type"]
    if kind == "const":
        return [spec["val"]]
    if kind == "categorical":
        return list(spec["vals"])
    if kind == "log":
        return [spec["base"] ** spec["minval"], spec["base"] ** spec["maxval"]]
    return [spec["minval"], spec["maxval"]]  # int, double


def test_there_are_configs_to_check():
    assert {"const.yaml", "distributed.yaml", "adaptive.yaml", "custom.yaml", "glue.yaml"} <= {
        p.name for p in CONFIGS
    }


def corners(config: dict) -> list[dict]:
    """Every corner of the search space: one hyperparameter dict per trial it can make."""
    names = list(config["hyperparameters"])
    choices = [hparam_values(config["hyperparameters"][name]) for name in names]
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*choices)]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_searcher_metric_is_reported_with_its_direction(path):
    config = load(path)
    for hparams in corners(config):  # glue.yaml: every task
        trial = settings.Settings.of(config, hparams)
        # raises if not (tests/test_metrics.py)
        metrics.check_searcher(trial.task, trial.searcher)
    # Determined's default is smaller_is_better: true; the configs say it either way.
    assert "smaller_is_better" in config["searcher"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_hyperparameters_and_length_agree_with_the_trial(path):
    config = load(path)
    for hparams in corners(config):
        # Raises for a key unknown or missing, or a searcher of another length.
        settings.Settings.of(config, hparams)
    if config["searcher"]["name"] in ("adaptive_asha", "async_halving"):
        assert config["searcher"]["time_metric"] == "epochs"


def test_train_length_refuses_a_searcher_of_another_length():
    settings.check_length(4, {"name": "single"})
    settings.check_length(4, {"time_metric": "epochs", "max_time": 4})
    for searcher in ({"time_metric": "epochs", "max_time": 3}, {"time_metric": "batches"}):
        with pytest.raises(ValueError, match="must be 'epochs' and 4.*num_train_epochs"):
            settings.check_length(4, searcher)


def test_adaptive_trial_uses_every_searched_hyperparameter(local_config, monkeypatch):
    """A local run of adaptive.yaml with chosen values: each shows up in the training steps."""
    config = load(REPO / "adaptive.yaml")
    searched = [k for k, v in config["hyperparameters"].items() if isinstance(v, dict)]
    assert sorted(searched) == SEARCHED
    config["data"] = local_config["data"]
    chosen = dict(global_batch_size=16, learning_rate=2e-3, warmup_ratio=0.2, weight_decay=0.05)
    config["hyperparameters"].update(chosen, max_seq_length=32)
    steps = []
    original = model_def.BertPyTorch.train_batch

    def spy(self, batch, epoch_idx, batch_idx):
        result = original(self, batch, epoch_idx, batch_idx)
        decay = self.optimizer.param_groups[0]["weight_decay"]
        steps.append((len(batch["labels"]), result["lr"], decay))
        return result

    monkeypatch.setattr(model_def.BertPyTorch, "train_batch", spy)
    local_run.run_local(model_def.run, config)

    # 48 examples / 16 = 3 steps an epoch, 4 epochs (searcher.max_time): 12 steps, 2 of warmup.
    sizes, lrs, decays = zip(*steps, strict=True)
    assert sizes == (16,) * 12 and set(decays) == {0.05}
    peak = chosen["learning_rate"]
    assert lrs == pytest.approx([0.0, peak / 2] + [peak * k / 10 for k in range(10, 0, -1)])


def test_fit_options_read_the_experiment_configs_periods():
    periods = settings.Periods.of(
        {
            "min_validation_period": {"batches": 2000},
            "min_checkpoint_period": {"records": 100},
            "checkpoint_policy": "all",
            "scheduling_unit": 50,
            "perform_initial_validation": True,
        },
        global_batch_size=32,
    )
    options = model_def.fit_options(periods, local=False)
    assert shown(options) == {
        "validation_period": ("Batch", 2000),
        "checkpoint_period": ("Batch", 3),  # 100 records of 32: Determined rounds down
        "checkpoint_policy": "all",
        "reporting_period": ("Batch", 50),
        "step_zero_validation": True,
    }
    periods = settings.Periods.of({"min_validation_period": {"epochs": 2}}, 32)
    epochs = model_def.fit_options(periods, local=False)
    assert shown(epochs)["validation_period"] == ("Epoch", 2)


def shown(options: dict) -> dict:
    """Trainer.fit's options with each TrainUnit (which has no ==) as (unit, count)."""
    return {
        key: (type(value).__name__, value.value) if isinstance(value, pytorch.TrainUnit) else value
        for key, value in options.items()
    }


@pytest.mark.parametrize("local", [False, True])
def test_fit_options_unset_validate_and_checkpoint_every_epoch(local):
    # Determined's defaults as the master fills them in ({batches: 0}: never), and none at all.
    for config in ({}, {"min_validation_period": {"batches": 0}, "checkpoint_policy": "best"}):
        periods = settings.Periods.of(config, global_batch_size=32)
        options = shown(model_def.fit_options(periods, local=local))
        assert options["validation_period"] == options["checkpoint_period"] == ("Epoch", 1)
        # Locally no experiment holds a best validation: checkpoints come by period alone.
        assert options["checkpoint_policy"] == ("none" if local else "best")
        assert options["reporting_period"] == ("Batch", 20 if local else 100)
        assert options["step_zero_validation"] is False


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"min_validation_period": {"steps": 5}}, "min_validation_period: expected one of"),
        ({"min_checkpoint_period": {"batches": 5, "epochs": 1}}, "min_checkpoint_period: expe"),
        ({"min_validation_period": {"batches": "5"}}, r"min_validation_period.batches: expected"),
        ({"scheduling_unit": 0}, r"scheduling_unit: expected a whole number >= 1, got 0"),
        ({"checkpoint_policy": "latest"}, r"checkpoint_policy: 'latest' is not one of"),
    ],
)
def test_fit_options_name_a_bad_key(config, message):
    with pytest.raises(settings.ConfigError, match=message):
        settings.Periods.of(config, global_batch_size=32)
