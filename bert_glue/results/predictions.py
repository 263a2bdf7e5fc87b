"""Test-set predictions of a fine-tuned model (see finetuned.py) as GLUE leaderboard files.

Each test split of the checkpoint's task becomes <name>.tsv, with the columns `index` and
`prediction` in the test file's order; a custom task's checkpoint writes predictions.tsv.
predict.py is the command line.
"""

from __future__ import annotations

import logging
import os
import pathlib
import zipfile
from collections.abc import Callable, Iterable

import numpy as np
import torch

import constants
import data
from bert_glue.results import finetuned, glue_results
from bert_glue.trial import batching, metrics

logger = logging.getLogger(__name__)

# What shows the progress of predictions (predict.py: bert_glue/local/progress.py's track): it
# takes the batches, the phase's name and the number of batches, and passes the batches on.
Track = Callable[[Iterable, str, int], Iterable]

# Every file of a complete GLUE submission, named as the leaderboard expects them -> its task.
SUBMISSION_FILES = {
    f"{name}.tsv": task.name for task in constants.TASKS.values() for name in task.test
}


def prediction_strings(task: constants.GlueTask, logits: np.ndarray) -> list[str]:
    """What the leaderboard expects in the prediction column: label names or 0..5 scores."""
    predictions = metrics.predictions(task, logits)
    if task.is_regression:
        low, high = task.score_range or (-np.inf, np.inf)
        return [f"{score:.3f}" for score in np.clip(predictions, low, high)]
    return [task.labels[i] for i in predictions]


@torch.inference_mode()
def predict_logits(
    trained: finetuned.FineTuned,
    features: data.Features,
    batch_size: int,
    track: Track | None,
    phase: str,
):
    """The model's outputs for every example, in the order of `features`; track, if not None,
    shows the progress of the batches as `phase`.

    Batches are formed from examples of similar length (less padding), then put back in order.
    """
    model, tokenizer = trained.model, trained.tokenizer
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    with_token_types = constants.feeds_token_types(
        trained.settings.hparams.model_type, tokenizer, model
    )
    order = torch.argsort(features.lengths, stable=True)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(data.GlueDataset(features), order.tolist()),
        batch_size=batch_size,
        collate_fn=batching.Collator(tokenizer, with_token_types),
    )
    outputs = []
    for batch in track(loader, phase, len(loader)) if track else loader:
        inputs = {k: v.to(device) for k, v in batch.items() if k not in ("labels", "split")}
        outputs.append(model(**inputs).logits.float().cpu())
    logits = torch.empty((len(order), model.config.num_labels))
    logits[order] = torch.cat(outputs)
    return logits.numpy()


def write_predictions(
    trained: finetuned.FineTuned,
    data_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    batch_size: int,
    track: Track | None = None,
) -> list[pathlib.Path]:
    """Write one submission file per test split of the checkpoint's task; return their paths.
    track, if given, shows the progress of each split's batches."""
    task, data_dir = trained.task, pathlib.Path(data_dir)
    if not task.test:
        raise constants.ConfigError(
            f"no test file to predict: the checkpoint's config names none ({data.CUSTOM_KEY}.test)"
        )
    missing = [split.path for split in task.test.values() if not (data_dir / split.path).is_file()]
    if missing and task.custom:
        raise FileNotFoundError(
            f"no test file to predict: {data.CUSTOM_KEY}.test {missing[0]} is not in {data_dir}; "
            "put it there, or pass --data-dir the folder that holds it"
        )
    if missing:
        folders = ",".join(sorted({path.split("/")[0] for path in missing}))
        raise FileNotFoundError(
            f"test file(s) {', '.join(missing)} not found in {data_dir}; get them with "
            f"`python download_glue_data.py --data-dir {data_dir} --tasks {folders}` "
            "or pass --data-dir"
        )
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    max_seq_length = trained.settings.hparams.max_seq_length
    for name, split in task.test.items():
        examples = data.read_examples(task, split, data_dir)
        features = data.featurize(examples, trained.tokenizer, max_seq_length)
        logits = predict_logits(trained, features, batch_size, track, f"predict {name}")
        predictions = prediction_strings(task, logits)
        path = output_dir / f"{name}.tsv"
        rows = [f"{i}\t{p}" for i, p in zip(examples.index, predictions, strict=True)]
        rows.insert(0, "index\tprediction")
        glue_results.write_text(path, "\n".join(rows) + "\n")
        logger.info(f"wrote {len(predictions)} predictions to {path}")
        written.append(path)
    return written


def zip_submission(output_dir: str | os.PathLike) -> pathlib.Path:
    """Pack the submission files in output_dir into submission.zip, warning about missing ones."""
    output_dir = pathlib.Path(output_dir)
    present = [name for name in SUBMISSION_FILES if (output_dir / name).is_file()]
    if not present:
        raise FileNotFoundError(f"{output_dir}: none of the files {', '.join(SUBMISSION_FILES)}")
    missing = sorted(set(SUBMISSION_FILES) - set(present))
    if missing:
        logger.warning(
            f"the leaderboard wants all {len(SUBMISSION_FILES)} files; "
            f"missing: {', '.join(missing)}"
        )
    archive = output_dir / "submission.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for name in present:
            z.write(output_dir / name, arcname=name)
    return archive


def predict(
    checkpoint_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    model_name_or_path: str | None = None,
    track: Track | None = None,
) -> list[pathlib.Path]:
    """The checkpoint's test predictions, read from data_dir (default: the checkpoint's);
    model_name_or_path and track as finetuned.load and write_predictions take them."""
    trained = finetuned.load(checkpoint_dir, model_name_or_path)
    return write_predictions(
        trained, data_dir or trained.settings.data.data_dir, output_dir, batch_size, track
    )
