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
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint directory (see finetuned.py)")
    parser.add_argument("output_dir", help="the Hugging Face model folder to write")
    args = parser.parse_args(argv)
    # Imported once the arguments parse: --help answers before torch loads.
    import constants
    from bert_glue.results import finetuned

    try:
        finetuned.export(args.checkpoint, args.output_dir)
    except (constants.ConfigError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"exported {args.checkpoint} to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
