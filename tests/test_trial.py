"""The trial end to end through Determined's local Trainer, on a tiny model and synthetic data."""

from __future__ import annotations

import copy
import functools
import io
import pathlib

import pytest
import torch
from conftest import built_trial

import constants
import model_def
from bert_glue.local import local_run, progress


def checkpoints(config_dir: pathlib.Path) -> list[pathlib.Path]:
    return sorted((config_dir / "determined").glob("*/state_dict.pth"))


@pytest.mark.parametrize("task", list(constants.TASKS))
def test_every_task_trains_validates_and_checkpoints(task, local_config, tmp_path):
    local_config["data"]["task"] = task
    local_config["checkpoint_storage"] = {"save_trial_latest": 2}  # keep both epochs
    history = local_run.run_local(model_def.run, local_config)

    assert len(history) == 2  # one validation per epoch
    final = history[-1]
    expected = {
        name + suffix
        for name in constants.TASKS[task].metrics
        for suffix in constants.TASKS[task].dev
    }
    assert expected <= set(final)
    assert all(f"validation_loss{suffix}" in final for suffix in constants.TASKS[task].dev)
    assert len(checkpoints(tmp_path / "xdg-data")) == 2  # one per epoch, none duplicated


def test_training_learns_the_cue_words(local_config):
    local_config["hyperparameters"]["num_train_epochs"] = 10
    history = local_run.run_local(model_def.run, local_config)
    assert history[-1]["validation_loss"] < history[0]["validation_loss"]
    assert history[-1]["acc"] >= 0.9  # the label is cued by a word in every sentence


def test_schedule_spans_exactly_the_run(local_config, monkeypatch):
    """Warmup then linear decay to zero at the last step: the length is derived, not stated."""
    used, trials = [], []
    original = model_def.BertPyTorch.train_batch

    def spy(self, batch, epoch_idx, batch_idx):
        trials.append(self)
        metrics = original(self, batch, epoch_idx, batch_idx)
        used.append(metrics["lr"])
        return metrics

    monkeypatch.setattr(model_def.BertPyTorch, "train_batch", spy)
    local_config["hyperparameters"].update(warmup_ratio=0.25, num_train_epochs=2)
    local_run.run_local(model_def.run, local_config)
    # 48 examples / batch 8 = 6 steps per epoch, 12 in all, 3 of them warmup.
    peak = local_config["hyperparameters"]["learning_rate"]
    assert used == pytest.approx(
        [peak * k / 3 for k in range(4)] + [peak * k / 9 for k in range(8, 0, -1)]
    )
    assert trials[-1].lr_scheduler.get_last_lr()[0] == 0.0


def test_per_task_global_batch_size_sets_the_batches_steps_and_periods(local_config, monkeypatch):
    """per_task's batch, not the top-level one (8), reaches the loaders, the run's length, the
    LR schedule and a period counted in records."""
    sizes, trials = [], []
    original = model_def.BertPyTorch.train_batch

    def spy(self, batch, epoch_idx, batch_idx):
        trials.append(self)
        sizes.append(len(batch["labels"]))
        return original(self, batch, epoch_idx, batch_idx)

    monkeypatch.setattr(model_def.BertPyTorch, "train_batch", spy)
    local_config["data"]["task"] = "MRPC"
    local_config["hyperparameters"]["per_task"] = {"MRPC": {"global_batch_size": 16}}
    local_config["min_validation_period"] = {"records": 48}
    recorder = progress.RunRecorder(io.StringIO(), interactive=False)
    local_run.run_local(model_def.run, local_config, recorder=recorder)
    # 48 examples / batch 16 = 3 steps per epoch, 6 in all; 48 records = 3 batches.
    assert sizes == [16] * 6
    assert trials[-1].total_steps == 6
    assert trials[-1].lr_scheduler.get_last_lr()[0] == 0.0  # the schedule ends with the run
    assert [batches for batches, _ in recorder.validations] == [3, 6]


def test_no_weight_decay_on_biases_and_layer_norm(local_config):
    local_config["hyperparameters"]["weight_decay"] = 0.01
    with local_run.local_context(local_config) as context:
        trial = built_trial(context)
    decayed, plain = trial.optimizer.param_groups
    names = {id(p): n for n, p in trial.model.named_parameters()}
    assert decayed["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    assert all(
        names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in plain["params"]
    )
    assert not any(names[id(p)].endswith("bias") for p in decayed["params"])


