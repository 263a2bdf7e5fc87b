"""What a local run shows: progress, a closing summary and a plot of its curves.

A `RunRecorder` is a PyTorchCallback that the local runner adds to the trial. On a terminal it
draws one live bar per phase (training with loss, learning rate, samples/s and ETA; validation);
elsewhere (CI, a log file) it prints a line with the same facts every reporting period. It keeps
the training loss and every validation's metrics for the summary table and `plot_history`.
`track` shows the progress of predict.py's batches the same way.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re
import shlex
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

import psutil
import tqdm
from determined import pytorch

from bert_glue.trial import checkpointing, metrics
from bert_glue.trial.settings import Searcher


@dataclasses.dataclass
class Timer:
    """Seconds spent in a phase, summed over its intervals."""

    seconds: float = 0.0
    started: float | None = None

    def start(self) -> None:
        self.started = time.perf_counter()

    def stop(self) -> None:
        self.seconds, self.started = self.elapsed(), None

    def elapsed(self) -> float:
        """All the phase's seconds so far, the running interval's too."""
        running = time.perf_counter() - self.started if self.started is not None else 0.0
        return self.seconds + running


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def bar(phase: str, total: int, stream: TextIO, initial: int = 0) -> tqdm.tqdm:
    """A phase's live bar of batches, gone once it closes."""
    return tqdm.tqdm(
        total=total, initial=initial, desc=phase, unit="batch", file=stream, leave=False
    )


LINE_EVERY = 20  # batches between two lines of track() where the output is not a terminal
Item = TypeVar("Item")


def track(
    batches: Iterable[Item], phase: str, total: int, stream: TextIO | None = None
) -> Iterator[Item]:
    """The `total` batches, passed through while a phase other than training (predictions)
    shows its progress as training does: on a terminal a bar; elsewhere a line every
    LINE_EVERY batches and after the last, `predict 40/154 (26%) 3.21 batch/s eta 0m35s`."""
    stream = stream or sys.stderr
    if stream.isatty():
        with bar(phase, total, stream) as shown:
            for batch in batches:
                yield batch
                shown.update()
        return
    timer = Timer()
    timer.start()
    for done, batch in enumerate(batches, 1):
        yield batch  # the caller's work on it counts in the speed
        if done % LINE_EVERY == 0 or done == total:
            speed = done / timer.elapsed()
            eta = format_duration((total - done) / speed)
            line = f"{phase} {done}/{total} ({done / total:.0%}) {speed:.2f} batch/s eta {eta}"
            print(line, file=stream, flush=True)


