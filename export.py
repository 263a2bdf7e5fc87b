"""Export a checkpoint of the trial (see finetuned.py) as a Hugging Face model folder.

    python export.py CHECKPOINT_DIR hf_model

The folder holds the fine-tuned model and its tokenizer (save_pretrained), with the task's
label names as id2label/label2id, so it loads with AutoModelForSequenceClassification and
serves as is:

    from transformers import pipeline
    classify = pipeline("text-classification", model="hf_model")
    classify({"text": "The cat sat.", "text_pair": "A cat was sitting."})  # sentence pairs
    classify("a gripping, funny film")  # single-sentence tasks (CoLA, SST-2)

STS-B models are regressions (problem_type "regression"): the pipeline returns the raw score.
The files get the modes the umask gives; transformers' bar of the weights written shows on a
terminal only.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint directory (see finetuned.py)")
    parser.add_argument("output_dir", help="the Hugging Face model folder to write")
    parser.add_argument(
        "--model",
        metavar="PATH",
        help="for an older checkpoint, without its model's config and tokenizer: the pre-trained "
        "model it was fine-tuned from, a folder or Hub name (default: its data.model_name_or_path)",
    )
    args = parser.parse_args(argv)
    # Imported once the arguments parse: --help answers before torch loads.
    from transformers.utils import logging as hf_logging

    import constants
    from bert_glue.results import finetuned

    if not sys.stderr.isatty():
        hf_logging.disable_progress_bar()
    try:
        finetuned.export(args.checkpoint, args.output_dir, args.model)
    except (constants.ConfigError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"exported {args.checkpoint} to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
