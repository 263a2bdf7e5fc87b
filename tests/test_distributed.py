"""Distributed training in 2 CPU processes (torchrun, gloo), checked against 1 process.

Three 2-process runs of distributed.yaml on the tiny BERT, all at once, fine-tune on MRPC, CoLA
and STS-B, which they download from a loopback server into one empty data_dir. MRPC and CoLA
run through distributed_worker.py, which records what each process did; STS-B runs as users
run it, `python model_def.py CONFIG --nproc 2`. The tests compare the processes with each
other and with single-process runs in this process on the same data. Dev sets have 21 rows,
which split unevenly over 2 processes and over batches of 4.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import http.server
import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, synthetic_rows
from distributed_worker import Recorder
from fake_hub import FakeHub

import constants
import data
import model_def
from bert_glue.local import local_run
from bert_glue.local.config import load_config

TASKS = ("MRPC", "CoLA", "STS-B")
RECORDED = ("MRPC", "CoLA")  # run through distributed_worker.py; STS-B through --nproc 2
OVERRIDES = {"CoLA": ["hyperparameters.group_by_length=true"]}  # LengthGroupedBatchSampler
TRAIN_ROWS, DEV_ROWS = 48, 21
GLOBAL_BATCH, EPOCHS, LEARNING_RATE = 8, 8, 3e-3
STEPS_PER_EPOCH = TRAIN_ROWS // GLOBAL_BATCH
RUN_TIMEOUT_S = 300


def mislabel(task: constants.GlueTask, split: constants.Split, rows: list[list[str]]) -> None:
    """Give every 4th row another label, so that no model scores 1 (or 0) on the dev set."""
    for row in rows[::4]:
        if task.is_regression:
            row[split.label] = f"{(float(row[split.label]) + 2.5) % 7.5:.3f}"
        else:
            row[split.label] = task.labels[1 - task.labels.index(row[split.label])]


def tsv(rows: list[list[str]], header: list[str] | None = None) -> bytes:
    return "".join("\t".join(row) + "\n" for row in ([header] if header else []) + rows).encode()


def glue_tsv(split: constants.Split, rows: list[list[str]]) -> bytes:
    return tsv(rows, [f"col{i}" for i in range(len(rows[0]))] if split.header else None)


def glue_files() -> dict[str, bytes]:
    """What the loopback server publishes: MRPC's raw files and dev ids, CoLA and STS-B zips."""
    mrpc = constants.TASKS["MRPC"]
    rows = synthetic_rows(mrpc, mrpc.train, TRAIN_ROWS + DEV_ROWS, seed=5)
    dev = rows[: 3 * DEV_ROWS : 3]
    mislabel(mrpc, mrpc.train, dev)
    header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    files = {
        "senteval/senteval_data/msr_paraphrase_train.txt": tsv(rows, header),
        "senteval/senteval_data/msr_paraphrase_test.txt": tsv(dev, header),
        "glue/data/mrpc_dev_ids.tsv": tsv([row[1:3] for row in dev]),
    }
    for name in ("CoLA", "STS-B"):
        task = constants.TASKS[name]
        dev = synthetic_rows(task, task.dev[""], DEV_ROWS, seed=7)
        mislabel(task, task.dev[""], dev)
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zf:
            train = synthetic_rows(task, task.train, TRAIN_ROWS, seed=6)
            zf.writestr(task.train.path, glue_tsv(task.train, train))
            zf.writestr(task.dev[""].path, glue_tsv(task.dev[""], dev))
            test = task.test[name]
            zf.writestr(test.path, glue_tsv(test, synthetic_rows(task, test, 5, seed=8)))
        files[f"glue/data/{name}.zip"] = archive.getvalue()
    return files


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Like torchrun's processes: more threads only slow a tiny model down on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def serving(root: pathlib.Path, files: dict[str, bytes]):
    """A loopback HTTP server for files; yields its base URL and a count of requests."""
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(content)
    hits: Counter[str] = Counter()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            hits[self.path.lstrip("/")] += 1
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def glue_server(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("www"), glue_files()) as server:
        yield server


