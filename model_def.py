"""Fine-tune a BERT-family model on a GLUE task with Determined's PyTorchTrial.

A port of Determined's bert_glue_pytorch example (itself adapted from Hugging Face's
run_glue.py v2.2) to today's determined, torch and transformers.

On a cluster (the configs' entrypoint runs this file through Determined's launcher):
    det -m <master> experiment create -f const.yaml .

On this machine, no cluster (Determined's Trainer API in local mode):
    python model_def.py const.yaml                              # the const.yaml experiment
    python model_def.py const.yaml data.data_dir=glue_data hyperparameters.learning_rate=3e-5
    python model_def.py distributed.yaml --nproc 2              # 2 processes, torch.distributed
    python model_def.py const.yaml --metrics-out metrics.json   # save the validation metrics
    python model_def.py const.yaml --resume <checkpoint uuid or folder>  # continue a run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys

import determined as det
import numpy as np
import torch
import yaml
from determined import pytorch
from transformers import get_linear_schedule_with_warmup

import checkpointing
import constants
import data
import download_glue_data
import fast_dropout
import metrics
import pretrained
import searcher_stop

logger = logging.getLogger(__name__)

# The hyperparameters and data keys the trial reads: the required ones, and every optional one
# with its default (here and nowhere else). Any other key in the config is a mistake.
REQUIRED_HPARAMS = ("global_batch_size", "learning_rate", "num_train_epochs", "model_type")
OPTIONAL_HPARAMS = {
    "max_seq_length": 128,  # tokens per pair, after truncation
    "adam_epsilon": 1e-8,
    "weight_decay": 0.0,  # never applied to biases and LayerNorm weights
    "warmup_ratio": 0.0,  # share of all optimizer steps spent warming the LR up linearly
    "max_grad_norm": 1.0,  # gradient clipping, as run_glue
    "pad_to_max_length": False,  # pad every batch to max_seq_length instead of its longest
    "pad_to_multiple_of": 8,  # round a batch's padded length up: few shapes for the kernels
    "group_by_length": True,  # batch examples of similar length together: little padding
    "precision": "auto",  # auto: bf16 (or fp16) on GPUs and on CPUs with native bf16, else fp32
    "fused_adamw": "auto",  # auto: fused on CPUs and CUDA GPUs (torch has kernels for both)
    "fast_dropout": "auto",  # auto: on CPUs, where torch's dropout draws slowly (fast_dropout.py)
    "attn_implementation": "auto",  # auto: SDPA on GPUs, eager on CPUs; or eager, sdpa
    "dataloader_workers": "auto",  # auto: 2 on GPUs, to batch while the GPU steps; 0 on CPUs
    "torch_compile": False,  # compile the model: slow first steps, faster ones after (GPUs)
}
REQUIRED_DATA = ("task", "model_name_or_path", "data_dir")
OPTIONAL_DATA = {
    "download_data": False,  # fetch the task's files into data_dir when they are missing
    "path_to_mrpc": "",  # a folder with msr_paraphrase_{train,test}.txt, instead of downloading
    "cache_dir": None,  # tokenized-feature cache; None: ~/.cache/bert_glue_features
}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# What a local run reports as one line: errors in the config, the data or the download.
USER_ERRORS = (
    constants.ConfigError,
    data.DataError,
    FileNotFoundError,
    download_glue_data.DownloadError,
)


def with_defaults(section: str, values: dict, required: tuple, optional: dict) -> dict:
    """values with defaults filled in; an unknown or missing key is an error that names it."""
    known = (*required, *optional)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise constants.ConfigError(
            f"{section}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}"
        )
    missing = [key for key in required if values.get(key) is None]
    if missing:
        raise constants.ConfigError(f"{section}: missing required key(s) {', '.join(missing)}")
    return {**optional, **values}


def task_model_config(task: constants.GlueTask, model_type: str, model_name_or_path: str):
    """The pre-trained model's config with the task's head: its label names, or regression."""
    config_class = constants.get_model_classes(model_type)[0]
    label_names = task.labels or ("score",)  # STS-B: one regression output
    return config_class.from_pretrained(
        model_name_or_path,
        finetuning_task=task.name.lower(),
        id2label=dict(enumerate(label_names)),
        label2id={label: i for i, label in enumerate(label_names)},
        problem_type="regression" if task.is_regression else "single_label_classification",
    )


def train_length(hparams: dict, searcher: dict) -> pytorch.Epoch:
    """The run's length: hyperparameters.num_train_epochs, over which the LR schedule runs.

    A searcher that stops trials early (adaptive_asha) counts progress in searcher.time_metric
    up to searcher.max_time; those must be the same epochs, or its rungs would fall elsewhere
    than the trial's schedule (Determined itself only logs a warning).
    """
    epochs = hparams["num_train_epochs"]
    time_metric, max_time = searcher.get("time_metric"), searcher.get("max_time")
    if time_metric is not None and (time_metric, max_time) != ("epochs", epochs):
        raise ValueError(
            f"searcher: time_metric {time_metric!r} and max_time {max_time} must be 'epochs' and "
            f"{epochs}, the run's length (hyperparameters.num_train_epochs)"
        )
    return pytorch.Epoch(epochs)


def resolve_auto(choice, default):
    """A lever's setting, with "auto" replaced by the default for this device."""
    return default if choice == "auto" else choice


