"""What a local run shows a person: progress, the summary, TensorBoard curves and the plot."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import pathlib
import re
import shlex
import socket
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import REPO, tiny_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import export
import model_def
import predict
from bert_glue.local import local_run, progress
from bert_glue.trial.settings import Searcher

STEPS_PER_EPOCH = 6  # 48 training rows in batches of 8 (local_config)


@pytest.fixture(scope="module")
def cli_run(tiny_model_dir, glue_dir, tmp_path_factory) -> dict:
    """`python model_def.py CONFIG --plot curves.png` in a subprocess, output not a terminal, in
    a folder of its own with its checkpoints and caches; one run that the tests below read.
    The script, the config, its data_dir and the model folder are paths relative to it."""
    folder = tmp_path_factory.mktemp("cli_run")
    config = tiny_config(tiny_model_dir, glue_dir)
    config["data"]["data_dir"] = os.path.relpath(glue_dir, folder)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, os.path.relpath(REPO / "model_def.py", folder), "config.yaml"]
    command += [f"data.model_name_or_path={os.path.relpath(tiny_model_dir, folder)}"]
    command += ["searcher.metric='validation_loss'"]  # a value in quotes: printed readably
    command += ["--plot", "curves.png", "--metrics-out", "metrics.json"]
    xdg = {"XDG_DATA_HOME": str(folder / "xdg-data"), "XDG_CACHE_HOME": str(folder / "xdg-cache")}
    run = subprocess.run(
        command, cwd=folder, env={**os.environ, **xdg}, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return {"stderr": run.stderr, "folder": folder, "xdg": xdg}


def test_progress_lines_carry_step_loss_lr_speed_and_eta(cli_run):
    lines = re.findall(
        r"^train (\d+)/(\d+) \((\d+)%\) loss ([\d.]+) lr ([\d.e+-]+) ([\d.]+) samples/s "
        r"eta (\d+)m(\d\d)s$",
        cli_run["stderr"],
        re.MULTILINE,
    )
    # The reporting period (20 batches) is longer than an epoch: one line per epoch.
    assert [(int(done), int(total)) for done, total, *_ in lines] == [(6, 12), (12, 12)]
    assert [int(line[2]) for line in lines] == [50, 100]
    assert all(float(line[5]) > 0 for line in lines)  # samples/s
    assert lines[-1][6:] == ("0", "00")  # nothing left at the end
    validations = re.findall(r"^validation after (\d+) batches: (.*)$", cli_run["stderr"], re.M)
    assert [int(b) for b, _ in validations] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert all("acc " in shown and "validation_loss " in shown for _, shown in validations)


def test_determined_per_period_lines_stay_out_of_the_terminal(cli_run):
    for line in ("report_training_metrics", "report_progress with progress", "status: training"):
        assert line not in cli_run["stderr"]


def summary_of(stderr: str) -> str:
    return stderr[stderr.rindex("Run summary") :]


def printed_commands(summary: str) -> dict[str, list[str]]:
    """The summary's resume, predict and export commands, as a shell would split them."""
    lines = re.findall(r"^(resume|predict|export) +(.*)$", summary, re.M)
    return {name: shlex.split(line) for name, line in lines}


def run_printed(command: list[str], folder: str | os.PathLike = "elsewhere") -> int:
    """A command as the summary prints it, run in this process from another folder (by default
    elsewhere/ below this one): `python SCRIPT ...`, SCRIPT one of this project's command
    lines by its absolute path."""
    python, script, *args = command
    assert python == "python" and pathlib.Path(script).is_absolute()
    scripts = {"model_def.py": model_def, "predict.py": predict, "export.py": export}
    pathlib.Path(folder).mkdir(exist_ok=True)
    with contextlib.chdir(folder):
        return scripts[pathlib.Path(script).name].main(args)


def table(summary: str) -> list[str]:
    """The summary's table of metrics: its heading and a row per metric."""
    return re.findall(r"^  (?:metric .*|\w+ +[\d.]+ +[\d.]+.*)$", summary, re.M)


