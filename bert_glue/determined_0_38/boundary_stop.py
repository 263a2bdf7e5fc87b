"""Ends a trial at the Trainer's next boundary, on every rank, without an exit checkpoint.

Determined 0.38.1's Trainer calls PreemptContext.should_preempt() on every rank after each
boundary (reporting, validation, checkpoint). stop_at_boundaries() adds a question to that call:
once the chief has a reason to stop, every rank logs it and raises the Trainer's _ShouldExit
there, and fit() returns as it does at max_length. Unless asked for one (a local early stop,
which --resume then reads), it skips the checkpoint that a preemption or
context.set_stop_requested() writes on the way out: a trial stopped this way is done, never
resumed, and its best validation has its checkpoint already (checkpoint_policy best). The process
exits 0, which the master records as COMPLETED (docs/search.md). searcher_stop.py (adaptive
ASHA's stop) and bert_glue/trial/early_stopping.py both stop this way.

Can go once the Trainer takes a stop request that skips the exit checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from determined import pytorch

logger = logging.getLogger(__name__)


def stop_at_boundaries(
    context: pytorch.PyTorchTrialContext,
    reason_to_stop: Callable[[], str | None],
    exit_checkpoint: bool = False,
) -> None:
    """From now on, at the end of each boundary, every rank exits there if reason_to_stop()
    gives a reason on the chief. It is called on every rank, in step; the chief's answer is the
    one taken. With exit_checkpoint the Trainer checkpoints where it stops, as on a preemption."""
    preempt = context._core.preempt
    should_preempt = preempt.should_preempt

    def should_preempt_or_stop() -> bool:
        if should_preempt():  # the Trainer's own: it checkpoints and exits, to be resumed
            return True
        reason = reason_to_stop()
        if context.distributed.get_size() > 1:
            reason = context.distributed.broadcast(reason)
        if reason is not None:
            logger.info(f"{reason}: exiting without training further")
            raise pytorch._ShouldExit(skip_exit_checkpoint=not exit_checkpoint)
        return False

    preempt.should_preempt = should_preempt_or_stop