@pytest.fixture(scope="module")
def deterministic_model_dir(tiny_model_dir, tmp_path_factory) -> pathlib.Path:
    """The tiny BERT without dropout, so one process and two compute the same gradients."""
    path = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    for file in tiny_model_dir.iterdir():
        (path / file.name).write_bytes(file.read_bytes())
    config = json.loads((path / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def dist_config(deterministic_model_dir, tmp_path_factory) -> pathlib.Path:
    """distributed.yaml on the tiny model, downloading into an empty data_dir."""
    folder = tmp_path_factory.mktemp("dist")
    config = yaml.safe_load((REPO / "distributed.yaml").read_text())
    config["data"].update(
        model_name_or_path=str(deterministic_model_dir),
        data_dir=str(folder / "glue_data"),
        download_data=True,
    )
    # The one metric every task reports: the runs switch data.task (metrics.check_searcher).
    config["searcher"].update(metric="validation_loss", smaller_is_better=True)
    config["checkpoint_storage"] = {"save_trial_latest": EPOCHS}  # every epoch's is compared
    config["hyperparameters"].update(
        global_batch_size=GLOBAL_BATCH,
        learning_rate=LEARNING_RATE,
        num_train_epochs=EPOCHS,
        max_seq_length=32,
        # Shuffled batches of 4 per process form exactly the global batches of 8 that one
        # process draws, so the two runs can be compared step by step, in exact fp32 maths.
        group_by_length=False,
        precision="fp32",
    )
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def hub(deterministic_model_dir) -> Iterator[FakeHub]:
    """The tiny model as a Hub repository, its weights answered slowly (1 s)."""
    hub = FakeHub(deterministic_model_dir, slow_files={"model.safetensors": 1.0})
    with hub.serving():
        yield hub


@pytest.fixture(scope="module")
def two_processes(dist_config, glue_server, hub) -> dict:
    """Per task, a 2-process run: its output, metrics, checkpoints and each rank's record.

    The three runs share the machine, the data_dir and the feature cache at the same time.
    STS-B's downloads the model from the stand-in Hub.
    """
    folder = dist_config.parent
    extra_env = {
        "GLUE_BASE_URL": glue_server[0],
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(folder / "hf"),
        "NO_PROXY": "127.0.0.1,localhost",
        "XDG_CACHE_HOME": str(folder / "cache"),
        "PYTHONPATH": str(REPO),
    }
    worker = str(pathlib.Path(__file__).with_name("distributed_worker.py"))
    runs = {}
    for task in TASKS:
        out = folder / "out" / task
        out.mkdir(parents=True)
        args = [str(dist_config), f"data.task={task}", *OVERRIDES.get(task, [])]
        if task in RECORDED:
            command, env = local_run.torchrun_command(2, worker, [str(out), *args])
        else:
            args.append(f"data.model_name_or_path={hub.repo}")
            command = [sys.executable, str(REPO / "model_def.py"), *args, "--nproc=2", "--verbose"]
            command, env = command + [f"--metrics-out={out / 'metrics.json'}"], dict(os.environ)
        runs[task] = subprocess.Popen(
            command,
            cwd=out,  # TensorBoard's runs/ folder
            env={**env, **extra_env, "XDG_DATA_HOME": str(out)},  # checkpoints: out/determined
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a process group, to end it whole on a timeout
        )
    try:
        outputs = {task: run.communicate(timeout=RUN_TIMEOUT_S)[0] for task, run in runs.items()}
    finally:
        for run in runs.values():
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
    results = {}
    for task, run in runs.items():
        output = outputs[task]
        assert run.returncode == 0, f"{task}:\n{output[-8000:]}"
        out = folder / "out" / task
        results[task] = {
            "output": output,
            "metrics": json.loads((out / "metrics.json").read_text()),
            "checkpoints": checkpoints_by_step(out / "determined"),
        }
        if task in RECORDED:
            results[task]["ranks"] = [
                json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)
            ]
    return results


def checkpoints_by_step(folder: pathlib.Path) -> dict[int, pathlib.Path]:
    return {
        json.loads((path / "metadata.json").read_text())["steps_completed"]: path
        for path in folder.iterdir()
        if path.name != "tensorboard"  # the run's events sit beside its checkpoints
    }


@pytest.fixture(scope="module")
def local_env(dist_config):
    """This process's XDG folders for single-process runs, the run's feature cache included."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(dist_config.parent / "cache"))
        mp.setenv("XDG_DATA_HOME", str(dist_config.parent / "one-process"))
        yield


@pytest.fixture(scope="module")
def one_process(two_processes, dist_config, local_env) -> dict:
    """The same MRPC run in one process, on the data the 2-process run downloaded."""
    config = load_config(str(dist_config), ["data.task=MRPC"])
    recorder = Recorder()
    with recorder.patched():
        local_run.run_local(model_def.run, config)
    return recorder.record


def by_epoch(steps: list[dict]) -> dict[int, list[int]]:
    epochs: dict[int, list[int]] = {}
    for step in steps:
        epochs.setdefault(step["epoch"], []).extend(step["items"])
    return epochs


def test_data_is_downloaded_and_featurized_once(two_processes, glue_server, dist_config):
    _, hits = glue_server
    assert sorted(hits.values()) == [1] * 5, hits  # 3 MRPC files, 2 zips, each fetched once
    for task in RECORDED:
        first, second = two_processes[task]["ranks"]
        assert first["featurized"] == 2  # train and dev, by the node's first process
        assert second["featurized"] == 0  # it waited, then read complete caches
    cache = list((dist_config.parent / "cache" / "bert_glue_features").iterdir())
    assert len(cache) == 2 * len(TASKS) and all(p.suffix == ".pt" for p in cache)
    data_dir = dist_config.parent / "glue_data"
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(TASKS)  # no staging leftovers
    assert not any("unreadable feature cache" in run["output"] for run in two_processes.values())


@pytest.mark.parametrize("task", RECORDED)
def test_each_rank_trains_on_its_own_shard_of_every_epoch(two_processes, task):
    ranks = two_processes[task]["ranks"]
    for record in ranks:
        assert len(record["steps"]) == EPOCHS * STEPS_PER_EPOCH  # as in one process
        assert all(len(step["items"]) == GLOBAL_BATCH // 2 for step in record["steps"])
    first, second = (by_epoch(record["steps"]) for record in ranks)
    assert sorted(first) == sorted(second) == list(range(EPOCHS))
    for epoch in range(EPOCHS):
        assert not set(first[epoch]) & set(second[epoch])
        assert sorted(first[epoch] + second[epoch]) == list(range(TRAIN_ROWS))
    assert first[0] != first[1]  # reshuffled every epoch


def test_global_batches_and_lr_schedule_match_one_process(two_processes, one_process):
    first, second = two_processes["MRPC"]["ranks"]
    assert len(one_process["steps"]) == len(first["steps"])
    for alone, a, b in zip(one_process["steps"], first["steps"], second["steps"], strict=True):
        assert sorted(alone["items"]) == sorted(a["items"] + b["items"])
        assert alone["lr"] == a["lr"] == b["lr"]
    warmup = round(0.1 * EPOCHS * STEPS_PER_EPOCH)  # distributed.yaml's warmup_ratio
    peak = LEARNING_RATE
    assert first["steps"][warmup]["lr"] == pytest.approx(peak)
    assert first["steps"][-1]["lr"] == pytest.approx(peak / (EPOCHS * STEPS_PER_EPOCH - warmup))


def test_gradients_are_averaged_and_ranks_stay_identical(two_processes, one_process):
    for task in RECORDED:
        first, second = two_processes[task]["ranks"]
        assert first["weights"] == second["weights"], task
        step_0 = first["steps"][0]
        assert second["steps"][0]["grad_norm"] == step_0["grad_norm"]
    # The first step's global batch is the same 8 examples in one process and in two: the
    # all-reduced gradient is their mean (a sum would be twice as long), as is the loss.
    alone, first, second = (r["steps"][0] for r in (one_process, *two_processes["MRPC"]["ranks"]))
    assert first["grad_norm"] == pytest.approx(alone["grad_norm"], rel=1e-4)
    assert (first["loss"] + second["loss"]) / 2 == pytest.approx(alone["loss"], rel=1e-5)


@pytest.mark.parametrize("task", RECORDED)
def test_loss_goes_down(two_processes, task):
    for record in two_processes[task]["ranks"]:
        losses = [step["loss"] for step in record["steps"]]
        assert np.mean(losses[-STEPS_PER_EPOCH:]) < 0.8 * np.mean(losses[:STEPS_PER_EPOCH])


def validate_in_one_process(checkpoint: pathlib.Path, model_dir: pathlib.Path) -> dict:
    """Load a checkpoint with Determined's loader and validate it in this process alone. A
    checkpoint whose model came from the stand-in Hub (STS-B's) is pointed at the same files on
    disk: huggingface_hub reads HF_ENDPOINT once, as it is imported."""
    load_data = json.loads((checkpoint / "load_data.json").read_text())
    if load_data["experiment_config"]["data"]["model_name_or_path"] != str(model_dir):
        checkpoint = shutil.copytree(checkpoint, checkpoint.parent / f"{checkpoint.name}-local")
        load_data["experiment_config"]["data"]["model_name_or_path"] = str(model_dir)
        (checkpoint / "load_data.json").write_text(json.dumps(load_data))
    trial = model_def.load_trial(checkpoint)  # Determined's own loader
    trial.model.eval()
    with torch.no_grad():
        for i, batch in enumerate(trial.build_validation_data_loader()):
            trial.evaluate_batch(batch, i)
    return trial.reducer.cross_slot_reduce([trial.reducer.per_slot_reduce()])


@pytest.mark.parametrize("task", RECORDED)
def test_validation_is_exact_over_the_whole_dev_set(two_processes, task):
    """Every dev row is read by exactly one process and gathered exactly once."""
    first, second = two_processes[task]["ranks"]
    assert len(first["validations"]) == EPOCHS
    for mine, theirs in zip(first["validations"], second["validations"], strict=True):
        rows = [tuple(item) for item in mine["items"] + theirs["items"]]
        assert sorted(rows) == [(0, i) for i in range(DEV_ROWS)]
        # Batches of 4: the first process reads 3 (4+4+4 rows), the second 3 (4+4+1).
        assert mine["rows_per_slot"] == theirs["rows_per_slot"] == [12, 9]


@pytest.mark.parametrize(
    ("task", "counts", "scores"),
    [
        ("MRPC", ("acc", "f1"), ()),
        ("CoLA", ("mcc", "acc"), ()),
        ("STS-B", (), ("pearson", "spearmanr")),
    ],
)
def test_checkpoints_validate_alike_in_one_process(
    two_processes, local_env, deterministic_model_dir, task, counts, scores
):
    """Each epoch's weights of the 2-process run, loaded and validated here in 1 process, with
    batches of 8 instead of 4: the logits differ in the 7th digit (other padding), so metrics
    that count predictions are equal and the others equal to float precision. (Correlations
    of early, near-constant predictions amplify that noise; one row more or less moves them
    by 1e-2.)"""
    run = two_processes[task]
    for epoch, reported in enumerate(run["metrics"], 1):
        checkpoint = run["checkpoints"][epoch * STEPS_PER_EPOCH]
        alone = validate_in_one_process(checkpoint, deterministic_model_dir)
        for name in counts:
            assert alone[name] == reported[name], (epoch, name)
        for name in scores:
            assert alone[name] == pytest.approx(reported[name], abs=1e-3), (epoch, name)
        assert alone["validation_loss"] == pytest.approx(reported["validation_loss"], rel=1e-5)
    final = run["metrics"][-1]
    assert all(0.2 < final[name] < 0.95 for name in counts + scores)  # a model, not a constant


def test_two_process_checkpoint_resumes_in_one_process(two_processes, dist_config, local_env):
    run = two_processes["MRPC"]
    config = load_config(str(dist_config), ["data.task=MRPC"])
    recorder = Recorder()
    with recorder.patched():
        history = local_run.run_local(
            model_def.run, config, resume=str(run["checkpoints"][STEPS_PER_EPOCH])
        )
    assert len(history) == EPOCHS - 1  # continued after epoch 1
    lrs = [step["lr"] for step in run["ranks"][0]["steps"][STEPS_PER_EPOCH:]]
    assert [step["lr"] for step in recorder.record["steps"]] == pytest.approx(lrs)
    assert history[-1]["acc"] == pytest.approx(run["metrics"][-1]["acc"], abs=0.1)


def test_a_hub_model_is_downloaded_by_one_process_while_the_other_waits(two_processes, hub):
    """The node's first process downloads; the other asks the Hub only once it has the files
    (it still checks each file's ETag, as transformers does online)."""
    (download,) = hub.asked("GET", "model.safetensors")
    for file in ("config.json", "vocab.txt", "model.safetensors"):
        checks = hub.asked("HEAD", file)
        assert len(checks) >= 2 and len(checks) % 2 == 0  # as many from each process
        first, second = checks[: len(checks) // 2], checks[len(checks) // 2 :]
        assert max(r.started for r in first) < download.ended <= min(r.started for r in second)


def test_nproc_runs_the_config_in_n_processes(two_processes):
    """STS-B ran as users run it: python model_def.py CONFIG --nproc=2 --verbose --metrics-out F."""
    run = two_processes["STS-B"]
    assert run["output"].count("no storage_manager provided") == 2  # Determined's, per process
    assert run["output"].count("Run summary") == 1  # the chief's
    assert [m["batches"] for m in run["metrics"]] == [
        STEPS_PER_EPOCH * (epoch + 1) for epoch in range(EPOCHS)
    ]
    assert sorted(run["checkpoints"]) == [m["batches"] for m in run["metrics"]]


@pytest.mark.smoke
def test_a_two_process_run_trains_validates_and_checkpoints(local_config, tmp_path):
    """The smoke test's DDP run: python model_def.py CONFIG --nproc=2, as a user starts it."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(local_config))
    metrics = tmp_path / "metrics.json"
    command = [sys.executable, str(REPO / "model_def.py"), str(config), "--nproc=2"]
    command += ["--no-tensorboard", f"--metrics-out={metrics}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_DATA_HOME": str(tmp_path)}
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("Run summary") == 1  # the chief's
    steps = [m["batches"] for m in json.loads(metrics.read_text())]
    assert steps == [6, 12]  # 48 rows, global batch 8 over two processes, 2 epochs
    assert run.stderr.count("saved checkpoint ") == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nproc", "0"], "--nproc 0: need at least 1 process"),
        (["--nproc", "3"], "hyperparameters.global_batch_size: 8 examples do not split evenly"),
    ],
)
def test_bad_nproc_is_a_clear_error(local_config, tmp_path, capsys, args, message):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(local_config))
    with pytest.raises(SystemExit) as exit_:
        model_def.main([str(config), *args])
    assert message in f"{exit_.value.code} {capsys.readouterr().err}"  # exit message or usage


def test_cache_key_ignores_what_the_tokenizer_did_before(tiny_model_dir):
    """Ranks that only read the cache compute the key of the rank that built it."""
    tokenizer = constants.get_model_classes("bert").tokenizer.from_pretrained(tiny_model_dir)
    fresh = data.tokenizer_fingerprint(tokenizer)
    tokenizer(["good w1 w2"], ["w3"], truncation=True, max_length=4, padding="max_length")
    assert data.tokenizer_fingerprint(tokenizer) == fresh


def test_nodes_sharing_a_data_dir_download_and_cache_safely(tiny_model_dir, tmp_path, monkeypatch):
    """The first processes of 4 nodes prepare the same task at once in one (bind-mounted)
    data_dir and feature cache: each may download and tokenize, none fails or reads a partial
    file, and all end up with the same complete files and features."""
    task = constants.TASKS["MRPC"]
    data_dir, cache = tmp_path / "glue_data", tmp_path / "cache"

    def node_prepares(_) -> list[data.Features]:
        tokenizer = constants.get_model_classes("bert").tokenizer.from_pretrained(tiny_model_dir)
        data.prepare_data(task, data_dir, download=True)
        return [
            data.load_features(task, split, data_dir, tokenizer, 32, cache)
            for split in (task.train, task.dev[""])
        ]

    with serving(tmp_path / "www", glue_files()) as (base_url, hits):
        monkeypatch.setenv("GLUE_BASE_URL", base_url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            nodes = list(pool.map(node_prepares, range(4)))
    assert 1 <= hits["glue/data/mrpc_dev_ids.tsv"] <= 4
    for node in nodes[1:]:
        for mine, theirs in zip(nodes[0], node, strict=True):
            assert torch.equal(mine.input_ids, theirs.input_ids)
            assert torch.equal(mine.labels, theirs.labels)
    assert [p.name for p in data_dir.iterdir()] == ["MRPC"]  # no staging folders left
    assert data.task_data_present(task, data_dir)
    assert len(list(cache.iterdir())) == 2  # one file per split, no temporary files left