def checkpoint_lines(summary: str) -> list[str]:
    return re.findall(r"^checkpoint  .*$", summary, re.M)


def checkpoints_in(storage: pathlib.Path) -> list[str]:
    return sorted(p.parent.name for p in storage.glob("*/metadata.json"))


def saved_checkpoints(stderr: str) -> list[tuple[str, int]]:
    return [
        (uuid, int(b))
        for uuid, b in re.findall(r"^saved checkpoint (\S+) at batch (\d+)$", stderr, re.M)
    ]


def test_summary_names_the_checkpoints_on_disk_and_how_to_resume(cli_run, tiny_model_dir, glue_dir):
    summary = summary_of(cli_run["stderr"])
    storage = cli_run["folder"] / "xdg-data" / "determined"
    saved = saved_checkpoints(cli_run["stderr"])
    assert [batches for _, batches in saved] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    listed = re.findall(r"^checkpoint  (\S+)  (.*), batch (\d+)$", summary, re.M)
    last = pathlib.Path(listed[-1][0])
    assert listed[-1][1].endswith("last") and (last / "metadata.json").is_file()
    assert (last.name, int(listed[-1][2])) == saved[-1] and last.parent == storage
    # The best checkpoint by validation_loss, and the last: here the same one or two.
    history = [m for m in json.loads((cli_run["folder"] / "metrics.json").read_text())]
    best = min(history, key=lambda m: m["validation_loss"])
    best_uuid = dict((b, u) for u, b in saved)[best["batches"]]
    assert checkpoints_in(storage) == sorted({best_uuid, last.name})
    assert re.search(
        rf"^checkpoint  {storage / best_uuid}  best validation_loss {best['validation_loss']:.4f}",
        summary,
        re.M,
    )
    data = {"data_dir": glue_dir, "model_name_or_path": tiny_model_dir}  # absolute, not typed
    command = ["python", str(REPO / "model_def.py"), str(cli_run["folder"] / "config.yaml")]
    command += ["searcher.metric='validation_loss'"]
    command += [f"data.{key}={path}" for key, path in data.items()]
    assert printed_commands(summary)["resume"] == [*command, "--resume", last.name]
    assert " \"searcher.metric='validation_loss'\" " in summary  # no '"'"' in sight
    assert printed_commands(summary)["predict"][2] == str(storage / best_uuid)
    row = re.search(r"^  validation_loss\s+([\d.]+)\s+([\d.]+)  <- searcher.metric$", summary, re.M)
    assert float(row[2]) <= float(row[1])  # best <= final: local_config's metric is a loss
    assert re.search(r"^  acc\s+[\d.]+\s+[\d.]+$", summary, re.M)
    times = re.search(
        r"start-up ([\d.]+) s, data \(download, featurize\) ([\d.]+) s, training ([\d.]+) s, "
        r"validation ([\d.]+) s, checkpoints ([\d.]+) s",
        summary,
    )
    startup, data, training, validation, checkpoints = map(float, times.groups())
    minutes, seconds = map(int, re.search(r"^time        (\d+)m(\d\d)s:", summary, re.M).groups())
    assert startup + training + validation + checkpoints <= 60 * minutes + seconds + 1
    assert startup > 1  # from the process's start: imports and the model count
    assert training > 0 and min(data, validation, checkpoints) >= 0
    assert float(re.search(r"^speed       ([\d.]+) samples/s", summary, re.M)[1]) > 0


