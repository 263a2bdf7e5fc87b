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
    # Imported once the arguments parse: --help answers before torch loads.
    from bert_glue.results import report

    try:
        results = report.load_results(args.sources)
        if args.best_checkpoint:
            print(report.best_checkpoint(results, args.best_checkpoint))
            return 0
        path = report.write(
            results,
            pathlib.Path(args.output_dir),
            args.label or report.default_label(results),
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