class RunRecorder(pytorch.PyTorchCallback):
    """Progress and history of one local run, on the chief process (other ranks stay quiet)."""

    def __init__(self, stream: TextIO | None = None, interactive: bool | None = None) -> None:
        self.stream = stream or sys.stderr  # the one of the moment, default: standard error
        self.interactive = self.stream.isatty() if interactive is None else interactive
        # From the process's start: imports and the model's loading count as start-up too.
        since_start = time.time() - psutil.Process().create_time()
        self.started = time.perf_counter() - since_start
        self.total_batches = self.validation_batches = 0
        self.first_batch = self.batches = self.samples = 0
        self.losses: list[tuple[int, float]] = []  # (batches trained, mean training loss)
        self.validations: list[tuple[int, dict]] = []  # (batches trained, metrics)
        # The run's checkpoints in local storage, (batches trained, uuid), oldest first: those
        # of the run it resumed, then those it saved, less those that retention deleted.
        self.checkpoints: list[tuple[int, str]] = []
        self.retention: checkpointing.Retention | None = None  # None: keep every checkpoint
        self.tensorboard: pathlib.Path | None = None  # the run's TensorBoard events, if any
        self.stop_reason: str | None = None  # why the run trained no further, if before its end
        self.training, self.validation, self.checkpointing = Timer(), Timer(), Timer()
        self.startup_seconds = self.data_seconds = 0.0
        self.chief, self.test_files = True, False
        self.bar: tqdm.tqdm | None = None

    def begin(
        self,
        total_batches: int,
        validation_batches: int,
        data_seconds: float,
        chief: bool,
        test_files: bool,
    ) -> None:
        """What is known once the trial is built: the run's size, the time its data took, and
        whether its task's test files are there to predict."""
        self.total_batches, self.validation_batches = total_batches, validation_batches
        self.data_seconds, self.chief, self.test_files = data_seconds, chief, test_files

    def state_dict(self) -> dict:
        """What a run resumed from the checkpoint being saved continues (resumed()), in the
        plain types that torch.load reads with weights_only."""
        return {
            "losses": [(batches, float(loss)) for batches, loss in self.losses],
            "validations": [
                (batches, {name: plain(value) for name, value in metrics.items()})
                for batches, metrics in self.validations
            ],
            "checkpoints": list(self.checkpoints),
            "tensorboard": str(self.tensorboard) if self.tensorboard else None,
        }

    def resumed(self, state: dict, batches: int, uuid: str | None) -> None:
        """Continue the run that saved the checkpoint resumed from, after `batches`: its losses,
        validations, checkpoints still on disk and TensorBoard folder, as the checkpoint recorded
        them (state_dict; {} from a checkpoint of a cluster's trial), and the checkpoint itself
        where `uuid` names it in local storage. Determined's load_state_dict would restore them
        only once training starts, but a run resumed after its last batch trains nothing and
        still sums up."""
        storage = checkpointing.storage_dir()
        folder = state.get("tensorboard")
        self.tensorboard = pathlib.Path(folder) if folder else None
        self.losses = list(state.get("losses", []))
        self.validations = list(state.get("validations", []))
        self.checkpoints = [
            (saved_at, saved)
            for saved_at, saved in state.get("checkpoints", [])
            if (storage / saved / "metadata.json").is_file()
        ] + ([(batches, uuid)] if uuid else [])

    # What the local runner reports per batch (Determined's callbacks fire per period only).
    def trained(self, samples: int) -> None:
        self.batches += 1
        self.samples += samples
        if self.bar is not None:
            self.bar.update()

    def evaluated(self) -> None:
        if self.bar is not None:
            self.bar.update()

    # PyTorchCallback hooks.
    def on_trial_startup(self, first_batch_idx: int, checkpoint_uuid: str | None) -> None:
        self.first_batch = self.batches = first_batch_idx  # a resumed run starts past 0

    def on_training_start(self) -> None:
        self.startup_seconds = time.perf_counter() - self.started
        self._resume_training()

    def on_training_workload_end(self, avg_metrics: dict, batch_metrics: list[dict]) -> None:
        loss = float(avg_metrics["loss"])
        self.losses.append((self.batches, loss))
        lr = batch_metrics[-1]["lr"] if batch_metrics else math.nan
        if self.bar is not None:
            speed = self.samples_per_second()
            self.bar.set_postfix_str(f"loss {loss:.4f}, lr {lr:.2e}, {speed:.1f} samples/s")
        elif self.chief:
            done = self.batches / max(self.total_batches, 1)
            self._line(
                f"train {self.batches}/{self.total_batches} ({done:.0%}) loss {loss:.4f} "
                f"lr {lr:.2e} {self.samples_per_second():.1f} samples/s "
                f"eta {format_duration(self.eta_seconds())}"
            )

    def on_validation_start(self) -> None:
        self._pause_training()
        self.validation.start()
        if self.chief and self.interactive:
            self.bar = self._bar("validation", self.validation_batches)

    def on_validation_end(self, metrics: dict) -> None:
        self.validation.stop()
        # Determined adds "batches" and "epochs" to this dict as it reports it: keep it so.
        self.validations.append((self.batches, metrics))
        self._close_bar()
        if self.chief:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
            self._line(f"validation after {self.batches} batches: {shown}")
        self._resume_training()

    def on_checkpoint_save_start(self, checkpoint: dict) -> None:
        self._pause_training()
        self.checkpointing.start()

    def on_checkpoint_upload_end(self, uuid: str) -> None:
        self.checkpointing.stop()
        self.checkpoints.append((self.batches, uuid))
        if self.chief:
            self._line(f"saved checkpoint {uuid} at batch {self.batches}")
            if self.retention is not None:
                deleted = checkpointing.prune(*self.history(), self.retention)
                self.checkpoints = [c for c in self.checkpoints if c[1] not in deleted]
        self._resume_training()

    def history(self) -> tuple[list[tuple[int, str]], list[tuple[int, dict]]]:
        """The checkpoints retention chooses among, and the validations that rank them."""
        return self.checkpoints, self.validations

    def on_trial_shutdown(self) -> None:
        self._pause_training()

    # Derived figures.
    @property
    def trained_batches(self) -> int:
        """The batches this run trained (a resumed run's first ones were trained before)."""
        return self.batches - self.first_batch

    def samples_per_second(self) -> float:
        seconds = self.training.elapsed()
        return self.samples / seconds if seconds else 0.0

    def eta_seconds(self) -> float:
        per_batch = self.training.elapsed() / max(self.trained_batches, 1)
        return per_batch * max(self.total_batches - self.batches, 0)

    # Bars and lines.
    def _resume_training(self) -> None:
        if self.training.started is None and self.batches < self.total_batches:
            self.training.start()
            if self.chief and self.interactive:
                self.bar = self._bar("training", self.total_batches, initial=self.batches)

    def _pause_training(self) -> None:
        self.training.stop()
        self._close_bar()

    def _bar(self, phase: str, total: int, initial: int = 0) -> tqdm.tqdm:
        return bar(phase, total, self.stream, initial)

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


def plain(value: float) -> int | float:
    """A number as Python's int or float, whatever numpy type it came as."""
    return int(value) if isinstance(value, int) else float(value)


def metric_names(validations: list[tuple[int, dict]]) -> list[str]:
    """The validation metrics' names, less the counters Determined adds."""
    return sorted({name for _, m in validations for name in m} - {"batches", "epochs"})


