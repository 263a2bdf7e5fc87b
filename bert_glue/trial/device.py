"""The device the trial trains on: what the levers' auto depends on, read off it; mixed
precision on it; and the preflight, which runs one tiny forward and backward through each
feature the levers chose before the first batch, and turns off, with one warning line, any that
fails: a run never dies of an environment gap that levers.REQUIREMENTS did not foresee.

    device = read_device(torch.device("cuda", 0), processes=1)
    levers = preflight(Levers.resolve(hp, device, packable), torch.device("cuda", 0))
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from bert_glue.trial import batching
from bert_glue.trial.levers import HALF, PACKED_KERNELS, REQUIREMENTS, Device, Levers, has_compiler

logger = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def read_device(device: torch.device, processes: int = 1) -> Device:
    """The Device that the levers' auto reads, for `processes` training together on `device`."""
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        return Device(
            "cuda", capability >= (8, 0), processes, capability, has_compiler("cuda"), name
        )
    name = f"CPU ({torch.backends.cpu.get_cpu_capability()})"
    return Device(device.type, cpu_has_bf16(), processes, None, has_compiler("cpu"), name)


def cpu_has_bf16() -> bool:
    """Whether the CPU multiplies bf16 matrices natively: AMX tiles (Intel) or AVX-512 BF16
    (Intel, AMD Zen 4 and later); elsewhere bf16 is emulated, and slower than fp32."""
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def mixed_precision(precision: str, context) -> tuple[torch.dtype | None, object | None]:
    """Autocast's dtype (None: fp32) and, for fp16, a loss scaler wrapped by Determined."""
    if precision == "fp16":
        return torch.float16, context.wrap_scaler(torch.amp.GradScaler("cuda"))
    return (torch.bfloat16 if precision == "bf16" else None), None


# The preflight's probes: each runs its feature once at tiny size, forward and backward, in the
# levers' precision, and raises whatever the device or the image lacks.


def _autocast(levers: Levers, device: torch.device) -> None:
    layer = nn.Linear(16, 16).to(device)
    with torch.autocast(device.type, dtype=DTYPES[levers.precision]):
        out = layer(torch.randn(4, 16, device=device))
    out.float().sum().backward()


def _attention(kernel: str) -> Callable[[Levers, torch.device], None]:
    def probe(levers: Levers, device: torch.device) -> None:
        dtype = DTYPES[levers.precision]
        q, k, v = (
            torch.randn(6, 2, 16, device=device, dtype=dtype, requires_grad=True) for _ in range(3)
        )
        segments = torch.tensor([0, 2, 6], dtype=torch.int32, device=device)
        module = nn.Module()
        module.dropout = nn.Dropout(0.1)  # the blockwise kernel takes the layer's own dropout
        out = batching.KERNELS[kernel](module, q, k, v, segments, 4, 0.1, 0.25)
        out.float().sum().backward()

    return probe


def _compiled(backend: str) -> Callable[[Levers, torch.device], None]:
    def probe(levers: Levers, device: torch.device) -> None:
        layer = nn.Sequential(nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 1)).to(device)
        compiled = torch.compile(layer, backend=backend)
        try:
            for _ in range(3):  # CUDA graphs: warmed up, then recorded, then replayed
                torch.compiler.cudagraph_mark_step_begin()
                compiled(torch.randn(4, 16, device=device)).sum().backward()
        finally:
            torch._dynamo.reset()  # the trial's model compiles afresh

    return probe


def _fused_adamw(levers: Levers, device: torch.device) -> None:
    weight = nn.Parameter(torch.randn(4, device=device))
    weight.grad = torch.ones_like(weight)
    torch.optim.AdamW([weight], fused=True).step()


PROBES: dict[str, Callable[[Levers, torch.device], None]] = {
    "bf16": _autocast,
    "fp16": _autocast,
    **{kernel: _attention(kernel) for kernel in batching.KERNELS},
    "cuda_graphs": _compiled("cudagraphs"),
    "inductor": _compiled("inductor"),
    "fused_adamw": _fused_adamw,
}


def preflight(levers: Levers, device: torch.device, distributed=None) -> Levers:
    """The levers less what fails on this device: each feature they use is probed once (PROBES)
    and, if it raises, turned off (Levers.without) with one warning line that says what failed,
    what the trial does instead and how to choose. With distributed (Determined's
    DistributedContext) every rank takes what failed on any rank, so their levers agree."""
    tried: set[str] = set()
    while untried := [f for f in levers.features() if f not in tried]:
        failures = {}
        for feature in untried:
            tried.add(feature)
            try:
                PROBES[feature](levers, device)
            except Exception as e:  # whatever the device or the image lacks
                failures[feature] = f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
        if distributed is not None:
            for rank_failures in distributed.allgather(failures):
                failures = {**rank_failures, **failures}
        for feature in levers.features():
            if feature in failures:
                levers = _fall_back(levers, feature, failures[feature])
    return levers


def _fall_back(levers: Levers, feature: str, error: str) -> Levers:
    after = levers.without(feature)
    if feature in HALF:
        instead = "training in fp32"
    elif feature in PACKED_KERNELS:
        kernel = after.packed_attention
        instead = REQUIREMENTS[kernel].what if kernel else "padded batches"
    else:
        instead = "training without it"
    need = REQUIREMENTS[feature]
    logger.warning(
        f"preflight: {need.what} failed on this device ({error}); {instead} instead. To choose, "
        f"set {need.lever}"
    )
    return after
