"""data.init_from: a run starts from another fine-tuned model's weights (trial/pretrained.py).

The source is the tiny BERT trained for one epoch on synthetic MNLI (3 labels): as a checkpoint
folder, a local uuid, a uuid fetched through a stand-in master on a cluster, an exported Hugging
Face folder and a repository of a stand-in Hub. Each trial is built as Determined builds it (its
__init__ loads the weights) and its model compared, weight by weight, with the source's and with
that of a trial of the same seed that starts from the pre-trained model.
"""

from __future__ import annotations

import copy
import logging
import pathlib
import shutil

import determined as det
import pytest
import torch
from conftest import built_trial, tiny_config
from determined.experimental import client
from fake_hub import FakeHub
from fake_sdk_master import TOKEN, FakeCheckpoint, FakeTrial, SdkMaster
from huggingface_hub import constants as hub_constants
from test_resume import (
    assert_resumes_bitwise,
    checkpoint_dirs,
    configure,
    crash_after_first_checkpoint,
)
from transformers import BertForSequenceClassification

import constants
import model_def
from bert_glue.local import local_run
from bert_glue.results import finetuned
from bert_glue.trial import checkpointing, pretrained

SEED = 5
ENCODER = "bert."  # the tiny BERT's base_model_prefix
MNLI_HEAD = "contradiction, entailment, neutral"


@pytest.fixture(scope="module")
def mnli_checkpoint(tiny_model_dir, glue_dir, tmp_path_factory) -> pathlib.Path:
    """The checkpoint of one epoch on synthetic MNLI, in local storage under its own folder."""
    folder = tmp_path_factory.mktemp("mnli")
    config = tiny_config(tiny_model_dir, glue_dir)
    config["data"]["task"] = "MNLI"
    config["hyperparameters"]["num_train_epochs"] = 1
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_DATA_HOME", str(folder / "xdg-data"))
        patch.setenv("XDG_CACHE_HOME", str(folder / "xdg-cache"))
        patch.chdir(folder)
        local_run.run_local(model_def.run, config)
    (checkpoint,) = checkpoint_dirs(folder / "xdg-data")
    return checkpoint


@pytest.fixture(scope="module")
def mnli_weights(mnli_checkpoint) -> dict[str, torch.Tensor]:
    return checkpointing.read(mnli_checkpoint).weights


@pytest.fixture(scope="module")
def exported(mnli_checkpoint, tmp_path_factory) -> pathlib.Path:
    """The MNLI checkpoint as export.py writes it: a Hugging Face folder."""
    folder = tmp_path_factory.mktemp("exported") / "hf_model"
    finetuned.export(mnli_checkpoint, folder)
    return folder


def built_state(
    config: dict, init_from_value: str | None = None, cluster: det.ClusterInfo | None = None
) -> dict[str, torch.Tensor]:
    """The weights a trial of the config starts from, before its first batch; with `cluster`,
    the trial runs as in that cluster's container (its context stays a local one)."""
    config = copy.deepcopy(config)
    config["data"]["init_from"] = init_from_value
    config["hyperparameters"]["seed"] = SEED
    with local_run.local_context(config) as context, pytest.MonkeyPatch.context() as patch:
        if cluster is not None:
            patch.setattr(det, "get_cluster_info", lambda: cluster)
        return built_trial(context).model.state_dict()


def head_lines(caplog) -> list[str]:
    """What the trial said about its classification head."""
    return [r.getMessage() for r in caplog.records if " head" in r.getMessage()]


def assert_same(state: dict, expected: dict, keys) -> None:
    keys = list(keys)
    assert keys
    for key in keys:
        assert torch.equal(state[key], expected[key]), key


def assert_started_from(
    config: dict, source: str, source_weights: dict, head_kept: bool, caplog
) -> list[str]:
    """The trial's encoder is the source's; its head the source's, or that of a trial from the
    pre-trained model with the same seed. Returns the trial's lines about its head."""
    caplog.set_level(logging.INFO)
    state = built_state(config, source)
    lines = head_lines(caplog)
    pretrained = built_state(config)
    encoder = [key for key in state if key.startswith(ENCODER)]
    head = [key for key in state if not key.startswith(ENCODER)]
    assert_same(state, source_weights, encoder)
    # Fine-tuning changed them: the source's encoder, not the pre-trained one, was loaded.
    assert any(not torch.equal(state[key], pretrained[key]) for key in encoder)
    if head_kept:
        assert_same(state, source_weights, head)
    else:
        assert_same(state, pretrained, head)
        assert any(not torch.equal(state[key], source_weights[key]) for key in head)
    return lines


