"""Run a PyTorchTrial from an experiment config on this machine, no cluster.

Determined's Trainer API in local mode, with what a person at a terminal wants around it:
progress bars (or a line every reporting period when the output is no terminal), TensorBoard
event files, a closing summary and an optional plot. `--nproc N` relaunches the same command in
N processes under torchrun; `--resume` continues from a checkpoint exactly where it stopped.
The runner takes the function that builds and trains the trial (model_def.main passes
model_def.run, which a cluster runs too), so nothing here imports the trial.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import determined as det
import torch
import yaml
from determined import pytorch
from determined.common import detignore
from transformers.utils import logging as hf_logging

import constants
import data
import download_glue_data
from bert_glue.determined_0_38 import workarounds
from bert_glue.local import local_grid, progress
from bert_glue.local.config import ConfigLoader, local_hparams, local_settings
from bert_glue.results import glue_results
from bert_glue.trial import checkpointing, metrics
from bert_glue.trial.settings import Searcher

logger = logging.getLogger(__name__)

# The data keys that name a folder: always, or (else a Hub name, a checkpoint uuid) when a
# folder of that name is there, as transformers' from_pretrained reads it.
FOLDER_KEYS = ("data_dir", "path_to_mrpc", "cache_dir")
FOLDER_OR_NAME_KEYS = ("model_name_or_path", "init_from")
# What a local run reports as one line: errors in the config, the data or the download.
USER_ERRORS = (
    constants.ConfigError,
    data.DataError,
    FileNotFoundError,
    download_glue_data.DownloadError,
    metrics.Diverged,
)


def distributed_context() -> det.core.DistributedContext | None:
    """A torch.distributed context when launched by torchrun (e.g. --nproc), else None."""
    if "LOCAL_RANK" not in os.environ:
        return None
    os.environ["USE_TORCH_DISTRIBUTED"] = "1"  # DDP; Determined refuses several processes without
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend=backend)
    return det.core.DistributedContext.from_torch_distributed()


def local_context(
    config: dict,
    distributed: det.core.DistributedContext | None = None,
    tensorboard: bool = False,
):
    """The trial context of a local run (no cluster) of this config: a context manager."""
    return pytorch.init(
        hparams=local_hparams(config),
        exp_conf=config,
        distributed=distributed,
        enable_tensorboard_logging=tensorboard,
    )


def run_local(
    run: Callable,
    config: dict,
    resume: str | None = None,
    recorder: progress.RunRecorder | None = None,
    tensorboard: pathlib.Path | None = None,
    context_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """Train the config's trial with run(context, latest_checkpoint, watcher=, ready=, settings=)
    (model_def.run) with no cluster; returns the metrics of every validation it made (the
    recorder also holds those of the run it resumed).

    TensorBoard event files go into the folder `tensorboard`, or the folder of the run resumed
    (recorded in its checkpoint) where it still is; none when tensorboard is None or nothing
    trains.

    The trial must set `max_length` (a pytorch.TrainUnit), `total_steps` (optimizer steps in
    all), `batches_per_rank(dataset)` (its batches, which may not be the context's), `task`,
    `settings`, `dev_set`, `data_seconds` (time spent downloading and featurizing) and
    `early_stopping` (the callback of bert_glue/trial/callbacks.py, whose reason the summary
    gives).
    Checkpoints copy context_dir (Determined's context directory), by default run's module's
    folder. Of the run's checkpoints in local storage, those that the config's
    checkpoint_storage.save_trial_best and save_trial_latest do not keep are deleted. Resumed
    from a run that had finished or stopped early, it trains nothing and the recorder's
    stop_reason says so.
    """
    recorder = recorder or progress.RunRecorder(io.StringIO(), interactive=False)  # quiet
    recorder.retention = checkpointing.Retention.of(config)
    config.setdefault("reproducibility", {}).setdefault("experiment_seed", 42)
    settings = local_settings(config)  # the run's, built once: run() takes them
    checkpoint, batches, resumed = None, 0, contextlib.nullcontext()
    if resume:
        checkpoint = checkpointing.find_checkpoint(resume, settings.task)
        batches = checkpointing.batches_trained(checkpoint)
        resumed = workarounds.starting_at(batches)
        # A checkpoint of a local run (not one of a cluster's trial, whose count starts afresh)
        # in local storage is this run's too.
        ours = batches and checkpoint.parent == checkpointing.storage_dir().resolve()
        state = checkpointing.callback_state(checkpoint, workarounds.WATCHER)
        recorder.resumed(state, batches, checkpoint.name if ours else None)
    # Checkpoints copy the working directory: the trial's, whatever the command was run from.
    code = pathlib.Path(context_dir or module_dir(run)).resolve()
    if copies_itself(code, checkpointing.storage_dir().resolve()):
        raise constants.ConfigError(
            f"Determined's local checkpoint storage {checkpointing.storage_dir()} lies inside "
            f"{code}, which every checkpoint copies, so each would copy those before it; set "
            "XDG_DATA_HOME to a folder outside it (or name the storage's folder in .detignore)"
        )
    here = checkpointing.in_directory(code)
    with local_context(config, distributed_context(), tensorboard is not None) as context:
        training, trains = contextlib.ExitStack(), []

        def ready(trial: pytorch.PyTorchTrial) -> bool:
            """Whether to train the trial just built; the progress bars' totals first."""
            recorder.begin(
                trial.total_steps,
                trial.batches_per_rank(trial.dev_set),
                trial.data_seconds,
                context.distributed.rank == 0,
                has_test_files(trial.task, trial.settings.data.data_dir),
            )
            if checkpoint is not None:
                recorder.stop_reason = resumed_reason(trial, checkpoint, batches)
            if recorder.stop_reason is not None:
                return False
            if tensorboard and context.distributed.rank == 0:
                # A resumed run adds to its run's folder, as a cluster's restarted trial does.
                if recorder.tensorboard is None or not recorder.tensorboard.is_dir():
                    recorder.tensorboard = tensorboard
                workarounds.write_tensorboard_to(context, recorder.tensorboard)
                logger.info(
                    f"TensorBoard events into {recorder.tensorboard}: "
                    f"tensorboard --logdir {recorder.tensorboard.parent}"
                )
            if checkpoint is not None:
                logger.info(
                    f"resuming {checkpoint} after batch {batches}: its weights, the "
                    f"{trial.task.name} head's too, and its optimizer replace those just built"
                )
            # Built where the command was run; trained here.
            training.enter_context(resumed)
            training.enter_context(here)
            trains.append(trial)
            return True

        with training:
            latest = str(checkpoint) if checkpoint else None
            trial = run(context, latest, watcher=recorder, ready=ready, settings=settings)
        if not trains:
            return []
        recorder.stop_reason = trial.early_stopping.reason
    return [metrics for at, metrics in recorder.validations if at > batches]


def resumed_reason(
    trial: pytorch.PyTorchTrial, checkpoint: pathlib.Path, batches: int
) -> str | None:
    """Why a run resumed from checkpoint, after `batches`, trains no further: it had trained all
    its batches or stopped early. None when it has more to train."""
    if batches >= trial.total_steps:
        return (
            f"finished before: {checkpoint.name} trained all {trial.total_steps} batches of "
            "hyperparameters.num_train_epochs; more epochs would train further"
        )
    state = checkpointing.callback_state(checkpoint, "early_stopping")
    return trial.early_stopping.resumed_reason(state, batches)


def default_tensorboard_folder() -> pathlib.Path:
    """A new run's TensorBoard folder, named as torch names one, <time>_<host>, in tensorboard/
    of local storage: beside the checkpoints, as a cluster keeps a trial's events in its
    checkpoint storage, and not in the folder the command runs in (in local mode Determined
    leaves the writer's folder relative to it, runs/, and fit() runs in another)."""
    stamp = time.strftime("%b%d_%H-%M-%S")
    storage = checkpointing.storage_dir().resolve()
    return storage / "tensorboard" / f"{stamp}_{socket.gethostname()}"


def copies_itself(code: pathlib.Path, storage: pathlib.Path) -> bool:
    """Whether the checkpoints in storage would copy themselves: storage lies inside the folder
    that each checkpoint copies (code), and .detignore leaves it in."""
    if not storage.is_relative_to(code):
        return False
    ignored = detignore.make_shutil_ignore(code)
    folder = code
    for part in storage.relative_to(code).parts:
        if ignored(str(folder), [part]):
            return False
        folder /= part
    return True


def module_dir(run: Callable) -> pathlib.Path:
    """The folder of the module that defines run (a functools.partial's function)."""
    module = sys.modules[getattr(run, "func", run).__module__]
    return pathlib.Path(module.__file__).resolve().parent


def torchrun_command(nproc: int, script: str, args: list[str]) -> tuple[list[str], dict]:
    """The command and environment that run `script args` in nproc local processes (torchrun)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={nproc}", script, *args]
    # Determined's processes also talk over two TCP ports, fixed unless these variables say
    # otherwise; free ones let several local runs share a machine.
    with socket.socket() as pub, socket.socket() as pull:
        pub.bind(("", 0))
        pull.bind(("", 0))
        ports = pub.getsockname()[1], pull.getsockname()[1]
    env = {f"INTER_TRAIN_PROCESS_COMM_PORT_{i}": str(port) for i, port in enumerate(ports, 1)}
    return command, {**os.environ, **env}


def main(
    args: argparse.Namespace, config: dict, run: Callable, script: str, argv: list[str] | None
) -> int:
    """One local run of the config that the command line (cli.main: args, argv) names, or each
    trial of a grid config in turn, trained by run (model_def.run)."""
    command = rerun_command(script, args, absolute_paths(config))
    # huggingface_hub prints its records itself and also passes them on to the root logger's
    # handler: each would show twice.
    hub = logging.getLogger("huggingface_hub")
    for handler in list(hub.handlers):
        hub.removeHandler(handler)
    if not args.verbose:  # the recorder and the trial say the same facts in fewer lines
        logging.getLogger("determined").setLevel(logging.WARNING)  # its per-period reports
        hf_logging.set_verbosity_error()  # transformers' load report of the new head
        hf_logging.disable_progress_bar()  # and its bar of weights loaded
        logging.getLogger("huggingface_hub.utils._http").addFilter(without_retry_notices)
    if local_grid.is_grid(config):
        try:
            return run_grid(run, config, args, pathlib.Path(command[1]).parent)
        except USER_ERRORS as e:
            sys.exit(f"error: {e}")
    if args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        return relaunch(sys.argv[1:] if argv is None else argv, args.nproc, script)
    recorder = progress.RunRecorder()
    try:
        tensorboard = None if args.no_tensorboard else default_tensorboard_folder()
        run_local(run, config, args.resume, recorder, tensorboard)
    except USER_ERRORS as e:  # a mistake in the config or the files: the message says what
        sys.exit(f"error: {e}")
    if os.environ.get("RANK", "0") != "0":
        return 0
    write_outputs(args, recorder, config)
    init_from = (config.get("data") or {}).get("init_from")
    summary = progress.summary(recorder, Searcher.of(config), command, init_from)
    print(summary, file=sys.stderr)
    return 0


def absolute_paths(config: dict) -> dict[str, str]:
    """Make the data section's relative folders absolute, against the folder the command runs
    in, so that what a checkpoint records and the commands a run prints mean the same from any
    folder; returns the override of each key changed, {"data.KEY": folder}."""
    data = config.get("data") or {}
    changed = {}
    for key in (*FOLDER_KEYS, *FOLDER_OR_NAME_KEYS):
        value = data.get(key)
        if not isinstance(value, str) or not value:
            continue
        path = os.path.expanduser(value)
        if key in FOLDER_KEYS or os.path.isdir(path):
            data[key] = os.path.abspath(path)
            if data[key] != value:
                changed[f"data.{key}"] = data[key]
    return changed


def rerun_command(script: str, args: argparse.Namespace, folders: dict[str, str]) -> list[str]:
    """`python SCRIPT CONFIG OVERRIDES`, this run's config again from any folder: the script and
    config by absolute path, the overrides as typed, but those of `folders` (absolute_paths)."""
    typed = [o for o in args.overrides if o.partition("=")[0] not in folders]
    overrides = [f"{key}={yaml_scalar(folder)}" for key, folder in folders.items()]
    return ["python", os.path.abspath(script), os.path.abspath(args.config), *typed, *overrides]


def yaml_scalar(text: str) -> str:
    """text as an override's value, which YAML reads back as this string."""
    try:
        if yaml.load(text, ConfigLoader) == text:
            return text
    except yaml.YAMLError:
        pass
    return json.dumps(text)  # a JSON string is a YAML one


def without_retry_notices(record: logging.LogRecord) -> bool:
    """Leaves out huggingface_hub's "Retrying in 2s [Retry 2/5]." after each failed request to
    the Hub, which its line before names ("'<error>' thrown while requesting HEAD <url>"):
    one line per failed attempt."""
    return not record.getMessage().startswith("Retrying in ")


def run_grid(run: Callable, config: dict, args, scripts: pathlib.Path) -> int:
    """Every trial of a grid search in turn, skipping finished ones (local_grid.py); scripts:
    the folder of this project's command lines."""
    for option in ("resume", "metrics_out", "plot"):
        if getattr(args, option):
            raise constants.ConfigError(
                f"--{option.replace('_', '-')}: a grid search continues by itself when run "
                "again and writes each trial's metrics and plot into its folder"
            )
    if args.nproc > 1:
        raise constants.ConfigError("--nproc: a local grid search trains each trial in one process")
    trials = local_grid.grid_trials(config)
    for trial in trials:  # every trial's settings checked before hours of training
        settings = local_settings(trial.config, 1)
        metrics.check_searcher(settings.task, settings.searcher)
    # Absolute: each trial trains in the trial's folder (checkpoints copy it), not the command's.
    results_dir = pathlib.Path(
        args.results_dir or pathlib.Path("results", config["name"])
    ).resolve()
    metric = Searcher.of(config).metric
    for i, trial in enumerate(trials, 1):
        folder = local_grid.TrialFolder(results_dir, trial)
        label = f"[{i}/{len(trials)}] {trial.name}"
        result = folder.result()
        if result is None:
            result = run_grid_trial(run, folder, label, not args.no_tensorboard)
        else:
            print(f"{label}: finished before, skipped", file=sys.stderr)
        value = glue_results.reported_metrics(result)[metric]
        print(f"{label}: {metric} {value:.4f}", file=sys.stderr)
    report = progress.shell_join(["python", str(scripts / "glue_report.py"), str(results_dir)])
    print(f"results: {results_dir}; the table: {report}", file=sys.stderr)
    return 0


def run_grid_trial(
    run: Callable,
    folder: local_grid.TrialFolder,
    label: str,
    tensorboard: bool,
) -> dict:
    resume = folder.resume_from()
    start = checkpointing.batches_trained(checkpointing.storage_dir() / resume) if resume else 0
    print(f"{label}: " + (f"continuing from {resume}" if resume else "training"), file=sys.stderr)
    recorder = local_grid.GridRecorder(folder, start)
    # In the trial's folder: `tensorboard --logdir <results dir>` names each run by its trial.
    events = folder.path if tensorboard else None
    run_local(run, folder.trial.config, resume, recorder, events)
    if recorder.validations:
        progress.plot_history(recorder, folder.path / "curves.png")
    return folder.finish()


def has_test_files(task: constants.GlueTask, data_dir: str | os.PathLike) -> bool:
    """Whether predict.py can run for this task: it has test files, and they are there."""
    folder = pathlib.Path(data_dir)
    return bool(task.test) and all((folder / s.path).is_file() for s in task.test.values())


def relaunch(argv: list[str], nproc: int, script: str) -> int:
    """The same command in nproc processes under torchrun (which takes --nproc itself)."""
    command, env = torchrun_command(nproc, os.path.abspath(script), without_nproc(argv))
    return subprocess.call(command, env=env)


def without_nproc(argv: list[str]) -> list[str]:
    """The command line as typed, less its --nproc N (or --nproc=N)."""
    forwarded, value_next = [], False
    for arg in argv:
        if value_next or arg.startswith("--nproc="):
            value_next = False
        elif arg == "--nproc":
            value_next = True
        else:
            forwarded.append(arg)
    return forwarded


def write_outputs(args: argparse.Namespace, recorder: progress.RunRecorder, config: dict) -> None:
    """--metrics-out's JSON list and the plot (--plot, or beside the metrics file)."""
    if args.metrics_out:
        local_grid.write_json(pathlib.Path(args.metrics_out), [m for _, m in recorder.validations])
    plot = args.plot or (args.metrics_out and pathlib.Path(args.metrics_out).with_suffix(".png"))
    if plot and recorder.validations:
        progress.plot_history(recorder, plot)
        logger.info(f"plot: {plot}")
