"""The trial on a cluster: `python3 model_def.py` as a Determined 0.38.1 trial container runs it.

Each test starts model_def.py (or distributed.yaml's launcher) in a subprocess with the files
and environment of a trial container (tests/fake_master.py) and a stand-in master on loopback,
on the tiny BERT and synthetic MRPC (48 train rows, batches of 8: 6 batches an epoch).
"""

from __future__ import annotations

import json
import pathlib
import socket
import subprocess

import pytest
import yaml
from conftest import REPO
from fake_master import FakeMaster, container_env, write_container
from test_bad_input import diverging_stsb

import constants
from bert_glue.trial import metrics

BATCHES_PER_EPOCH = 6
RUN_TIMEOUT_S = 180
SEARCHER_METRIC = "acc_and_f1"  # adaptive.yaml's
SINGLE = ["python3", "model_def.py"]
DISTRIBUTED = ["python3", "-m", "determined.launch.torch_distributed", "python3", "model_def.py"]


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def expanded_config(tiny_model_dir, glue_dir, storage: pathlib.Path, epochs: int) -> dict:
    """adaptive.yaml as the master hands it to a trial: with its checkpoint storage."""
    config = yaml.safe_load((REPO / "adaptive.yaml").read_text())
    config["data"].update(
        model_name_or_path=str(tiny_model_dir), data_dir=str(glue_dir), download_data=False
    )
    config["hyperparameters"].update(num_train_epochs=epochs, max_seq_length=32)
    config["searcher"]["max_time"] = epochs
    # shared_fs would write under /determined_shared_fs, the agents' mount point in containers.
    config["checkpoint_storage"] = {"type": "directory", "container_path": str(storage)}
    return config


def trial_hparams(config: dict) -> dict:
    """The values the searcher picked: one in each searched range."""
    chosen = {
        "global_batch_size": 8,
        "learning_rate": 3e-3,
        "warmup_ratio": 0.0,
        "weight_decay": 0.01,
    }
    fixed = {k: v for k, v in config["hyperparameters"].items() if not isinstance(v, dict)}
    return {**fixed, **chosen}


