"""GLUE leaderboard submission files from a checkpoint of the trial (see finetuned.py).

    python predict.py CHECKPOINT_DIR --output-dir submission
    python predict.py CHECKPOINT_DIR --output-dir submission --data-dir glue_data --zip

Each test split of the checkpoint's task becomes <name>.tsv in output_dir, with the columns
`index` and `prediction`, in the test file's order: label names for classification (an
MNLI checkpoint writes MNLI-m.tsv, MNLI-mm.tsv and, for the diagnostic set, AX.tsv), scores
clipped to 0..5 for STS-B. Run it once per task's checkpoint into the same output_dir;
--zip then packs every submission file there into output_dir/submission.zip. Test files
have no labels, so no metric is computed here.

A custom task's checkpoint (data.task: custom) writes predictions.tsv for data.custom.test:
`index` is the line each row starts on, `prediction` a label name or the unclipped score.

Progress shows as a bar on a terminal, elsewhere as a line every 20 batches.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint directory (see finetuned.py)")
    # Hyphens, as every CLI here spells its flags; the underscore spellings still work.
    parser.add_argument(
        "--output-dir", "--output_dir", required=True, help="where the <name>.tsv files go"
    )
    parser.add_argument(
        "--data-dir",
        "--data_dir",
        help="the GLUE folder with the test files (default: the checkpoint's)",
    )
    parser.add_argument(
        "--batch-size", "--batch_size", type=int, default=64, help="examples per forward pass"
    )
    parser.add_argument(
        "--model",
        metavar="PATH",
        help="for an older checkpoint, without its model's config and tokenizer: the pre-trained "
        "model it was fine-tuned from, a folder or Hub name (default: its data.model_name_or_path)",
    )
    parser.add_argument("--zip", action="store_true", help="then zip output_dir's submission")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Imported once the arguments parse: --help answers before torch loads.
    import constants
    import data
    from bert_glue.local import progress
    from bert_glue.results import predictions

    try:
        predictions.predict(
            args.checkpoint,
            args.output_dir,
            args.data_dir,
            args.batch_size,
            args.model,
            progress.track,
        )
        if args.zip:
            logging.info(f"wrote {predictions.zip_submission(args.output_dir)}")
    except (constants.ConfigError, data.DataError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
