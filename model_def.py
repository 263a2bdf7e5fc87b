"""Fine-tune a BERT-family model on a GLUE task with Determined's PyTorchTrial.

A port of Determined's bert_glue_pytorch example (itself adapted from Hugging Face's
run_glue.py v2.2) to today's determined, torch and transformers.

    det -m <master> experiment create -f const.yaml .   # on a cluster (Determined's launcher)
    python model_def.py const.yaml                       # here: Determined's Trainer, local mode
    python model_def.py const.yaml hyperparameters.learning_rate=3e-5 --nproc 2
    python model_def.py glue.yaml                        # every GLUE task x seed (docs/glue.md)
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time

from bert_glue.container import versions
from bert_glue.local import cli

if __name__ == "__main__":
    cli.check_before_torch(__doc__, sys.argv[1:])  # --help and mistakes: at once, before torch

# Before transformers is imported: with a torch it cannot use it fails on its first model class,
# with an ImportError that names neither the versions nor the fix. This exits with one line.
versions.require_supported()

import determined as det
import torch
from determined import pytorch

import constants
import data
from bert_glue.determined_0_38 import searcher_stop, workarounds
from bert_glue.local import local_run
from bert_glue.trial import (
    batches,
    callbacks,
    custom_task,
    device,
    early_stopping,
    fast_dropout,
    fit_config,
    init_from,
    metrics,
    optimization,
    packing,
    pretrained,
    reducers,
    trial_config,
)

logger = logging.getLogger(__name__)


class BertPyTorch(pytorch.PyTorchTrial):
    def __init__(self, context: pytorch.PyTorchTrialContext) -> None:
        self.context = context
        hp, cfg = trial_config.settings(context.get_hparams(), context.get_data_config())
        self.task = custom_task.task_from_config(cfg)
        if context.distributed.rank == 0:
            custom_task.warn_of_missing_test(self.task, cfg["data_dir"])
        searcher = context.get_experiment_config()["searcher"]
        slots = context.distributed.get_size()
        self.max_length = fit_config.checked_length(hp, searcher, self.task, slots)
        # The task's batch (per_task's, if set), not the context's from the top-level value.
        self.global_batch_size = hp["global_batch_size"]
        self.per_slot_batch_size = self.global_batch_size // slots
        self.seed = self._seed(hp["seed"])
        # Downloads (the model, the data) and feature caches: once per node. The data is read
        # before the model's weights load, so that a data mistake ends the run at once.
        with device.node_first(context.distributed):
            model_config = pretrained.checked_model_config(self.task, hp, cfg["model_name_or_path"])
            self.init_source = init_from.find(cfg["init_from"])  # a cluster's uuid: downloaded
            packable = packing.serves(model_config)
            self.levers = trial_config.levers(hp, device.device_of(context), packable)
            self.tokenizer = pretrained.tokenizer(hp["model_type"], cfg["model_name_or_path"])
            started = time.perf_counter()
            self.train_set, self.dev_set = data.load_datasets(
                self.task, cfg, self.tokenizer, hp["max_seq_length"]
            )
            self.data_seconds = time.perf_counter() - started  # downloading and featurizing
            model = self._pretrained(hp, cfg, model_config)
        self.autocast_dtype, self.scaler = device.mixed_precision(self.levers.precision, context)
        self.model = self._prepared(model)
        self.max_seq_length, self.max_grad_norm = hp["max_seq_length"], hp["max_grad_norm"]
        self.collate = batches.collator(hp, self.levers, self.tokenizer, model)
        self.optimizer = context.wrap_optimizer(
            optimization.adamw(self.model, hp, fused=self.levers.fused_adamw)
        )
        self.schedule = optimization.linear_schedule(self.optimizer, hp, self.total_steps)
        self.lr_scheduler = context.wrap_lr_scheduler(
            self.schedule, pytorch.LRScheduler.StepMode.STEP_EVERY_BATCH
        )
        self.reducer = context.wrap_reducer(
            reducers.GlueMetricReducer(self.task), for_training=False
        )
        self.train_loss = context.wrap_reducer(
            reducers.TrainingLoss(self._training_at), "loss", for_validation=False
        )
        self.early_stopping = early_stopping.EarlyStopping(context, hp, self.total_steps)

    def _pretrained(self, hp: dict, cfg: dict, model_config) -> torch.nn.Module:
        model_class = constants.get_model_classes(hp["model_type"]).model
        model = model_class.from_pretrained(
            cfg["model_name_or_path"],
            config=model_config,
            attn_implementation=self.levers.attn_implementation,
        )
        if self.init_source is not None:  # its weights replace the pre-trained ones
            return init_from.load_into(model, self.init_source, self.task)
        head = f"a new {self.task.name} head, {model_config.num_labels} output(s)"
        logger.info(f"{cfg['model_name_or_path']}: {head}")
        return model

    def _prepared(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model with the levers' changes, wrapped by Determined (DDP on several slots)."""
        if self.levers.fast_dropout:  # eager attention's dropout too, where it can
            fast_dropout.use_fast_dropout(model)
        if self.levers.packing:
            packing.use_packing(model)
        wrapped = self.context.wrap_model(model)
        # Determined's own copy of each batch to the GPU blocks the host until the GPU is idle;
        # _forward copies without blocking instead (the loaders pin memory on GPUs).
        self.context.experimental.disable_auto_to_device()
        if self.levers.torch_compile or self.levers.cuda_graphs:
            # In place, so checkpoints keep their keys. Per-batch padding changes the sequence
            # length, after which torch.compile recompiles once with the length symbolic.
            # reduce-overhead: a CUDA graph per shape, captured on its first batch, replayed.
            wrapped.compile(mode="reduce-overhead" if self.levers.cuda_graphs else None)
        return wrapped

    @property
    def total_steps(self) -> int:
        """Optimizer steps in all, as Determined counts them: batches per slot, sharded."""
        per_slot_batches = -(-len(self.train_set) // self.per_slot_batch_size)
        return self.max_length.value * -(-per_slot_batches // self.context.distributed.get_size())

    def _training_at(self, batch_idx: int) -> str:
        lr = self.schedule.base_lrs[0] * self.schedule.lr_lambdas[0](batch_idx)
        return f"learning rate {lr:.3g}, precision {self.levers.precision}"

    def build_callbacks(self) -> dict[str, pytorch.PyTorchCallback]:
        return {
            "early_stopping": self.early_stopping,
            "portable_checkpoints": callbacks.PortableCheckpoints(),
            "searcher_stop": searcher_stop.SearcherStop(self.context),
            "task_labels": callbacks.TaskLabels(self.task),
        }

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.context.device.type, dtype=self.autocast_dtype)

    def _seed(self, seed: int | None) -> int:
        """hyperparameters.seed, which then seeds all as Determined seeds with its trial seed
        (the new head too); else the trial seed, or locally reproducibility.experiment_seed."""
        if seed is not None:
            local_run.seed_everything(seed)
            return seed
        try:
            return self.context.get_trial_seed()
        except det.errors.InternalException:  # local mode has no trial seed
            return self.context.get_experiment_config()["reproducibility"]["experiment_seed"]

    def build_training_data_loader(self) -> pytorch.DataLoader:
        batch_size = self.per_slot_batch_size
        if self.levers.group_by_length:
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
        return self._loader(self.dev_set, batch_size=self.per_slot_batch_size)

    def _loader(self, dataset: torch.utils.data.Dataset, **kwargs) -> pytorch.DataLoader:
        cuda = self.context.device.type == "cuda"
        return batches.loader(dataset, self.collate, self.levers.dataloader_workers, cuda, **kwargs)

    def _forward(self, batch: dict[str, torch.Tensor]):
        device = self.context.device
        inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "split"}
        if self.levers.packing:
            inputs = packing.model_inputs(inputs, max_seqlen=self.max_seq_length)
        if self.levers.cuda_graphs:  # a new step: the previous graph's outputs may be overwritten
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
        periods = fit_config.fit_options(
            context.get_experiment_config(), trial.global_batch_size, local=False
        )
        reported_as_is = workarounds.reducer_errors_as_raised(metrics.Diverged)
        try:
            with workarounds.loadable_rng_state(), reported_as_is:
                pytorch.Trainer(trial, context).fit(
                    max_length=trial.max_length, latest_checkpoint=info.latest_checkpoint, **periods
                )
        except metrics.Diverged as e:  # one line: a traceback would say nothing more
            logger.error(f"error: {e}")
            raise det.InvalidHP(str(e)) from e  # pytorch.init() reports it and exits 0: no restart


def main(argv: list[str] | None = None) -> int:
    info = det.get_cluster_info()
    if info is not None and info.task_type == "TRIAL":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        run_on_cluster(info)
        return 0
    return local_run.main(argv, BertPyTorch, script=__file__)


if __name__ == "__main__":
    sys.exit(main())