def run_trial(
    master: FakeMaster,
    url: str,
    root: pathlib.Path,
    config: dict,
    command: list[str] = SINGLE,
    slots: int = 1,
    **container,
) -> subprocess.CompletedProcess:
    workdir = write_container(
        root, REPO, url, config, trial_hparams(config), slots=slots, **container
    )
    env = container_env(root, free_ports(3))
    env["XDG_CACHE_HOME"] = str(root / "cache")
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(
        command,
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def full_run(tiny_model_dir, glue_dir, tmp_path_factory):
    """A 2-epoch trial, trained to its end."""
    root = tmp_path_factory.mktemp("full")
    config = expanded_config(tiny_model_dir, glue_dir, root / "storage", epochs=2)
    master = FakeMaster(smaller_is_better=False, metric=SEARCHER_METRIC)
    with master.serving() as url:
        run = run_trial(master, url, root, config)
    return run, master, config


@pytest.mark.smoke
def test_trial_reports_training_and_validation_metrics(full_run):
    run, master, _ = full_run
    assert run.returncode == 0, run.stderr[-3000:]
    assert master.unknown == []
    training = master.metrics("training")
    assert [m["stepsCompleted"] for m in training] == [6, 12]
    assert {"loss", "lr"} <= set(training[0]["metrics"]["avgMetrics"])
    assert len(training[0]["metrics"]["batchMetrics"]) == BATCHES_PER_EPOCH
    validation = master.metrics("validation")
    assert [m["stepsCompleted"] for m in validation] == [6, 12]
    reported = set(validation[0]["metrics"]["avgMetrics"])
    assert SEARCHER_METRIC in reported
    # The task's metrics, and the searcher's time metric (adaptive ASHA reads "epochs").
    assert reported == {*metrics.reported_metrics(constants.TASKS["MRPC"]), "batches", "epochs"}
    assert [m["metrics"]["avgMetrics"]["epochs"] for m in validation] == [1, 2]


def test_trial_reports_checkpoints_that_are_on_disk(full_run):
    run, master, config = full_run
    storage = pathlib.Path(config["checkpoint_storage"]["container_path"])
    checkpoints = master.checkpoints()
    assert [c["metadata"]["steps_completed"] for c in checkpoints] == [6, 12]
    for checkpoint in checkpoints:
        folder = storage / checkpoint["uuid"]
        files = {p.name for p in folder.iterdir()}
        assert {"state_dict.pth", "metadata.json", "load_data.json", "code"} <= files
        assert (folder / "code" / "model_def.py").is_file()
        assert not (folder / "code" / "tests").exists()  # .detignore'd, as the CLI uploads
        assert (
            json.loads((folder / "metadata.json").read_text())["steps_completed"]
            == (checkpoint["metadata"]["steps_completed"])
        )


def test_restarted_trial_resumes_from_its_latest_checkpoint(full_run, tmp_path):
    """The master restarts a trial with its latest checkpoint and batches done (here: after
    epoch 1 of the full run); it trains epoch 2 only, to the same weights and metrics."""
    _, first, config = full_run
    after_epoch_1 = first.checkpoints()[0]
    master = FakeMaster(smaller_is_better=False, metric=SEARCHER_METRIC)
    with master.serving() as url:
        run = run_trial(
            master,
            url,
            tmp_path,
            config,
            latest_checkpoint=after_epoch_1["uuid"],
            steps_completed=6,
            run_id=2,
        )
    assert run.returncode == 0, run.stderr[-3000:]
    training = master.metrics("training")
    assert [m["stepsCompleted"] for m in training] == [12]
    assert len(training[0]["metrics"]["batchMetrics"]) == BATCHES_PER_EPOCH  # batches 7-12
    assert (
        training[0]["metrics"]["batchMetrics"]
        == first.metrics("training")[1]["metrics"]["batchMetrics"]
    )
    resumed = master.metrics("validation")
    assert [m["stepsCompleted"] for m in resumed] == [12]
    assert (
        resumed[0]["metrics"]["avgMetrics"]
        == first.metrics("validation")[1]["metrics"]["avgMetrics"]
    )
    assert [c["metadata"]["steps_completed"] for c in master.checkpoints()] == [12]


def test_the_experiment_configs_periods_are_honoured(tiny_model_dir, glue_dir, tmp_path):
    """min_validation_period, min_checkpoint_period, checkpoint_policy and scheduling_unit, as
    the master hands them over, decide when the trial validates, checkpoints and reports."""
    config = expanded_config(tiny_model_dir, glue_dir, tmp_path / "storage", epochs=2)
    config.update(
        min_validation_period={"batches": 4},
        min_checkpoint_period={"records": 40},  # 5 batches of 8
        checkpoint_policy="none",
        scheduling_unit=3,
    )
    master = FakeMaster(smaller_is_better=False, metric=SEARCHER_METRIC)
    with master.serving() as url:
        run = run_trial(master, url, tmp_path / "container", config)
    assert run.returncode == 0, run.stderr[-3000:]
    assert [m["stepsCompleted"] for m in master.metrics("validation")] == [4, 8, 12]
    assert [c["metadata"]["steps_completed"] for c in master.checkpoints()] == [5, 10, 12]
    # A training report at every boundary: each 3 batches, each validation and checkpoint.
    training = [m["stepsCompleted"] for m in master.metrics("training")]
    assert training == [3, 4, 5, 6, 8, 9, 10, 12]


def stopped_trial(tmp_path, config, command=SINGLE, slots=1, **master_settings):
    """A 200-epoch trial whose master stops it at its first validation (as ASHA at a rung)."""
    config["resources"]["slots_per_trial"] = slots
    config["entrypoint"] = " ".join(command)
    master = FakeMaster(
        smaller_is_better=False, metric=SEARCHER_METRIC, stop_after_validations=1, **master_settings
    )
    with master.serving() as url:
        run = run_trial(master, url, tmp_path / "container", config, command, slots)
    output = run.stdout + run.stderr
    assert run.returncode == 0, "\n".join(line for line in output.splitlines() if "Error" in line)
    assert master.unknown == []
    return master, output


@pytest.mark.parametrize(
    ("command", "slots"), [(SINGLE, 1), (DISTRIBUTED, 2)], ids=["1-process", "2-processes"]
)
@pytest.mark.parametrize("policy", ["best", "none"])
def test_a_searcher_stop_ends_the_trial_at_its_rung(
    command, slots, policy, tiny_model_dir, glue_dir, tmp_path
):
    """The chief asks right after the validation: no batch is trained after it, every rank
    exits there, and no checkpoint is written but the one the policy takes (the first
    validation is the best so far)."""
    config = expanded_config(tiny_model_dir, glue_dir, tmp_path / "storage", epochs=200)
    config["checkpoint_policy"] = policy
    master, output = stopped_trial(tmp_path, config, command, slots)
    assert master.stop_answered_at == BATCHES_PER_EPOCH
    assert master.last_reported_batch() == BATCHES_PER_EPOCH  # the validation's batch
    checkpoints = [c["metadata"]["steps_completed"] for c in master.checkpoints()]
    assert checkpoints == ([BATCHES_PER_EPOCH] if policy == "best" else [])
    assert output.count("the master has the trial STATE_STOPPING_COMPLETED: stopping") == 1
    assert output.count("the searcher stopped the trial: exiting") == slots  # the same boundary


@pytest.mark.parametrize(
    ("command", "slots"), [(SINGLE, 1), (DISTRIBUTED, 2)], ids=["1-process", "2-processes"]
)
def test_a_plateau_ends_the_trial_cleanly(command, slots, tiny_model_dir, glue_dir, tmp_path):
    """Early stopping with patience 1 and a min_delta of 1, which acc_and_f1 (0 to 1) can never
    beat: the trial ends right after its second validation, every rank there, exit code 0, with
    the checkpoints that checkpoint_policy best took and none after the stop."""
    config = expanded_config(tiny_model_dir, glue_dir, tmp_path / "storage", epochs=200)
    config["hyperparameters"].update(early_stopping_patience=1, early_stopping_min_delta=1.0)
    config["resources"]["slots_per_trial"] = slots
    config["entrypoint"] = " ".join(command)
    master = FakeMaster(smaller_is_better=False, metric=SEARCHER_METRIC)
    with master.serving() as url:
        run = run_trial(master, url, tmp_path / "container", config, command, slots)
    output = run.stdout + run.stderr
    assert run.returncode == 0, "\n".join(line for line in output.splitlines() if "Error" in line)
    assert master.unknown == []
    validations = master.metrics("validation")
    assert [m["stepsCompleted"] for m in validations] == [6, 12]
    assert master.last_reported_batch() == 12  # no batch trained after the stop
    first, second = (m["metrics"]["avgMetrics"][SEARCHER_METRIC] for m in validations)
    best = [6, 12] if second > first else [6]
    assert [c["metadata"]["steps_completed"] for c in master.checkpoints()] == best
    reason = (
        f"stopped early: {SEARCHER_METRIC} did not improve by more than 1 in 1 validation "
        f"(best {first:.4g} at batch 6)"
    )
    assert output.count(f"{reason}: exiting without training further") == slots


def test_a_lost_answer_is_caught_at_the_next_validation(tiny_model_dir, glue_dir, tmp_path):
    """The master is unavailable when the chief asks after the first validation (its second
    GetTrial: the harness reads the trial once as it starts). The chief asks again after the
    next validation, an epoch later here, before the poller's first question (after 10 s)."""
    config = expanded_config(tiny_model_dir, glue_dir, tmp_path / "storage", epochs=200)
    master, output = stopped_trial(tmp_path, config, failing_trial_gets=frozenset({2}))
    assert master.trial_gets()[1].status == 503
    assert master.stop_answered_at == master.last_reported_batch() == 2 * BATCHES_PER_EPOCH
    assert output.count("cannot read the trial's state from the master") == 1
    assert "the master answers again" in output
    assert output.count("the searcher stopped the trial: exiting") == 1


def test_a_diverged_trial_exits_early_once_and_reports_nothing_that_is_not_a_number(
    tiny_model_dir, glue_dir, tmp_path
):
    """A NaN searcher metric would fail an adaptive ASHA experiment in the master (getMetric,
    master/pkg/searcher/asha_stopping.go): the trial ends with one error line instead. It would
    diverge again if restarted: it reports an INVALID_HP early exit and exits 0, which the
    master (0.38.1, trial.go handleAllocationExit) completes rather than restarts."""
    config = expanded_config(tiny_model_dir, diverging_stsb(glue_dir, tmp_path), tmp_path, 2)
    config["data"]["task"] = "STS-B"
    config["searcher"].update(metric="validation_loss", smaller_is_better=True)
    config["hyperparameters"]["precision"] = "fp32"
    master = FakeMaster(smaller_is_better=True, metric="validation_loss")
    with master.serving() as url:
        run = run_trial(master, url, tmp_path / "container", config)
    assert run.returncode == 0, run.stderr[-3000:]
    assert master.early_exits() == ["EXITED_REASON_INVALID_HP"]
    assert master.unknown == []
    errors = [line for line in run.stderr.splitlines() if "error: " in line]
    assert len(errors) == 1 and "error: the training loss is inf at batch 1 (" in errors[0]
    assert "Traceback" not in run.stderr
    assert master.metrics("training") == master.metrics("validation") == []
    assert master.checkpoints() == []