@pytest.mark.smoke
def test_every_command_the_summary_prints_works_on_a_finished_run(cli_run, capsys, monkeypatch):
    """Each run from another folder than the run's, with its storage."""
    for name, value in cli_run["xdg"].items():
        monkeypatch.setenv(name, value)
    commands = printed_commands(summary_of(cli_run["stderr"]))
    assert run_printed(commands["resume"]) == 0
    stderr = capsys.readouterr().err
    assert not saved_checkpoints(stderr) and "validation after" not in stderr  # nothing trained
    events = pathlib.Path(cli_run["xdg"]["XDG_DATA_HOME"], "determined", "tensorboard")
    assert len(list(events.iterdir())) == 1 and not pathlib.Path("elsewhere", "runs").exists()
    resumed = summary_of(stderr)
    uuid = commands["resume"][-1]
    assert f"\n  finished before: {uuid} trained all 12 batches of " in resumed
    assert re.search(r"^time        \d+m\d\ds, nothing trained$", resumed, re.M)
    assert "\nspeed " not in resumed
    # The run's validations and checkpoints, as it left them: the same table, the same best
    # checkpoint to predict and export from, the same last one to resume.
    original = summary_of(cli_run["stderr"])
    assert table(resumed) == table(original) and len(table(original)) == 6
    assert checkpoint_lines(resumed) == checkpoint_lines(original)
    assert printed_commands(resumed) == commands
    assert run_printed(commands["predict"]) == 0
    assert (pathlib.Path("elsewhere", "submission", "MRPC.tsv")).is_file()
    assert run_printed(commands["export"]) == 0
    assert (pathlib.Path("elsewhere", "hf_model", "config.json")).is_file()


def test_a_resumed_run_trains_the_epochs_added_and_its_commands_work(
    local_config, capsys, caplog, tmp_path
):
    local_config["hyperparameters"]["num_train_epochs"] = 1
    pathlib.Path("config.yaml").write_text(yaml.safe_dump(local_config))
    assert model_def.main(["config.yaml"]) == 0
    (first,) = saved_checkpoints(capsys.readouterr().err)
    more = "hyperparameters.num_train_epochs=2"
    resume = ["config.yaml", more, "--resume", first[0]]
    with caplog.at_level(logging.INFO):
        assert model_def.main([*resume, "--metrics-out", "metrics.json"]) == 0
    stderr = capsys.readouterr().err
    (second,) = saved_checkpoints(stderr)
    assert second[1] == 2 * STEPS_PER_EPOCH
    model = local_config["data"]["model_name_or_path"]
    assert f"{model}: MRPC head, 2 output(s)" in caplog.messages  # built, then replaced:
    loaded = f"resuming {tmp_path / 'xdg-data' / 'determined' / first[0]} after batch 6: its "
    assert loaded + "weights, the MRPC head's too, and its optimizer replace those just built" in (
        caplog.messages
    )
    # The run resumed is this one's: its validation counts, and its checkpoint stays if best.
    history = json.loads(pathlib.Path("metrics.json").read_text())
    assert [m["batches"] for m in history] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    best = min(history, key=lambda m: m["validation_loss"])["batches"]
    best_uuid = {first[1]: first[0], second[1]: second[0]}[best]
    storage = local_run.checkpointing.storage_dir()
    assert checkpoints_in(storage) == sorted({best_uuid, second[0]})
    # One run, one TensorBoard folder: the resumed run's validation in the first's.
    (events,) = (storage / "tensorboard").iterdir()
    assert scalar_steps(events, "Determined/val_acc") == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    commands = printed_commands(summary_of(stderr))
    assert commands["export"][2] == str(storage / best_uuid)
    assert commands["resume"][2:] == [str(tmp_path / "config.yaml"), more, "--resume", second[0]]
    assert run_printed(commands["resume"]) == 0
    assert "finished before" in summary_of(capsys.readouterr().err)
    assert run_printed(commands["predict"]) == 0 and run_printed(commands["export"]) == 0


