"""A GLUE experiment's report: the table, the plot and the leaderboard submission, written
into one folder (glue_report.py is the command line; its help lists what the folder holds)."""

from __future__ import annotations

import pathlib
import tempfile

import constants
import data
from bert_glue.results import glue_results, glue_table, predictions


def submission_lines(reasons: dict[str, str]) -> list[str]:
    written = len(predictions.SUBMISSION_FILES) - len(reasons)
    where = "in submission/submission.zip" if written else "written"
    lines = [f"Submission: {written} of {len(predictions.SUBMISSION_FILES)} files {where}."]
    return [*lines, *(f"- {name} missing: {reason}" for name, reason in reasons.items()), ""]


def write_submission(
    tasks: list[glue_table.TaskResults],
    data_dir: str | None,
    output_dir: pathlib.Path,
    batch_size: int,
) -> dict[str, str]:
    """Every task's test predictions from its best seed, of its row with the better mean score
    where it has two starts (data.init_from), zipped; returns each missing file's reason."""
    folder = output_dir / "submission"
    folder.mkdir(parents=True, exist_ok=True)
    for name in [*predictions.SUBMISSION_FILES, "submission.zip"]:  # an earlier report's
        (folder / name).unlink(missing_ok=True)
    reasons = {}
    done: dict[str, glue_table.TaskResults] = {}
    for t in tasks:
        if t.task not in done or t.mean_score > done[t.task].mean_score:
            done[t.task] = t
    for task in constants.TASKS:
        files = [name for name, of in predictions.SUBMISSION_FILES.items() if of == task]
        if task not in done:
            reasons.update(dict.fromkeys(files, f"no completed {task} trial"))
            continue
        best = done[task].best
        try:
            if best.checkpoint is None:
                raise FileNotFoundError(f"{best.name} saved no checkpoint")
            with tempfile.TemporaryDirectory() as download:
                checkpoint = best.checkpoint(pathlib.Path(download))
                predictions.predict(checkpoint, folder, data_dir, batch_size)
        except (constants.ConfigError, data.DataError, FileNotFoundError) as e:
            reasons.update(dict.fromkeys(files, str(e)))
    if len(reasons) < len(predictions.SUBMISSION_FILES):
        predictions.zip_submission(folder)
    return reasons


def write(
    results: list[glue_table.TrialResult],
    output_dir: pathlib.Path,
    label: str,
    data_dir: str | None = None,
    submission: bool = True,
    batch_size: int = 64,
) -> pathlib.Path:
    """Write the table, the plot and (unless submission is False) the submission; returns
    results.md."""
    tasks, uncounted = glue_table.group_by_task(results)
    if not tasks:
        raise ValueError(
            "no completed trial with validation metrics: nothing to report"
            + "".join(f"\n  {r.name}: {r.state}" for r in uncounted)
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    glue_results.write_text(output_dir / "results.csv", glue_table.csv_text(tasks))
    glue_table.plot(tasks, label, output_dir / "results.png")
    lines = [f"# GLUE dev results: {label}", "", glue_table.markdown_table(tasks, label)]
    if any(t.others for t in tasks):
        lines += [
            "Settings tried: the task score, mean ± std (seeds). Each task reports the one with "
            "the best mean (bold), picked on these dev sets.",
            "",
            glue_table.settings_table(tasks),
        ]
    if uncounted:
        lines += ["Not counted:", *(f"- {r.name}: {r.state}" for r in uncounted), ""]
    if submission:
        lines += submission_lines(write_submission(tasks, data_dir, output_dir, batch_size))
    lines.append("![per-task scores](results.png)")
    glue_results.write_text(output_dir / "results.md", "\n".join(lines) + "\n")
    return output_dir / "results.md"


def load_results(sources: list[str]) -> list[glue_table.TrialResult]:
    """The trials of each source: a local run's folder, or the id of an experiment on the
    cluster."""
    results = []
    for source in sources:
        if pathlib.Path(source).is_dir():
            results += glue_results.local_results(source)
        elif source.isdigit():
            results += glue_results.experiment_results(int(source))
        else:
            raise ValueError(
                f"{source}: neither a folder of a local glue.yaml run nor an experiment id"
            )
    return results


def best_checkpoint(results: list[glue_table.TrialResult], task: str) -> str:
    """The checkpoint of the task's best seed, at its best setting, from the pre-trained model."""
    name = constants.get_task(task).name
    rows, _ = glue_table.group_by_task([r for r in results if r.task == name and not r.start])
    if not rows:
        raise ValueError(f"{task}: no completed {name} trial from the pre-trained model")
    best = rows[0].best
    if best.checkpoint_ref is None:
        raise ValueError(f"{best.name} saved no checkpoint")
    return best.checkpoint_ref


def default_label(results: list[glue_table.TrialResult]) -> str:
    models = sorted({r.model for r in results if r.model})
    return ", ".join(models) or "this run"