def cpu_has_bf16() -> bool:
    """Whether the CPU multiplies bf16 matrices natively: AMX tiles (Intel) or AVX-512 BF16
    (Intel, AMD Zen 4 and later). There bf16 autocast trains 1.7-2x faster than fp32;
    elsewhere bf16 is emulated, so auto keeps fp32."""
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


class GlueMetricReducer(pytorch.MetricReducer):
    """Gathers every rank's logits and labels, then computes metrics over the whole dev set.

    Determined's DataLoader gives each rank whole, disjoint batches of the dev set, so the
    union of all ranks' rows is the dev set exactly once, whatever its size.
    """

    def __init__(self, task: constants.GlueTask) -> None:
        self.task = task
        self.reset()

    def reset(self) -> None:
        self.splits, self.logits, self.labels = [], [], []

    def update(self, splits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.splits.append(splits.cpu().numpy())
        self.logits.append(logits.float().cpu().numpy())
        self.labels.append(labels.cpu().numpy())

    def per_slot_reduce(self) -> tuple:
        return tuple(np.concatenate(x) for x in (self.splits, self.logits, self.labels))

    def cross_slot_reduce(self, per_slot: list[tuple]) -> dict[str, float]:
        splits, logits, labels = (np.concatenate(x) for x in zip(*per_slot, strict=True))
        return metrics.compute_split_metrics(self.task, splits, logits, labels)


class ValidationHistory(pytorch.PyTorchCallback):
    """Keeps every validation's metrics, so a local run can return and print them."""

    def __init__(self) -> None:
        self.metrics: list[dict] = []

    def on_validation_end(self, metrics: dict) -> None:
        self.metrics.append(metrics)


class PortableCheckpoints(pytorch.PyTorchCallback):
    """Saves the weights without DDP's "module." prefix, so that a checkpoint loads alike in one
    process (Trainer or pytorch.load_trial_from_checkpoint_path) or in several (where Determined
    adds the prefix back)."""

    def on_checkpoint_save_start(self, checkpoint: dict) -> None:
        for state in checkpoint["models_state_dict"]:
            torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state, "module.")


def check_batch_split(global_batch_size: int, slots: int) -> None:
    """Every slot (process) must get the same number of examples per optimizer step."""
    if global_batch_size % slots:
        raise constants.ConfigError(
            f"hyperparameters.global_batch_size: {global_batch_size} examples do not split evenly "
            f"across {slots} slots (processes); use a multiple of {slots}"
        )


