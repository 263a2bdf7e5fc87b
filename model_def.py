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
import os
import random
import sys
import time
from collections.abc import Callable, Iterator

from bert_glue.local import cli

if __name__ == "__main__":
    cli.check_before_torch(__doc__, sys.argv[1:])  # --help and mistakes: at once, before torch

import determined as det
import numpy as np
import torch
from determined import pytorch
from torch import nn
from transformers import get_linear_schedule_with_warmup

import constants
import data
from bert_glue.determined_0_38 import workarounds
from bert_glue.trial import batching, callbacks, device, metrics, pretrained
from bert_glue.trial.fast_dropout import use_fast_dropout
from bert_glue.trial.levers import Levers, packable
from bert_glue.trial.settings import Periods, Settings

logger = logging.getLogger(__name__)
metrics.load_backends()  # before any seeding: their import draws from Python's random


class BertPyTorch(pytorch.PyTorchTrial):
    def __init__(
        self, context: pytorch.PyTorchTrialContext, settings: Settings, levers: Levers
    ) -> None:
        """levers: resolved for the context's device and checked on it (run(), levers_on())."""
        self.context = context
        self.settings, self.levers = settings, levers
        hp = settings.hparams
        self.task = settings.task
        if context.distributed.rank == 0:
            data.warn_of_missing_test(self.task, settings.data.data_dir)
        metrics.check_searcher(self.task, settings.searcher)
        slots = context.distributed.get_size()
        # The task's batch (per_task's, if set), not the context's from the top-level value.
        self.global_batch_size = hp.global_batch_size
        self.per_slot_batch_size = self.global_batch_size // slots
        self.max_length = pytorch.Epoch(hp.num_train_epochs)
        if hp.seed is not None:  # it seeds all, as Determined seeds with its trial seed
            seed_everything(hp.seed)
        self.seed = hp.seed if hp.seed is not None else self._trial_seed()
        # Downloads (the model, the data) and feature caches: once per node. The data is read
        # before the model's weights load, so that a data mistake ends the run at once.
        with node_first(context.distributed):
            name = settings.data.model_name_or_path
            pretrained.check_pretrained(name, hp.model_type, self.task, hp.max_seq_length)
            model_config = pretrained.task_model_config(self.task, hp.model_type, name)
            init_source = pretrained.init_source(settings.data.init_from)  # a uuid: downloaded
            self.tokenizer = settings.model_classes.tokenizer.from_pretrained(name)
            started = time.perf_counter()
            self.train_set, self.dev_set = data.load_datasets(
                self.task, settings.data, self.tokenizer, hp.max_seq_length
            )
            self.data_seconds = time.perf_counter() - started  # downloading and featurizing
            model = self._pretrained(model_config, init_source)
        self.autocast_dtype, self.scaler = device.mixed_precision(levers.precision, context)
        self.model = self._prepared(model)
        self.collate = batching.collator(settings, levers, self.tokenizer, model)
        self.optimizer = context.wrap_optimizer(self._adamw())
        warmup_steps = round(hp.warmup_ratio * self.total_steps)
        self.schedule = get_linear_schedule_with_warmup(
            self.optimizer, warmup_steps, self.total_steps
        )  # linear warmup over warmup_ratio of all steps, then linear decay to 0
        self.lr_scheduler = context.wrap_lr_scheduler(
            self.schedule, pytorch.LRScheduler.StepMode.STEP_EVERY_BATCH
        )
        self.reducer = context.wrap_reducer(
            callbacks.GlueMetricReducer(self.task), for_training=False
        )
        self.train_loss = context.wrap_reducer(
            callbacks.TrainingLoss(self._training_note), "loss", for_validation=False
        )
        self.early_stopping = callbacks.EarlyStopping(context, settings, self.total_steps)
        self.searcher_stop = workarounds.SearcherStop(context)
        self.portable_checkpoints = callbacks.PortableCheckpoints(self.tokenizer, model.config)

    def _pretrained(self, model_config, init_source: pretrained.Source | None) -> nn.Module:
        name = self.settings.data.model_name_or_path
        model = self.settings.model_classes.model.from_pretrained(
            name, config=model_config, attn_implementation=self.levers.attn_implementation
        )
        if init_source is not None:  # its weights replace the pre-trained ones
            return pretrained.load_into(model, init_source, self.task)
        logger.info(f"{name}: {self.task.name} head, {model_config.num_labels} output(s)")
        return model

    def _prepared(self, model: nn.Module) -> nn.Module:
        """The model with the levers' changes, wrapped by Determined (DDP on several slots)."""
        if self.levers.fast_dropout:  # eager attention's dropout too, where it can
            use_fast_dropout(model)
        if self.levers.packing:
            batching.use_packing(model, self.levers.packed_attention)
        wrapped = self.context.wrap_model(model)
        # Determined's own copy of each batch to the GPU blocks the host until the GPU is idle;
        # _forward copies without blocking instead (the loaders pin memory on GPUs).
        self.context.experimental.disable_auto_to_device()
        # In place, so checkpoints keep their keys. Per-batch padding changes the sequence length,
        # after which torch.compile recompiles once with the length symbolic. CUDA graphs: one per
        # shape, captured on its first batches, then replayed; with Inductor (reduce-overhead)
        # when torch_compile asks for it, else by the cudagraphs backend, which needs no compiler.
        if self.levers.torch_compile:
            wrapped.compile(mode="reduce-overhead" if self.levers.cuda_graphs else None)
        elif self.levers.cuda_graphs:
            wrapped.compile(backend="cudagraphs")
        return wrapped

    def _adamw(self) -> torch.optim.AdamW:
        """AdamW as run_glue builds it: no weight decay on biases and LayerNorm weights."""
        hp = self.settings.hparams
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        groups = [
            {
                "params": [p for n, p in params if not any(nd in n for nd in constants.NO_DECAY)],
                "weight_decay": hp.weight_decay,
            },
            {
                "params": [p for n, p in params if any(nd in n for nd in constants.NO_DECAY)],
                "weight_decay": 0.0,
            },
        ]
        return torch.optim.AdamW(
            groups, lr=hp.learning_rate, eps=hp.adam_epsilon, fused=self.levers.fused_adamw
        )

    def batches_per_rank(self, dataset) -> int:
        """One pass over the dataset, in batches each rank takes, as Determined shards them."""
        batches = -(-len(dataset) // self.per_slot_batch_size)
        return -(-batches // self.context.distributed.get_size())

    @property
    def total_steps(self) -> int:
        """Optimizer steps in all, as Determined counts them."""
        return self.max_length.value * self.batches_per_rank(self.train_set)

    def _training_note(self, batch_idx: int) -> str:
        lr = self.schedule.base_lrs[0] * self.schedule.lr_lambdas[0](batch_idx)
        return f"learning rate {lr:.3g}, precision {self.levers.precision}"

    def build_callbacks(self) -> dict[str, pytorch.PyTorchCallback]:
        return {
            "early_stopping": self.early_stopping,
            "portable_checkpoints": self.portable_checkpoints,
            "searcher_stop": self.searcher_stop,
            "task_labels": callbacks.TaskLabels(self.task),
        }

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.context.device.type, dtype=self.autocast_dtype)

    def _trial_seed(self) -> int | None:
        """Determined's trial seed, or locally reproducibility.experiment_seed."""
        try:
            return self.context.get_trial_seed()
        except det.errors.InternalException:  # local mode has no trial seed
            return self.settings.experiment_seed

    def build_training_data_loader(self) -> pytorch.DataLoader:
        batch_size = self.per_slot_batch_size
        if self.levers.group_by_length:
            sampler = batching.LengthGroupedBatchSampler(
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
        return batching.loader(
            dataset, self.collate, self.levers.dataloader_workers, cuda, **kwargs
        )

    def _forward(self, batch: dict[str, torch.Tensor]):
        device = self.context.device
        inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "split"}
        if self.levers.packing:
            max_seqlen = self.settings.hparams.max_seq_length
            inputs = batching.model_inputs(inputs, max_seqlen=max_seqlen)
        if self.levers.cuda_graphs:  # a new step: the previous graph's outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        with self._autocast():
            return self.model(**inputs)

    def get_batch_length(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["labels"])  # a packed batch's tokens are in one row

    def train_batch(self, batch: dict[str, torch.Tensor], epoch_idx: int, batch_idx: int):
        self.searcher_stop.before_batch(batch_idx)  # a trial the searcher stopped ends here
        # Dropout draws from torch's global RNG, and a checkpoint holds rank 0's RNG state only.
        # Seeding it from the batch and rank gives every rank of a resumed run the same masks.
        dist = self.context.distributed
        torch.manual_seed(self.seed * 2**32 + batch_idx * dist.get_size() + dist.get_rank())
        loss = self._forward(batch).loss
        self.context.backward(self.scaler.scale(loss) if self.scaler else loss)
        max_grad_norm = self.settings.hparams.max_grad_norm
        clip = self._clip if max_grad_norm > 0 else None  # 0: no clipping, as run_glue
        self.context.step_optimizer(self.optimizer, clip_grads=clip, scaler=self.scaler)
        self.train_loss.update(loss, batch_idx)  # "loss": the reporting period's mean
        return {"lr": self.lr_scheduler.get_last_lr()[0]}

    def _clip(self, params) -> None:
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(params, self.settings.hparams.max_grad_norm)

    def evaluate_batch(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict:
        logits = self._forward(batch).logits
        self.reducer.update(batch["split"], logits, batch["labels"])
        return {}


@contextlib.contextmanager
def node_first(distributed: det.core.DistributedContext) -> Iterator[None]:
    """The node's first process runs the block (downloads, writes caches) while the others
    wait; then they run it, reading what it wrote."""
    if distributed.get_local_rank() != 0:
        distributed.allgather_local(None)
    yield
    if distributed.get_local_rank() == 0:
        distributed.allgather_local(None)


def seed_everything(seed: int) -> None:
    """What Determined does with the trial seed before building the trial on a cluster."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(
    context: pytorch.PyTorchTrialContext,
    latest_checkpoint: str | None = None,
    trial_class: type[BertPyTorch] = BertPyTorch,
    watcher: pytorch.PyTorchCallback | None = None,
    ready: Callable[[BertPyTorch], bool] | None = None,
    settings: Settings | None = None,
) -> BertPyTorch:
    """Build the trial from the context's experiment config and hyperparameters, and train it:
    on a cluster (main) and locally (bert_glue/local/local_run.py, whose watcher hears of every
    batch, whose ready(trial) says whether there is anything to train, and which passes the
    settings it built of the same config and values)."""
    slots = context.distributed.get_size()
    if settings is None:
        settings = Settings.of(context.get_experiment_config(), context.get_hparams(), slots)
    else:
        settings.check_batch_split(slots)
    levers = levers_on(settings, context.device, context.distributed)
    local = workarounds.cluster_trial() is None
    if local:  # a cluster's trial is seeded with its trial seed by Determined
        seed_everything(settings.experiment_seed)
    if watcher is not None:
        trial_class = workarounds.with_batch_hooks(trial_class, watcher)
    trial = trial_class(context, settings, levers)
    if ready is not None and not ready(trial):
        return trial
    with workarounds.loadable_rng_state(), workarounds.reducer_errors_as_raised(metrics.Diverged):
        pytorch.Trainer(trial, context).fit(
            max_length=trial.max_length,
            latest_checkpoint=latest_checkpoint,
            **fit_options(settings.periods, local),
        )
    return trial


def load_trial(checkpoint: str | os.PathLike) -> BertPyTorch:
    """A checkpoint's trial with its weights, in this one process: Determined's
    pytorch.load_trial_from_checkpoint_path, given the checkpoint's settings for this machine's
    first GPU, or its CPU."""
    settings = Settings.of_checkpoint(checkpoint)
    on = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    with workarounds.loadable_rng_state():
        return pytorch.load_trial_from_checkpoint_path(
            str(checkpoint),
            trial_class=BertPyTorch,
            trial_kwargs={"settings": settings, "levers": levers_on(settings, on)},
        )


def levers_on(
    settings: Settings, on: torch.device, distributed: det.core.DistributedContext | None = None
) -> Levers:
    """The levers of the settings on this device (with the distributed context's processes),
    resolved, checked by the preflight, and said in one line."""
    processes = distributed.get_size() if distributed is not None else 1
    found = device.read_device(on, processes)
    levers = Levers.resolve(settings.hparams, found, packable(pretrained.model_type(settings)))
    levers = device.preflight(levers, on, distributed)
    logger.info(levers.line(found))
    return levers


LOCAL_REPORTING_BATCHES = 20  # scheduling_unit when a local config sets none (a cluster's: 100)


def fit_options(periods: Periods, local: bool) -> dict:
    """Trainer.fit's periods and checkpoint policy. Locally there is no experiment to compare a
    validation with: checkpoint_policy best (Determined's default) becomes none, and checkpoints
    come every min_checkpoint_period."""
    policy = periods.checkpoint_policy
    return {
        "validation_period": _unit(periods.validation),
        "checkpoint_period": _unit(periods.checkpoint),
        "checkpoint_policy": "none" if local and policy == "best" else policy,
        "reporting_period": pytorch.Batch(
            periods.reporting or (LOCAL_REPORTING_BATCHES if local else 100)
        ),
        "step_zero_validation": periods.step_zero_validation,
    }


def _unit(period: tuple[str, int]) -> pytorch.TrainUnit:
    unit, count = period
    return pytorch.Epoch(count) if unit == "epochs" else pytorch.Batch(count)


def main(argv: list[str] | None = None) -> int:
    info = workarounds.cluster_trial()
    if info is None:
        return cli.main(argv, run, __file__, __doc__)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with pytorch.init(hparams=info.trial.hparams) as context:
        try:
            run(context, info.latest_checkpoint)
        except metrics.Diverged as e:  # one line: a traceback would say nothing more
            logger.error(f"error: {e}")
            raise det.InvalidHP(str(e)) from e  # pytorch.init() reports it and exits 0: no restart
    return 0


if __name__ == "__main__":
    sys.exit(main())
