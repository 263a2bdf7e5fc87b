"""Shared fixtures: a tiny random BERT with its own vocabulary, and few-row GLUE folders.

Unit tests live in tests/unit: they import neither determined nor transformers (a test there
checks it), and run in seconds. The tests beside this file run the trial end to end.

`python -m pytest` is the smoke test: tests/unit and the tests marked smoke, one tiny-model run
of each way the trial runs. `python -m pytest --all` is the whole suite (CI). Naming files, -k or
-m runs what they select, smoke or not."""

from __future__ import annotations

import pathlib
import random

import pytest
import yaml

import constants

REPO = pathlib.Path(__file__).resolve().parents[1]
UNIT = REPO / "tests" / "unit"
SHARED_GLUE = REPO.parent / "shared" / "glue_data"
WORDS = [f"w{i}" for i in range(40)] + ["good", "bad", "fine", "awful", "neutral"]
# The word that marks each label in synthetic text, so the tiny model has something to learn.
CUE = {0: "bad", 1: "good", 2: "neutral"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--all", action="store_true", help="the whole suite, not the smoke test")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    chosen = config.args_source != pytest.Config.ArgsSource.TESTPATHS
    if config.getoption("--all") or chosen or config.option.keyword or config.option.markexpr:
        return
    smoke = [i for i in items if i.path.is_relative_to(UNIT) or i.get_closest_marker("smoke")]
    config.hook.pytest_deselected(items=[i for i in items if i not in smoke])
    items[:] = smoke


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch) -> None:
    """Every test runs in a folder of its own: what a run writes where it is started (such as
    TensorBoard's runs/) never lands in the project."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> pathlib.Path:
    """A 2-layer, hidden-32 BERT saved as a Hugging Face model folder, like a Hub download."""
    # Imported here: the unit tests (tests/unit) load this file too, and run without a model.
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    path = tmp_path_factory.mktemp("tiny-bert")
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    # The vocab path is positional: transformers 5 ignores a vocab_file= keyword.
    tokenizer = BertTokenizer(str(vocab), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)  # the same "pre-trained" weights in every test session
    BertModel(config).save_pretrained(path)  # a pre-trained encoder, no task head yet
    tokenizer.save_pretrained(path)
    return path


def synthetic_rows(task: constants.GlueTask, split: constants.Split, n: int, seed: int):
    """Rows laid out as the split's file is (columns from the task table), labels cued in text."""
    rng = random.Random(seed)
    columns = [c for c in (split.text_a, split.text_b, split.label, split.index) if c is not None]
    width = max(c if c >= 0 else -c - 1 for c in columns) + 1 + (split.label == -1)
    rows = []
    for i in range(n):
        label_id = rng.randrange(max(task.num_labels, 2))
        row = [f"x{i}"] * width
        filler = " ".join(rng.choice(WORDS[:40]) for _ in range(rng.randrange(2, 9)))
        row[split.text_a] = f"{CUE[label_id]} {filler}"
        if split.text_b is not None:
            row[split.text_b] = " ".join(rng.choice(WORDS[:40]) for _ in range(rng.randrange(1, 6)))
        if split.index is not None:
            row[split.index] = str(i)
        if split.label is not None:
            row[split.label] = (
                f"{label_id * 2.5:.3f}" if task.is_regression else task.labels[label_id]
            )
        rows.append(row)
    return rows


def write_split(data_dir: pathlib.Path, task, split, n: int, seed: int) -> None:
    path = data_dir / split.path
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = synthetic_rows(task, split, n, seed)
    header = [[f"col{i}" for i in range(len(rows[0]))]] if split.header else []
    path.write_text("".join("\t".join(r) + "\n" for r in header + rows), encoding="utf-8")


@pytest.fixture(scope="session")
def glue_dir(tmp_path_factory) -> pathlib.Path:
    """Every task's train/dev/test files, 48 train and 20 dev rows each, in GLUE's layout."""
    path = tmp_path_factory.mktemp("glue_data")
    for task in constants.TASKS.values():
        write_split(path, task, task.train, 48, seed=1)
        for i, split in enumerate(task.dev.values()):
            write_split(path, task, split, 20, seed=2 + i)
        for i, split in enumerate(task.test.values()):
            write_split(path, task, split, 12, seed=10 + i)
    return path


@pytest.fixture
def local_config(tiny_model_dir, glue_dir, tmp_path, monkeypatch) -> dict:
    """tiny_config, its local checkpoints and caches in the test's own folder."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))  # local checkpoints
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # feature cache
    return tiny_config(tiny_model_dir, glue_dir)


def tiny_config(tiny_model_dir: pathlib.Path, glue_dir: pathlib.Path) -> dict:
    """const.yaml pointed at the tiny model and synthetic data, sized for a few CPU batches."""
    config = yaml.safe_load((REPO / "const.yaml").read_text())
    config["data"].update(
        model_name_or_path=str(tiny_model_dir), data_dir=str(glue_dir), download_data=False
    )
    config["hyperparameters"].update(
        global_batch_size=8, learning_rate=3e-3, num_train_epochs=2, max_seq_length=32
    )
    # The one metric every task reports: tests switch data.task (metrics.check_searcher).
    config["searcher"].update(metric="validation_loss", smaller_is_better=True)
    return config


@pytest.fixture
def glue_config(local_config, tmp_path) -> pathlib.Path:
    """glue.yaml on the tiny model and synthetic data: 1 epoch (MRPC, WNLI: 2), batch 8."""
    config = yaml.safe_load((REPO / "glue.yaml").read_text())
    config["data"] = {k: v for k, v in local_config["data"].items() if k != "task"}
    config["hyperparameters"].update(
        global_batch_size=8,
        learning_rate=3e-3,
        num_train_epochs=1,
        max_seq_length=32,
        per_task={"MRPC": {"num_train_epochs": 2}, "WNLI": {"num_train_epochs": 2}},
    )
    path = tmp_path / "glue.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_glue(
    config: pathlib.Path, results: pathlib.Path, *overrides: str, run=None, tensorboard=False
) -> int:
    """The local run of a grid config (glue.yaml) into the results folder."""
    import model_def
    from bert_glue.local import cli

    options = ["--results-dir", str(results)] + ([] if tensorboard else ["--no-tensorboard"])
    argv = [str(config), *overrides, *options]
    return cli.main(argv, run or model_def.run, model_def.__file__, model_def.__doc__)


def built_trial(context, trial_class=None):
    """The trial run() builds from the context, not trained."""
    import model_def

    return model_def.run(
        context, trial_class=trial_class or model_def.BertPyTorch, ready=lambda _: False
    )