def summary(
    recorder: RunRecorder, searcher: Searcher, command: list[str], init_from: str | None = None
) -> str:
    """The closing table: the metrics of the last validation and of the best by
    searcher.metric, each column headed with its batch; where the starting weights came from
    (when data.init_from set them), the best and the last checkpoint, where the time went, and
    the commands that resume from the last checkpoint and predict (when the task's test files
    are there) and export from the best."""
    lines = ["", "Run summary"]
    metric, smaller = searcher.metric, searcher.smaller_is_better
    if recorder.validations:
        # A column per validation: the last, and the best by searcher.metric (none if no value
        # of it is a number), each headed with what it is.
        final_batch, final = recorder.validations[-1]
        columns = {f"final (batch {final_batch})": final}
        best = metrics.best_validation(recorder.validations, metric, smaller)
        if best is not None:
            extreme = "smallest" if smaller else "largest"
            columns[f"at {extreme} {metric} (batch {best[0]})"] = best[1]
        widths = [max(len(heading), 10) + 2 for heading in columns]
        headings = "".join(f"{h:>{w}}" for h, w in zip(columns, widths, strict=True))
        lines.append(f"  {'metric':<18}{headings}")
        for name in metric_names(recorder.validations):
            mark = "  <- searcher.metric" if name == metric else ""
            values = [m.get(name, math.nan) for m in columns.values()]
            shown = "".join(f"{v:>{w}.4f}" for v, w in zip(values, widths, strict=True))
            lines.append(f"  {name:<18}{shown}{mark}")
    if recorder.stop_reason:
        lines.append(f"  {recorder.stop_reason}")
    if init_from is not None:
        lines.append(f"weights     from data.init_from {init_from}")
    total = format_duration(time.perf_counter() - recorder.started)
    if recorder.trained_batches:
        startup = recorder.startup_seconds - recorder.data_seconds
        lines.append(
            f"time        {total}: start-up {startup:.1f} s, data (download, featurize) "
            f"{recorder.data_seconds:.1f} s, training {recorder.training.seconds:.1f} s, "
            f"validation {recorder.validation.seconds:.1f} s, checkpoints "
            f"{recorder.checkpointing.seconds:.1f} s"
        )
        lines.append(f"speed       {recorder.samples_per_second():.1f} samples/s while training")
    else:
        lines.append(f"time        {total}, nothing trained")
    if not recorder.checkpoints:
        return "\n".join(lines)
    storage = checkpointing.storage_dir()
    last_batch, last = recorder.checkpoints[-1]
    at = dict(recorder.checkpoints)
    scored = [v for v in recorder.validations if v[0] in at]
    best_validation = metrics.best_validation(scored, metric, smaller)
    best = at[best_validation[0]] if best_validation else last
    described = {}
    if best_validation is not None:
        described[best] = f"best {metric} {best_validation[1][metric]:.4f}"
    described[last] = " and ".join(filter(None, [described.get(last), "last"]))
    for batches, uuid in recorder.checkpoints:
        if uuid in described:
            lines.append(f"checkpoint  {storage / uuid}  {described[uuid]}, batch {batches}")
    lines.append(f"resume      {shell_join([*command, '--resume', last])}")
    python, scripts = command[0], pathlib.Path(command[1]).parent
    if recorder.test_files:
        predict = [python, str(scripts / "predict.py"), str(storage / best)]
        lines.append(f"predict     {shell_join([*predict, '--output-dir', 'submission'])}")
    export = [python, str(scripts / "export.py"), str(storage / best), "hf_model"]
    lines.append(f"export      {shell_join(export)}")
    return "\n".join(lines)


def shell_join(command: list[str]) -> str:
    """The command as a POSIX shell reads it back, and a person too: a word that holds single
    quotes in double quotes where nothing in it expands there, else quoted as shlex quotes."""
    return " ".join(
        f'"{word}"' if "'" in word and not re.search(r'["$`\\!]', word) else shlex.quote(word)
        for word in command
    )


def plot_history(recorder: RunRecorder, path: str | os.PathLike) -> list[str]:
    """Training loss and every validation metric against batches, one panel each, as a PNG
    written atomically to path. Returns the panels' titles."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    series = {"training loss": recorder.losses}
    for name in metric_names(recorder.validations):
        series[name] = [(b, m[name]) for b, m in recorder.validations if name in m]
    columns = min(3, len(series))
    rows = -(-len(series) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for ax, (title, points) in zip(axes.flat, series.items(), strict=False):
        ax.plot(*zip(*points, strict=True), marker="" if title == "training loss" else "o")
        ax.set_title(title)
        ax.set_xlabel("batches")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(series) :]:
        ax.remove()
    figure.tight_layout()
    path = pathlib.Path(path)
    partial = path.with_name(f".{path.name}.partial")
    figure.savefig(partial, format="png", dpi=100)
    plt.close(figure)
    os.replace(partial, path)
    return list(series)