class BertPyTorch(pytorch.PyTorchTrial):
    def __init__(self, context: pytorch.PyTorchTrialContext) -> None:
        self.context = context
        hp = with_defaults(
            "hyperparameters", context.get_hparams(), REQUIRED_HPARAMS, OPTIONAL_HPARAMS
        )
        cfg = with_defaults("data", context.get_data_config(), REQUIRED_DATA, OPTIONAL_DATA)
        check_batch_split(hp["global_batch_size"], context.distributed.get_size())
        self.task = constants.get_task(cfg["task"])
        self.model_type = hp["model_type"]
        _, model_class, tokenizer_class = constants.get_model_classes(self.model_type)
        self.autocast_dtype, self.scaler = self._mixed_precision(hp["precision"])
        pretrained.check_pretrained(
            cfg["model_name_or_path"], self.model_type, self.task, hp["max_seq_length"]
        )

        self.tokenizer = tokenizer_class.from_pretrained(cfg["model_name_or_path"])
        cpu = context.device.type == "cpu"
        model = model_class.from_pretrained(
            cfg["model_name_or_path"],
            config=task_model_config(self.task, self.model_type, cfg["model_name_or_path"]),
            # Eager attention on CPUs, where torch's SDPA backward is slow: eager trains MiniLM
            # 1.17x (AMD, AVX-512) to 1.46x (Intel, AMX) faster in bf16. On GPUs None:
            # transformers' default, SDPA.
            attn_implementation=resolve_auto(hp["attn_implementation"], "eager" if cpu else None),
        )
        if resolve_auto(hp["fast_dropout"], cpu):  # eager attention too, where it can
            fast_dropout.use_fast_dropout(model)
        self.model = context.wrap_model(model)
        if hp["torch_compile"]:
            # In place, so checkpoints keep their keys. Per-batch padding changes the sequence
            # length, after which torch.compile recompiles once with the length symbolic.
            self.model.compile()

        self.train_set, self.dev_set = self._load_datasets(hp, cfg)
        self.collate = data.Collator(
            self.tokenizer,
            with_token_types=self.model_type in constants.MODELS_WITH_TOKEN_TYPES,
            pad_to=hp["max_seq_length"] if hp["pad_to_max_length"] else None,
            multiple_of=hp["pad_to_multiple_of"],
            max_length=hp["max_seq_length"],
        )
        self.group_by_length = hp["group_by_length"]
        self.workers = resolve_auto(hp["dataloader_workers"], 0 if cpu else 2)

        self.optimizer = context.wrap_optimizer(self._build_optimizer(hp))
        self.max_length = train_length(hp, context.get_experiment_config()["searcher"])
        metrics.check_searcher(self.task, context.get_experiment_config()["searcher"])
        total_steps = self.max_length.value * self._steps_per_epoch()
        self.lr_scheduler = context.wrap_lr_scheduler(
            get_linear_schedule_with_warmup(
                self.optimizer,
                num_warmup_steps=round(hp["warmup_ratio"] * total_steps),
                num_training_steps=total_steps,
            ),
            pytorch.LRScheduler.StepMode.STEP_EVERY_BATCH,
        )

        self.max_grad_norm = hp["max_grad_norm"]
        self.validation_history = ValidationHistory()
        self.reducer = context.wrap_reducer(
            GlueMetricReducer(self.task), name=None, for_training=False
        )

    def build_callbacks(self) -> dict[str, pytorch.PyTorchCallback]:
        return {
            "validation_history": self.validation_history,
            "portable_checkpoints": PortableCheckpoints(),
            "searcher_stop": searcher_stop.SearcherStop(self.context),
        }

    def _load_datasets(
        self, hp: dict, cfg: dict
    ) -> tuple[data.GlueDataset, torch.utils.data.Dataset]:
        """Download and featurize on one process per node, while the others wait.

        The node's first process writes (atomically); the rest then read its complete caches.
        Concurrent writers on a shared data_dir (several nodes) are safe for the same reason.
        """
        dist = self.context.distributed
        if dist.get_local_rank() != 0:
            dist.allgather_local(None)
        data.prepare_data(self.task, cfg["data_dir"], cfg["download_data"], cfg["path_to_mrpc"])

        def load(split: constants.Split):
            return data.load_features(
                self.task,
                split,
                cfg["data_dir"],
                self.tokenizer,
                hp["max_seq_length"],
                cfg["cache_dir"],
            )

        train = data.GlueDataset(load(self.task.train))
        dev = torch.utils.data.ConcatDataset(
            [data.GlueDataset(load(split), i) for i, split in enumerate(self.task.dev.values())]
        )
        if dist.get_local_rank() == 0:
            dist.allgather_local(None)
        return train, dev

    def _build_optimizer(self, hp: dict) -> torch.optim.Optimizer:
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        groups = [
            {
                "params": [p for n, p in params if not any(nd in n for nd in no_decay)],
                "weight_decay": hp["weight_decay"],
            },
            {
                "params": [p for n, p in params if any(nd in n for nd in no_decay)],
                "weight_decay": 0.0,
            },
        ]
        fused = resolve_auto(hp["fused_adamw"], self.context.device.type in ("cpu", "cuda"))
        return torch.optim.AdamW(
            groups, lr=hp["learning_rate"], eps=hp["adam_epsilon"], fused=bool(fused)
        )

    def _mixed_precision(self, precision: str) -> tuple[torch.dtype | None, object | None]:
        if precision not in PRECISIONS:
            raise constants.ConfigError(
                f"hyperparameters.precision: {precision!r} is not one of {', '.join(PRECISIONS)}"
            )
        cuda = self.context.device.type == "cuda"
        if precision == "auto" and cuda:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif precision == "auto":
            precision = "bf16" if cpu_has_bf16() else "fp32"
        if precision == "fp16":
            if not cuda:
                raise constants.ConfigError(
                    "hyperparameters.precision: fp16 needs a GPU; use bf16 or fp32"
                )
            return torch.float16, self.context.wrap_scaler(torch.amp.GradScaler("cuda"))
        return (torch.bfloat16 if precision == "bf16" else None), None

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.context.device.type, dtype=self.autocast_dtype)

    def _seed(self) -> int:
        """The trial seed on a cluster; the config's experiment_seed in local mode."""
        try:
            return self.context.get_trial_seed()
        except det.errors.InternalException:  # local mode has no trial seed
            return self.context.get_experiment_config()["reproducibility"]["experiment_seed"]

    def _steps_per_epoch(self) -> int:
        """Optimizer steps per epoch, as Determined counts them: batches per slot, sharded."""
        per_slot_batches = -(-len(self.train_set) // self.context.get_per_slot_batch_size())
        return -(-per_slot_batches // self.context.distributed.get_size())

    def build_training_data_loader(self) -> pytorch.DataLoader:
        batch_size = self.context.get_per_slot_batch_size()
        if self.group_by_length:
            sampler = data.LengthGroupedBatchSampler(
                self.train_set.lengths, batch_size, seed=self._seed()
            )
            return self._loader(self.train_set, batch_sampler=sampler)
        return self._loader(
            self.train_set,
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(self._seed()),
        )

    def build_validation_data_loader(self) -> pytorch.DataLoader:
        return self._loader(self.dev_set, batch_size=self.context.get_per_slot_batch_size())

    def _loader(self, dataset: torch.utils.data.Dataset, **kwargs) -> pytorch.DataLoader:
        cuda = self.context.device.type == "cuda"
        return pytorch.DataLoader(
            dataset,
            collate_fn=self.collate,
            num_workers=self.workers,
            pin_memory=cuda,
            persistent_workers=self.workers > 0,
            **kwargs,
        )

    def _forward(self, batch: dict[str, torch.Tensor]):
        inputs = {k: v for k, v in batch.items() if k != "split"}
        with self._autocast():
            return self.model(**inputs)

    def train_batch(self, batch: dict[str, torch.Tensor], epoch_idx: int, batch_idx: int):
        # Dropout draws from torch's global RNG, and a checkpoint holds rank 0's RNG state only.
        # Seeding it from the batch and rank gives every rank of a resumed run the same masks.
        dist = self.context.distributed
        torch.manual_seed(self._seed() * 2**32 + batch_idx * dist.get_size() + dist.get_rank())
        loss = self._forward(batch).loss
        self.context.backward(self.scaler.scale(loss) if self.scaler else loss)
        self.context.step_optimizer(self.optimizer, clip_grads=self._clip, scaler=self.scaler)
        return {"loss": loss, "lr": self.lr_scheduler.get_last_lr()[0]}

    def _clip(self, params) -> None:
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)

    def evaluate_batch(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict:
        logits = self._forward(batch).logits
        self.reducer.update(batch["split"], logits, batch["labels"])
        return {}


# ---------------------------------------------------------------------------------------------
# Running the trial: on a cluster (launched by the configs' entrypoint) or locally.


def load_config(path: str, overrides: list[str]) -> dict:
    """The YAML config with `section.key=value` overrides applied (values parsed as YAML)."""
    with open(path) as f:
        config = yaml.safe_load(f)
    known_sections = {
        "hyperparameters": (*REQUIRED_HPARAMS, *OPTIONAL_HPARAMS),
        "data": (*REQUIRED_DATA, *OPTIONAL_DATA),
        "reproducibility": ("experiment_seed",),
    }
    for override in overrides:
        key, sep, value = override.partition("=")
        section, _, name = key.partition(".")
        if not sep or section not in known_sections or name not in known_sections[section]:
            raise constants.ConfigError(
                f"bad override {override!r}: expected section.key=value with section one of "
                f"{', '.join(known_sections)} and a key the trial reads"
            )
        config.setdefault(section, {})[name] = parse_value(value)
    return config


def parse_value(text: str):
    """A YAML scalar, reading 3e-5 as a number too (YAML 1.1 wants 3.0e-5)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return value


def local_hparams(config: dict) -> dict:
    """Hyperparameter values for a local run: constants as they are, `const` ones unwrapped."""
    hparams = {}
    for name, value in config["hyperparameters"].items():
        if isinstance(value, dict):
            if value.get("type") != "const":
                raise constants.ConfigError(
                    f"hyperparameters.{name} is searched ({value.get('type')}); a local run needs "
                    f"one value: add the override hyperparameters.{name}=<value>"
                )
            value = value["val"]
        hparams[name] = value
    return hparams


def seed_everything(seed: int) -> None:
    """What Determined does on a cluster before building the trial, for local runs."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def distributed_context() -> det.core.DistributedContext | None:
    """A torch.distributed context when launched by torchrun (e.g. --nproc), else None."""
    if "LOCAL_RANK" not in os.environ:
        return None
    os.environ["USE_TORCH_DISTRIBUTED"] = "1"  # DDP; Determined refuses several processes without
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend=backend)
    return det.core.DistributedContext.from_torch_distributed()


def local_context(config: dict, distributed: det.core.DistributedContext | None = None):
    """The trial context of a local run (no cluster) of this config: a context manager."""
    return pytorch.init(
        hparams=local_hparams(config),
        exp_conf=config,
        distributed=distributed,
        enable_tensorboard_logging=False,
    )


def run_local(
    config: dict, resume: str | None = None, trial_class: type[BertPyTorch] = BertPyTorch
) -> list[dict]:
    """Train as the config says, with no cluster; returns the metrics of every validation.

    trial_class lets a benchmark or test run a subclass of the trial the same way.
    """
    config.setdefault("reproducibility", {}).setdefault("experiment_seed", 42)
    seed_everything(config["reproducibility"]["experiment_seed"])
    checkpoint, resumed = None, contextlib.nullcontext()
    if resume:
        checkpoint = checkpointing.find_checkpoint(
            resume, constants.get_task(config["data"]["task"])
        )
        resumed = checkpointing.starting_at(checkpointing.batches_trained(checkpoint))
    with local_context(config, distributed_context()) as context:
        trial = trial_class(context)
        # Checkpoints copy the working directory: this one, whatever the command was run from.
        here = checkpointing.in_directory(os.path.dirname(os.path.abspath(__file__)))
        with checkpointing.loadable_rng_state(), resumed, here:
            pytorch.Trainer(trial, context).fit(
                max_length=trial.max_length,
                validation_period=pytorch.Epoch(1),
                checkpoint_period=pytorch.Epoch(1),
                checkpoint_policy="none",
                reporting_period=pytorch.Batch(20),
                latest_checkpoint=str(checkpoint) if checkpoint else None,
            )
    return trial.validation_history.metrics


def run_on_cluster(info: det.ClusterInfo) -> None:
    with pytorch.init(hparams=info.trial.hparams) as context:
        trial = BertPyTorch(context)
        with checkpointing.loadable_rng_state():
            pytorch.Trainer(trial, context).fit(
                max_length=trial.max_length,
                validation_period=pytorch.Epoch(1),
                checkpoint_period=pytorch.Epoch(1),
                latest_checkpoint=info.latest_checkpoint,
            )


def torchrun_command(nproc: int, script: str, args: list[str]) -> tuple[list[str], dict]:
    """The command and environment that run `script args` in nproc local processes (torchrun)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={nproc}", script, *args]
    # Determined's processes also talk over two TCP ports, fixed unless these variables say
    # otherwise; free ones let several local runs share a machine.
    with socket.socket() as pub, socket.socket() as pull:
        pub.bind(("", 0))
        pull.bind(("", 0))
        ports = pub.getsockname()[1], pull.getsockname()[1]
    env = {f"INTER_TRAIN_PROCESS_COMM_PORT_{i}": str(port) for i, port in enumerate(ports, 1)}
    return command, {**os.environ, **env}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default="const.yaml", help="experiment config YAML")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. data.task=RTE")
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="local processes, one slot each, trained together with torch.distributed (DDP)",
    )
    parser.add_argument("--resume", help="a checkpoint folder or uuid to continue training from")
    parser.add_argument("--metrics-out", help="write every validation's metrics to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    info = det.get_cluster_info()
    if info is not None and info.task_type == "TRIAL":
        run_on_cluster(info)
        return 0
    if args.nproc < 1:
        parser.error(f"--nproc {args.nproc}: need at least 1 process")
    try:
        config = load_config(args.config, args.overrides)
        hparams = with_defaults(
            "hyperparameters", local_hparams(config), REQUIRED_HPARAMS, OPTIONAL_HPARAMS
        )
        check_batch_split(hparams["global_batch_size"], args.nproc)
    except (OSError, ValueError, yaml.YAMLError) as e:  # the message names the file or key
        sys.exit(f"error: {e}")
    if args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        forwarded = [args.config, *args.overrides]
        forwarded += ["--resume", args.resume] if args.resume else []
        forwarded += ["--metrics-out", args.metrics_out] if args.metrics_out else []
        command, env = torchrun_command(args.nproc, os.path.abspath(__file__), forwarded)
        return subprocess.call(command, env=env)
    try:
        history = run_local(config, args.resume)
    except USER_ERRORS as e:  # a mistake in the config or the files: the message says what
        sys.exit(f"error: {e}")
    if history:
        logger.info(f"final validation metrics: {history[-1]}")
    if args.metrics_out and os.environ.get("RANK", "0") == "0":
        with open(args.metrics_out, "w") as f:
            json.dump(history, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
