"""The results of a GLUE experiment (glue.yaml): a table, a plot and a leaderboard submission.

    python glue_report.py 17                      # experiment 17 on the master DET_MASTER names
    python glue_report.py results/bert_glue_pytorch_glue   # a local glue.yaml run's folder
    python glue_report.py 17 --data-dir glue_data --output-dir report --label bert-base-uncased

Into the output folder (default glue_report/) go
  results.md, results.csv  per task its metrics as mean ± standard deviation over seeds and its
                           best seed, beside run_glue's published bert-base numbers; the GLUE
                           average as the leaderboard computes it: each task's metrics averaged
                           into its score (MNLI's matched and mismatched accuracy too), then the
                           mean over the tasks present. A task whose trials differ in more than
                           the seed (a grid over learning rates, say) is reported at the setting
                           with the best mean score, every setting's score beside it
  results.png              each task's mean score, one dot per seed
  submission/              from each task's best seed, the leaderboard's files (predict.py:
                           MNLI's model also predicts AX) and submission.zip; results.md lists
                           every file missing from it and why
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys
import tempfile

import constants
import data
import predict
from bert_glue.local import local_grid
from bert_glue.results import finetuned, glue_results, glue_table


def submission_lines(reasons: dict[str, str]) -> list[str]:
    written = len(predict.SUBMISSION_FILES) - len(reasons)
    where = "in submission/submission.zip" if written else "written"
    lines = [f"Submission: {written} of {len(predict.SUBMISSION_FILES)} files {where}."]
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
    for name in [*predict.SUBMISSION_FILES, "submission.zip"]:  # an earlier report's
        (folder / name).unlink(missing_ok=True)
    reasons = {}
    done: dict[str, glue_table.TaskResults] = {}
    for t in tasks:
        if t.task not in done or t.mean_score > done[t.task].mean_score:
            done[t.task] = t
    for task in constants.TASKS:
        files = [name for name, of in predict.SUBMISSION_FILES.items() if of == task]
        if task not in done:
            reasons.update(dict.fromkeys(files, f"no completed {task} trial"))
            continue
        best = done[task].best
        try:
            if best.checkpoint is None:
                raise FileNotFoundError(f"{best.name} saved no checkpoint")
            with tempfile.TemporaryDirectory() as download:
                trained = finetuned.load(best.checkpoint(pathlib.Path(download)))
                test_dir = data_dir or trained.data_config["data_dir"]
                predict.write_predictions(trained, test_dir, folder, batch_size)
        except (constants.ConfigError, data.DataError, FileNotFoundError) as e:
            reasons.update(dict.fromkeys(files, str(e)))
    if len(reasons) < len(predict.SUBMISSION_FILES):
        predict.zip_submission(folder)
    return reasons


def report(
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
    local_grid.write_text(output_dir / "results.csv", glue_table.csv_text(tasks))
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
    local_grid.write_text(output_dir / "results.md", "\n".join(lines) + "\n")
    return output_dir / "results.md"


def load_results(source: str) -> list[glue_table.TrialResult]:
    """A local run's folder, or the id of an experiment on the cluster."""
    if pathlib.Path(source).is_dir():
        return glue_results.local_results(source)
    if source.isdigit():
        return glue_results.experiment_results(int(source))
    raise ValueError(f"{source}: neither a folder of a local glue.yaml run nor an experiment id")


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="source",
        help="a local run's results folder, or an experiment id; several are reported together",
    )
    parser.add_argument("--output-dir", default="glue_report", help="where the report goes")
    parser.add_argument(
        "--data-dir", help="the GLUE folder with the test files (default: each checkpoint's)"
    )
    parser.add_argument("--label", help="how the table names the run (default: the model)")
    parser.add_argument("--no-submission", action="store_true", help="only the table and plot")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per forward pass")
    parser.add_argument(
        "--best-checkpoint",
        metavar="TASK",
        help="print the task's best checkpoint (its uuid, or locally its folder) for "
        "data.init_from, and write no report",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        results = [r for source in args.sources for r in load_results(source)]
        if args.best_checkpoint:
            print(best_checkpoint(results, args.best_checkpoint))
            return 0
        path = report(
            results,
            pathlib.Path(args.output_dir),
            args.label or default_label(results),
            args.data_dir,
            submission=not args.no_submission,
            batch_size=args.batch_size,
        )
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(path.read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