@pytest.mark.parametrize(
    ("task", "labels"),
    [("RTE", "entailment, not_entailment"), ("STS-B", "a regression score")],
)
def test_another_tasks_checkpoint_gives_its_encoder_and_a_new_head(
    task, labels, mnli_checkpoint, mnli_weights, local_config, caplog
):
    local_config["data"]["task"] = task
    lines = assert_started_from(local_config, str(mnli_checkpoint), mnli_weights, False, caplog)
    assert lines == [
        f"data.init_from: {mnli_checkpoint}: a new {task} head: its labels ({MNLI_HEAD}) are "
        f"not {task}'s ({labels})"
    ]


def test_the_same_tasks_checkpoint_gives_its_head_too(
    mnli_checkpoint, mnli_weights, local_config, caplog
):
    local_config["data"]["task"] = "MNLI"
    lines = assert_started_from(local_config, str(mnli_checkpoint), mnli_weights, True, caplog)
    assert lines == [f"data.init_from: {mnli_checkpoint}: kept its MNLI head ({MNLI_HEAD})"]


@pytest.mark.parametrize(
    ("task", "head"),
    [
        ("MNLI", f"kept its MNLI head ({MNLI_HEAD})"),
        ("QNLI", f"a new QNLI head: its labels ({MNLI_HEAD}) are not QNLI's (entailment, "),
    ],
)
def test_an_exported_folder(task, head, exported, mnli_weights, local_config, caplog):
    """export.py's id2label names the labels as the task does: MNLI keeps the head."""
    local_config["data"]["task"] = task
    kept = head.startswith("kept")
    (line,) = assert_started_from(local_config, str(exported), mnli_weights, kept, caplog)
    assert line.startswith(f"data.init_from: {exported}: {head}")


def test_a_plain_encoder_gives_a_new_head(tiny_model_dir, local_config, caplog):
    """A source without a classification head: the trial is the one from the pre-trained model
    (here the same encoder), with its head."""
    caplog.set_level(logging.INFO)
    state = built_state(local_config, str(tiny_model_dir))
    assert head_lines(caplog) == [
        f"data.init_from: {tiny_model_dir}: a new MRPC head: it has no classification head"
    ]
    pretrained = built_state(local_config)
    assert_same(state, pretrained, pretrained)


def test_a_regression_folder_starts_regressions_and_classifiers(
    tiny_model_dir, local_config, tmp_path, caplog
):
    """A regression (one output) keeps its head for STS-B only: MRPC gets a new one."""
    torch.manual_seed(3)  # a head of its own, unlike any the trial would initialise
    model = BertForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01)  # an encoder unlike the pre-trained one
    model.save_pretrained(tmp_path / "scorer")
    weights = model.state_dict()
    scorer = str(tmp_path / "scorer")
    local_config["data"]["task"] = "STS-B"
    kept = assert_started_from(local_config, scorer, weights, True, caplog)
    assert kept == [f"data.init_from: {scorer}: kept its STS-B head (a regression score)"]
    caplog.clear()
    local_config["data"]["task"] = "MRPC"
    new = assert_started_from(local_config, scorer, weights, False, caplog)
    assert new == [
        f"data.init_from: {scorer}: a new MRPC head: its labels (a regression score) are not "
        "MRPC's (not_equivalent, equivalent)"
    ]


def test_a_hub_name_loads_through_the_hub(
    exported, mnli_weights, local_config, tmp_path, monkeypatch
):
    hub = FakeHub(exported, repo="org/tiny-bert-mnli")
    with hub.serving() as url:
        # What HF_ENDPOINT and HF_HOME set when huggingface_hub is imported.
        template = url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(hub_constants, "ENDPOINT", url)
        monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
        local_config["data"]["task"] = "MNLI"
        state = built_state(local_config, hub.repo)
    assert hub.asked("GET", "model.safetensors")
    assert_same(state, mnli_weights, mnli_weights)


def test_a_uuid_of_local_storage(mnli_checkpoint, mnli_weights, local_config, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(mnli_checkpoint.parents[1]))
    local_config["data"]["task"] = "MNLI"
    assert_same(built_state(local_config, mnli_checkpoint.name), mnli_weights, mnli_weights)


