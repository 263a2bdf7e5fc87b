"""A run killed after a checkpoint resumes as if it had never stopped; checkpoints stay small."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO
from determined import util

import constants
import model_def
from bert_glue.determined_0_38 import workarounds
from bert_glue.local import local_run
from bert_glue.trial import checkpointing

EPOCHS = 3  # 48 train rows / batch 8: 6 batches an epoch, a checkpoint after each epoch
BATCHES = 6


def checkpoint_dirs(data_home: pathlib.Path) -> list[pathlib.Path]:
    """Complete checkpoints (Determined writes metadata.json last), in training order."""
    done = [p.parent for p in (data_home / "determined").glob("*/metadata.json")]
    return sorted(
        done, key=lambda p: json.loads((p / "metadata.json").read_text())["steps_completed"]
    )


def kill_after_first_checkpoint(config_file: pathlib.Path, data_home: pathlib.Path) -> int:
    """Run the CLI in a subprocess and SIGKILL it as soon as its first checkpoint is complete."""
    env = {**os.environ, "XDG_DATA_HOME": str(data_home)}
    command = [sys.executable, str(REPO / "model_def.py"), str(config_file)]
    with open(data_home.parent / f"{data_home.name}.log", "w") as log:
        run = subprocess.Popen(command, cwd=data_home.parent, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 300
        try:
            while not checkpoint_dirs(data_home) and run.poll() is None:
                assert time.monotonic() < deadline, "no checkpoint after 300 s"
                time.sleep(0.005)
        finally:
            run.send_signal(signal.SIGKILL)
    return run.wait()


def record_training(monkeypatch) -> list[tuple]:
    """(batch index, epoch index, input ids, labels, LR) of every batch the trial trains."""
    seen = []
    original = model_def.BertPyTorch.train_batch

    def spy(self, batch, epoch_idx, batch_idx):
        out = original(self, batch, epoch_idx, batch_idx)
        ids, labels = batch["input_ids"].tolist(), batch["labels"].tolist()
        seen.append((batch_idx, epoch_idx, ids, labels, out["lr"]))
        return out

    monkeypatch.setattr(model_def.BertPyTorch, "train_batch", spy)
    return seen


def load_state(checkpoint: pathlib.Path) -> dict:
    """A checkpoint's state, less what names its run's own files: the uuids of the checkpoints
    it had saved and its TensorBoard folder, another in every run."""
    with workarounds.loadable_rng_state():
        state = torch.load(checkpoint / "state_dict.pth")
    del state["callbacks"][workarounds.WATCHER]["checkpoints"]
    del state["callbacks"][workarounds.WATCHER]["tensorboard"]
    return state


def assert_identical(a, b, where="state") -> None:
    """Bitwise equality through the nested dicts, lists and tensors of a checkpoint."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def configure(config: dict, tmp_path: pathlib.Path, **hparams) -> pathlib.Path:
    config["hyperparameters"].update(
        num_train_epochs=EPOCHS, warmup_ratio=0.2, weight_decay=0.01, **hparams
    )
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return config_file


def assert_resumes_bitwise(
    config_file, first_checkpoint, tmp_path, monkeypatch, restore_torch_rng=True
) -> None:
    """Resuming from the first checkpoint ends exactly where an uninterrupted run ends."""
    assert checkpointing.batches_trained(first_checkpoint) == BATCHES
    seen = record_training(monkeypatch)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "whole"))
    whole_history = local_run.run_local(model_def.run, yaml.safe_load(config_file.read_text()))
    whole = list(seen)
    seen.clear()
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "resumed"))
    if not restore_torch_rng:  # as on ranks other than 0: the checkpoint holds rank 0's state
        monkeypatch.setattr(torch.random, "set_rng_state", lambda state: None)
    config = yaml.safe_load(config_file.read_text())
    resumed_history = local_run.run_local(model_def.run, config, str(first_checkpoint))

    # The same batches, in the same order, numbered on from the checkpoint: none repeated or lost.
    assert len(whole) == EPOCHS * BATCHES
    assert [b[0] for b in seen] == list(range(BATCHES, EPOCHS * BATCHES))
    assert seen == whole[BATCHES:]  # ids, labels, epoch and the LR schedule's values
    assert resumed_history == whole_history[1:]  # dev metrics of epochs 2 and 3, exactly
    end_whole = checkpoint_dirs(tmp_path / "whole")[-1]
    end_resumed = checkpoint_dirs(tmp_path / "resumed")[-1]
    assert checkpointing.batches_trained(end_resumed) == EPOCHS * BATCHES
    assert_identical(load_state(end_resumed), load_state(end_whole))  # weights, Adam, LR, RNG


