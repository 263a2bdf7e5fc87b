"""glue_results: a GLUE grid's trials, from a local run's folder and from a Determined
experiment read with the SDK against a stand-in master on loopback (tests/fake_sdk_master.py),
whose checkpoints lie in `directory` storage under tmp_path."""

from __future__ import annotations

import json
import pathlib
import socket

import pytest
from fake_sdk_master import FakeCheckpoint, FakeTrial, SdkMaster

import glue_report
from bert_glue.results import glue_results
from bert_glue.trial import checkpointing

EXPERIMENT = 7
# The files of each stand-in checkpoint; their bytes name the checkpoint.
CHECKPOINT_FILES = ("state_dict.pth", "code/model_def.py")


def mrpc(acc: float, f1: float) -> dict:
    """An MRPC validation, named as metrics.compute_split_metrics names it."""
    return {"acc": acc, "f1": f1, "acc_and_f1": (acc + f1) / 2, "validation_loss": 0.5}


def grid_trials() -> list[FakeTrial]:
    return [
        FakeTrial(
            11,
            {"task": "MRPC", "seed": 1, "learning_rate": 2e-5},
            "STATE_COMPLETED",
            validations=[(6, mrpc(0.6, 0.7)), (12, mrpc(0.75, 0.8))],
            checkpoints=[FakeCheckpoint("c11-12", 12), FakeCheckpoint("c11-6", 6)],
        ),
        FakeTrial(
            12,
            {"task": "MRPC", "seed": 2, "learning_rate": 2e-5},
            "STATE_COMPLETED",
            validations=[(12, mrpc(0.5, 0.6)), (24, mrpc(0.7, 0.9))],
            checkpoints=[FakeCheckpoint("c12-12", 12), FakeCheckpoint("c12-24", 24)],
        ),
        FakeTrial(13, {"task": "RTE", "seed": 1, "learning_rate": 2e-5}, "STATE_ERROR"),
        # Its only COMPLETED checkpoint predates its validation; the one at 6 steps failed.
        FakeTrial(
            14,
            {"task": "STS-B", "seed": 1, "learning_rate": 2e-5},
            "STATE_STOPPING_CANCELED",
            validations=[(6, {"pearson": 0.4, "spearmanr": 0.3, "corr": 0.35})],
            checkpoints=[FakeCheckpoint("c14-3", 3), FakeCheckpoint("c14-6", 6, "STATE_ERROR")],
        ),
    ]


def write_checkpoints(storage: pathlib.Path, trials: list[FakeTrial]) -> None:
    for trial in trials:
        for checkpoint in trial.checkpoints:
            for name in CHECKPOINT_FILES:
                path = storage / checkpoint.uuid / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"{checkpoint.uuid} {name}")


def stand_in(tmp_path: pathlib.Path, trials: list[FakeTrial], mounted: bool = True) -> SdkMaster:
    """A master whose checkpoints lie in `directory` storage; `mounted`: this machine sees that
    folder (else only the master's agents do, and a download goes through the master)."""
    agents = tmp_path / "storage"
    write_checkpoints(agents, trials)
    seen_here = agents if mounted else tmp_path / "storage-on-agents-only"
    storage = {"type": "directory", "container_path": str(seen_here)}
    return SdkMaster(EXPERIMENT, trials, storage, agent_storage=agents)