@pytest.fixture
def master(mnli_checkpoint, tmp_path, monkeypatch) -> SdkMaster:
    """A master that has the MNLI checkpoint in storage that only its agents see, so that the
    SDK downloads it through the master; the trial container's login (DET_USER_TOKEN)."""
    uuid = mnli_checkpoint.name
    shutil.copytree(mnli_checkpoint, tmp_path / "agents" / uuid)
    trial = FakeTrial(1, {}, "STATE_COMPLETED", checkpoints=[FakeCheckpoint(uuid, 6)])
    storage = {"type": "directory", "container_path": str(tmp_path / "not-mounted")}
    monkeypatch.setenv("DET_USER", "glue")
    monkeypatch.setenv("DET_USER_TOKEN", TOKEN)
    monkeypatch.setenv("DET_DEBUG_CONFIG_PATH", str(tmp_path / "det-config"))
    return SdkMaster(1, [trial], storage, agent_storage=tmp_path / "agents")


def trial_container(url: str) -> det.ClusterInfo:
    """A trial container's cluster info, with the master at url."""
    return det.ClusterInfo(
        master_url=url,
        cluster_id="fake-cluster",
        agent_id="fake-agent",
        slot_ids=[0],
        task_id="1.1",
        allocation_id="1.1.1",
        session_token="fake-task-token",
        task_type="TRIAL",
    )


def downloads(master: SdkMaster) -> list[str]:
    return [r.path for r in master.requests if r.path.startswith("/checkpoints/")]


def test_a_uuid_on_a_cluster_is_downloaded_once_per_node(
    master, mnli_checkpoint, mnli_weights, local_config, monkeypatch
):
    uuid = mnli_checkpoint.name
    local_config["data"]["task"] = "MNLI"
    with master.serving() as url:
        first = built_state(local_config, uuid, trial_container(url))
        again = built_state(local_config, uuid, trial_container(url))  # the node's next
    assert downloads(master) == [f"/checkpoints/{uuid}"]
    assert master.unknown == []
    assert_same(first, mnli_weights, mnli_weights)
    assert_same(again, mnli_weights, mnli_weights)
    assert [p.name for p in pretrained.download_cache().iterdir()] == [uuid]


def cut_off(checkpoint: client.Checkpoint, path: str, **kwargs) -> str:
    """A download that stops half way, its files written but not whole."""
    folder = pathlib.Path(path)
    folder.mkdir(parents=True)
    (folder / "state_dict.pth").write_bytes(b"half")
    (folder / "metadata.json").write_text("{}")
    raise ConnectionError("the master went away")


def test_a_download_cut_off_leaves_nothing_taken_for_complete(
    master, mnli_checkpoint, mnli_weights, local_config, monkeypatch
):
    uuid = mnli_checkpoint.name
    local_config["data"]["task"] = "MNLI"
    with master.serving() as url:
        with monkeypatch.context() as patch:
            patch.setattr(client.Checkpoint, "download", cut_off)
            with pytest.raises(ConnectionError):
                built_state(local_config, uuid, trial_container(url))
        assert list(pretrained.download_cache().iterdir()) == []
        state = built_state(local_config, uuid, trial_container(url))  # the next try
    assert downloads(master) == [f"/checkpoints/{uuid}"]
    assert_same(state, mnli_weights, mnli_weights)


def test_a_uuid_the_master_does_not_know(master, monkeypatch):
    unknown = "0b5e3c2a-1f4d-4e6b-9a8c-7d2e1f0a9b8c"
    with master.serving() as url:
        monkeypatch.setattr(det, "get_cluster_info", lambda: trial_container(url))
        with pytest.raises(constants.ConfigError) as error:
            pretrained.init_source(unknown)
    assert str(error.value) == (
        f"data.init_from: the Determined master at {url} has no checkpoint {unknown}"
    )


def test_a_resumed_run_ends_as_the_uninterrupted_one(
    mnli_checkpoint, local_config, tmp_path, monkeypatch
):
    """The checkpoint's state replaces init_from's weights as Determined restores it, after the
    trial's __init__: the resumed run's batches, metrics and end state are the uninterrupted's."""
    local_config["data"]["init_from"] = str(mnli_checkpoint)
    config_file = configure(local_config, tmp_path)
    first = crash_after_first_checkpoint(config_file, tmp_path / "crashed", monkeypatch)
    assert_resumes_bitwise(config_file, first, tmp_path, monkeypatch)
