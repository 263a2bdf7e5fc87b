"""GLUE TSV files (or your own files) -> tokenized, cached tensor datasets.

Pure functions and small classes that need no Determined context, so they can be tested alone:

    examples = read_examples(constants.TASKS["MRPC"], constants.TASKS["MRPC"].train, data_dir)
    dataset = load_dataset(task, task.train, data_dir, tokenizer, max_seq_length=128)

The files are read as rows by bert_glue/trial/data_files.py, which loads no torch. Own data
(`data.task: custom`, bert_glue/trial/custom_task.py) is read the same way: everything
downstream (reading, caching, metrics, predictions, export) takes its GlueTask like a GLUE
task's, the one the settings built (Settings.task).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import pathlib
import re
import tempfile

import numpy as np
import torch
import tqdm
from torch.utils.data import Dataset

import download_glue_data
from bert_glue.trial.custom_task import CUSTOM_KEY
from bert_glue.trial.data_files import DataError, read_fields
from bert_glue.trial.settings import DataConfig
from constants import ConfigError, GlueTask, Split

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the cached tensors change meaning
TOKENIZE_CHUNK = 8192  # pairs per call to the (batched, Rust) tokenizer


@dataclasses.dataclass
class Examples:
    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray | None  # label ids (classification) or scores (regression); None for test
    index: list[str]  # the submission "index" of each row (or its line number)


def task_data_present(task: GlueTask, data_dir: str | os.PathLike) -> bool:
    return not task.missing_files(data_dir)


def prepare_data(
    task: GlueTask, data_dir: str | os.PathLike, download: bool, path_to_mrpc: str = ""
) -> None:
    """Make sure a GLUE task's train and dev files are in data_dir, downloading them if allowed.
    Own data's are checked as its task is built (custom_task.task_from_config)."""
    if task.custom:
        return
    problem = task.missing(data_dir, download)
    if problem:
        raise FileNotFoundError(problem)
    if not task_data_present(task, data_dir):
        download_glue_data.ensure_task_data(task.name, data_dir, path_to_mrpc=path_to_mrpc)


def read_examples(task: GlueTask, split: Split, data_dir: str | os.PathLike) -> Examples:
    path = pathlib.Path(data_dir) / split.path
    label_ids = {label: i for i, label in enumerate(task.labels)}
    text_a, text_b, labels, index = [], [], [], []
    for line_number, (a, b, label, row_index) in read_fields(path, split, task.skip_malformed_rows):
        if split.require_text:
            _check_text(path, line_number, (split.text_a, a), (split.text_b, b))
        text_a.append(a)
        if split.text_b is not None:
            text_b.append(b)
        index.append(row_index if split.index is not None else str(line_number))
        if split.label is not None:
            labels.append(_parse_label(task, label_ids, label, path, line_number))
    if not text_a:
        raise DataError(f"{path}: no examples")
    dtype = np.float32 if task.is_regression else np.int64
    return Examples(
        text_a=text_a,
        text_b=text_b if split.text_b is not None else None,
        labels=np.asarray(labels, dtype=dtype) if split.label is not None else None,
        index=index,
    )


def _check_text(path: pathlib.Path, line: int, *columns: tuple) -> None:
    for name, text in columns:
        if name is not None and not text.strip():
            raise DataError(f"{path}:{line}: the text in {name!r} is empty")


def _parse_label(
    task: GlueTask, label_ids: dict[str, int], value: str, path: pathlib.Path, line: int
) -> float | int:
    if task.is_regression:
        try:
            score = float(value)
        except ValueError:
            raise DataError(f"{path}:{line}: score {value!r} is not a number") from None
        if not math.isfinite(score):  # float() reads nan, inf and infinity
            raise DataError(f"{path}:{line}: score {value!r} is not a finite number")
        return score
    if value not in label_ids:
        raise DataError(
            f"{path}:{line}: label {value!r} is not one of {task.name}'s labels {task.labels}"
        )
    return label_ids[value]


@dataclasses.dataclass
class Features:
    """Tokenized examples stored flat: example i is input_ids[offsets[i]:offsets[i + 1]]."""

    input_ids: torch.Tensor  # int32
    token_type_ids: torch.Tensor  # int8
    offsets: torch.Tensor  # int64, len = n + 1
    labels: torch.Tensor | None  # int64 or float32

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]


