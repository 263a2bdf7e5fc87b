"""The feature cache after an interrupted write, and with two processes writing it at once."""

from __future__ import annotations

import hashlib
import io
import pathlib
import subprocess
import sys

import pytest
import torch
from conftest import REPO
from transformers import AutoTokenizer

import constants
import data

TASK = constants.TASKS["MRPC"]

# One featurizing process. "kill": it SIGKILLs itself halfway through writing the cache file.
# "race": it waits after featurizing until its partner has featurized too, so that both missed
# the cache and both write it at the same moment. Prints a digest of the features it got.
WORKER = """
import io, os, pathlib, signal, sys, time, hashlib
import torch
from transformers import AutoTokenizer
import constants, data

mode, model, glue, cache, me, partner = sys.argv[1:]
if mode == "kill":
    save = torch.save
    def save_half_then_die(obj, f):
        buffer = io.BytesIO()
        save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    torch.save = save_half_then_die
else:
    featurize = data.featurize
    def featurize_together(*args):
        features = featurize(*args)
        pathlib.Path(me).touch()
        deadline = time.monotonic() + 120
        while not pathlib.Path(partner).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return features
    data.featurize = featurize_together
task = constants.TASKS["MRPC"]
tokenizer = AutoTokenizer.from_pretrained(model)
features = data.load_features(task, task.train, glue, tokenizer, 32, cache)
print(hashlib.sha256(features.input_ids.numpy().tobytes()).hexdigest())
"""


def worker(mode: str, model, glue, cache, me="-", partner="-") -> subprocess.Popen:
    args = [sys.executable, "-c", WORKER, mode, *map(str, (model, glue, cache, me, partner))]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)


def digest(features: data.Features) -> str:
    return hashlib.sha256(features.input_ids.numpy().tobytes()).hexdigest()


@pytest.fixture
def load(tiny_model_dir, glue_dir, tmp_path, monkeypatch):
    """load_features of MRPC train into tmp_path/cache; `load.built` counts featurizations."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    featurize = data.featurize

    def counted(*args):
        load.built += 1
        return featurize(*args)

    def load() -> data.Features:
        return data.load_features(TASK, TASK.train, glue_dir, tokenizer, 32, tmp_path / "cache")

    load.built = 0
    monkeypatch.setattr(data, "featurize", counted)
    return load


def files(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_interrupted_by_an_exception_leaves_nothing(load, tmp_path, monkeypatch):
    save = torch.save

    def save_half_then_interrupt(obj, f):
        buffer = io.BytesIO()
        save(obj, buffer)
        f.write(buffer.getvalue()[:1000])
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", save_half_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            load()
    assert files(tmp_path / "cache") == []
    good = load()
    assert load.built == 2 and len(files(tmp_path / "cache")) == 1
    assert digest(load()) == digest(good) and load.built == 2  # the new cache is used


def test_process_killed_while_writing_leaves_nothing_trusted(
    load, tiny_model_dir, glue_dir, tmp_path
):
    killed = worker("kill", tiny_model_dir, glue_dir, tmp_path / "cache")
    assert killed.wait() == -9
    (partial,) = files(tmp_path / "cache")
    assert partial.startswith(".")  # a half-written temporary file, never a cache file
    good = load()
    assert load.built == 1  # the next run tokenized afresh
    cached = [name for name in files(tmp_path / "cache") if not name.startswith(".")]
    assert len(cached) == 1
    assert digest(load()) == digest(good) and load.built == 1


def test_two_processes_featurizing_one_split_share_one_valid_cache(
    load, tiny_model_dir, glue_dir, tmp_path
):
    cache, marks = tmp_path / "cache", (tmp_path / "first", tmp_path / "second")
    runs = [
        worker("race", tiny_model_dir, glue_dir, cache, marks[0], marks[1]),
        worker("race", tiny_model_dir, glue_dir, cache, marks[1], marks[0]),
    ]
    outputs = [run.communicate(timeout=300)[0].strip() for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert all(mark.exists() for mark in marks)  # both featurized: neither found a cache
    (cache_file,) = files(cache)  # one cache file, no temporary files left
    assert not cache_file.startswith(".")
    features = load()
    assert load.built == 0  # read from the cache the two processes wrote
    assert outputs == [digest(features)] * 2
