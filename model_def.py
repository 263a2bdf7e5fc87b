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
    python model_def.py const.yaml --plot curves.png            # and draw them (progress.py)
    python model_def.py const.yaml --resume <checkpoint uuid or folder>  # continue a run
    python model_def.py glue.yaml        # every GLUE task x seed, one after another (local_grid)
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator

from bert_glue.container import versions

# Before transformers is imported: with a torch it cannot use it fails on its first model class,
# with an ImportError that names neither the versions nor the fix. This exits with one line.
versions.require_supported()

import determined as det
import numpy as np
import torch
from determined import pytorch
from transformers import get_linear_schedule_with_warmup

import constants
import data
from bert_glue.determined_0_38 import searcher_stop
from bert_glue.local import local_run
from bert_glue.results import checkpointing
from bert_glue.trial import custom_task, fast_dropout, metrics, packing, pretrained, trial_config

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


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


def resolve_auto(choice, default):
    """A lever's setting, with "auto" replaced by the default for this device."""
    return default if choice == "auto" else choice


def cpu_has_bf16() -> bool:
    """Whether the CPU multiplies bf16 matrices natively: AMX tiles (Intel) or AVX-512 BF16
    (Intel, AMD Zen 4 and later). There bf16 autocast trains 1.7-2x faster than fp32;
    elsewhere bf16 is emulated, so auto keeps fp32."""
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def cuda_has_bf16(device: torch.device) -> bool:
    """Whether the GPU has bf16 tensor cores: compute capability 8.0 (Ampere) and later.
    torch.cuda.is_bf16_supported() also says yes on V100 (7.0) and T4 (7.5), where bf16 is
    emulated; there auto takes fp16 with a loss scaler."""
    return torch.cuda.get_device_capability(device)[0] >= 8


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
        results = metrics.compute_split_metrics(self.task, splits, logits, labels)
        return metrics.check_finite(results)  # nothing NaN reaches the master


class PortableCheckpoints(pytorch.PyTorchCallback):
    """Saves the weights without DDP's "module." prefix, so that a checkpoint loads alike in one
    process (Trainer or pytorch.load_trial_from_checkpoint_path) or in several (where Determined
    adds the prefix back)."""

    def on_checkpoint_save_start(self, checkpoint: dict) -> None:
        for state in checkpoint["models_state_dict"]:
            torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state, "module.")


class TaskLabels(pytorch.PyTorchCallback):
    """Records the task's label names in the checkpoint (state_dict.pth, "callbacks"), where
    finetuned.py reads a custom task's back: inferred ones too, in the order trained."""

    def __init__(self, task: constants.GlueTask) -> None:
        self.labels = list(task.labels)

    def state_dict(self) -> dict:
        return {"labels": self.labels}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict["labels"] != self.labels:
            raise constants.ConfigError(
                f"data.custom.labels: the checkpoint was trained with the labels "
                f"{state_dict['labels']}, not {self.labels}; resume with the same labels"
            )