def sample(features: Features, count: int | None) -> Features:
    """count examples of features, in their order: the same random subset for every seed and
    run (data.max_train_samples); all of them when count is None or not smaller."""
    if count is not None and (not isinstance(count, int) or count < 1):
        raise ConfigError(f"data.max_train_samples: {count!r} is not a positive integer")
    if count is None or count >= len(features):
        return features
    keep = torch.randperm(len(features), generator=torch.Generator().manual_seed(0))[:count]
    keep = keep.sort().values
    lengths = features.lengths[keep]
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    shift = torch.repeat_interleave(features.offsets[keep] - offsets[:-1], lengths)
    tokens = torch.arange(int(offsets[-1])) + shift  # where each kept token is in features
    return Features(
        features.input_ids[tokens],
        features.token_type_ids[tokens],
        offsets,
        None if features.labels is None else features.labels[keep],
    )


def featurize(examples: Examples, tokenizer, max_seq_length: int) -> Features:
    """Tokenize all pairs with the batched tokenizer, truncating each pair to max_seq_length."""
    ids: list[list[int]] = []
    types: list[list[int]] = []
    count = len(examples.text_a)
    # A bar on terminals only (disable=None), and only where it takes more than a moment.
    bar = tqdm.tqdm(
        total=count,
        desc="featurizing",
        unit="pair",
        leave=False,
        disable=count <= TOKENIZE_CHUNK or None,
    )
    for start in range(0, count, TOKENIZE_CHUNK):
        end = start + TOKENIZE_CHUNK
        text_b = examples.text_b[start:end] if examples.text_b is not None else None
        chunk_ids, chunk_types = encode(
            tokenizer, examples.text_a[start:end], text_b, max_seq_length
        )
        ids += chunk_ids
        types += chunk_types
        bar.update(len(chunk_ids))
    bar.close()
    lengths = torch.tensor([len(x) for x in ids], dtype=torch.int64)
    offsets = torch.zeros(len(ids) + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=offsets[1:])
    labels = examples.labels
    return Features(
        input_ids=_flatten(ids, int(offsets[-1]), np.int32),
        token_type_ids=_flatten(types, int(offsets[-1]), np.int8),
        offsets=offsets,
        labels=torch.from_numpy(labels) if labels is not None else None,
    )


