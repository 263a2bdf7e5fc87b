"""One process of the tests' multi-process runs: model_def.main(), with what it did recorded.

    python -m torch.distributed.run --standalone --nproc_per_node=2 \\
        tests/distributed_worker.py OUT CONFIG [OVERRIDE ...]

Trains as `model_def.py CONFIG [OVERRIDE ...] --metrics-out OUT/metrics.json` would in this
process, then writes OUT/rank<RANK>.json: see Recorder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import sys
from unittest import mock

import torch

import data
import model_def
from bert_glue.trial import callbacks


class Recorder:
    """Records, in one process, what the trial does with its data, gradients and metrics.

    record["steps"]: per optimizer step, the epoch, the train examples (dataset indices) this
    process read, its loss, the LR and the norm of the (already all-reduced) gradient.
    record["validations"]: per validation, the dev examples this process read as
    (split id, index), and on the chief the number of rows each process's reducer contributed.
    record["featurized"]: how many splits this process tokenized instead of reading the cache.
    """

    def __init__(self) -> None:
        self.record: dict = {"steps": [], "validations": [], "featurized": 0}
        self.trial: model_def.BertPyTorch | None = None
        self._read: list[tuple[data.GlueDataset, int]] = []

    def _take_reads(self, train: bool) -> list:
        """The examples read since the last call, of the train set or of the dev set."""
        taken = [(ds, i) for ds, i in self._read if (ds is self.trial.train_set) == train]
        self._read = [(ds, i) for ds, i in self._read if (ds is self.trial.train_set) != train]
        return taken

    @contextlib.contextmanager
    def patched(self):
        rec, record = self, self.record
        featurize, getitem = data.featurize, data.GlueDataset.__getitem__
        trial_class = model_def.BertPyTorch
        train_batch, clip, evaluate_batch = (
            trial_class.train_batch,
            trial_class._clip,
            trial_class.evaluate_batch,
        )
        cross_slot_reduce = callbacks.GlueMetricReducer.cross_slot_reduce
        update_loss = callbacks.TrainingLoss.update

        def counting_featurize(*args, **kwargs):
            record["featurized"] += 1
            return featurize(*args, **kwargs)

        def recording_getitem(self, i):
            rec._read.append((self, int(i)))
            return getitem(self, i)

        def recording_train_batch(self, batch, epoch_idx, batch_idx):
            rec.trial = self
            items = [i for _, i in rec._take_reads(train=True)]
            record["steps"].append({"epoch": epoch_idx, "items": items})
            out = train_batch(self, batch, epoch_idx, batch_idx)
            record["steps"][-1]["lr"] = out["lr"]
            return out

        def recording_loss(self, value, batch_idx):
            record["steps"][-1]["loss"] = value.item()  # the trial sums it on the device
            return update_loss(self, value, batch_idx)

        def recording_clip(self, params):
            params = list(params)
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
            record["steps"][-1]["grad_norm"] = norm.item()  # called inside train_batch
            return clip(self, params)

        def recording_evaluate_batch(self, batch, batch_idx):
            rec.trial = self
            if batch_idx == 0:
                record["validations"].append({"items": [], "rows_per_slot": None})
            items = [(ds.split_id, i) for ds, i in rec._take_reads(train=False)]
            record["validations"][-1]["items"] += items
            return evaluate_batch(self, batch, batch_idx)

        def recording_cross_slot_reduce(self, per_slot):
            record["validations"][-1]["rows_per_slot"] = [len(labels) for *_, labels in per_slot]
            return cross_slot_reduce(self, per_slot)

        with contextlib.ExitStack() as stack:
            for owner, name, new in [
                (data, "featurize", counting_featurize),
                (data.GlueDataset, "__getitem__", recording_getitem),
                (trial_class, "train_batch", recording_train_batch),
                (callbacks.TrainingLoss, "update", recording_loss),
                (trial_class, "_clip", recording_clip),
                (trial_class, "evaluate_batch", recording_evaluate_batch),
                (callbacks.GlueMetricReducer, "cross_slot_reduce", recording_cross_slot_reduce),
            ]:
                stack.enter_context(mock.patch.object(owner, name, new))
            yield self

    def weights_digest(self) -> str:
        digest = hashlib.sha256()
        for name, tensor in sorted(self.trial.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()


def main(out: str, args: list[str]) -> None:
    recorder = Recorder()
    with recorder.patched():
        assert model_def.main([*args, "--metrics-out", os.path.join(out, "metrics.json")]) == 0
    recorder.record["weights"] = recorder.weights_digest()
    pathlib.Path(out, f"rank{os.environ['RANK']}.json").write_text(json.dumps(recorder.record))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
