"""The trial's device: what the levers' auto depends on (trial_config.levers), read off it;
mixed precision on it; and the order in which a node's processes share its disk."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import determined as det
import torch
from determined import pytorch

from bert_glue.trial import trial_config


def device_of(context: pytorch.PyTorchTrialContext) -> trial_config.Device:
    """What the levers' auto depends on, read off the trial's device and processes."""
    device = context.device
    native_bf16 = cuda_has_bf16(device) if device.type == "cuda" else cpu_has_bf16()
    return trial_config.Device(device.type, native_bf16, context.distributed.get_size())


def cpu_has_bf16() -> bool:
    """Whether the CPU multiplies bf16 matrices natively: AMX tiles (Intel) or AVX-512 BF16
    (Intel, AMD Zen 4 and later); elsewhere bf16 is emulated, and slower than fp32."""
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def cuda_has_bf16(device: torch.device) -> bool:
    """Whether the GPU has bf16 tensor cores: compute capability 8.0 (Ampere) and later.
    torch.cuda.is_bf16_supported() also says yes on V100 (7.0) and T4 (7.5), where bf16 is
    emulated; there auto takes fp16 with a loss scaler."""
    return torch.cuda.get_device_capability(device)[0] >= 8


@contextlib.contextmanager
def node_first(distributed: det.core.DistributedContext) -> Iterator[None]:
    """The node's first process runs the block (downloads, writes caches) while the others
    wait; then they run it, reading what it wrote."""
    if distributed.get_local_rank() != 0:
        distributed.allgather_local(None)
    yield
    if distributed.get_local_rank() == 0:
        distributed.allgather_local(None)


def mixed_precision(
    precision: str, context: pytorch.PyTorchTrialContext
) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """Autocast's dtype (None: fp32) and, for fp16, a loss scaler wrapped by Determined."""
    if precision == "fp16":
        return torch.float16, context.wrap_scaler(torch.amp.GradScaler("cuda"))
    return (torch.bfloat16 if precision == "bf16" else None), None