def encode(
    tokenizer, text_a: list[str], text_b: list[str] | None, max_seq_length: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids and token type ids of each text or pair, as `tokenizer(text_a, text_b,
    truncation=True, max_length=max_seq_length)` gives them.

    A fast (Rust) tokenizer encodes the list on every core without building the offsets,
    attention masks and Python dicts that the transformers call adds (docs/performance.md).
    Python tokenizers (XLM's) go through the transformers call.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        encoded = tokenizer(
            text_a,
            text_b,
            truncation=True,
            max_length=max_seq_length,
            return_token_type_ids=True,
            return_attention_mask=False,
        )
        return encoded["input_ids"], encoded["token_type_ids"]
    backend.enable_truncation(max_seq_length, direction=tokenizer.truncation_side)
    backend.no_padding()
    inputs = list(zip(text_a, text_b, strict=True)) if text_b is not None else text_a
    encodings = backend.encode_batch_fast(inputs)
    return [e.ids for e in encodings], [e.type_ids for e in encodings]


def _flatten(rows: list[list[int]], total: int, dtype: type) -> torch.Tensor:
    """One flat tensor of all rows, without a Python list of every token in between."""
    return torch.from_numpy(np.fromiter(itertools.chain.from_iterable(rows), dtype, total))


def tokenizer_fingerprint(tokenizer) -> str:
    """A digest of everything that decides how the tokenizer splits text."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Without the truncation and padding of the last call, which featurize() changes: a
        # process that did not featurize must compute the same key as the one that did.
        settings = json.loads(backend.to_str())
        del settings["truncation"], settings["padding"]
        state = json.dumps(settings)
    else:
        state = json.dumps(sorted(tokenizer.get_vocab().items())) + repr(tokenizer.init_kwargs)
    return hashlib.sha256(f"{type(tokenizer).__name__}\n{state}".encode()).hexdigest()


def load_datasets(
    task: GlueTask, data: DataConfig, tokenizer, max_seq_length: int
) -> tuple[GlueDataset, torch.utils.data.ConcatDataset]:
    """The task's train set (sampled as data.max_train_samples says) and its dev sets (split
    ids in dev order), downloaded first where data.download_data allows, featurized once."""
    prepare_data(task, data.data_dir, data.download_data, data.path_to_mrpc)

    def load(split: Split) -> Features:
        return load_features(task, split, data.data_dir, tokenizer, max_seq_length, data.cache_dir)

    train = GlueDataset(sample(load(task.train), data.max_train_samples))
    dev = torch.utils.data.ConcatDataset(
        [GlueDataset(load(split), i) for i, split in enumerate(task.dev.values())]
    )
    return train, dev


def file_digest(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_features(
    task: GlueTask,
    split: Split,
    data_dir: str | os.PathLike,
    tokenizer,
    max_seq_length: int,
    cache_dir: str | os.PathLike | None = None,
) -> Features:
    """Features of one split, from the on-disk cache when nothing that decides them changed.

    The cache key covers the input file's bytes, the tokenizer, max_seq_length and the format,
    so a stale cache is never reused. Caches are written to a temporary file and renamed into
    place, so readers (and concurrent writers) only ever see complete files.
    """
    path = pathlib.Path(data_dir) / split.path
    key = hashlib.sha256(
        json.dumps(
            [CACHE_FORMAT, task.name, task.labels, dataclasses.astuple(split), max_seq_length]
            + [file_digest(path), tokenizer_fingerprint(tokenizer)]
        ).encode()
    ).hexdigest()
    cache_dir = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
    stem = re.sub(r"[^\w.-]+", "_", str(pathlib.PurePath(split.path).with_suffix(""))).strip("_")
    cache_file = cache_dir / f"{stem}-{key[:20]}.pt"
    cached = _read_cache(cache_file, key)
    if cached is not None:
        return cached
    examples = read_examples(task, split, data_dir)
    logger.info(f"featurizing {len(examples.text_a)} examples of {path} into {cache_file}")
    features = featurize(examples, tokenizer, max_seq_length)
    _write_cache(cache_file, key, features)
    return features


def default_cache_dir() -> pathlib.Path:
    """The user's cache folder, so a read-only data_dir (a bind mount) needs no extra setting."""
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "bert_glue_features"


def _read_cache(cache_file: pathlib.Path, key: str) -> Features | None:
    if not cache_file.exists():
        return None
    try:
        state = torch.load(cache_file, weights_only=True)
        if state.pop("key") != key:
            raise ValueError("key mismatch")
        features = Features(**state)
        if features.offsets[-1] != len(features.input_ids):
            raise ValueError("inconsistent offsets")
        return features
    except Exception as e:  # a damaged cache is rebuilt, never trusted
        logger.warning(f"ignoring unreadable feature cache {cache_file}: {e}")
        return None


def _write_cache(cache_file: pathlib.Path, key: str, features: Features) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=f".{cache_file.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"key": key, **dataclasses.asdict(features)}, f)
        os.replace(tmp, cache_file)
    except BaseException:
        os.unlink(tmp)
        raise


class GlueDataset(Dataset):
    """Variable-length examples of one split; `split_id` tells dev sets apart (MNLI m/mm)."""

    def __init__(self, features: Features, split_id: int = 0) -> None:
        self.features = features
        self.split_id = split_id

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        f = self.features
        start, end = f.offsets[i], f.offsets[i + 1]
        label = f.labels[i] if f.labels is not None else torch.tensor(-1)
        return f.input_ids[start:end], f.token_type_ids[start:end], label, self.split_id

    @property
    def lengths(self) -> torch.Tensor:
        return self.features.lengths


def warn_of_missing_test(task: GlueTask, data_dir: str | os.PathLike) -> None:
    """One warning for a data.custom.test file that data_dir lacks: training needs none, and
    predict.py says there is none to predict."""
    for split in task.test.values() if task.custom else ():
        if not (pathlib.Path(data_dir) / split.path).is_file():
            logger.warning(
                f"{CUSTOM_KEY}.test: {split.path} not found in data.data_dir {data_dir}: this run "
                "trains and validates, but predict.py will have no test file; put it there or "
                f"remove {CUSTOM_KEY}.test"
            )