def test_misspelled_hyperparameter_names_the_key(local_config):
    local_config["hyperparameters"]["learnig_rate"] = 1e-3
    with pytest.raises(ValueError, match="hyperparameters: unknown key.*learnig_rate"):
        local_run.run_local(model_def.run, local_config)


def test_misspelled_data_key_names_the_key(local_config):
    local_config["data"]["dataa_dir"] = "x"
    with pytest.raises(ValueError, match="data: unknown key.*dataa_dir"):
        local_run.run_local(model_def.run, local_config)


def test_unknown_task_and_model_type_list_the_choices(local_config):
    local_config["data"]["task"] = "MRPCC"
    with pytest.raises(ValueError, match="unknown GLUE task 'MRPCC'.*MRPC"):
        local_run.run_local(model_def.run, local_config)
    local_config["data"]["task"] = "MRPC"
    local_config["hyperparameters"]["model_type"] = "gpt"
    with pytest.raises(ValueError, match="unknown model type 'gpt'.*distilbert"):
        local_run.run_local(model_def.run, local_config)


def test_max_grad_norm_0_turns_clipping_off_as_run_glue_does(local_config, monkeypatch):
    local_config["hyperparameters"]["max_grad_norm"] = 1e9  # never reached: no clipping either
    unclipped = local_run.run_local(model_def.run, copy.deepcopy(local_config))
    local_config["hyperparameters"]["max_grad_norm"] = 0

    def no_clipping(*args, **kwargs):
        raise AssertionError("clipped with max_grad_norm 0")

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", no_clipping)
    assert local_run.run_local(model_def.run, local_config) == unclipped


@pytest.mark.parametrize("model_type", [t for t in constants.MODEL_CLASSES if t != "auto"])
def test_every_model_type_constructs_and_runs_a_batch(model_type, tmp_path):
    """All five architectures build from a config and take the inputs the trial gives them."""
    classes = constants.get_model_classes(model_type)
    small = {
        "bert": dict(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        ),
        "xlnet": dict(d_model=16, n_layer=1, n_head=2, d_inner=32),
        "xlm": dict(emb_dim=16, n_layers=1, n_heads=2),
        "roberta": dict(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        ),
        "distilbert": dict(dim=16, n_layers=1, n_heads=2, hidden_dim=32),
    }[model_type]
    model = classes.model(classes.config(vocab_size=50, num_labels=3, **small)).eval()
    inputs = {
        "input_ids": torch.randint(5, 50, (2, 7)),
        "attention_mask": torch.ones(2, 7, dtype=torch.long),
        "labels": torch.tensor([0, 2]),
    }
    if model_type in constants.MODELS_WITH_TOKEN_TYPES:
        inputs["token_type_ids"] = torch.zeros(2, 7, dtype=torch.long)
    out = model(**inputs)
    assert out.logits.shape == (2, 3) and torch.isfinite(out.loss)


def test_training_loss_is_averaged_over_each_reporting_period(local_config):
    """The trial returns no tensor per batch (Determined would copy it to the host at once) and
    sums the loss on the device instead: the reported averages are the batch losses' means over
    each reporting period, as when train_batch returned the loss."""
    losses, returned, reported = [], [], []

    class Recorder(model_def.pytorch.PyTorchCallback):
        def on_training_workload_end(self, avg_metrics, batch_metrics) -> None:
            reported.append(avg_metrics["loss"])

    class RecordingTrial(model_def.BertPyTorch):
        def build_callbacks(self):
            return {**super().build_callbacks(), "recorder": Recorder()}

        def _forward(self, batch):
            out = super()._forward(batch)
            if self.model.training:
                losses.append(out.loss.item())
            return out

        def train_batch(self, batch, epoch_idx, batch_idx):
            returned.append(super().train_batch(batch, epoch_idx, batch_idx))
            return returned[-1]

    # 48 rows in batches of 2: 24 batches an epoch. run_local reports every 20 batches and
    # Determined also ends a reporting period at each epoch's end: 20, 4, 16 and 8 batches.
    local_config["hyperparameters"].update(global_batch_size=2, num_train_epochs=2)
    local_run.run_local(functools.partial(model_def.run, trial_class=RecordingTrial), local_config)
    assert len(losses) == 48
    assert all(isinstance(v, float) for r in returned for v in r.values())
    periods = [(0, 20), (20, 24), (24, 40), (40, 48)]
    expected = [sum(losses[a:b]) / (b - a) for a, b in periods]
    assert reported == pytest.approx(expected, rel=1e-6)
    assert len(set(reported)) == 4  # the periods' means differ: none counted twice