def test_relative_folders_become_absolute_and_other_names_stay(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "ckpt").mkdir()
    typed = {"data_dir": "glue", "model_name_or_path": "model", "init_from": "ckpt"}
    config = {"data": {**typed, "cache_dir": "~/cache", "path_to_mrpc": ""}}
    changed = local_run.absolute_paths(config)
    absolute = {key: str(tmp_path / value) for key, value in typed.items()}
    absolute["cache_dir"] = os.path.expanduser("~/cache")
    assert changed == {f"data.{key}": path for key, path in absolute.items()}
    assert config["data"] == {**absolute, "path_to_mrpc": ""}
    # A Hub name and a checkpoint uuid with no folder of that name here stay as they are.
    names = {
        "data_dir": str(tmp_path),
        "model_name_or_path": "bert-base-uncased",
        "init_from": "0f6e4c9a-2b7d-4e1f-9a3c-5d8b1e2f4a6c",
    }
    config = {"data": dict(names)}
    assert local_run.absolute_paths(config) == {} and config["data"] == names


def test_the_rerun_command_names_absolute_paths_a_shell_reads_back(tmp_path):
    args = argparse.Namespace(
        config="c.yaml", overrides=["data.data_dir=d", "data.custom.labels=['0', '1']"]
    )
    folders = {"data.data_dir": "/data/a: b"}  # YAML would read `a: b` as a mapping
    command = local_run.rerun_command("model_def.py", args, folders)
    assert command == [
        "python",
        str(tmp_path / "model_def.py"),
        str(tmp_path / "c.yaml"),
        "data.custom.labels=['0', '1']",
        'data.data_dir="/data/a: b"',
    ]
    shown = progress.shell_join(command)
    assert shown.endswith(""" "data.custom.labels=['0', '1']" 'data.data_dir="/data/a: b"'""")
    assert shlex.split(shown) == command
    assert shlex.split(progress.shell_join(["it's $HOME"])) == ["it's $HOME"]


def test_without_the_network_each_failed_hub_request_is_one_line(local_config, tmp_path):
    """A Hub name with the Hub unreachable: huggingface_hub's retries, one line each, then the
    error; not each warning twice with a "Retrying in" line between."""
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    local_config["data"]["model_name_or_path"] = "bert-base-uncased"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(local_config))
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HOME": str(tmp_path)}
    command = [sys.executable, str(REPO / "model_def.py"), "config.yaml", "--no-tensorboard"]
    run = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 1
    *lines, error = run.stderr.strip().splitlines()
    assert error.startswith("error: data.model_name_or_path: 'bert-base-uncased' is not a local")
    attempts = [line for line in lines if " INFO " not in line]  # the run's own INFO aside
    assert 1 <= len(attempts) <= 6  # huggingface_hub 2.4 tries 6 times
    for line in attempts:
        assert re.fullmatch(
            r"\S+ \S+ WARNING '.*' thrown while requesting HEAD "
            rf"http://127.0.0.1:{port}/bert-base-uncased/resolve/main/config.json",
            line,
        ), line


def test_tensorboard_events_hold_training_and_validation_curves(cli_run):
    """Beside the checkpoints, in tensorboard/<time>_<host> as torch names a run's folder; not
    in the folder the run was started in, nor any for the resume that trained nothing."""
    (folder,) = (cli_run["folder"] / "xdg-data" / "determined" / "tensorboard").iterdir()
    assert (
        f"TensorBoard events into {folder}: tensorboard --logdir {folder.parent}"
        in (cli_run["stderr"])
    )
    assert not (cli_run["folder"] / "runs").exists()
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    tags = {tag.removeprefix("Determined/") for tag in accumulator.Tags()["scalars"]}
    assert {"loss", "lr", "val_acc", "val_f1", "val_acc_and_f1", "validation_loss"} <= tags
    assert [e.step for e in accumulator.Scalars("Determined/val_acc")] == [6, 12]
    # The loss is averaged on the device and reported per period (each epoch here).
    assert [e.step for e in accumulator.Scalars("Determined/loss")] == [6, 12]


def scalar_steps(folder: pathlib.Path, tag: str) -> list[int]:
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return [e.step for e in accumulator.Scalars(tag)]


def test_plot_is_a_png_beside_the_run(cli_run):
    png = cli_run["folder"] / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plot: curves.png" in cli_run["stderr"]