@pytest.fixture(autouse=True)
def sdk_env(tmp_path, monkeypatch) -> None:
    """The SDK's login from DET_USER/DET_PASS, its token cache in tmp_path."""
    monkeypatch.setenv("DET_USER", "glue")
    monkeypatch.setenv("DET_PASS", "Glue-Pass-1")
    monkeypatch.setenv("DET_DEBUG_CONFIG_PATH", str(tmp_path / "det-config"))
    for name in ("DET_USER_TOKEN", "DET_MASTER_CERT_FILE", "DET_MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def results(tmp_path, monkeypatch) -> tuple[SdkMaster, dict[str, glue_results.TrialResult]]:
    master = stand_in(tmp_path, grid_trials())
    with master.serving() as url:
        monkeypatch.setenv("DET_MASTER", url)
        yield master, {r.name: r for r in glue_results.experiment_results(EXPERIMENT)}


def test_every_trial_with_task_seed_state_and_last_validation(results):
    master, by_name = results
    assert list(by_name) == ["MRPC seed 1", "MRPC seed 2", "RTE seed 1", "STS-B seed 1"]
    assert [(r.task, r.seed, r.state) for r in by_name.values()] == [
        ("MRPC", 1, "COMPLETED"),
        ("MRPC", 2, "COMPLETED"),
        ("RTE", 1, "ERROR"),
        ("STS-B", 1, "STOPPING_CANCELED"),
    ]
    assert by_name["MRPC seed 1"].metrics == mrpc(0.75, 0.8)
    assert by_name["MRPC seed 2"].metrics == mrpc(0.7, 0.9)
    assert by_name["RTE seed 1"].metrics is None
    assert by_name["STS-B seed 1"].metrics == {"pearson": 0.4, "spearmanr": 0.3, "corr": 0.35}
    assert {r.model for r in by_name.values()} == {"bert-base-uncased"}  # the experiment's
    assert by_name["MRPC seed 2"].settings == {"task": "MRPC", "seed": 2, "learning_rate": 2e-5}
    assert master.unknown == []
    assert len(master.logins()) == 1


def test_checkpoint_is_the_one_saved_at_the_last_validation(results, tmp_path):
    master, by_name = results
    for name, uuid, steps in [("MRPC seed 1", "c11-12", 12), ("MRPC seed 2", "c12-24", 24)]:
        folder = by_name[name].checkpoint(tmp_path / "out" / name)
        assert folder == tmp_path / "out" / name
        for file in CHECKPOINT_FILES:
            assert (folder / file).read_text() == f"{uuid} {file}"
        # The SDK writes the checkpoint's metadata (from the master) beside its files.
        assert json.loads((folder / "metadata.json").read_text())["steps_completed"] == steps
    assert by_name["RTE seed 1"].checkpoint is None
    assert by_name["STS-B seed 1"].checkpoint is None
    assert not any(r.path.startswith("/checkpoints/") for r in master.requests)


def test_a_trial_that_stopped_early_is_reported_at_its_best_validation(tmp_path, monkeypatch):
    def scored(score: float) -> dict:
        return {**mrpc(score, score), "glue_score": score}  # the fake master's searcher.metric

    trial = FakeTrial(
        21,
        {"task": "MRPC", "seed": 1, "early_stopping_patience": 2},
        "STATE_COMPLETED",
        validations=[(6, scored(0.6)), (12, scored(0.8)), (18, scored(0.7)), (24, scored(0.75))],
        # checkpoint_policy best: at each new best; none at the stop
        checkpoints=[FakeCheckpoint("c21-6", 6), FakeCheckpoint("c21-12", 12)],
    )
    with stand_in(tmp_path, [trial]).serving() as url:
        monkeypatch.setenv("DET_MASTER", url)
        (result,) = glue_results.experiment_results(EXPERIMENT)
    assert result.metrics == scored(0.8)
    assert result.checkpoint_ref == "c21-12"


def test_checkpoint_downloads_through_the_master_where_storage_is_not_mounted(
    tmp_path, monkeypatch
):
    master = stand_in(tmp_path, grid_trials()[:1], mounted=False)
    with master.serving() as url:
        monkeypatch.setenv("DET_MASTER", url)
        (result,) = glue_results.experiment_results(EXPERIMENT)
        folder = result.checkpoint(tmp_path / "out")
    assert [r.path for r in master.requests if r.path.startswith("/checkpoints/")] == [
        "/checkpoints/c11-12"
    ]
    for file in CHECKPOINT_FILES:
        assert (folder / file).read_text() == f"c11-12 {file}"


def test_a_second_call_logs_in_with_the_cached_token(tmp_path, monkeypatch):
    master = stand_in(tmp_path, grid_trials())
    with master.serving() as url:
        monkeypatch.setenv("DET_MASTER", url)
        first = glue_results.experiment_results(EXPERIMENT)
        second = glue_results.experiment_results(EXPERIMENT)
    assert [r.metrics for r in second] == [r.metrics for r in first]
    assert len(master.logins()) == 1
    assert [r.path for r in master.requests].count("/api/v1/me") == 1


def test_a_trial_without_task_is_not_a_glue_grid(tmp_path, monkeypatch):
    trials = [*grid_trials(), FakeTrial(15, {"learning_rate": 1e-3}, "STATE_COMPLETED")]
    master = stand_in(tmp_path, trials)
    with master.serving() as url:
        monkeypatch.setenv("DET_MASTER", url)
        with pytest.raises(
            ValueError, match=r"^experiment 7 trial 15 has no hyperparameter 'task'"
        ):
            glue_results.experiment_results(EXPERIMENT)


def test_unknown_experiment(tmp_path, monkeypatch):
    master = stand_in(tmp_path, grid_trials())
    with master.serving() as url:
        monkeypatch.setenv("DET_MASTER", url)
        with pytest.raises(ValueError) as raised:
            glue_results.experiment_results(99)
    assert str(raised.value) == f"experiment 99 not found on the Determined master at {url}"


def test_no_det_master(monkeypatch):
    monkeypatch.delenv("DET_MASTER", raising=False)
    with pytest.raises(ValueError, match="^DET_MASTER is not set"):
        glue_results.experiment_results(EXPERIMENT)


def test_unreachable_master_is_named(monkeypatch):
    with socket.socket() as s:  # a loopback port nothing listens on once it is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DET_MASTER", f"127.0.0.1:{port}")
    with pytest.raises(
        ValueError, match=rf"^no Determined master answers at http://127\.0\.0\.1:{port} "
    ):
        glue_results.experiment_results(EXPERIMENT)


def test_wrong_password(tmp_path, monkeypatch):
    master = stand_in(tmp_path, grid_trials())
    monkeypatch.setenv("DET_PASS", "Not-The-Pass-2")
    with master.serving() as url:
        monkeypatch.setenv("DET_MASTER", url)
        with pytest.raises(
            ValueError, match=rf"^the Determined master at {url} did not accept the login"
        ):
            glue_results.experiment_results(EXPERIMENT)


def test_local_results_reads_every_finished_trial(tmp_path):
    grid = tmp_path / "grid"
    records = {
        "MRPC-1": {
            "task": "MRPC",
            "seed": 1,
            "validations": [mrpc(0.6, 0.7), mrpc(0.75, 0.8)],
            "checkpoint": str(grid / "MRPC-1" / "checkpoint"),
            "identity": {
                "hyperparameters": {"task": "MRPC", "seed": 1, "learning_rate": 0.1},
                "data": {"model_name_or_path": "tiny"},
            },
        },
        "WNLI": {
            "task": "WNLI",
            "seed": None,
            "validations": [{"acc": 0.56}],
            "checkpoint": "c",
            "identity": {"hyperparameters": {}, "data": {"model_name_or_path": "tiny"}},
        },
    }
    for name, record in records.items():
        (grid / name).mkdir(parents=True)
        (grid / name / "result.json").write_text(json.dumps(record))
    (grid / "RTE-1").mkdir()  # a trial still running: no result.json yet

    results = glue_results.local_results(grid)

    assert [(r.name, r.task, r.seed, r.state) for r in results] == [
        ("MRPC seed 1", "MRPC", 1, "COMPLETED"),
        ("WNLI", "WNLI", None, "COMPLETED"),
    ]
    assert [r.metrics for r in results] == [mrpc(0.75, 0.8), {"acc": 0.56}]
    assert results[0].checkpoint(tmp_path / "unused") == grid / "MRPC-1" / "checkpoint"
    assert results[1].checkpoint(tmp_path / "unused") == pathlib.Path("c")
    assert [r.checkpoint_ref for r in results] == [str(grid / "MRPC-1" / "checkpoint"), "c"]
    assert [r.start for r in results] == ["", ""]  # no data.init_from: the pre-trained model
    assert {r.model for r in results} == {"tiny"}
    assert [r.settings for r in results] == [
        {"task": "MRPC", "seed": 1, "learning_rate": 0.1, "data.model_name_or_path": "tiny"},
        {"data.model_name_or_path": "tiny"},
    ]


def test_glue_report_of_a_cluster_experiment(tmp_path, monkeypatch):
    """glue_report.py <experiment id>: the table of the completed trials, the others listed."""
    master = stand_in(tmp_path, grid_trials())
    out = tmp_path / "report"
    with master.serving() as url:
        monkeypatch.setenv("DET_MASTER", url)
        assert glue_report.main([str(EXPERIMENT), "--output-dir", str(out), "--no-submission"]) == 0
    table = (out / "results.md").read_text()
    assert table.startswith("# GLUE dev results: bert-base-uncased\n")
    # F1 0.8 and 0.9, accuracy 0.75 and 0.7: seed 2 scores 0.8 against seed 1's 0.775.
    assert "| MRPC | F1 / acc | 2 | 85.0 ± 7.1 / 72.5 ± 3.5 | 90.0 / 70.0 (seed 2) |" in table
    assert "Not counted:\n- RTE seed 1: ERROR\n- STS-B seed 1: STOPPING_CANCELED\n" in table
    assert "(1 of 9 tasks)" in table


def test_best_checkpoint_prints_the_uuid_for_init_from(tmp_path, monkeypatch, capsys):
    master = stand_in(tmp_path, grid_trials())
    with master.serving() as url:
        monkeypatch.setenv("DET_MASTER", url)
        assert glue_report.main([str(EXPERIMENT), "--best-checkpoint", "mrpc"]) == 0
        assert capsys.readouterr().out == "c12-24\n"  # seed 2's last checkpoint: its best
        with pytest.raises(SystemExit, match="^error: RTE: no completed RTE trial from the pre"):
            glue_report.main([str(EXPERIMENT), "--best-checkpoint", "RTE"])
    assert not (tmp_path / "glue_report").exists()  # no report written


@pytest.mark.parametrize("source", ["checkpoint", "export", "uuid", "hub"])
def test_a_trial_started_from_a_fine_tuned_model_names_its_task(source, tmp_path, monkeypatch):
    storage = tmp_path / "checkpoints"
    monkeypatch.setattr(checkpointing, "storage_dir", lambda: storage)
    checkpoint = storage / "0123-abcd"
    checkpoint.mkdir(parents=True)
    load_data = {"hparams": {"task": "MNLI", "seed": 1}, "experiment_config": {"data": {}}}
    (checkpoint / "load_data.json").write_text(json.dumps(load_data))
    export = tmp_path / "export"
    export.mkdir()
    (export / "config.json").write_text(json.dumps({"finetuning_task": "mnli"}))
    init_from = {
        "checkpoint": str(checkpoint),
        "export": str(export),
        "uuid": "0123-abcd",
        "hub": "textattack/bert-base-uncased-MNLI",
    }[source]
    expected = "textattack/bert-base-uncased-MNLI" if source == "hub" else "MNLI"
    label = glue_results.start_label(init_from, glue_results.local_source_task)
    assert label == expected
    assert glue_results.start_label(None, glue_results.local_source_task) == ""
