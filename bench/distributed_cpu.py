"""Fine-tuning on MRPC in 1 process and in 2 (torchrun, gloo) on this machine's CPUs.

Both runs see the same examples (the first --train_rows of MRPC's train.tsv, one epoch, the
same global batch) through `python model_def.py CONFIG --nproc N`; the script prints their
training and total wall times and the ratio. It then validates the 2-process run's checkpoint
in this one process and compares with the metrics that run reported, on the whole dev set.

    flock /tmp/heavy.lock python bench/distributed_cpu.py --model_name_or_path MODEL \\
        --data_dir glue_data [--train_rows 1024] [--global_batch_size 32]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import torch
import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


import data
import model_def
from bert_glue.local.config import local_settings


def mrpc_subset(data_dir: pathlib.Path, out: pathlib.Path, train_rows: int) -> None:
    """out/MRPC: the first train_rows training pairs and the whole dev set."""
    (out / "MRPC").mkdir(parents=True)
    lines = (data_dir / "MRPC" / "train.tsv").read_text(encoding="utf-8").splitlines(True)
    (out / "MRPC" / "train.tsv").write_text("".join(lines[: train_rows + 1]), encoding="utf-8")
    dev = (data_dir / "MRPC" / "dev.tsv").read_bytes()
    (out / "MRPC" / "dev.tsv").write_bytes(dev)


def warm_feature_cache(config: dict) -> None:
    """Tokenize before timing, so that neither run pays for it."""
    trial = local_settings(config)
    tokenizer = trial.model_classes.tokenizer.from_pretrained(trial.data.model_name_or_path)
    task = trial.task
    for split in (task.train, *task.dev.values()):
        data.load_features(
            task,
            split,
            trial.data.data_dir,
            tokenizer,
            trial.hparams.max_seq_length,
            trial.data.cache_dir,
        )


def log_time(output: str, message: str) -> datetime.datetime:
    """When the first log line containing message was written."""
    line = next(line for line in output.splitlines() if message in line)
    return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def run(config: pathlib.Path, nproc: int, work: pathlib.Path) -> dict:
    metrics = work / f"metrics-{nproc}.json"
    env = {**os.environ, "XDG_DATA_HOME": str(work / f"data-{nproc}")}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "model_def.py", str(config), f"--nproc={nproc}"]
        + [f"--metrics-out={metrics}", "--no-tensorboard"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{nproc}-process run failed:\n{done.stderr[-5000:]}")
    train = log_time(done.stderr, "status: training")
    validate = log_time(done.stderr, "status: validating")
    (checkpoint,) = (work / f"data-{nproc}" / "determined").iterdir()
    return {
        "wall_s": wall,
        "train_s": (validate - train).total_seconds(),
        "metrics": json.loads(metrics.read_text())[-1],
        "checkpoint": checkpoint,
    }


def validate_here(checkpoint: pathlib.Path) -> dict[str, float]:
    """The checkpoint's dev metrics, computed in this one process."""
    trial = model_def.load_trial(checkpoint)
    trial.model.eval()
    with torch.no_grad():
        for i, batch in enumerate(trial.build_validation_data_loader()):
            trial.evaluate_batch(batch, i)
    return trial.reducer.cross_slot_reduce([trial.reducer.per_slot_reduce()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", required=True, help="a BERT-type model")
    parser.add_argument("--data_dir", required=True, help="a GLUE folder with MRPC")
    parser.add_argument("--train_rows", type=int, default=1024)
    parser.add_argument("--global_batch_size", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        mrpc_subset(pathlib.Path(args.data_dir), work / "glue_data", args.train_rows)
        config = yaml.safe_load((REPO / "const.yaml").read_text())
        config["data"].update(
            model_name_or_path=args.model_name_or_path,
            data_dir=str(work / "glue_data"),
            download_data=False,
            cache_dir=str(work / "cache"),
        )
        config["hyperparameters"].update(
            global_batch_size=args.global_batch_size, num_train_epochs=1, learning_rate=1e-4
        )
        config_path = work / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        warm_feature_cache(config)

        results = {nproc: run(config_path, nproc, work) for nproc in (1, 2)}
        one, two = results[1], results[2]
        print(f"{args.train_rows} training pairs, 1 epoch, global batch {args.global_batch_size}")
        print(f"torch threads in 1 process: {torch.get_num_threads()}; 1 per process in 2")
        for nproc, r in results.items():
            rate = args.train_rows / r["train_s"]
            print(
                f"{nproc} process(es): train {r['train_s']:.1f} s ({rate:.1f} pairs/s), "
                f"whole run {r['wall_s']:.1f} s, dev acc {r['metrics']['acc']:.4f} "
                f"f1 {r['metrics']['f1']:.4f}"
            )
        print(
            f"2 processes / 1 process: train time x{two['train_s'] / one['train_s']:.2f}, "
            f"whole run x{two['wall_s'] / one['wall_s']:.2f}"
        )
        here = validate_here(two["checkpoint"])
        for name in ("acc", "f1", "validation_loss"):
            print(
                f"2-process checkpoint, {name}: reported by the 2 processes "
                f"{two['metrics'][name]:.6f}, validated in 1 process {here[name]:.6f}"
            )


if __name__ == "__main__":
    main()
