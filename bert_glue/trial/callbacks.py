"""The trial's own PyTorchCallbacks: what its checkpoints hold beyond Determined's defaults."""

from __future__ import annotations

import torch
from determined import pytorch

import constants


class PortableCheckpoints(pytorch.PyTorchCallback):
    """Saves the weights without DDP's "module." prefix, so that a checkpoint loads alike in one
    process (Trainer or pytorch.load_trial_from_checkpoint_path) or in several (where Determined
    adds the prefix back)."""

    def on_checkpoint_save_start(self, checkpoint: dict) -> None:
        for state in checkpoint["models_state_dict"]:
            torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state, "module.")


class TaskLabels(pytorch.PyTorchCallback):
    """Records the task's label names in the checkpoint (state_dict.pth, "callbacks"), where
    checkpointing.read reads a custom task's back: inferred ones too, in the order trained."""

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