def test_what_the_metrics_import_draws_from_pythons_random_is_drawn_before_seeding():
    """scikit-learn's first import draws from Python's global random (rich, which it imports).
    Imported at the first validation, after the seeding, it would draw in a resumed process where
    the uninterrupted one had already: model_def imports it first. In a fresh process, as every
    run and every resume is."""
    probe = (
        "import random, model_def\n"
        "random.seed(0)\n"
        "seeded = random.getstate()\n"
        "import scipy.stats, sklearn.metrics\n"
        "print(random.getstate() == seeded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "True", done.stderr[-2000:]


@pytest.mark.smoke
def test_killed_run_resumes_bitwise(local_config, tmp_path, monkeypatch):
    config_file = configure(local_config, tmp_path)
    killed = tmp_path / "killed"
    assert kill_after_first_checkpoint(config_file, killed) == -signal.SIGKILL
    assert_resumes_bitwise(config_file, checkpoint_dirs(killed)[0], tmp_path, monkeypatch)


def test_length_grouped_batches_resume_bitwise_on_any_rank(local_config, tmp_path, monkeypatch):
    """The same with the length-grouped sampler, crashing by an exception, in this process, and
    resuming without the checkpoint's torch RNG state, as every rank but the first does."""
    config_file = configure(local_config, tmp_path, group_by_length=True)
    first = crash_after_first_checkpoint(config_file, tmp_path / "crashed", monkeypatch)
    assert_resumes_bitwise(config_file, first, tmp_path, monkeypatch, restore_torch_rng=False)


def crash_after_first_checkpoint(config_file, storage, monkeypatch) -> pathlib.Path:
    """Run the config in this process until an exception just after its first checkpoint (saved
    under storage); return that checkpoint's folder."""
    original = model_def.BertPyTorch.train_batch

    def crashing(self, batch, epoch_idx, batch_idx):
        if batch_idx == BATCHES:
            raise KeyboardInterrupt
        return original(self, batch, epoch_idx, batch_idx)

    with monkeypatch.context() as patch:
        patch.setattr(model_def.BertPyTorch, "train_batch", crashing)
        patch.setenv("XDG_DATA_HOME", str(storage))
        with pytest.raises(KeyboardInterrupt):
            local_run.run_local(model_def.run, yaml.safe_load(config_file.read_text()))
    (first,) = checkpoint_dirs(storage)
    return first


@pytest.fixture
def one_epoch_checkpoint(local_config, tmp_path) -> pathlib.Path:
    local_config["hyperparameters"]["num_train_epochs"] = 1
    local_run.run_local(model_def.run, local_config)
    (checkpoint,) = checkpoint_dirs(tmp_path / "xdg-data")
    return checkpoint


def test_resume_takes_a_uuid_and_checks_the_checkpoint(one_epoch_checkpoint, local_config):
    mrpc = constants.TASKS["MRPC"]
    uuid = one_epoch_checkpoint.name
    assert checkpointing.find_checkpoint(uuid, mrpc) == one_epoch_checkpoint
    assert checkpointing.find_checkpoint(str(one_epoch_checkpoint), mrpc) == one_epoch_checkpoint
    with pytest.raises(constants.ConfigError, match="--resume nope: no such checkpoint folder"):
        checkpointing.find_checkpoint("nope", mrpc)
    with pytest.raises(constants.ConfigError, match=r"2 outputs \(data.task MRPC.*MNLI needs 3"):
        checkpointing.find_checkpoint(uuid, constants.TASKS["MNLI"])
    (one_epoch_checkpoint / "load_data.json").write_text('{"experiment_config": null}')
    with pytest.raises(constants.ConfigError, match="not a checkpoint of this trial"):
        checkpointing.find_checkpoint(uuid, mrpc)
    (one_epoch_checkpoint / "metadata.json").unlink()  # as if killed while saving it
    with pytest.raises(constants.ConfigError, match="incomplete.*metadata.json"):
        checkpointing.find_checkpoint(uuid, mrpc)


def test_resuming_another_task_fails_before_training(one_epoch_checkpoint, local_config, tmp_path):
    local_config["data"]["task"] = "MNLI"
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(local_config))
    with pytest.raises(SystemExit, match="error: --resume .* data.task=MRPC"):
        model_def.main([str(config_file), "--resume", one_epoch_checkpoint.name])
    assert checkpoint_dirs(tmp_path / "xdg-data") == [one_epoch_checkpoint]