class BertPyTorch(pytorch.PyTorchTrial):
    def __init__(self, context: pytorch.PyTorchTrialContext) -> None:
        self.context = context
        hp, cfg = trial_config.settings(context.get_hparams(), context.get_data_config())
        trial_config.check_batch_split(hp["global_batch_size"], context.distributed.get_size())
        self.task = custom_task.task_from_config(cfg)
        searcher = context.get_experiment_config()["searcher"]
        metrics.check_searcher(self.task, searcher)
        self.seed = self._seed(hp["seed"])
        if hp["seed"] is not None:  # Determined seeded with its trial seed; the classifier too
            local_run.seed_everything(self.seed)
        self.model_type = hp["model_type"]
        _, model_class, tokenizer_class = constants.get_model_classes(self.model_type)
        self.precision = self._precision(hp["precision"])
        self.autocast_dtype, self.scaler = self._mixed_precision(self.precision)
        cpu = context.device.type == "cpu"
        with self._node_first():  # a Hub model is downloaded once per node
            pretrained.check_pretrained(
                cfg["model_name_or_path"], self.model_type, self.task, hp["max_seq_length"]
            )
            self.tokenizer = tokenizer_class.from_pretrained(cfg["model_name_or_path"])
            model = model_class.from_pretrained(
                cfg["model_name_or_path"],
                config=task_model_config(self.task, self.model_type, cfg["model_name_or_path"]),
                # Eager attention on CPUs, where torch's SDPA backward is slow: eager trains
                # MiniLM 1.17x (AMD, AVX-512) to 1.46x (Intel, AMX) faster in bf16. On GPUs
                # None: transformers' default, SDPA.
                attn_implementation=resolve_auto(
                    hp["attn_implementation"], "eager" if cpu else None
                ),
            )
        if resolve_auto(hp["fast_dropout"], cpu):  # eager attention too, where it can
            fast_dropout.use_fast_dropout(model)
        self.packing = self._use_packing(hp["packing"], model)
        self.model = context.wrap_model(model)
        # Determined's own copy of each batch to the GPU blocks the host until the GPU is idle;
        # _forward copies without blocking instead (the loaders pin memory on GPUs).
        context.experimental.disable_auto_to_device()
        self.cuda_graphs = self._use_cuda_graphs(hp["cuda_graphs"])
        if hp["torch_compile"] or self.cuda_graphs:
            # In place, so checkpoints keep their keys. Per-batch padding changes the sequence
            # length, after which torch.compile recompiles once with the length symbolic.
            # reduce-overhead: a CUDA graph per shape, captured on its first batch, replayed.
            self.model.compile(mode="reduce-overhead" if self.cuda_graphs else None)

        started = time.perf_counter()
        # The node's first process writes the files and caches (atomically); the rest then
        # read them. Concurrent writers on a shared data_dir (several nodes) are safe too.
        with self._node_first():
            self.train_set, self.dev_set = self._load_datasets(hp, cfg)
        self.data_seconds = time.perf_counter() - started  # downloading and featurizing
        self.max_seq_length = hp["max_seq_length"]
        self.collate = self._collator(hp, model)
        self.group_by_length = resolve_auto(hp["group_by_length"], not self.packing)
        self.workers = resolve_auto(hp["dataloader_workers"], 0 if cpu else 2)

        self.optimizer = context.wrap_optimizer(self._build_optimizer(hp))
        self.max_length = trial_config.train_length(hp, searcher)
        self.total_steps = self.max_length.value * self._steps_per_epoch()
        self.schedule = get_linear_schedule_with_warmup(
            self.optimizer,
            num_warmup_steps=round(hp["warmup_ratio"] * self.total_steps),
            num_training_steps=self.total_steps,
        )
        self.lr_scheduler = context.wrap_lr_scheduler(
            self.schedule, pytorch.LRScheduler.StepMode.STEP_EVERY_BATCH
        )

        self.max_grad_norm = hp["max_grad_norm"]
        self.reducer = context.wrap_reducer(
            GlueMetricReducer(self.task), name=None, for_training=False
        )
        self.train_loss = context.wrap_reducer(
            metrics.TrainingLoss(self._training_at), "loss", for_validation=False
        )

    def _training_at(self, batch_idx: int) -> str:
        lr = self.schedule.base_lrs[0] * self.schedule.lr_lambdas[0](batch_idx)
        return f"learning rate {lr:.3g}, precision {self.precision}"

    def build_callbacks(self) -> dict[str, pytorch.PyTorchCallback]:
        return {
            "portable_checkpoints": PortableCheckpoints(),
            "searcher_stop": searcher_stop.SearcherStop(self.context),
            "task_labels": TaskLabels(self.task),
        }

    @contextlib.contextmanager
    def _node_first(self) -> Iterator[None]:
        """The node's first process runs the block (downloads, writes caches) while the others
        wait; then they run it, reading what it wrote."""
        dist = self.context.distributed
        if dist.get_local_rank() != 0:
            dist.allgather_local(None)
        yield
        if dist.get_local_rank() == 0:
            dist.allgather_local(None)

    def _load_datasets(
        self, hp: dict, cfg: dict
    ) -> tuple[data.GlueDataset, torch.utils.data.Dataset]:
        """Download the task's files if allowed, featurize them (cached), and sample."""
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

        train = data.GlueDataset(data.sample(load(self.task.train), cfg["max_train_samples"]))
        dev = torch.utils.data.ConcatDataset(
            [data.GlueDataset(load(split), i) for i, split in enumerate(self.task.dev.values())]
        )
        return train, dev

    def _use_packing(self, choice, model: torch.nn.Module) -> bool:
        """Whether batches are packed (packing.py). auto: on GPUs in bf16 or fp16 (varlen
        FlashAttention) for the model types packing serves; off on CPUs, where it measured no
        faster than length-grouped padding (docs/performance.md)."""
        flash = self.context.device.type == "cuda" and self.autocast_dtype is not None
        if choice == "auto":
            choice = flash and model.config.model_type in packing.ENCODERS
        if choice:
            packing.use_packing(model)
        return bool(choice)

    def _use_cuda_graphs(self, choice) -> bool:
        """auto: on one GPU. Off with several processes: graphs of a DDP-wrapped model have not
        run on several GPUs yet (true turns them on)."""
        cuda = self.context.device.type == "cuda"
        if choice is True and not cuda:
            raise constants.ConfigError(
                "hyperparameters.cuda_graphs: CUDA graphs need a GPU; use false or auto"
            )
        return bool(resolve_auto(choice, cuda and self.context.distributed.get_size() == 1))

    def _collator(self, hp: dict, model: torch.nn.Module):
        """Packed batches, their length bucketed for CUDA graphs; or padded batches."""
        token_types = constants.feeds_token_types(self.model_type, self.tokenizer, model)
        if self.packing:
            return packing.PackedCollator(
                token_types,
                position_offset=packing.position_offset(model.config),
                pad_id=self.tokenizer.pad_token_id,
                bucket=hp["max_seq_length"] if self.cuda_graphs else None,
            )
        return data.Collator(
            self.tokenizer,
            with_token_types=token_types,
            pad_to=hp["max_seq_length"] if hp["pad_to_max_length"] else None,
            multiple_of=hp["pad_to_multiple_of"],
            max_length=hp["max_seq_length"],
        )

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

    def _precision(self, precision: str) -> str:
        """hyperparameters.precision, with auto resolved for this device."""
        if precision not in PRECISIONS:
            raise constants.ConfigError(
                f"hyperparameters.precision: {precision!r} is not one of {', '.join(PRECISIONS)}"
            )
        cuda = self.context.device.type == "cuda"
        if precision == "auto" and cuda:
            return "bf16" if cuda_has_bf16(self.context.device) else "fp16"
        if precision == "auto":
            return "bf16" if cpu_has_bf16() else "fp32"
        if precision == "fp16" and not cuda:
            raise constants.ConfigError(
                "hyperparameters.precision: fp16 needs a GPU; use bf16 or fp32"
            )
        return precision

    def _mixed_precision(self, precision: str) -> tuple[torch.dtype | None, object | None]:
        if precision == "fp16":
            return torch.float16, self.context.wrap_scaler(torch.amp.GradScaler("cuda"))
        return (torch.bfloat16 if precision == "bf16" else None), None

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.context.device.type, dtype=self.autocast_dtype)

    def _seed(self, seed: int | None) -> int:
        """hyperparameters.seed if set; else the trial seed on a cluster, and the config's
        experiment_seed in local mode."""
        if seed is not None:
            return seed
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
                self.train_set.lengths, batch_size, seed=self.seed
            )
            return self._loader(self.train_set, batch_sampler=sampler)
        return self._loader(
            self.train_set,
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(self.seed),
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
        device = self.context.device
        inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "split"}
        if self.packing:
            inputs = packing.model_inputs(inputs, max_seqlen=self.max_seq_length)
        if self.cuda_graphs:  # a new step: the previous graph's outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        with self._autocast():
            return self.model(**inputs)

    def get_batch_length(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["labels"])  # a packed batch's tokens are in one row

    def train_batch(self, batch: dict[str, torch.Tensor], epoch_idx: int, batch_idx: int):
        # Dropout draws from torch's global RNG, and a checkpoint holds rank 0's RNG state only.
        # Seeding it from the batch and rank gives every rank of a resumed run the same masks.
        dist = self.context.distributed
        torch.manual_seed(self.seed * 2**32 + batch_idx * dist.get_size() + dist.get_rank())
        loss = self._forward(batch).loss
        self.context.backward(self.scaler.scale(loss) if self.scaler else loss)
        clip = self._clip if self.max_grad_norm > 0 else None  # 0: no clipping, as run_glue
        self.context.step_optimizer(self.optimizer, clip_grads=clip, scaler=self.scaler)
        self.train_loss.update(loss, batch_idx)  # "loss": the reporting period's mean
        return {"lr": self.lr_scheduler.get_last_lr()[0]}

    def _clip(self, params) -> None:
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)

    def evaluate_batch(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict:
        logits = self._forward(batch).logits
        self.reducer.update(batch["split"], logits, batch["labels"])
        return {}


def run_on_cluster(info: det.ClusterInfo) -> None:
    with pytorch.init(hparams=info.trial.hparams) as context:
        trial = BertPyTorch(context)
        periods = trial_config.fit_options(
            context.get_experiment_config(), context.get_global_batch_size(), local=False
        )
        with checkpointing.loadable_rng_state(), metrics.divergence_raised_as_is():
            pytorch.Trainer(trial, context).fit(
                max_length=trial.max_length, latest_checkpoint=info.latest_checkpoint, **periods
            )


def main(argv: list[str] | None = None) -> int:
    info = det.get_cluster_info()
    if info is not None and info.task_type == "TRIAL":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        try:
            run_on_cluster(info)
        except metrics.Diverged as e:  # one line: a traceback would say nothing more
            logger.error(f"error: {e}")
            return 1
        return 0
    return local_run.main(argv, BertPyTorch, script=__file__)


if __name__ == "__main__":
    sys.exit(main())