def test_plot_has_one_panel_per_metric(local_config, tmp_path):
    recorder = progress.RunRecorder(io.StringIO(), interactive=False)
    local_run.run_local(model_def.run, local_config, recorder=recorder)
    titles = progress.plot_history(recorder, tmp_path / "p.png")
    assert titles == ["training loss", "acc", "acc_and_f1", "f1", "glue_score", "validation_loss"]
    assert (tmp_path / "p.png").stat().st_size > 10_000
    assert not list(tmp_path.glob(".p.png*"))  # written whole, then renamed


def test_terminal_gets_live_bars_for_training_and_validation(local_config):
    stream = io.StringIO()
    recorder = progress.RunRecorder(stream, interactive=True)
    local_run.run_local(model_def.run, local_config, recorder=recorder)
    shown = stream.getvalue()
    # tqdm redraws at most every 0.1 s, but always on creation and on a new postfix.
    assert re.search(r"training: +0%.*\| *0/12 ", shown)
    postfix = r"loss [\d.]+, lr [\d.e+-]+, [\d.]+ samples/s"
    assert re.search(rf"training: +50%.*\| *6/12 .*{postfix}", shown)  # the epoch's report
    assert re.search(r"validation: +0%.*\| *0/3 ", shown)  # 20 dev rows in batches of 8
    assert "\ntrain " not in shown  # bars instead of lines


def test_metrics_file_and_its_plot(local_config, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(local_config))
    out = tmp_path / "out" / "metrics.json"
    out.parent.mkdir()
    assert model_def.main([str(config), "--metrics-out", str(out), "--no-tensorboard"]) == 0
    history = json.loads(out.read_text())
    assert [m["batches"] for m in history] == [6, 12]
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "runs").exists()