def test_checkpoint_holds_training_state_and_code_only(local_config, tmp_path, monkeypatch):
    """Run from a folder full of other things: the checkpoint copies this project's code only."""
    elsewhere = tmp_path / "home"
    (elsewhere / "big").mkdir(parents=True)
    (elsewhere / "big" / "data.bin").write_bytes(bytes(1 << 20))
    monkeypatch.chdir(elsewhere)
    local_config["hyperparameters"]["num_train_epochs"] = 1
    local_run.run_local(model_def.run, local_config)
    (checkpoint,) = checkpoint_dirs(tmp_path / "xdg-data")

    names = sorted(p.name for p in checkpoint.iterdir())
    assert names == [
        "code",
        "load_data.json",
        "metadata.json",
        "state_dict.pth",
        "tokenizer_and_config",  # what predict and export load (issue 36)
        "trial_state.pkl",
    ]
    code = [p.relative_to(checkpoint / "code") for p in (checkpoint / "code").rglob("*")]
    assert {"model_def.py", "data.py", "const.yaml"} <= {p.as_posix() for p in code}
    # The project's files and its package: no tests/, .venv/, glue_data/, caches.
    assert {p.parts[0] for p in code if len(p.parts) > 1} == {"bert_glue"}
    assert not any(p.name == "__pycache__" for p in code)
    assert sum((checkpoint / "code" / p).stat().st_size for p in code) < 1 << 20
    # Weights and two Adam moments in fp32, plus a few KB of RNG state and counters.
    state = load_state(checkpoint)
    params = sum(t.numel() for t in state["models_state_dict"][0].values())
    assert (checkpoint / "state_dict.pth").stat().st_size < 3 * 4 * params + (64 << 10)
    assert os.getcwd() == str(elsewhere)  # the run went back to where it was started


def test_storage_inside_the_copied_folder_is_one_error_before_training(
    local_config, tmp_path, monkeypatch
):
    """Each checkpoint copies the project: storage inside it would copy every checkpoint before."""
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.setenv("XDG_DATA_HOME", str(project / "xdg"))
    with pytest.raises(constants.ConfigError) as raised:
        local_run.run_local(model_def.run, local_config, context_dir=project)
    assert str(raised.value) == (
        f"Determined's local checkpoint storage {project / 'xdg' / 'determined'} lies inside "
        f"{project}, which every checkpoint copies, so each would copy those before it; set "
        "XDG_DATA_HOME to a folder outside it (or name the storage's folder in .detignore)"
    )
    assert not (project / "xdg").exists()
    assert local_run.copies_itself(project, project / "xdg" / "determined")
    (project / ".detignore").write_text("xdg/\n")
    assert not local_run.copies_itself(project, project / "xdg" / "determined")
    assert not local_run.copies_itself(project, tmp_path / "elsewhere" / "determined")


def test_detignore_keeps_data_caches_and_environments_out_of_checkpoints(tmp_path, monkeypatch):
    project = tmp_path / "project"
    junk = [".venv/lib/torch.so", "glue_data/MRPC/train.tsv", "tests/test_x.py"]
    junk += ["__pycache__/data.pyc", "features.pt", "model.safetensors", ".git", "bench/b.py"]
    junk += ["results/glue/task=RTE_seed=1/result.json", "glue_report/results.md"]
    for name in [*junk, "model_def.py", "const.yaml"]:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("x")
    (project / ".detignore").write_text((REPO / ".detignore").read_text())
    monkeypatch.chdir(project)
    util.write_user_code(tmp_path / "checkpoint", on_cluster=False)
    copied = sorted(p.name for p in (tmp_path / "checkpoint" / "code").iterdir())
    assert copied == ["const.yaml", "model_def.py"]