def test_a_resumed_recorder_keeps_the_runs_best_checkpoint(tmp_path, monkeypatch):
    """What the run before recorded in its last checkpoint: its best checkpoint is not its
    last, and another it had deleted since is not named."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    storage = local_run.checkpointing.storage_dir()
    for uuid in ("best", "last"):
        (storage / uuid).mkdir(parents=True)
        (storage / uuid / "metadata.json").write_text("{}")
    before = progress.RunRecorder(io.StringIO(), interactive=False)
    before.losses = [(6, np.float32(0.9)), (12, 0.5)]
    before.validations = [
        (6, {"validation_loss": np.float64(0.4), "acc": 0.7, "batches": 6}),
        (12, {"validation_loss": 0.6, "acc": 0.8, "batches": np.int64(12)}),
    ]
    before.checkpoints = [(3, "deleted"), (6, "best")]  # as batch 12's checkpoint is saved
    state = before.state_dict()
    assert all(type(v) in (int, float) for _, m in state["validations"] for v in m.values())

    resumed = progress.RunRecorder(io.StringIO(), interactive=False)
    resumed.resumed(state, 12, "last")
    assert resumed.checkpoints == [(6, "best"), (12, "last")]
    assert resumed.losses == [(6, pytest.approx(0.9)), (12, 0.5)]
    command = ["python", str(REPO / "model_def.py"), "c.yaml"]
    shown = progress.summary(resumed, Searcher("validation_loss"), command)
    assert checkpoint_lines(shown) == [
        f"checkpoint  {storage / 'best'}  best validation_loss 0.4000, batch 6",
        f"checkpoint  {storage / 'last'}  last, batch 12",
    ]
    commands = printed_commands(shown)
    assert commands["export"][2] == str(storage / "best")
    assert commands["resume"][-1] == "last"


def test_the_summary_reads_an_unset_smaller_is_better_as_determined_does():
    recorder = progress.RunRecorder(io.StringIO(), interactive=False)
    recorder.validations = [(6, {"validation_loss": 0.5}), (12, {"validation_loss": 0.7})]
    shown = progress.summary(
        recorder,
        Searcher.of({"searcher": {"metric": "validation_loss"}}),
        ["python", "model_def.py"],
    )
    assert table(shown)[0].endswith("  at smallest validation_loss (batch 6)")


def test_each_column_of_the_summary_says_which_validation_it_holds():
    """Every metric at the validation best by searcher.metric, not each metric's own best: the
    heading says so (f1 is higher at the end than in the column of the best validation_loss)."""
    recorder = progress.RunRecorder(io.StringIO(), interactive=False)
    recorder.validations = [
        (306, {"acc": 0.7279, "f1": 0.8271, "validation_loss": 0.5523, "batches": 306}),
        (918, {"acc": 0.7377, "f1": 0.8331, "validation_loss": 0.5712, "batches": 918}),
    ]
    command = ["python", "model_def.py"]
    assert table(progress.summary(recorder, Searcher("validation_loss"), command)) == [
        "  metric              final (batch 918)  at smallest validation_loss (batch 306)",
        "  acc                            0.7377                                   0.7279",
        "  f1                             0.8331                                   0.8271",
        "  validation_loss                0.5712                                   0.5523"
        "  <- searcher.metric",
    ]
    assert table(progress.summary(recorder, Searcher("f1", False), command))[0] == (
        "  metric              final (batch 918)  at largest f1 (batch 918)"
    )
    recorder.validations = [(6, {"acc": math.nan})]  # no best: the last validation alone
    shown = progress.summary(recorder, Searcher("acc", False), command)
    assert "\n  metric              final (batch 6)\n" in shown


def test_the_summary_names_where_the_starting_weights_came_from():
    recorder = progress.RunRecorder(io.StringIO(), interactive=False)
    command = ["python", "model_def.py"]
    shown = progress.summary(recorder, Searcher("acc"), command, init_from="ckpt/abc")
    assert "\nweights     from data.init_from ckpt/abc\n" in shown
    assert "data.init_from" not in progress.summary(recorder, Searcher("acc"), command)


def test_timer_sums_its_intervals(monkeypatch):
    clock = iter([10.0, 12.5, 20.0, 21.0, 30.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    timer = progress.Timer()
    timer.start()  # 10.0
    timer.stop()  # 12.5
    timer.start()  # 20.0
    assert timer.elapsed() == 3.5  # 21.0: the running interval counts
    timer.stop()  # 30.0
    timer.stop()  # stopped already: no clock read, nothing added
    assert timer.seconds == 12.5


def test_durations_read_as_minutes_or_hours():
    assert progress.format_duration(59.6) == "1m00s"
    assert progress.format_duration(3725) == "1h02m05s"


def test_a_local_run_honours_the_configs_periods(local_config, tmp_path):
    local_config.update(
        min_validation_period={"batches": 4},
        min_checkpoint_period={"batches": 5},
        checkpoint_policy="all",  # and a checkpoint after each validation
        scheduling_unit=3,
        checkpoint_storage={"save_trial_latest": 100},  # keeps them all
    )
    recorder = progress.RunRecorder(io.StringIO(), interactive=False)
    local_run.run_local(model_def.run, local_config, recorder=recorder)
    assert [batches for batches, _ in recorder.validations] == [4, 8, 12]
    assert [batches for batches, _ in recorder.losses] == [3, 4, 5, 6, 8, 9, 10, 12]
    folders = (tmp_path / "xdg-data" / "determined").glob("*/metadata.json")
    steps = sorted(json.loads(p.read_text())["steps_completed"] for p in folders)
    assert steps == [4, 5, 8, 10, 12]


def test_the_relaunch_forwards_the_command_line_less_nproc():
    argv = ["c.yaml", "--nproc", "2", "data.task=RTE", "--plot", "p.png", "--nproc=3", "--verbose"]
    assert local_run.without_nproc(argv) == [
        "c.yaml",
        "data.task=RTE",
        "--plot",
        "p.png",
        "--verbose",
    ]


def test_third_party_noise_is_one_line(cli_run):
    stderr = cli_run["stderr"]
    assert "LOAD REPORT" not in stderr and "Loading weights" not in stderr
    assert len(re.findall(r"tiny-bert\d*: MRPC head, 2 output\(s\)$", stderr, re.M)) == 1
